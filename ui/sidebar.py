"""The left column: "New chat", the conversations (lazy, searchable), and the way to the
other pages.

The list model holds conversation ids and their titles a page at a time: Qt asks for the
next page (``canFetchMore`` / ``fetchMore``) only when the view scrolls near the end, so
ten thousand conversations cost one page at start-up. Search replaces the rows with the
conversations that match (``conversations.search``, on a pool thread, debounced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtWidgets import (
    QInputDialog,
    QLineEdit,
    QListView,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.services import Services
from ui.tasks import TaskRunner

PAGE_SIZE = 100
SEARCH_DEBOUNCE_MS = 200
UNTITLED = "New chat"
ConversationIdRole = Qt.ItemDataRole.UserRole + 1
Index = QModelIndex | QPersistentModelIndex


@dataclass
class _Row:
    id: int
    title: str


class ConversationListModel(QAbstractListModel):
    """Conversations, newest first, fetched ``PAGE_SIZE`` at a time; or search results."""

    renameRequested = Signal(int, str)  # (conversation id, new title): an inline edit

    def __init__(self, services: Services, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self._rows: list[_Row] = []
        self._total = 0
        self.searching = False

    # Loading -------------------------------------------------------------------------

    def reload(self) -> None:
        """Back to the newest conversations (after a change, or when a search is cleared)."""
        self.beginResetModel()
        self.searching = False
        self._rows = []
        self._total = self.services.conversations.count()
        self.endResetModel()
        if self.canFetchMore(QModelIndex()):
            self.fetchMore(QModelIndex())

    def show_results(self, rows: list[tuple[int, str]]) -> None:
        self.beginResetModel()
        self.searching = True
        self._rows = [_Row(i, t) for i, t in rows]
        self._total = len(rows)
        self.endResetModel()

    def canFetchMore(self, parent: Index) -> bool:
        return not parent.isValid() and not self.searching and len(self._rows) < self._total

    def fetchMore(self, parent: Index) -> None:
        if parent.isValid() or self.searching:
            return
        page = self.services.conversations.recent(PAGE_SIZE, len(self._rows))
        known = {r.id for r in self._rows}  # a conversation that moved up since the last page
        page = [c for c in page if c.id not in known]
        if not page:
            self._total = len(self._rows)
            return
        self.beginInsertRows(QModelIndex(), len(self._rows), len(self._rows) + len(page) - 1)
        self._rows.extend(_Row(c.id, c.title) for c in page)
        self.endInsertRows()

    # Qt's model interface ------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return row.title or UNTITLED
        if role == Qt.ItemDataRole.EditRole:
            return row.title
        if role == Qt.ItemDataRole.ToolTipRole:
            return row.title or None
        if role == ConversationIdRole:
            return row.id
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsEditable if index.isValid() else base

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid():
            return False
        title = str(value).strip()
        row = self._rows[index.row()]
        if not title or title == row.title:
            return False
        row.title = title
        self.dataChanged.emit(index, index)
        self.renameRequested.emit(row.id, title)
        return True

    # Helpers -------------------------------------------------------------------------

    def id_at(self, row: int) -> int:
        return self._rows[row].id

    def ids(self) -> list[int]:
        return [r.id for r in self._rows]

    def titles(self) -> list[str]:
        return [r.title or UNTITLED for r in self._rows]

    def row_of(self, conversation_id: int) -> int | None:
        return next((i for i, r in enumerate(self._rows) if r.id == conversation_id), None)


class Sidebar(QWidget):
    """Emits what the user wants; the window decides what it means for the pages."""

    newChatRequested = Signal()
    conversationActivated = Signal(int)
    conversationDeleted = Signal(int)
    conversationsChanged = Signal()  # renamed here: the chat may show the title
    pageRequested = Signal(str)  # "libraries", "models" or "settings"
    errorOccurred = Signal(str)

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self._search_generation = 0

        self.new_chat_button = QPushButton("New chat")
        self.new_chat_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_chat_button.clicked.connect(self.newChatRequested)

        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Search conversations (Ctrl+F)")
        self.search_box.setClearButtonEnabled(True)
        self._debounce = QTimer(self, singleShot=True, interval=SEARCH_DEBOUNCE_MS)
        self._debounce.timeout.connect(self.run_search)
        self.search_box.textChanged.connect(lambda _text: self._debounce.start())

        self.model = ConversationListModel(services, self)
        self.model.renameRequested.connect(self.rename_conversation)
        self.list = QListView()
        self.list.setModel(self.model)
        self.list.setUniformItemSizes(True)  # lets Qt skip measuring every row of a long list
        self.list.setStyleSheet("QListView::item { padding: 5px 6px; }")
        self.list.setEditTriggers(QListView.EditTrigger.EditKeyPressed)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.list.activated.connect(self._activated)
        self.list.clicked.connect(self._activated)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 4, 8)
        layout.addWidget(self.new_chat_button)
        layout.addWidget(self.search_box)
        layout.addWidget(self.list, 1)
        self.nav_buttons: dict[str, QPushButton] = {}
        for key, label in (("libraries", "Libraries"), ("models", "Models"), ("settings", "Settings")):
            button = QPushButton(label)
            button.setFlat(True)
            button.setCheckable(True)
            button.setStyleSheet("text-align: left; padding: 6px 8px;")
            button.clicked.connect(lambda _checked=False, k=key: self.pageRequested.emit(k))
            layout.addWidget(button)
            self.nav_buttons[key] = button
        self.model.reload()

    # Navigation state ----------------------------------------------------------------

    def mark_page(self, key: str | None) -> None:
        """Check the button of the page on show (none for the chat)."""
        for name, button in self.nav_buttons.items():
            button.setChecked(name == key)

    def select_conversation(self, conversation_id: int | None) -> None:
        row = self.model.row_of(conversation_id) if conversation_id is not None else None
        if row is None:
            self.list.clearSelection()
        else:
            self.list.setCurrentIndex(self.model.index(row))

    def focus_search(self) -> None:
        self.search_box.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search_box.selectAll()

    # The list ------------------------------------------------------------------------

    def refresh(self) -> None:
        """After conversations changed: reload the list, or run the search again."""
        if self.search_box.text().strip():
            self.run_search()
        else:
            self.model.reload()

    def _activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self.conversationActivated.emit(self.model.id_at(index.row()))

    def run_search(self) -> None:
        self._debounce.stop()
        query = self.search_box.text().strip()
        self._search_generation += 1
        if not query:
            self.model.reload()
            return
        generation = self._search_generation

        def found(hits: list[Any]) -> None:
            if generation != self._search_generation:
                return  # the user typed on; a newer search is on its way
            seen: dict[int, str] = {}
            for hit in hits:
                seen.setdefault(hit.conversation_id, hit.conversation_title)
            self.model.show_results(list(seen.items()))

        self.tasks.run(lambda: self.services.conversations.search(query), on_result=found,
                       on_error=self.errorOccurred.emit)

    # Rename and delete ---------------------------------------------------------------

    def _context_menu(self, pos: QPoint) -> None:
        index = self.list.indexAt(pos)
        if not index.isValid():
            return
        conversation_id = self.model.id_at(index.row())
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self.ask_rename(conversation_id))
        menu.addAction("Delete…", lambda: self.ask_delete(conversation_id))
        menu.exec(self.list.viewport().mapToGlobal(pos))

    def ask_rename(self, conversation_id: int) -> None:
        row = self.model.row_of(conversation_id)
        current = self.model.data(self.model.index(row), Qt.ItemDataRole.EditRole) if row is not None else ""
        title, ok = QInputDialog.getText(self, "Rename conversation", "Title:", QLineEdit.EchoMode.Normal, current)
        if ok and title.strip():
            self.rename_conversation(conversation_id, title)

    def ask_delete(self, conversation_id: int) -> None:
        row = self.model.row_of(conversation_id)
        title = self.model.titles()[row] if row is not None else "this conversation"
        answer = QMessageBox.question(
            self, "Delete conversation", f"Delete “{title}” and all its messages? This cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_conversation(conversation_id)

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        def done(_result: object) -> None:
            self.refresh()
            self.conversationsChanged.emit()

        self.tasks.run(lambda: self.services.conversations.rename(conversation_id, title), on_result=done,
                       on_error=self._failed)

    def delete_conversation(self, conversation_id: int) -> None:
        def done(_result: object) -> None:
            self.refresh()
            self.conversationDeleted.emit(conversation_id)

        self.tasks.run(lambda: self.services.conversations.delete(conversation_id), on_result=done,
                       on_error=self._failed)

    def _failed(self, message: str) -> None:
        self.refresh()  # an inline edit already showed the new title
        self.errorOccurred.emit(message)
