"""The chat page's small parts: the composer, message bars, the prompt-progress row."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QWidget

from app.types import format_duration
from ui.chat_card import scheme
from ui.theme import SPACE, Colors

PROGRESS_BAR_MAX = 240


def bar_style(kind: str, colours: Colors) -> str:
    """A message bar: a card with a stripe in the colour of its kind (error, warning, info)."""
    stripe = {"error": colours.error, "warning": colours.warning}.get(kind, colours.accent)
    return (f"#{kind}Bar {{ background: {colours.card}; border: 1px solid {colours.border}; "
            f"border-left: 4px solid {stripe}; border-radius: 6px; }}")


class Composer(QPlainTextEdit):
    """Enter sends, Shift+Enter starts a new line, Escape leaves edit mode."""

    submitted = Signal()
    escaped = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("Message — Enter sends, Shift+Enter for a new line")
        self.setTabChangesFocus(True)
        self.setMaximumHeight(110)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.submitted.emit()
            event.accept()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.escaped.emit()
        super().keyPressEvent(event)


class MessageBar(QFrame):
    """A line of text with an optional action and a close button; hidden until shown."""

    actionTriggered = Signal()

    def __init__(self, kind: str, action: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(f"{kind}Bar")
        self._kind = kind
        layout = QHBoxLayout(self)
        layout.setContentsMargins(SPACE.M, SPACE.XS, SPACE.XS, SPACE.XS)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.label, 1)
        self.action: QPushButton | None = None
        if action:
            self.action = QPushButton(action)
            self.action.clicked.connect(self.actionTriggered)
            layout.addWidget(self.action)
        close = QPushButton("✕")
        close.setFlat(True)
        close.setToolTip("Dismiss")
        close.setFixedWidth(28)
        close.clicked.connect(self.hide)
        layout.addWidget(close)
        self.hide()

    def show_text(self, text: str) -> None:
        self.setStyleSheet(bar_style(self._kind, scheme(self.palette())))  # the scheme of now
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text()


class PromptProgress(QWidget):
    """Reading a long prompt: tokens done of total, speed, time left, and Cancel."""

    cancelRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.label = QLabel()
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(self.cancelRequested)
        self.bar.setMaximumWidth(PROGRESS_BAR_MAX)  # the sentence says where it is; the bar only moves
        layout.addWidget(self.label, 1)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.cancel)
        self._start: tuple[float, int] | None = None
        self.hide()

    def reset(self) -> None:
        self._start = None
        self.hide()

    def show_status(self, text: str, *, cancellable: bool = True) -> None:
        """A step with no count to show (the model loading, stopping): a moving bar and ``text``."""
        self._start = None
        self.bar.setRange(0, 0)
        self.label.setText(text)
        self.cancel.setEnabled(cancellable)
        self.show()

    def update_progress(self, done: int, total: int, now: float | None = None, what: str = "Reading the prompt"
                        ) -> None:
        now = time.monotonic() if now is None else now
        if self._start is None or done < self._start[1]:
            self._start = (now, done)
        started, first = self._start
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(min(done, total))
        self.cancel.setEnabled(True)
        text = f"{what}: {done:,} / {total:,} tokens"
        elapsed = now - started
        if elapsed > 0.2 and done > first:
            rate = (done - first) / elapsed
            left = (total - done) / rate
            text += f" · {rate:,.0f} tokens/s · {format_duration(left)} left"
        self.label.setText(text)
        self.show()

    def show_step(self, done: int, total: int, text: str) -> None:
        """Progress that is not a prompt read (a library's tokens counted): the bar and ``text``."""
        self._start = None
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(min(done, total))
        self.cancel.setEnabled(True)
        self.label.setText(text)
        self.show()
