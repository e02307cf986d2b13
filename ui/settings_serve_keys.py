"""The API keys of "Serve on this network": a list (name, created, last used, state), Create —
the secret shown once, with Copy — and Revoke after a confirmation. The same keys as
``enclave keys``; the secret is never stored, so once the box is closed it is gone."""

from __future__ import annotations

from datetime import datetime

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.api_keys import ApiKey, ApiKeyRepository
from app.services import Services
from ui.tasks import TaskRunner
from ui.theme import SPACE, colors, error_color, font, icon
from ui.widgets import list_table

COLUMNS = ["Name", "Created", "Last used", "State"]
TABLE_ROWS_SHOWN = 4  # the table's height: a few keys in sight, more scroll


def when(stamp: str | None) -> str:
    """An audit stamp (ISO 8601, UTC) in this computer's time, to the minute."""
    if not stamp:
        return "never"
    return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")


class ServeKeys(QWidget):
    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.repository = ApiKeyRepository(services.store)
        self.tasks = tasks
        self.table = list_table(COLUMNS, 0)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        row_height = self.table.verticalHeader().defaultSectionSize()
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height()
                                  + TABLE_ROWS_SHOWN * row_height + 2 * self.table.frameWidth())

        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("Name of the new key, e.g. editor-alice")
        self.name_edit.setToolTip("Who or what uses the key: it names the key in lists and the audit log.")
        self.name_edit.returnPressed.connect(self.create)
        self.create_button = QPushButton("Create key")
        self.create_button.setToolTip("Make a new key. Its secret is shown once: copy it then.")
        self.create_button.clicked.connect(self.create)
        self.revoke_button = QPushButton(icon("trash"), "Revoke…")
        self.revoke_button.setToolTip("Revoke the selected key: from then on it opens nothing.")
        self.revoke_button.clicked.connect(self.revoke_selected)
        self.revoke_button.setEnabled(False)
        actions = QHBoxLayout()
        actions.setSpacing(SPACE.S)
        actions.addWidget(self.name_edit, 1)
        actions.addWidget(self.create_button)
        actions.addWidget(self.revoke_button)

        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet(f"color: {error_color()};")
        self.error.hide()

        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(SPACE.S)
        column.addWidget(self.table)
        column.addLayout(actions)
        column.addWidget(self.error)
        column.addWidget(self._secret_box())
        self.refresh()

    def _secret_box(self) -> QWidget:
        self.secret_box = QWidget()
        self.secret_box.setObjectName("secretBox")
        self.secret_box.setStyleSheet(f"#secretBox {{ border: 1px solid {colors().accent}; border-radius: 6px; }}")
        self.secret_note = QLabel()
        self.secret_note.setWordWrap(True)
        self.secret_edit = QLineEdit()
        self.secret_edit.setReadOnly(True)
        self.secret_edit.setFont(font("body"))
        self.copy_secret_button = QPushButton(icon("copy"), "Copy")
        self.copy_secret_button.setToolTip("Copy the key to the clipboard.")
        self.copy_secret_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.secret_edit.text()))
        done = QPushButton("Done")
        done.setToolTip("Close this box: the key cannot be shown again.")
        done.clicked.connect(self.forget_secret)
        row = QHBoxLayout()
        row.addWidget(self.secret_edit, 1)
        row.addWidget(self.copy_secret_button)
        row.addWidget(done)
        box = QVBoxLayout(self.secret_box)
        box.setContentsMargins(SPACE.M, SPACE.M, SPACE.M, SPACE.M)
        box.setSpacing(SPACE.S)
        box.addWidget(self.secret_note)
        box.addLayout(row)
        self.secret_box.hide()
        return self.secret_box

    # Showing ------------------------------------------------------------------------------

    def refresh(self) -> None:
        keys = self.repository.list()
        self.table.setRowCount(len(keys))
        for row, key in enumerate(keys):
            cells = [key.name, when(key.created_at), when(key.last_used_at),
                     f"revoked {when(key.revoked_at)}" if key.revoked else "active"]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, key.name)
                if key.revoked:
                    item.setForeground(QColor(colors().muted))
                self.table.setItem(row, column, item)
        self._selection_changed()

    def names(self) -> list[str]:
        return [self.table.item(row, 0).text() for row in range(self.table.rowCount())]

    def _selected(self) -> ApiKey | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        name = self.table.item(rows[0].row(), 0).text()
        return next((key for key in self.repository.list() if key.name == name), None)

    def _selection_changed(self) -> None:
        key = self._selected()
        self.revoke_button.setEnabled(key is not None and not key.revoked)

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))

    # Create and revoke ---------------------------------------------------------------------

    def create(self) -> None:
        name = self.name_edit.text().strip()
        if not name:
            self._show_error("Give the new key a name first.")
            return
        self._show_error("")
        self.tasks.run(lambda: self.repository.create(name), on_result=self._created, on_error=self._show_error)

    def _created(self, made: tuple[ApiKey, str]) -> None:
        key, secret = made
        self.name_edit.clear()
        self.secret_note.setText(f"The key “{key.name}”. Copy it now: Enclave keeps only a fingerprint of it and "
                                 "cannot show it again. Programs send it as “Authorization: Bearer <key>”.")
        self.secret_edit.setText(secret)
        self.secret_box.show()
        self.refresh()

    def forget_secret(self) -> None:
        self.secret_edit.clear()
        self.secret_box.hide()

    def revoke_selected(self) -> None:
        key = self._selected()
        if key is None or key.revoked:
            return
        answer = QMessageBox.question(
            self, "Revoke the key?",
            f"Revoke the key “{key.name}”? Programs that use it are refused from now on. This cannot be undone; "
            "its name stays taken.")
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.tasks.run(lambda: self.repository.revoke(key.name), on_result=lambda _key: self.refresh(),
                       on_error=self._show_error)
