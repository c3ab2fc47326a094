"""The Models section of the panel (Qt): the model store as a table and as the Segment section's model
chooser, with import, export, rename and delete."""
from __future__ import annotations

import qt
import slicer
from slicer.i18n import tr as _


class ModelsSection:
    def __init__(self, ui, store, parent, showDialogs: bool, error, onChanged):
        self.ui = ui
        self.store = store
        self.parent = parent  # of the file and text dialogs
        self.showDialogs = showDialogs
        self.error = error  # (title, message): how the panel reports a failure
        self.onChanged = onChanged  # called when the chosen model may have changed
        ui.modelsTable.horizontalHeader().setSectionResizeMode(0, qt.QHeaderView.ResizeToContents)
        ui.importModelButton.connect("clicked()", self.onImport)
        ui.exportModelButton.connect("clicked()", self.onExport)
        ui.renameModelButton.connect("clicked()", self.onRename)
        ui.deleteModelButton.connect("clicked()", self.onDelete)
        ui.refreshModelsButton.connect("clicked()", self.refresh)

    def refresh(self, select: str | None = None):
        """List the store again, keeping the chosen model (or choosing `select`)."""
        ui = self.ui
        current = select or ui.modelComboBox.currentText
        models = self.store.list()
        ui.modelComboBox.blockSignals(True)
        ui.modelComboBox.clear()
        for info in models:
            ui.modelComboBox.addItem(info.name)
            ui.modelComboBox.setItemData(ui.modelComboBox.count - 1, info.summary(), qt.Qt.ToolTipRole)
        index = ui.modelComboBox.findText(current)
        ui.modelComboBox.setCurrentIndex(index if index >= 0 else 0)
        ui.modelComboBox.blockSignals(False)
        ui.modelsTable.setRowCount(len(models))
        for row, info in enumerate(models):
            ui.modelsTable.setItem(row, 0, qt.QTableWidgetItem(info.name))
            ui.modelsTable.setItem(row, 1, qt.QTableWidgetItem(info.summary()))
        ui.modelFolderLabel.text = _("Model store: {folder}").format(folder=self.store.root)
        self.onChanged()

    def onImport(self):
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Import a DTC model"), "",
                                             _("DTC model") + " (*.pt *.pth);;" + _("All files") + " (*)")
        if not path:
            return
        try:
            info = self.store.importModel(path)
        except (ValueError, OSError) as e:  # another kind of model, a corrupt file, no backend, a full disk
            self.error(_("Model refused"), str(e))
            return
        self.refresh(select=info.name)

    def selected(self) -> str | None:
        row = self.ui.modelsTable.currentRow()
        return self.ui.modelsTable.item(row, 0).text() if row >= 0 else None

    def onExport(self):
        name = self.selected()
        if name is None:
            return
        path = qt.QFileDialog.getSaveFileName(self.parent, _("Export a DTC model"), f"{name}.pt",
                                             _("DTC model") + " (*.pt)")
        if not path:
            return
        try:
            self.store.export(name, path)
        except (ValueError, OSError) as e:  # an unwritable folder, a full disk
            self.error(_("Could not export the model"), str(e))

    def onRename(self):
        name = self.selected()
        if name is None:
            return
        newName = qt.QInputDialog.getText(self.parent, _("Rename a model"), _("New name:"), qt.QLineEdit.Normal, name)
        if not newName or newName == name:
            return
        try:
            info = self.store.rename(name, newName)
        except (ValueError, OSError) as e:  # a name in use or not a folder name
            self.error(_("Could not rename the model"), str(e))
            return
        self.refresh(select=info.name)

    def onDelete(self):
        name = self.selected()
        if name is None:
            return
        if self.showDialogs and not slicer.util.confirmYesNoDisplay(
                _("Delete the model '{name}' from the store?").format(name=name)):
            return
        self.store.delete(name)
        self.refresh()
