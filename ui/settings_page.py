"""Page: the settings — every field of ``app.settings.Settings``, checked by the same
``parse_value`` the command line uses, with any error shown next to its field."""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.paths import HOME_ENV
from app.policy import SET_BY
from app.services import Services
from app.settings import CHOICES, Settings, parse_value
from app.types import EnclaveError
from ui.tasks import TaskRunner
from ui.theme import error_color

LABELS = {
    "default_model": "Default model",
    "context_length": "Context length (tokens)",
    "threads": "CPU threads (empty: all cores)",
    "temperature": "Temperature",
    "top_k": "Top-k",
    "top_p": "Top-p",
    "min_p": "Min-p",
    "repeat_penalty": "Repeat penalty",
    "max_tokens": "Longest reply (tokens)",
    "system_prompt": "System prompt",
    "show_reasoning": "Show a reasoning model's thinking",
    "max_document_mb": "Largest document read (MB)",
    "kv_cache_max_gb": "Saved prompt caches, at most (GB)",
    "offline": "Offline: never go online, not even for downloads",
    "library_attention": "How a library is read",
}
# The words for a setting's choices (app.settings.CHOICES)
CHOICE_LABELS = {
    "isolated": "Document by document: a change costs only that document",
    "joint": "All documents in one pass: documents see each other",
}
Editor = QLineEdit | QCheckBox | QComboBox | QPlainTextEdit


def _number_text(value: object) -> str:
    """20.0 shows as 20; every other value exactly as Python writes it (it round-trips)."""
    if value is None:
        return ""
    text = repr(value) if isinstance(value, float) else str(value)
    return text[:-2] if text.endswith(".0") else text


def encryption_text(on: bool) -> str:
    """Read-only: changing it rewrites the database, which needs Enclave closed."""
    if on:
        return "On (SQLCipher; key in the system keyring). Turn off with 'enclave database decrypt'."
    return "Off. Turn on with 'enclave database encrypt' while Enclave is closed."


class SettingsPage(QWidget):
    settingsChanged = Signal()

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.editors: dict[str, Editor] = {}
        self.errors: dict[str, QLabel] = {}
        self.managed_notes: dict[str, QLabel] = {}
        self._loaded: Settings = Settings()

        body = QWidget()
        body.setMaximumWidth(900)
        column = QVBoxLayout(body)
        form = QFormLayout()
        column.addLayout(form)
        column.addStretch(1)  # the fields stay at the top however tall the window
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        heading = QLabel("<h2>Settings</h2>")
        form.addRow(heading)

        self.data_label = QLabel()
        self.data_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.data_label.setWordWrap(True)
        open_button = QPushButton("Open data folder")
        open_button.clicked.connect(self.open_data_folder)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_label, 1)
        data_row.addWidget(open_button)
        form.addRow("Data folder", data_row)
        self.encryption_label = QLabel(encryption_text(services.store.encrypted))
        self.encryption_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Database encryption", self.encryption_label)

        for f in fields(Settings):
            editor = self._editor_for(f.name, str(f.type))
            error = QLabel()
            error.setStyleSheet(f"color: {error_color()};")
            error.setWordWrap(True)
            error.hide()
            cell = QVBoxLayout()
            cell.setSpacing(2)
            cell.addWidget(editor)
            cell.addWidget(error)
            self.managed_notes[f.name] = QLabel(SET_BY)
            self.managed_notes[f.name].hide()
            cell.addWidget(self.managed_notes[f.name])
            if isinstance(editor, QCheckBox):
                form.addRow("", cell)
            else:
                form.addRow(LABELS.get(f.name, f.name), cell)
            self.editors[f.name] = editor
            self.errors[f.name] = error

        self.save_button = QPushButton("Save")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.save)
        self.revert_button = QPushButton("Revert")
        self.revert_button.clicked.connect(self.refresh)
        self.status = QLabel()
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.status, 1)
        form.addRow(buttons)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        QVBoxLayout(self).addWidget(scroll)
        self.refresh()

    def _editor_for(self, name: str, kind: str) -> Editor:
        if name == "default_model":
            return QComboBox()
        if name in CHOICES:
            combo = QComboBox()
            for choice in CHOICES[name]:
                combo.addItem(CHOICE_LABELS.get(choice, choice), choice)
            return combo
        if name == "system_prompt":
            editor = QPlainTextEdit()
            editor.setPlaceholderText("Instructions given to the model before every conversation")
            editor.setFixedHeight(90)
            return editor
        if kind.startswith("bool"):
            return QCheckBox(LABELS.get(name, name))
        return QLineEdit()

    # Showing -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Show what is saved now (and the registered models)."""
        self._loaded = self.services.settings.load()
        home = os.environ.get(HOME_ENV)
        where = str(self.services.paths.data)
        self.data_label.setText(f"{where}\n(ENCLAVE_HOME is set: {home})" if home else where)
        if self.services.policy.data_dir is not None:
            self.data_label.setText(f"{where}\n({SET_BY})")
        for name, editor in self.editors.items():
            self._show(name, editor, getattr(self._loaded, name))
            self.errors[name].hide()
        self._show_managed()
        self.status.clear()

    def _show_managed(self) -> None:
        """What the organisation's policy decides: shown with its value, greyed out, never saved from here."""
        for name, value in self.services.policy.managed_settings().items():
            self._show(name, self.editors[name], value)
            self.editors[name].setEnabled(False)
            self.editors[name].setToolTip(SET_BY)
            self.managed_notes[name].show()

    def _show(self, name: str, editor: Editor, value: Any) -> None:
        if isinstance(editor, QComboBox) and name in CHOICES:
            editor.setCurrentIndex(max(editor.findData(value), 0))
        elif isinstance(editor, QComboBox):
            editor.clear()
            editor.addItem("(none: choose per conversation)", None)
            for model in self.services.models.all():
                editor.addItem(f"{model.name}  ({model.id})", model.id)
            index = editor.findData(value)
            if index < 0 and value:  # a model that is no longer registered, or a path
                editor.addItem(str(value), value)
                index = editor.count() - 1
            editor.setCurrentIndex(max(index, 0))
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QPlainTextEdit):
            editor.setPlainText(value or "")
        else:
            editor.setText(_number_text(value))

    @staticmethod
    def _text_of(editor: Editor) -> str:
        if isinstance(editor, QComboBox):
            return editor.currentData() or ""
        if isinstance(editor, QCheckBox):
            return "true" if editor.isChecked() else "false"
        if isinstance(editor, QPlainTextEdit):
            return editor.toPlainText()
        return editor.text().strip()

    # Saving --------------------------------------------------------------------------

    def changes(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(valid changed values, errors by field) from what the editors show."""
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        managed = self.services.policy.managed_settings()
        for name, editor in self.editors.items():
            if name in managed:
                continue
            try:
                value = parse_value(name, self._text_of(editor))
            except EnclaveError as exc:
                errors[name] = str(exc)
                continue
            if value != getattr(self._loaded, name):
                values[name] = value
        return values, errors

    def save(self) -> None:
        """Nothing is saved while any field is invalid, so settings never end up half-applied."""
        values, errors = self.changes()
        for name, label in self.errors.items():
            label.setText(errors.get(name, ""))
            label.setVisible(name in errors)
        if errors:
            self.status.setText("Fix the fields marked in red; nothing was saved.")
            return
        if not values:
            self.status.setText("No changes.")
            return

        def write() -> None:
            for key, value in values.items():
                self.services.settings.set(key, value)

        def saved(_result: object) -> None:
            self.refresh()
            self.status.setText("Saved.")
            self.settingsChanged.emit()

        self.tasks.run(write, on_result=saved, on_error=self.status.setText)

    def open_data_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.services.paths.data)))
