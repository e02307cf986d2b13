"""The left column: the way to the pages (Chat, Libraries, Models, Settings), "New chat",
and the conversations (lazy, searchable, titles elided, an empty state that says what to do).

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
    QEvent,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QSize,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.services import Services
from ui import theme
from ui.navigation import NavButton
from ui.tasks import TaskRunner
from ui.theme import SPACE

PAGE_SIZE = 100
SEARCH_DEBOUNCE_MS = 200
UNTITLED = "New chat"
ConversationIdRole = Qt.ItemDataRole.UserRole + 1
MIN_WIDTH = 210  # the sidebar never gets narrower (titles are elided instead)
PREFERRED_WIDTH = 250
MAX_WIDTH = 480
HOVER_ALPHA = 22  # of 255: the shade of the text colour under the pointer
# (page, label, icon, tooltip): the places the sidebar leads to
NAVIGATION = (
    ("chat", "Chat", "chat", "The conversation you are in"),
    ("libraries", "Libraries", "libraries", "Your documents, to ask questions about"),
    ("models", "Models", "models", "Import, download and configure models"),
    ("settings", "Settings", "settings", "Defaults for every chat, and where Enclave keeps its data"),
)
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


class TitleDelegate(QStyledItemDelegate):
    """Rows as wide as the list, whatever the title: the view elides a long one (its full
    text is the tooltip), so no title widens the sidebar or adds a horizontal scroll bar."""

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        height = max(super().sizeHint(option, index).height(), option.fontMetrics.height())
        return QSize(1, height + 2 * SPACE.S)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        """A faint shade under the pointer (Fusion draws none in item views)."""
        if option.state & QStyle.StateFlag.State_MouseOver and not option.state & QStyle.StateFlag.State_Selected:
            shade = QColor(option.palette.color(QPalette.ColorRole.Text))
            shade.setAlpha(HOVER_ALPHA)
            painter.fillRect(option.rect, shade)
        super().paint(painter, option, index)


class Sidebar(QWidget):
    """Emits what the user wants; the window decides what it means for the pages."""

    newChatRequested = Signal()
    conversationActivated = Signal(int)
    conversationDeleted = Signal(int)
    conversationsChanged = Signal()  # renamed here: the chat may show the title
    pageRequested = Signal(str)  # "chat", "libraries", "models" or "settings"
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
        self.search_box.setPlaceholderText("Search (Ctrl+F)")
        self.search_box.setToolTip("Search the titles and messages of your conversations (Ctrl+F)")
        self.search_box.setClearButtonEnabled(True)
        self.search_icon = self.search_box.addAction(QIcon(), QLineEdit.ActionPosition.LeadingPosition)
        self._debounce = QTimer(self, singleShot=True, interval=SEARCH_DEBOUNCE_MS)
        self._debounce.timeout.connect(self.run_search)
        self.search_box.textChanged.connect(lambda _text: self._debounce.start())

        self.model = ConversationListModel(services, self)
        self.model.renameRequested.connect(self.rename_conversation)
        self.list = QListView()
        self.list.setModel(self.model)
        self.list.setUniformItemSizes(True)  # lets Qt skip measuring every row of a long list
        self.list.setItemDelegate(TitleDelegate(self.list))
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setFrameShape(QFrame.Shape.NoFrame)
        self.list.viewport().setAttribute(Qt.WidgetAttribute.WA_Hover, True)  # for the hover shade
        self.list.setEditTriggers(QListView.EditTrigger.EditKeyPressed)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.list.activated.connect(self._activated)
        self.list.clicked.connect(self._activated)

        self.empty_label = QLabel()  # in the list's place when there is nothing to list
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.empty_label.setContentsMargins(SPACE.S, SPACE.L, SPACE.S, SPACE.S)
        self.empty_label.setFont(theme.font("small"))
        self.empty_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.conversations = QStackedWidget()
        self.conversations.addWidget(self.list)
        self.conversations.addWidget(self.empty_label)
        for signal in (self.model.modelReset, self.model.rowsInserted, self.model.rowsRemoved):
            signal.connect(self._show_empty_state)

        self.nav_buttons: dict[str, NavButton] = {
            key: NavButton(label, icon_name, tooltip) for key, label, icon_name, tooltip in NAVIGATION}
        for key, button in self.nav_buttons.items():
            button.clicked.connect(lambda _checked=False, k=key: self.pageRequested.emit(k))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(SPACE.S, SPACE.S, SPACE.XS, SPACE.S)
        layout.setSpacing(SPACE.XS)
        for button in self.nav_buttons.values():
            layout.addWidget(button)
        layout.addSpacing(SPACE.S)
        layout.addWidget(self.new_chat_button)
        layout.addWidget(self.search_box)
        layout.addWidget(self.conversations, 1)
        self.setMinimumWidth(MIN_WIDTH)
        self.setMaximumWidth(MAX_WIDTH)
        self._tint_icons()
        self.model.reload()

    def _tint_icons(self) -> None:
        self.new_chat_button.setIcon(theme.icon("new-chat", size=16))
        self.search_icon.setIcon(theme.icon("search", size=16))

    def changeEvent(self, event: QEvent) -> None:
        """Icons are drawn in the text colour: again when the scheme changes. The navigation
        buttons are told from here: a widget with a style sheet hears of no palette change."""
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._tint_icons()
            for button in self.nav_buttons.values():
                button.restyle()

    def sizeHint(self) -> QSize:
        """The width the window starts with; never the titles' width (they are elided)."""
        return QSize(PREFERRED_WIDTH, super().sizeHint().height())

    # Navigation state ----------------------------------------------------------------

    def mark_page(self, key: str | None) -> None:
        """Check the button of the page on show (none for the start screen)."""
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

    def empty_text(self) -> str:
        """What the list says when it has no rows: why, and what to do."""
        if self.model.searching:
            return f"No conversations match “{self.search_box.text().strip()}”."
        return "No conversations yet — press New chat or Ctrl+N."

    def _show_empty_state(self) -> None:
        empty = self.model.rowCount() == 0
        self.empty_label.setText(self.empty_text() if empty else "")
        self.conversations.setCurrentWidget(self.empty_label if empty else self.list)

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
