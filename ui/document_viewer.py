"""What a citation points at: a document's extracted text, scrolled to the cited page.

The text shown is exactly what the model was given (the stored extraction), so a citation
can be checked against it. A PDF can also be opened in the system's viewer.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QColor, QDesktopServices, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QTextEdit, QVBoxLayout, QWidget

from app.libraries import Content, Document, LibraryRepository
from app.types import EnclaveError
from ui.library_documents import document_name

HIGHLIGHT = QColor("#fff3b0")


def page_span(content: Content, page: int | None) -> tuple[int, int] | None:
    """Character offsets of ``page`` (1-based) in the text, or None if there is no such page."""
    if page is None or not content.pages or not 1 <= page <= len(content.pages):
        return None
    start = content.pages[page - 1]
    end = content.pages[page] if page < len(content.pages) else len(content.text)
    return start, end


class DocumentViewer(QDialog):
    def __init__(self, libraries: LibraryRepository, document_id: int, page: int | None = None,
                 parent: QWidget | None = None, *, span: tuple[int, int] | None = None) -> None:
        """Opened at ``span`` (a passage's characters) when given, else at ``page``."""
        super().__init__(parent)
        self.setWindowTitle(f"Document {document_id}")
        self.resize(760, 640)
        self.document: Document | None = None
        self.span: tuple[int, int] | None = None
        layout = QVBoxLayout(self)
        self.heading = QLabel()
        self.heading.setWordWrap(True)
        layout.addWidget(self.heading)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        layout.addWidget(self.text, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        self.open_external = buttons.addButton("Open in system viewer", QDialogButtonBox.ButtonRole.ActionRole)
        self.open_external.clicked.connect(self._open_external)
        self.open_external.hide()
        layout.addWidget(buttons)
        self._load(libraries, document_id, page, span)

    def _load(self, libraries: LibraryRepository, document_id: int, page: int | None,
              span: tuple[int, int] | None = None) -> None:
        try:
            self.document = libraries.document(document_id)
            if self.document.sha256 is None:
                raise EnclaveError(f"Document {document_id} could not be read: {self.document.error or 'no text'}.")
            content = libraries.content(self.document.sha256)
        except EnclaveError as exc:
            self.heading.setText(str(exc))
            return
        name = document_name(self.document)
        self.setWindowTitle(f"[doc {document_id}] {name}")
        where = f", page {page}" if page is not None else ""
        pages = len(content.pages)
        extent = f"{pages:,} page{'s' if pages != 1 else ''}, " if pages else ""
        self.heading.setText(f"<b>{html.escape(name)}</b>{where}<br>"
                             f"<small>{html.escape(self.document.path)} — {extent}{len(content.text):,} characters"
                             "</small>")
        self.text.setPlainText(content.text)
        is_pdf = (self.document.kind or content.kind) == "pdf" or self.document.path.lower().endswith(".pdf")
        self.open_external.setVisible(is_pdf and Path(self.document.path).exists())
        self.span = span if span is not None and 0 <= span[0] < span[1] <= len(content.text) else (
            page_span(content, page))
        if self.span is not None:
            self._highlight(*self.span)

    def _highlight(self, start: int, end: int) -> None:
        selection = QTextEdit.ExtraSelection()
        selection.cursor = QTextCursor(self.text.document())
        selection.cursor.setPosition(start)
        selection.cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        fmt = QTextCharFormat()
        fmt.setBackground(HIGHLIGHT)
        selection.format = fmt
        self.text.setExtraSelections([selection])
        # scroll so the page starts at the top: to the end first, then back to the start
        cursor = QTextCursor(self.text.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        self.text.setTextCursor(cursor)
        cursor.setPosition(start)
        self.text.setTextCursor(cursor)
        self.text.ensureCursorVisible()

    def _open_external(self) -> None:
        if self.document is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.document.path))
