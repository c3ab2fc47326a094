"""The binding of the panel's parameter widgets (Qt) to the parameter dataclasses: one table per section
maps a dataclass field to its widget, and one table of widget kinds says how a kind is wired, read and
shown, so that wiring, saving and loading cannot disagree about a widget (see Parameters.py for why not
parameterNodeWrapper)."""
from __future__ import annotations

import qt


def _setValue(widget, value):
    widget.value = value


def _setChecked(widget, value):
    widget.checked = bool(value)


def _setText(widget, value):
    index = widget.findText(str(value))
    if index < 0:
        widget.addItem(str(value))
        index = widget.findText(str(value))
    widget.setCurrentIndex(index)


# widget kind -> (its change signal, read its value, show a value)
WIDGET_KINDS = {
    "value": (lambda w: "valueChanged(double)" if isinstance(w, qt.QDoubleSpinBox) else "valueChanged(int)",
              lambda w: w.value, _setValue),
    "text": (lambda w: "currentTextChanged(QString)", lambda w: w.currentText, _setText),
    "number": (lambda w: "currentTextChanged(QString)", lambda w: int(w.currentText), _setText),
    "checked": (lambda w: "toggled(bool)", lambda w: w.checked, _setChecked),
}

# dataclass field -> (widget name, kind)
TRAINING_FIELDS = {
    "recipe": ("recipeComboBox", "text"), "iterations": ("iterationsSpinBox", "value"),
    "labeledBatch": ("labeledBatchSpinBox", "value"),
    "unlabeledBatch": ("unlabeledBatchSpinBox", "value"), "learningRate": ("learningRateSpinBox", "value"),
    "k": ("kSpinBox", "value"), "nFilters": ("nFiltersSpinBox", "value"), "device": ("deviceComboBox", "text"),
    "precision": ("trainingPrecisionComboBox", "text"), "valFraction": ("valFractionSpinBox", "value"),
}
PATCH_WIDGETS = ("patchXSpinBox", "patchYSpinBox", "patchZSpinBox")
SEGMENT_FIELDS = {
    "device": ("segmentDeviceComboBox", "text"), "mode": ("segmentModeComboBox", "text"),
    "windowSize": ("windowSizeComboBox", "text"), "precision": ("precisionComboBox", "text"),
    "memoryGb": ("memorySpinBox", "value"), "orientations": ("orientationsComboBox", "number"),
    "largestComponent": ("largestComponentCheckBox", "checked"), "uncertainty": ("showDoubtCheckBox", "checked"),
}


def connectFields(ui, slot):
    """Call `slot` on every edit of a parameter widget."""
    for name, kind in list(TRAINING_FIELDS.values()) + list(SEGMENT_FIELDS.values()):
        widget = getattr(ui, name)
        widget.connect(WIDGET_KINDS[kind][0](widget), slot)
    for name in PATCH_WIDGETS:
        getattr(ui, name).connect("valueChanged(int)", slot)


def readFields(ui, fields) -> dict:
    """The widgets' values, by dataclass field."""
    return {field: WIDGET_KINDS[kind][1](getattr(ui, name)) for field, (name, kind) in fields.items()}


def showFields(ui, fields, values):
    """Show a dataclass's values in its widgets."""
    for field, (name, kind) in fields.items():
        WIDGET_KINDS[kind][2](getattr(ui, name), getattr(values, field))


def readPatchSize(ui) -> tuple:
    return tuple(getattr(ui, name).value for name in PATCH_WIDGETS)


def showPatchSize(ui, patchSize):
    for name, value in zip(PATCH_WIDGETS, patchSize):
        getattr(ui, name).value = int(value)
