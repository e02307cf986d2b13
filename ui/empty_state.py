"""What a page shows when it has nothing to list yet: an icon, a heading and a sentence
saying what to do — drop something here, or press the button that adds it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ui.theme import SPACE, colors, font, icon

ICON_SIZE = 48
TEXT_WIDTH = 560  # a readable line, however wide the page


class EmptyState(QWidget):
    def __init__(self, icon_name: str, heading: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.icon_name = icon_name
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.heading = QLabel()
        self.heading.setFont(font("heading"))
        self.heading.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.heading.setWordWrap(True)
        self.text = QLabel()
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text.setWordWrap(True)
        self.text.setMaximumWidth(TEXT_WIDTH)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(SPACE.XL, SPACE.XL, SPACE.XL, SPACE.XL)
        layout.setSpacing(SPACE.S)
        layout.addStretch(1)
        layout.addWidget(self.picture)
        layout.addWidget(self.heading)
        line = QHBoxLayout()  # the sentence wraps at a readable width, centred
        line.addStretch(1)
        line.addWidget(self.text, 100)
        line.addStretch(1)
        layout.addLayout(line)
        layout.addStretch(1)
        self.show_text(heading, text)

    def show_text(self, heading: str, text: str, icon_name: str | None = None) -> None:
        """Say something else (a library that has no documents, rather than no library)."""
        self.icon_name = icon_name or self.icon_name
        muted = colors().muted
        self.picture.setPixmap(icon(self.icon_name, color=muted, size=ICON_SIZE).pixmap(ICON_SIZE, ICON_SIZE))
        self.heading.setText(heading)
        self.text.setText(text)
        self.text.setStyleSheet(f"color: {muted};")
