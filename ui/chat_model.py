"""The message list model: every id of a conversation, the messages themselves on demand.

A conversation can hold tens of thousands of messages; the model keeps only their ids
(one cheap query) and fetches messages a page at a time when a row is asked for, keeping a
small LRU cache. ``peek`` answers without fetching, which is what size hints use, so a
layout over 10,000 rows never touches the database.

A reply being generated lives in ``_live``: it starts empty and grows from the stream's
deltas (never from the database row, which is flushed only every 0.25 s), and is replaced
by the stored message when the reply finishes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt

from app.conversations import ConversationRepository, Message, NotFound

PAGE = 50
CACHE_SIZE = 400
Index = QModelIndex | QPersistentModelIndex


class MessageListModel(QAbstractListModel):
    MessageRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, conversations: ConversationRepository, *, page: int = PAGE, cache_size: int = CACHE_SIZE
                 ) -> None:
        super().__init__()
        self._repo = conversations
        self._page = page
        self._cache_size = max(cache_size, 2 * page)
        self.conversation_id: int | None = None
        self._ids: list[int] = []
        self._rows: dict[int, int] = {}
        self._cache: OrderedDict[int, Message] = OrderedDict()
        self._live: dict[int, Message] = {}
        self._revision: dict[int, int] = {}
        self._expanded: set[int] = set()  # reasoning unfolded
        self._sources_open: set[int] = set()  # every source listed, not only the cited ones
        self.queries = 0  # database round trips for messages (tests check the laziness)

    # Qt's interface ----------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._ids)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._ids):
            return None
        if role in (self.MessageRole, Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            message = self.message_at(index.row())
            return message if role == self.MessageRole else message.content
        return None

    # Reading -------------------------------------------------------------------------------

    def set_conversation(self, conversation_id: int | None) -> None:
        self.beginResetModel()
        self.conversation_id = conversation_id
        self._ids = self._repo.message_ids(conversation_id) if conversation_id is not None else []
        self._rows = {mid: row for row, mid in enumerate(self._ids)}
        self._cache.clear()
        self._live.clear()
        self._expanded.clear()
        self._sources_open.clear()
        if self._ids:
            self._fetch_around(len(self._ids) - 1)  # the newest page: what is shown first
        self.endResetModel()

    def sync(self) -> None:
        """Match the stored list of ids again (after a turn that deleted or failed)."""
        if self.conversation_id is None:
            return
        ids = self._repo.message_ids(self.conversation_id)
        if ids == self._ids:
            return
        self.beginResetModel()
        self._ids = ids
        self._rows = {mid: row for row, mid in enumerate(ids)}
        for gone in set(self._cache) - set(self._rows):
            del self._cache[gone]
        self._live = {k: v for k, v in self._live.items() if k in self._rows}
        self.endResetModel()

    def ids(self) -> list[int]:
        return list(self._ids)

    def cached_count(self) -> int:
        return len(self._cache) + len(self._live)

    def row_of(self, message_id: int) -> int | None:
        return self._rows.get(message_id)

    def peek(self, row: int) -> Message | None:
        """The message of ``row`` if it is at hand, without touching the database."""
        message_id = self._ids[row]
        return self._live.get(message_id) or self._cache.get(message_id)

    def message_at(self, row: int) -> Message:
        message_id = self._ids[row]
        if message_id in self._live:
            return self._live[message_id]
        if message_id not in self._cache:
            self._fetch_around(row)
        if message_id not in self._cache:  # deleted behind our back: fetch it alone, or stand in
            self.queries += 1
            try:
                self._remember(self._repo.message(message_id))
            except NotFound:
                self._remember(Message(message_id, self.conversation_id or 0, "assistant", "", status="error",
                                       error="This message was deleted."))
        self._cache.move_to_end(message_id)
        return self._cache[message_id]

    def _fetch_around(self, row: int) -> None:
        """One query for the page of messages that ends a little after ``row``."""
        end = min(len(self._ids), row + self._page // 2 + 1)
        before = self._ids[end] if end < len(self._ids) else None
        self.queries += 1
        assert self.conversation_id is not None
        for message in self._repo.messages(self.conversation_id, limit=self._page, before_id=before):
            self._remember(message)

    def _remember(self, message: Message) -> None:
        self._cache[message.id] = message
        self._cache.move_to_end(message.id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # Changes ---------------------------------------------------------------------------------

    def append(self, message: Message) -> int:
        """Add a message at the end (or refresh it if it is already there); its row."""
        row = self._rows.get(message.id)
        if row is not None:
            self.replace(message)
            return row
        row = len(self._ids)
        self.beginInsertRows(QModelIndex(), row, row)
        self._ids.append(message.id)
        self._rows[message.id] = row
        self._remember(message)
        self.endInsertRows()
        return row

    def replace(self, message: Message) -> None:
        """The stored version of a message (a reply that finished): drawn anew."""
        self._live.pop(message.id, None)
        self._remember(message)
        self._changed(message.id)

    def start_live(self, message: Message) -> None:
        """A reply begins: shown from the stream, starting empty. A reply already listed
        (the conversation was opened again mid-reply) starts from what was stored so far;
        the stored message replaces it when it finishes."""
        if message.id in self._rows:
            self._live[message.id] = replace(message, status="partial", stop_reason=None)
        else:
            self._live[message.id] = replace(message, content="", reasoning="", status="partial", stop_reason=None)
            self.append(message)
        self._changed(message.id)

    def add_delta(self, message_id: int, answer: str, reasoning: str) -> None:
        live = self._live.get(message_id)
        if live is None:
            return
        self._live[message_id] = replace(live, content=live.content + answer, reasoning=live.reasoning + reasoning)
        self._changed(message_id)

    def is_live(self, message_id: int) -> bool:
        return message_id in self._live

    def row_state(self, row: int) -> tuple[int, int, bool, bool, bool]:
        """(message id, revision, reasoning unfolded, being generated, every source listed): what a
        drawing depends on. The delegate asks here rather than through ``data()`` roles: no QVariant
        round trips."""
        message_id = self._ids[row]
        return (message_id, self._revision.get(message_id, 0), message_id in self._expanded,
                message_id in self._live, message_id in self._sources_open)

    def is_last_of_role(self, row: int) -> bool:
        """The last reply of the conversation, or your last message (with at most its reply
        after it): the rows that offer regenerate and edit."""
        end = len(self._ids) - 1
        if self.message_at(row).role == "assistant":
            return row == end
        return row == end or (row == end - 1 and self.message_at(end).role == "assistant")

    def replace_row(self, row: int, message: Message) -> None:
        """Show ``message`` in ``row`` in place of the one there (another alternative)."""
        old = self._ids[row]
        if old == message.id:
            self.replace(message)
            return
        self._rows.pop(old, None)
        self._cache.pop(old, None)
        self._live.pop(old, None)
        self._ids[row] = message.id
        self._rows[message.id] = row
        self._remember(message)
        self._changed(message.id)

    def remove_from(self, row: int) -> None:
        """Drop ``row`` and every row after it (what a regenerate or an edit replaces)."""
        if not 0 <= row < len(self._ids):
            return
        self.beginRemoveRows(QModelIndex(), row, len(self._ids) - 1)
        for message_id in self._ids[row:]:
            self._rows.pop(message_id, None)
            self._cache.pop(message_id, None)
            self._live.pop(message_id, None)
            self._expanded.discard(message_id)  # ids can come back: SQLite reuses the largest after a delete
            self._sources_open.discard(message_id)
        del self._ids[row:]
        self.endRemoveRows()

    def toggle_expanded(self, message_id: int) -> None:
        self._expanded.symmetric_difference_update({message_id})
        self._changed(message_id)

    def toggle_sources(self, message_id: int) -> None:
        self._sources_open.symmetric_difference_update({message_id})
        self._changed(message_id)

    def _changed(self, message_id: int) -> None:
        self._revision[message_id] = self._revision.get(message_id, 0) + 1
        row = self._rows.get(message_id)
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index)
