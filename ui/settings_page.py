"""Page: the settings — every field of ``app.settings.Settings`` as the control its value
needs (``settings_fields``), grouped under headings, checked by the same ``parse_value``
the command line uses, with any error shown in plain words under its control.

A number typed out of range is corrected by its spin box when it loses focus; before
that happens the page notes what was typed, so Save says so instead of silently saving
the corrected value.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.paths import HOME_ENV
from app.policy import SET_BY
from app.services import Services
from app.settings import Settings, parse_value
from app.types import EnclaveError
from ui.settings_fields import GROUPS, LABELS, Control, SliderSpin, make_control, show_value, text_of, typed_problem
from ui.settings_serve import ServeSection
from ui.tasks import TaskRunner
from ui.theme import SPACE, colors, error_color, font, icon
from ui.widgets import left_aligned

NO_DEFAULT_MODEL = "(none: choose per conversation)"


def encryption_text(on: bool) -> str:
    """Read-only: changing it rewrites the database, which needs Enclave closed."""
    if on:
        return "On (SQLCipher; key in the system keyring). Turn off with 'enclave database decrypt'."
    return "Off. Turn on with 'enclave database encrypt' while Enclave is closed."


def muted(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setFont(font("small"))
    label.setStyleSheet(f"color: {colors().muted};")
    return label


class SettingsPage(QWidget):
    settingsChanged = Signal()

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.editors: dict[str, Control] = {}
        self.errors: dict[str, QLabel] = {}
        self.managed_notes: dict[str, QLabel] = {}
        self.typed_errors: dict[str, str] = {}  # numbers typed out of range, noted before the spin box corrects them
        self._spin_boxes: dict[QObject, str] = {}
        self._loaded: Settings = Settings()
        kinds = {f.name: str(f.type) for f in fields(Settings)}

        body = QWidget()
        body.setMaximumWidth(880)
        column = QVBoxLayout(body)
        column.setContentsMargins(SPACE.XL, SPACE.XL, SPACE.XL, SPACE.XL)
        column.setSpacing(SPACE.S)
        title = QLabel("Settings")
        title.setFont(font("title"))
        column.addWidget(title)
        column.addWidget(muted("Hover over a setting to learn what it does. Changes apply when you press Save."))
        form = QFormLayout()  # one form for every section: the labels line up down the page
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        form.setHorizontalSpacing(SPACE.L)
        form.setVerticalSpacing(SPACE.M)
        column.addLayout(form)
        for group in GROUPS:
            self._section(form, group.title, group.about)
            for name in group.fields:
                self._add_row(form, name, kinds[name])
            if group.title == "Storage & privacy":
                self._add_storage_rows(form)
        self.serve = ServeSection(services, tasks, self)  # its own values: saved when it starts serving
        self.serve.add_rows(form, self._section)
        column.addStretch(1)  # the fields stay at the top however tall the window

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        page = QVBoxLayout(self)
        page.setContentsMargins(0, 0, 0, 0)
        page.setSpacing(0)
        page.addWidget(scroll, 1)
        page.addWidget(self._button_bar())  # Save stays in sight however far the page is scrolled
        self.refresh()

    # Layout ---------------------------------------------------------------------------

    @staticmethod
    def _section(form: QFormLayout, title: str, about: str) -> None:
        heading = QLabel(title)
        heading.setFont(font("heading"))
        heading.setContentsMargins(0, SPACE.L, 0, 0)
        form.addRow(heading)
        form.addRow(muted(about))

    def _add_row(self, form: QFormLayout, name: str, kind: str) -> None:
        editor = make_control(name, kind)
        error = QLabel()
        error.setStyleSheet(f"color: {error_color()};")
        error.setWordWrap(True)
        error.hide()
        note = muted(SET_BY)
        note.hide()
        cell = QVBoxLayout()
        cell.setSpacing(SPACE.XS)
        cell.addWidget(editor if not self._fixed_width(editor) else left_aligned(editor))
        cell.addWidget(error)
        cell.addWidget(note)
        if isinstance(editor, QCheckBox):
            form.addRow("", cell)
        else:
            label = QLabel(LABELS.get(name, name))
            label.setToolTip(editor.toolTip())
            label.setBuddy(editor)
            form.addRow(label, cell)
        self.editors[name] = editor
        self.errors[name] = error
        self.managed_notes[name] = note
        self._watch_typing(name, editor)

    @staticmethod
    def _fixed_width(editor: Control) -> bool:
        """Spin boxes keep their own width: a number needs no 700 px field."""
        return isinstance(editor, QAbstractSpinBox)

    def _add_storage_rows(self, form: QFormLayout) -> None:
        self.data_label = QLabel()
        self.data_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.data_label.setWordWrap(True)
        open_button = QPushButton(icon("folder"), "Open data folder")
        open_button.setToolTip("Show the folder with your conversations, libraries and models in the file manager.")
        open_button.clicked.connect(self.open_data_folder)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_label, 1)
        data_row.addWidget(open_button, 0, Qt.AlignmentFlag.AlignTop)
        form.addRow("Data folder", data_row)
        self.encryption_label = QLabel(encryption_text(self.services.store.encrypted))
        self.encryption_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.encryption_label.setWordWrap(True)
        self.encryption_label.setToolTip("Whether the database is encrypted on disk. It is changed from the "
                                         "command line, with Enclave closed.")
        form.addRow("Database encryption", self.encryption_label)

    def _button_bar(self) -> QWidget:
        self.save_button = QPushButton("Save")
        self.save_button.setDefault(True)
        self.save_button.setToolTip("Check and save every change on this page.")
        self.save_button.clicked.connect(self.save)
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Forget the changes and show what is saved.")
        self.revert_button.clicked.connect(self.refresh)
        self.status = QLabel()
        self.status.setWordWrap(True)
        bar = QFrame()
        bar.setFrameShape(QFrame.Shape.NoFrame)
        bar.setStyleSheet(f"QFrame {{ border-top: 1px solid {colors().border}; }} QLabel {{ border: none; }}")
        row = QHBoxLayout(bar)
        row.setContentsMargins(SPACE.XL, SPACE.M, SPACE.XL, SPACE.M)
        row.addWidget(self.save_button)
        row.addWidget(self.revert_button)
        row.addWidget(self.status, 1)
        return bar

    # Typed numbers --------------------------------------------------------------------

    def _watch_typing(self, name: str, editor: Control) -> None:
        box = editor.spin if isinstance(editor, SliderSpin) else editor
        if isinstance(box, QAbstractSpinBox):
            for target in (box, box.lineEdit()):
                self._spin_boxes[target] = name
                target.installEventFilter(self)
            box.lineEdit().textEdited.connect(lambda _text, name=name: self._typing(name))

    def _typing(self, name: str) -> None:
        self.typed_errors.pop(name, None)
        self.errors[name].hide()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Shown as a window of its own (not inside the main window, which stops it itself)."""
        self.serve.shutdown()
        super().closeEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Before a spin box corrects a number it does not accept, note what was typed."""
        if event.type() == QEvent.Type.FocusOut and watched in self._spin_boxes:
            name = self._spin_boxes[watched]
            problem = typed_problem(name, self.editors[name])
            if problem is not None:
                self.typed_errors[name] = problem
                self._show_errors({**self.typed_errors})
        return super().eventFilter(watched, event)

    # Showing -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Show what is saved now (and the registered models)."""
        self._loaded = self.services.settings.load()
        home = os.environ.get(HOME_ENV)
        where = str(self.services.paths.data)
        self.data_label.setText(f"{where}\n(ENCLAVE_HOME is set: {home})" if home else where)
        if self.services.policy.data_dir is not None:
            self.data_label.setText(f"{where}\n({SET_BY})")
        self._fill_models()
        for name, editor in self.editors.items():
            show_value(editor, getattr(self._loaded, name))
            self.errors[name].hide()
        self.typed_errors.clear()
        self._show_managed()
        self.status.clear()

    def _fill_models(self) -> None:
        combo = self.editors["default_model"]
        assert isinstance(combo, QComboBox)
        value = self._loaded.default_model
        combo.clear()
        combo.addItem(NO_DEFAULT_MODEL, None)
        for model in self.services.models.all():
            combo.addItem(model.name, model.id)
            combo.setItemData(combo.count() - 1, f"{model.name}\n{model.id}", Qt.ItemDataRole.ToolTipRole)
        if value and combo.findData(value) < 0:  # a model that is no longer registered, or a path
            combo.addItem(str(value), value)

    def _show_managed(self) -> None:
        """What the organisation's policy decides: shown with its value, greyed out, never saved from here."""
        for name, value in self.services.policy.managed_settings().items():
            show_value(self.editors[name], value)
            self.editors[name].setEnabled(False)
            self.editors[name].setToolTip(SET_BY)
            self.managed_notes[name].show()

    def _show_errors(self, errors: dict[str, str]) -> None:
        for name, label in self.errors.items():
            label.setText(errors.get(name, ""))
            label.setVisible(name in errors)

    # Saving --------------------------------------------------------------------------

    def changes(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(valid changed values, errors by field) from what the controls show."""
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        managed = self.services.policy.managed_settings()
        for name, editor in self.editors.items():
            if name in managed:
                continue
            problem = self.typed_errors.get(name) or typed_problem(name, editor)
            if problem is not None:
                errors[name] = problem
                continue
            try:
                value = parse_value(name, text_of(name, editor))
            except EnclaveError as exc:
                errors[name] = str(exc)
                continue
            if value != getattr(self._loaded, name):
                values[name] = value
        return values, errors

    def save(self) -> None:
        """Nothing is saved while any field is invalid, so settings never end up half-applied."""
        values, errors = self.changes()
        self._show_errors(errors)
        self.typed_errors.clear()  # said once: the corrected values are what Save takes next time
        if errors:
            self.status.setStyleSheet(f"color: {error_color()};")
            self.status.setText("Nothing was saved: fix the settings marked in red.")
            return
        self.status.setStyleSheet("")
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
