"""The labeled-pairs table of the Train section (Qt): one row per labeled volume, with its label (a
segmentation or a label map) and the segment, or label value, that is the left atrium."""
from __future__ import annotations

import qt
import slicer
from slicer.i18n import tr as _

from .Parameters import LabeledPair
from .SceneIO import labelChoices


class LabeledPairsTable:
    def __init__(self, table, onChanged):
        self.table = table
        self.onChanged = onChanged  # called on every edit a user makes
        self.rows = []  # (volume combo, label combo, segment combo) per pair
        table.horizontalHeader().setSectionResizeMode(qt.QHeaderView.Stretch)

    def add(self, pair: LabeledPair | None = None):
        """A row showing `pair`, or an empty row for the user to fill."""
        row = self.table.rowCount
        self.table.insertRow(row)
        volumeCombo = self._nodeCombo(["vtkMRMLScalarVolumeNode"], pair.volume if pair else None)
        labelCombo = self._nodeCombo(["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"], pair.label if pair else None)
        segmentCombo = qt.QComboBox()
        segmentCombo.toolTip = _("the segment (or label value) that is the left atrium")
        for column, combo in enumerate((volumeCombo, labelCombo, segmentCombo)):
            self.table.setCellWidget(row, column, combo)
        self.rows.append((volumeCombo, labelCombo, segmentCombo))
        self._fillSegments(segmentCombo, labelCombo.currentNode(), pair.segment if pair else None)
        labelCombo.connect("currentNodeChanged(vtkMRMLNode*)",
                           lambda node, combo=segmentCombo: (self._fillSegments(combo, node, None), self.onChanged()))
        volumeCombo.connect("currentNodeChanged(vtkMRMLNode*)", self.onChanged)
        segmentCombo.connect("currentIndexChanged(int)", self.onChanged)
        if pair is None:
            self.onChanged()

    def removeCurrent(self):
        row = self.table.currentRow()
        if 0 <= row < len(self.rows):
            self.table.removeRow(row)
            del self.rows[row]
            self.onChanged()

    def clear(self):
        self.table.setRowCount(0)
        self.rows = []

    def pairs(self) -> list[LabeledPair]:
        pairs = []
        for volumeCombo, labelCombo, segmentCombo in self.rows:
            key = segmentCombo.currentData if segmentCombo.count > 1 and segmentCombo.currentIndex > 0 else None
            if segmentCombo.count == 2:  # one choice: use it
                key = segmentCombo.itemData(1)
            pairs.append(LabeledPair(volumeCombo.currentNode(), labelCombo.currentNode(), key))
        return pairs

    @staticmethod
    def _nodeCombo(types, node):
        combo = slicer.qMRMLNodeComboBox()
        combo.nodeTypes = types
        combo.noneEnabled = True
        combo.addEnabled = False
        combo.removeEnabled = False
        combo.showChildNodeTypes = False
        combo.setMRMLScene(slicer.mrmlScene)
        combo.setCurrentNode(node)
        return combo

    @staticmethod
    def _fillSegments(combo, labelNode, selected):
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("(choose)"), None)
        for choice in labelChoices(labelNode):
            combo.addItem(choice.name, choice.key)
        index = combo.findData(selected) if selected is not None else (1 if combo.count == 2 else 0)
        combo.setCurrentIndex(max(0, index))
        combo.blockSignals(False)
