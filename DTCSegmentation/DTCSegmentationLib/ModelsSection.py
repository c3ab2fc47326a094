"""The Models section of the panel (Qt): the model store as a table and as the Segment section's model
chooser, with import, export, rename and delete; the chosen model's provenance; and the model catalog,
whose models download in a child process (a progress bar, Cancel) without blocking the panel."""
from __future__ import annotations

import qt
import slicer
from slicer.i18n import tr as _

from .ModelDownload import ModelDownload


class ModelsSection:
    def __init__(self, ui, store, parent, showDialogs: bool, error, onChanged, startTimer):
        self.ui = ui
        self.store = store
        self.parent = parent  # of the file and text dialogs
        self.showDialogs = showDialogs
        self.error = error  # (title, message): how the panel reports a failure
        self.onChanged = onChanged  # called when the chosen model may have changed
        self.startTimer = startTimer  # the panel's timer, which calls follow() while a download runs
        self.download = None  # the running (or last) ModelDownload
        self.listeners = []  # called with the store's models each time the list is read again
        self.catalog = []
        ui.modelsTable.horizontalHeader().setSectionResizeMode(0, qt.QHeaderView.ResizeToContents)
        for column, mode in enumerate((qt.QHeaderView.Stretch, qt.QHeaderView.ResizeToContents,
                                       qt.QHeaderView.ResizeToContents)):  # the title takes what the rest leave
            ui.catalogTable.horizontalHeader().setSectionResizeMode(column, mode)
        ui.importModelButton.connect("clicked()", self.onImport)
        ui.exportModelButton.connect("clicked()", self.onExport)
        ui.renameModelButton.connect("clicked()", self.onRename)
        ui.deleteModelButton.connect("clicked()", self.onDelete)
        ui.refreshModelsButton.connect("clicked()", self.refresh)
        ui.modelsTable.connect("currentCellChanged(int,int,int,int)", lambda *args: self.showDetails())
        ui.catalogTable.connect("currentCellChanged(int,int,int,int)", lambda *args: self.updateButtons())
        ui.downloadModelButton.connect("clicked()", self.onDownload)
        ui.cancelDownloadButton.connect("clicked()", self.onCancelDownload)
        ui.downloadProgressBar.visible = False

    def refresh(self, select: str | None = None):
        """List the store again, keeping the chosen model (or choosing `select`; on a first start, the
        store's default: the built-in model)."""
        ui = self.ui
        current = select or ui.modelComboBox.currentText or self.store.default()
        models = self.store.list()
        ui.modelComboBox.blockSignals(True)
        ui.modelComboBox.clear()
        for info in models:
            ui.modelComboBox.addItem(info.name)
            ui.modelComboBox.setItemData(ui.modelComboBox.count - 1, info.details(), qt.Qt.ToolTipRole)
        index = ui.modelComboBox.findText(current)
        ui.modelComboBox.setCurrentIndex(index if index >= 0 else 0)
        ui.modelComboBox.blockSignals(False)
        ui.modelsTable.setRowCount(len(models))
        for row, info in enumerate(models):
            ui.modelsTable.setItem(row, 0, qt.QTableWidgetItem(info.name))
            ui.modelsTable.setItem(row, 1, qt.QTableWidgetItem(info.summary()))
        ui.modelFolderLabel.text = _("Model store: {folder}").format(folder=self.store.root)
        for listener in self.listeners:
            listener(models)
        self.refreshCatalog()
        self.showDetails()
        self.onChanged()

    def refreshCatalog(self):
        from dtc_training.catalog import load_catalog

        ui = self.ui
        try:
            self.catalog = load_catalog()
        except ValueError as e:  # a damaged installation: say so here rather than fail the panel
            self.catalog = []
            ui.downloadStatusLabel.text = str(e)
        ui.catalogTable.setRowCount(len(self.catalog))
        for row, entry in enumerate(self.catalog):
            here = self.store.installed(entry)
            status = (_("built in") if here is not None and here.builtin else _("downloaded") if here is not None
                      else _("missing here") if entry.builtin else _("not downloaded"))
            item = qt.QTableWidgetItem(entry.title)
            item.setToolTip("\n\n".join((entry.description, entry.intended_use, entry.citation)))
            ui.catalogTable.setItem(row, 0, item)
            ui.catalogTable.setItem(row, 1, qt.QTableWidgetItem(entry.licence))
            ui.catalogTable.setItem(row, 2, qt.QTableWidgetItem(status))
        self.updateButtons()

    def showDetails(self):
        """The selected model's provenance (training data, recipe, score, intended use, licence), else the
        chosen one's."""
        name = self.selected() or self.ui.modelComboBox.currentText
        try:
            self.ui.modelDetailsLabel.text = self.store.get(name).details() if name else ""
        except ValueError:  # deleted meanwhile
            self.ui.modelDetailsLabel.text = ""

    # ------------------------------------------------------------------------------------ catalog
    def selectedEntry(self):
        row = self.ui.catalogTable.currentRow()
        return self.catalog[row] if 0 <= row < len(self.catalog) else None

    def downloading(self) -> bool:
        return self.download is not None and not self.download.finished

    def updateButtons(self):
        entry = self.selectedEntry()
        ui = self.ui
        ui.downloadModelButton.enabled = (not self.downloading() and entry is not None and not entry.builtin
                                          and self.store.installed(entry) is None)
        ui.cancelDownloadButton.enabled = self.downloading()

    def onDownload(self):
        entry = self.selectedEntry()
        if entry is None or self.downloading():
            return
        self.download = ModelDownload(self.store, entry.id, entry.title)
        self.ui.downloadProgressBar.visible = True
        self.ui.downloadProgressBar.maximum, self.ui.downloadProgressBar.value = 0, 0  # busy until the size is known
        self.ui.downloadStatusLabel.text = _("{title}: starting the download...").format(title=entry.title)
        self.updateButtons()
        self.startTimer()

    def follow(self) -> bool:
        """Called by the panel's timer: show the download's progress; True while it runs."""
        download = self.download
        if download is None or download.finished:
            return False
        ui = self.ui
        if not download.poll():
            fraction = download.fraction
            ui.downloadProgressBar.maximum = 100 if fraction is not None else 0
            ui.downloadProgressBar.value = int(100 * fraction) if fraction is not None else 0
            ui.downloadStatusLabel.text = (
                _("{title}: checking and converting the downloaded weights...").format(title=download.title)
                if download.phase == "converting" else
                _("{title}: downloading, {done:.1f} of {total:.1f} MB").format(
                    title=download.title, done=download.done / 2**20, total=download.total / 2**20)
                if download.total else
                _("{title}: downloading, {done:.1f} MB").format(title=download.title, done=download.done / 2**20))
            return True
        self._downloadEnded()
        return False

    def _downloadEnded(self):
        download, ui = self.download, self.ui
        ui.downloadProgressBar.visible = False
        if download.state == "done":
            ui.downloadStatusLabel.text = _("{title}: added to the model store as '{name}'.").format(
                title=download.title, name=download.name)
            self.refresh(select=download.name)
        else:
            ui.downloadStatusLabel.text = download.message
            if download.state == "failed":
                self.error(_("Download failed"), download.message, "\n".join(download.log[-20:]))
        self.updateButtons()

    def onCancelDownload(self):
        if self.downloading():
            self.download.cancel()
            self._downloadEnded()

    def cleanup(self):
        self.onCancelDownload()

    # ------------------------------------------------------------------------------------- store
    def onImport(self):
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Import a DTC model"), "",
                                             _("DTC model") + " (*.safetensors *.pt *.pth);;" + _("All files") + " (*)")
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
        return self.ui.modelsTable.item(row, 0).text() if 0 <= row < self.ui.modelsTable.rowCount else None

    def onExport(self):
        name = self.selected()
        if name is None:
            return
        path = qt.QFileDialog.getSaveFileName(self.parent, _("Export a DTC model"), f"{name}.safetensors",
                                             _("DTC model") + " (*.safetensors)")
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
        except (ValueError, OSError) as e:  # a name in use or not a folder name, the built-in model
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
        try:
            self.store.delete(name)
        except ValueError as e:  # the built-in model
            self.error(_("Could not delete the model"), str(e))
            return
        self.refresh()
