"""Long jobs on the models page: progress from a pool thread, a cancel flag, and one
status line where results and errors appear inline (no modal error boxes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from app.types import format_size
from ui.theme import error_color


class ProgressRelay(QObject):
    """Callable from any thread as ``relay(done, total)``; the callback runs on the
    thread this object lives on (the GUI thread), at most ~20 times a second."""

    _tick = Signal(object, object)  # object, not int: files beyond 2 GiB overflow a C int

    def __init__(self, callback: Callable[[int, int], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._callback = callback
        self._last = 0.0
        self._tick.connect(self._deliver)

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last >= 0.05:
            self._last = now
            self._tick.emit(done, total)

    @Slot(object, object)
    def _deliver(self, done: int, total: int) -> None:
        self._callback(done, total)


class JobBar(QWidget):
    """What is running (a label, a progress bar, Cancel) and, afterwards, how it went."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setFormat("%p %")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.status, 1)
        row.addWidget(self.progress)
        row.addWidget(self.cancel_button)
        self._cancel = threading.Event()
        self._label = ""
        self._started = 0.0  # when the current job's first byte was reported
        self._first_done = 0
        self._relay = ProgressRelay(self._show_progress, self)
        self.busy = False
        self._idle()

    def start(self, label: str, *, cancellable: bool = False) -> tuple[ProgressRelay, Callable[[], bool]]:
        """Show ``label`` with a progress bar; returns (progress callback, cancelled())
        for the job's worker thread."""
        self.busy = True
        self._label = label
        self._cancel = threading.Event()
        self.status.setStyleSheet("")
        self.status.setText(label)
        self._started = 0.0
        self.progress.setRange(0, 0)  # busy until the first report
        self.progress.show()
        self.cancel_button.setVisible(cancellable)
        self.cancel_button.setEnabled(True)
        return self._relay, self._cancel.is_set

    def cancel(self) -> None:
        self._cancel.set()
        self.cancel_button.setEnabled(False)
        self.status.setText(f"{self._label} Cancelling…")

    def finish(self, message: str, *, error: bool = False) -> None:
        self._idle()
        self.status.setStyleSheet(f"color: {error_color()};" if error else "")
        self.status.setText(message)

    def _idle(self) -> None:
        self.busy = False
        self.progress.hide()
        self.cancel_button.hide()

    def _show_progress(self, done: int, total: int) -> None:
        if not self.busy or total <= 0:
            return
        now = time.monotonic()
        if not self._started or done < self._first_done:  # the first report, or a new file's count
            self._started, self._first_done = now, done
        speed = (done - self._first_done) / (now - self._started) if now - self._started >= 0.2 else None
        self.progress.setRange(0, 1000)
        self.progress.setValue(min(1000, done * 1000 // total))
        self.status.setText(f"{self._label} {progress_text(done, total, speed)}")


def progress_text(done: int, total: int, bytes_per_second: float | None = None) -> str:
    """'43 % · 1.2 GiB of 2.8 GiB · 310 MiB/s' (the speed once there is one to show)."""
    parts = [f"{min(100, done * 100 // total)} %", f"{format_size(done)} of {format_size(total)}"]
    if bytes_per_second:
        parts.append(f"{format_size(int(bytes_per_second))}/s")
    return " · ".join(parts)
