"""The table model of one library's documents: title and file name, type, size, tokens,
status (in words); and the lines that describe one document in full."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QStyledItemDelegate, QStyleOptionViewItem

from app.ingest_reasons import status_text
from app.libraries import Document
from app.types import format_size
from ui.theme import error_color

COLUMNS = ("Document", "Type", "Size", "Tokens", "Status")
TITLE, KIND, SIZE, TOKENS, STATUS = range(len(COLUMNS))
Index = QModelIndex | QPersistentModelIndex


def document_name(doc: Document) -> str:
    """'Quarterly report — report.html': the extracted title beside the file name, or the
    file name alone when the title is only the file name."""
    name = Path(doc.path).name
    title = " ".join(doc.title.split())
    if not title or title in (name, Path(name).stem):
        return name
    return f"{title} — {name}"


def document_details(doc: Document, *, tokens: int | None = None) -> str:
    """Rich text for the details line under the table: name, full path, what was read or
    why not (the extractor's whole message, with what to do)."""
    head = f"<b>{html.escape(document_name(doc))}</b><br><small>{html.escape(doc.path)}</small><br>"
    if not doc.ok:
        why = html.escape(status_text(doc.error, doc.error_reason))
        message = html.escape(doc.error or "")
        return f'{head}<span style="color: {error_color()};">{why}.</span> {message}'
    amount = f"{tokens:,} tokens" if tokens is not None else f"{doc.chars:,} characters"
    return f"{head}Read: {amount}, {format_size(doc.size)}. Double-click it to read its text."


class ElideRightDelegate(QStyledItemDelegate):
    """Cuts a column's text at its end whatever the view's elide mode (for sentences)."""

    def initStyleOption(self, option: QStyleOptionViewItem, index: Index) -> None:
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideRight


class DocumentTableModel(QAbstractTableModel):
    """Rows in the order the documents were added (the order they take in a prompt).
    Token counts are those cached for the default model's tokenizer; a document without
    one shows its length in characters instead."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._documents: list[Document] = []
        self._tokens: dict[str, int] = {}

    def set_documents(self, documents: list[Document]) -> None:
        self.beginResetModel()
        self._documents = list(documents)
        self.endResetModel()

    def set_token_counts(self, counts: dict[str, int]) -> None:
        self._tokens = dict(counts)
        if self._documents:
            self.dataChanged.emit(self.index(0, TOKENS), self.index(len(self._documents) - 1, TOKENS))

    def document(self, row: int) -> Document:
        return self._documents[row]

    def tokens_of(self, doc: Document) -> int | None:
        return self._tokens.get(doc.sha256 or "")

    def documents(self) -> list[Document]:
        return list(self._documents)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._documents)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        doc = self._documents[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(doc, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == STATUS and doc.error:
                return f"<p>{html.escape(status_text(doc.error, doc.error_reason))}.</p><p>{html.escape(doc.error)}</p>"
            return doc.path if column == TITLE else None
        if role == Qt.ItemDataRole.ForegroundRole and column == STATUS and doc.error:
            return QColor(error_color())
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (SIZE, TOKENS):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _text(self, doc: Document, column: int) -> str:
        if column == TITLE:
            return document_name(doc)
        if column == KIND:
            return doc.kind or "?"
        if column == SIZE:
            return format_size(doc.size)
        if column == TOKENS:
            if not doc.ok:
                return "—"
            tokens = self.tokens_of(doc)
            return f"{tokens:,}" if tokens is not None else f"{doc.chars:,} chars"
        return status_text(doc.error, doc.error_reason)
