"""The rest of a model's profile, under its memory plan: how it answers (sampling, system
prompt, chat format) and the CPU threads it uses. Empty or "default" fields follow the
settings; "Save" writes the profile that chat, library questions and ``enclave run`` use.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.profiles import ModelProfile
from app.services import Services
from app.settings import DESCRIPTIONS
from app.types import EnclaveError
from ui.theme import error_color

DEFAULT = "default"


def _double(low: float, high: float, step: float) -> QDoubleSpinBox:
    """A spin box whose lowest value (one step under ``low``) reads "default": not set."""
    box = QDoubleSpinBox()
    box.setDecimals(2)
    box.setRange(low - step, high)
    box.setSingleStep(step)
    box.setSpecialValueText(DEFAULT)
    return box


def _whole(high: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(0, high)
    box.setSpecialValueText(DEFAULT)
    return box


class ProfileForm(QGroupBox):
    def __init__(self, services: Services, parent: QWidget | None = None) -> None:
        super().__init__("How it answers", parent)
        self.services = services
        self.model_id: str | None = None
        self.temperature = _double(0.0, 5.0, 0.05)
        self.top_p = _double(0.0, 1.0, 0.05)
        self.max_tokens = _whole(10_485_760)
        self.threads = _whole(1024)
        self.chat_format = QComboBox()
        self.chat_format.addItem("The model's own template", None)
        for name in services.chat_formats():
            self.chat_format.addItem(name, name)
        self.chat_format.setToolTip("For a model whose file has no chat template, or the wrong one.")
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("Empty: the system prompt in the settings.")
        self.system_prompt.setFixedHeight(64)
        self.save_button = QPushButton("Save profile")
        self.status = QLabel()
        self.status.setWordWrap(True)
        for box in (self.temperature, self.top_p, self.max_tokens, self.threads):
            box.setMinimumWidth(140)
        for name, widget in (("temperature", self.temperature), ("top_p", self.top_p),
                             ("max_tokens", self.max_tokens), ("threads", self.threads),
                             ("system_prompt", self.system_prompt)):
            widget.setToolTip(f"{DESCRIPTIONS[name]}\n“default”: the value in Settings.")
        self.system_prompt.setMinimumWidth(360)
        self.system_prompt.setMaximumWidth(720)
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)  # no 1,500 px spin boxes
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Longest reply (tokens)", self.max_tokens)
        form.addRow("CPU threads", self.threads)
        form.addRow("Chat format", self.chat_format)
        form.addRow("System prompt", self.system_prompt)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.status, 1)
        form.addRow(row)
        self.save_button.clicked.connect(self.save)
        self.set_model(None)

    def set_model(self, model_id: str | None) -> None:
        self.model_id = model_id
        self.status.clear()
        try:
            profile = self.services.profile(model_id) if model_id is not None else ModelProfile()
        except EnclaveError:  # no longer registered: nothing to edit (the plan view says why)
            self.model_id, profile = None, ModelProfile()
        self.setEnabled(self.model_id is not None)
        self.temperature.setValue(self.temperature.minimum() if profile.temperature is None else profile.temperature)
        self.top_p.setValue(self.top_p.minimum() if profile.top_p is None else profile.top_p)
        self.max_tokens.setValue(profile.max_tokens or 0)
        self.threads.setValue(profile.threads or 0)
        index = self.chat_format.findData(profile.chat_format)
        self.chat_format.setCurrentIndex(max(index, 0))
        self.system_prompt.setPlainText(profile.system_prompt or "")

    def values(self) -> dict[str, Any]:
        """The profile fields this form sets; None where it shows "default"."""

        def unless_default(box: QDoubleSpinBox) -> float | None:
            return None if box.value() == box.minimum() else round(box.value(), 2)

        return {
            "temperature": unless_default(self.temperature),
            "top_p": unless_default(self.top_p),
            "max_tokens": self.max_tokens.value() or None,
            "threads": self.threads.value() or None,
            "chat_format": self.chat_format.currentData(),
            "system_prompt": self.system_prompt.toPlainText().strip() or None,
        }

    def save(self) -> None:
        if self.model_id is None:
            return
        try:
            self.services.configure_model(self.model_id, **self.values())
        except EnclaveError as exc:
            self.status.setStyleSheet(f"color: {error_color()};")
            self.status.setText(str(exc))
            return
        self.status.setStyleSheet("")
        self.status.setText("Saved. The next reply uses it; a new system prompt applies to chats started from now on.")
