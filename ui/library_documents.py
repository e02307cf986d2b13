"""The table model of one library's documents: title, type, size, tokens, status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from app.libraries import Document
from app.types import format_size

COLUMNS = ("Title", "Type", "Size", "Tokens", "Status")
TITLE, KIND, SIZE, TOKENS, STATUS = range(len(COLUMNS))
ERROR_COLOR = QColor("#c62828")
Index = QModelIndex | QPersistentModelIndex


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
                return doc.error
            return doc.path if column == TITLE else None
        if role == Qt.ItemDataRole.ForegroundRole and column == STATUS and doc.error:
            return ERROR_COLOR
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (SIZE, TOKENS):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _text(self, doc: Document, column: int) -> str:
        if column == TITLE:
            return doc.title or Path(doc.path).name
        if column == KIND:
            return doc.kind or "?"
        if column == SIZE:
            return format_size(doc.size)
        if column == TOKENS:
            if not doc.ok:
                return "—"
            tokens = self._tokens.get(doc.sha256 or "")
            return f"{tokens:,}" if tokens is not None else f"{doc.chars:,} chars"
        return f"Not read: {doc.error_reason or 'error'}" if doc.error else "Read"
