"""The live training curve as MRML nodes (tables, plot series, a chart and a plot view showing it), so the
widget only has to give the view node to its `qMRMLPlotWidget` (`setMRMLPlotViewNode`, the widget's only
way in, as in Slicer's own plot views), and the same curve exists headless (and can be saved with the scene)."""
from __future__ import annotations

import slicer
import vtk

LOSS_COLUMNS = ("iteration", "loss", "loss_dice", "loss_levelset", "loss_consistency")
SERIES = (  # (table, y column, colour)
    ("loss", "loss", (0.85, 0.25, 0.2)),
    ("loss", "loss_consistency", (0.95, 0.65, 0.1)),
    ("dice", "dice", (0.1, 0.45, 0.85)),
)


class ProgressPlot:
    def __init__(self, mrmlScene, name: str = "DTC training"):
        self.scene = mrmlScene
        self.lossTable = self._table(f"{name} loss", LOSS_COLUMNS)
        self.diceTable = self._table(f"{name} validation Dice", ("iteration", "dice"))
        self.chart = mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} curve")
        self.chart.SetTitle("Training loss and validation Dice")
        self.chart.SetXAxisTitle("iteration")
        self.chart.SetYAxisTitle("loss / Dice")
        self.chart.SetLegendVisibility(True)
        self.series = []
        for tableKey, column, color in SERIES:
            table = self.lossTable if tableKey == "loss" else self.diceTable
            series = mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", column.replace("_", " "))
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("iteration")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle if tableKey == "dice"
                                  else slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            series.SetColor(*color)
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
            self.series.append(series)
        # a plot view of its own for the panel's widget, so the layout's plot views keep their charts
        self.view = mrmlScene.AddNewNodeByClass("vtkMRMLPlotViewNode", f"{name} view")
        self.view.SetPlotChartNodeID(self.chart.GetID())
        self._rows = {"loss": 0, "dice": 0}

    def _table(self, name, columns):
        node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        for column in columns:
            array = vtk.vtkDoubleArray()
            array.SetName(column)
            node.AddColumn(array)
        return node

    @staticmethod
    def _append(tableNode, rows) -> None:
        table = tableNode.GetTable()
        for row in rows:
            index = table.GetNumberOfRows()
            table.InsertNextBlankRow()
            for column, value in enumerate(row):
                table.GetColumn(column).SetValue(index, float(value))
        table.Modified()
        tableNode.Modified()

    def update(self, monitor) -> None:
        """Append the monitor's points that are not plotted yet."""
        if len(monitor.losses) < self._rows["loss"] or len(monitor.dice) < self._rows["dice"]:
            self.clear()
        self._append(self.lossTable, monitor.losses[self._rows["loss"]:])
        self._append(self.diceTable, monitor.dice[self._rows["dice"]:])
        self._rows = {"loss": len(monitor.losses), "dice": len(monitor.dice)}

    def clear(self) -> None:
        for node in (self.lossTable, self.diceTable):
            node.GetTable().SetNumberOfRows(0)
            node.Modified()
        self._rows = {"loss": 0, "dice": 0}
