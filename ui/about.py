"""Help ▸ About Enclave: the version, where the data lives, and the third-party licences —
a table (package, version, licence) whose columns fit their contents, and under it the
full notice of the package chosen in it."""

from __future__ import annotations

import re

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QTextCursor, QTextDocument
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import __version__
from app.licenses import third_party_licenses
from app.paths import AppPaths
from ui.theme import SPACE, colors, font

COLUMNS = ("Package", "Version", "Licence")
_GAP = re.compile(r"\s{2,}")


def license_rows(text: str) -> list[tuple[str, str, str]]:
    """(package, version, licence) from the notices' "Summary" section, whose columns are
    separated by runs of spaces."""
    lines = text.splitlines()
    try:
        start = lines.index("Summary") + 2  # past its underline
    except ValueError:
        return []
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        parts = _GAP.split(line.strip(), maxsplit=2)
        if len(parts) == 3:
            rows.append((parts[0], parts[1], parts[2]))
    return rows


class AboutDialog(QDialog):
    def __init__(self, paths: AppPaths, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Enclave")
        self.resize(760, 600)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(SPACE.XL, SPACE.XL, SPACE.XL, SPACE.L)
        layout.setSpacing(SPACE.S)
        title = QLabel(f"Enclave {__version__}")
        title.setFont(font("title"))
        intro = QLabel("Open-weight AI models, entirely on this machine: no telemetry, no update checks, no network "
                       "unless you ask for a download.")
        intro.setWordWrap(True)
        data = QLabel(f"Your data: {paths.data}")
        data.setWordWrap(True)
        data.setStyleSheet(f"color: {colors().muted};")
        data.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        heading = QLabel("Third-party software included, and its licences")
        heading.setFont(font("heading"))
        heading.setContentsMargins(0, SPACE.M, 0, 0)
        hint = QLabel("Choose a package to read its licence below.")
        hint.setStyleSheet(f"color: {colors().muted};")

        notices = third_party_licenses()
        self.table = self._table(license_rows(notices))
        self.licenses = QPlainTextEdit(notices)
        self.licenses.setReadOnly(True)
        self.licenses.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))  # its own columns line up
        self.table.currentCellChanged.connect(lambda row, *_: self.show_notice(row))
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.licenses)
        split.setSizes([300, 200])

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        for widget in (title, intro, data, heading, hint):
            layout.addWidget(widget)
        layout.addWidget(split, 1)
        layout.addWidget(buttons)

    @staticmethod
    def _table(rows: list[tuple[str, str, str]]) -> QTableWidget:
        table = QTableWidget(len(rows), len(COLUMNS))
        table.setHorizontalHeaderLabels(COLUMNS)
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                table.setItem(r, c, item)
        table.verticalHeader().hide()
        table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + SPACE.S)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setAlternatingRowColors(True)
        table.setWordWrap(False)
        header = table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        return table

    def show_notice(self, row: int) -> None:
        """Scroll the notices to the chosen package's own section: its heading reads
        "NAME VERSION — LICENCE" (llama.cpp's "llama.cpp and ggml")."""
        if row < 0:
            return
        name, version = self.table.item(row, 0).text(), self.table.item(row, 1).text()
        document = self.licenses.document()
        flags = QTextDocument.FindFlag.FindCaseSensitively
        found = document.find(f"{name} {version} — ", 0, flags)
        if found.isNull():
            found = document.find(f"{name.split()[0]} and ", 0, flags)
        if found.isNull():
            return
        found.movePosition(QTextCursor.MoveOperation.StartOfBlock)
        found.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
        self.licenses.setTextCursor(found)
        self.licenses.centerCursor()
