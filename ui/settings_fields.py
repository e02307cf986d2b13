"""The settings page's controls: one per field of ``app.settings.Settings``, each the kind
its value needs (spin box with its range and unit, slider for a 0–1 or 0–5 dial, check
box, choice list, text), grouped under a heading, with a tooltip in plain words.

A control shows and gives back the setting's own value (MiB for ``max_document_mb``, GiB
for ``kv_cache_max_gb``, None for "all cores"); ``text_of`` turns it into what
``app.settings.parse_value`` (the command line's check) reads, so both check alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QPlainTextEdit,
    QSlider,
    QSpinBox,
    QWidget,
)

from app.settings import CHOICES, DESCRIPTIONS, RANGES, UNITS, range_text

ALL_CORES = "All cores"
TOP_K_OFF = "Off"


@dataclass(frozen=True)
class Group:
    title: str
    about: str  # one muted line under the heading
    fields: tuple[str, ...]


GROUPS = (
    Group("Model defaults", "What a new conversation starts with. A model's own profile (Models page) can override "
          "these.", ("default_model", "context_length", "max_tokens", "threads", "system_prompt", "show_reasoning",
                     "drafting")),
    Group("Sampling", "How the next word is chosen. The defaults suit most models; change one thing at a time.",
          ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")),
    Group("Libraries", "How documents are read and kept for questions about a library.",
          ("library_attention", "max_document_mb", "kv_cache_max_gb")),
    Group("Storage & privacy", "Where your data lives and whether Enclave may go online.", ("offline",)),
)

LABELS = {
    "default_model": "Default model",
    "context_length": "Context length",
    "threads": "CPU threads",
    "temperature": "Temperature",
    "top_k": "Top-k",
    "top_p": "Top-p",
    "min_p": "Min-p",
    "repeat_penalty": "Repeat penalty",
    "max_tokens": "Longest reply",
    "system_prompt": "System prompt",
    "show_reasoning": "Show a reasoning model's thinking",
    "drafting": "Faster replies by drafting (same words)",
    "max_document_mb": "Largest document read",
    "kv_cache_max_gb": "Saved library prompts, at most",
    "offline": "Offline: never go online, not even for downloads",
    "library_attention": "How a library is read",
}
# The words for a setting's choices (app.settings.CHOICES)
CHOICE_LABELS = {
    "isolated": "Document by document (a change re-reads only that document)",
    "joint": "All documents in one pass (documents see each other)",
}
# (step, decimals) of the number settings that are not whole numbers
STEPS = {"temperature": (0.05, 2), "top_p": (0.01, 2), "min_p": (0.01, 2), "repeat_penalty": (0.05, 2),
         "kv_cache_max_gb": (1.0, 1)}
SLIDERS = ("temperature", "top_p", "min_p")
SLIDER_SCALE = 100  # slider positions per unit: 0.01 steps


class SliderSpin(QWidget):
    """A slider and a spin box showing the same number: drag for a feel, type for exactness."""

    def __init__(self, low: float, high: float, step: float, decimals: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(low * SLIDER_SCALE), round(high * SLIDER_SCALE))
        self.slider.setSingleStep(round(step * SLIDER_SCALE))
        self.slider.setPageStep(round(step * SLIDER_SCALE * 5))
        self.slider.setMinimumWidth(160)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(low, high)
        self.spin.setSingleStep(step)
        self.spin.setDecimals(decimals)
        self.spin.setMinimumWidth(90)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        self.slider.valueChanged.connect(lambda n: self.spin.setValue(n / SLIDER_SCALE))
        self.spin.valueChanged.connect(lambda v: self._move_slider(v))

    def _move_slider(self, value: float) -> None:
        self.slider.blockSignals(True)  # the spin box's finer value is not rounded by the slider
        self.slider.setValue(round(value * SLIDER_SCALE))
        self.slider.blockSignals(False)

    def value(self) -> float:
        return self.spin.value()

    def setValue(self, value: float) -> None:
        self.spin.setValue(value)

    def setToolTip(self, text: str) -> None:
        super().setToolTip(text)
        self.slider.setToolTip(text)
        self.spin.setToolTip(text)


Control = QSpinBox | QDoubleSpinBox | SliderSpin | QCheckBox | QComboBox | QPlainTextEdit


def tooltip_for(name: str) -> str:
    """The plain-words help, with the accepted range for a number."""
    text = DESCRIPTIONS.get(name, LABELS.get(name, name))
    return f"{text}\nAllowed: {range_text(name)}." if name in RANGES else text


def make_control(name: str, kind: str) -> Control:
    control = _make(name, kind)
    control.setToolTip(tooltip_for(name))
    return control


def _make(name: str, kind: str) -> Control:
    if name == "default_model":
        return QComboBox()  # filled with the registered models by the page
    if name in CHOICES:
        combo = QComboBox()
        for choice in CHOICES[name]:
            combo.addItem(CHOICE_LABELS.get(choice, choice), choice)
        return combo
    if name == "system_prompt":
        editor = QPlainTextEdit()
        editor.setPlaceholderText("Instructions given to the model before every conversation, e.g. "
                                  "“Answer briefly, in British English.”")
        editor.setFixedHeight(90)
        return editor
    if kind.startswith("bool"):
        return QCheckBox(LABELS.get(name, name))
    low, high = RANGES[name]
    if name in SLIDERS:
        step, decimals = STEPS[name]
        return SliderSpin(low, high, step, decimals)
    if name in STEPS:
        step, decimals = STEPS[name]
        box: QSpinBox | QDoubleSpinBox = QDoubleSpinBox()
        box.setDecimals(decimals)
        box.setSingleStep(step)
        box.setRange(low, high)
    else:
        box = QSpinBox()
        box.setRange(int(low) - (1 if "None" in kind else 0), int(high))  # one under: "all cores" (None)
        box.setGroupSeparatorShown(True)
        box.setSingleStep(1024 if name in ("context_length", "max_tokens") else 1)
    if name in UNITS:
        box.setSuffix(f" {UNITS[name]}")
    if name == "threads":
        box.setSpecialValueText(ALL_CORES)
    if name == "top_k":
        box.setSpecialValueText(TOP_K_OFF)
    box.setCorrectionMode(QAbstractSpinBox.CorrectionMode.CorrectToNearestValue)
    box.setMinimumWidth(180)
    return box


def show_value(control: Control, value: Any) -> None:
    """Show a setting's value (the default-model list is the page's: it knows the models)."""
    if isinstance(control, QComboBox):
        control.setCurrentIndex(max(control.findData(value), 0))
    elif isinstance(control, QCheckBox):
        control.setChecked(bool(value))
    elif isinstance(control, QPlainTextEdit):
        control.setPlainText(value or "")
    elif isinstance(control, QSpinBox) and value is None:
        control.setValue(control.minimum())  # "all cores"
    else:
        control.setValue(value)


def text_of(name: str, control: Control) -> str:
    """The control's value as ``parse_value`` reads it (from the command line)."""
    if isinstance(control, QComboBox):
        return control.currentData() or ""
    if isinstance(control, QCheckBox):
        return "true" if control.isChecked() else "false"
    if isinstance(control, QPlainTextEdit):
        return control.toPlainText()
    if isinstance(control, QSpinBox):
        if control.specialValueText() == ALL_CORES and control.value() == control.minimum():
            return ""
        return str(control.value())
    return repr(round(control.value(), 6))


def typed_problem(name: str, control: Control) -> str | None:
    """A number typed but not accepted yet (out of range, half-typed), in plain words; else None."""
    box = control.spin if isinstance(control, SliderSpin) else control
    if not isinstance(box, QAbstractSpinBox) or box.hasAcceptableInput():
        return None
    what = "a whole number" if isinstance(box, QSpinBox) else "a number"
    return f"{LABELS.get(name, name)} must be {what} {range_text(name)}; “{box.cleanText().strip()}” is not."
