"""Adding files to a library in the background: the job and the panel that shows it.

``IngestJob.run`` is the body handed to ``TaskRunner.run(serial=False)`` (ingestion never
talks to the model worker, so it must not queue behind a reply). ``Services.add_to_library``
reports progress through a callback on the pool thread; the job re-emits it as a Qt signal
of an object living on the GUI thread, so it arrives there queued — at most every
``interval`` seconds, each time with the files started since the last time, so a folder of
ten thousand small files does not flood the event loop. Cancel is a ``threading.Event``
that ``ingest`` reads between files: documents are stored whole or not at all.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.ingest import IngestProgress, IngestReport
from app.ingest_reasons import report_summary
from app.services import Services
from app.types import format_size
from ui.theme import error_color

MAX_LISTED_FILES = 1000  # the progress list keeps the most recent ones


@dataclass(frozen=True)
class IngestRequest:
    library_id: int
    paths: tuple[Path, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


class IngestJob(QObject):
    progress = Signal(object, object)  # (IngestProgress, list[str]: files started since the last signal)

    def __init__(self, services: Services, request: IngestRequest, *, interval: float = 0.05,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.request = request
        self.interval = interval
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> IngestReport:
        """On a pool thread: touches no widget, only the store and this job's signal."""
        started: list[str] = []
        last = 0.0

        def on_progress(p: IngestProgress) -> None:
            nonlocal last
            if p.current:
                started.append(p.current)
            now = time.monotonic()
            if not p.current or now - last >= self.interval:
                self.progress.emit(p, started.copy())
                started.clear()
                last = now

        request = self.request
        return self.services.add_to_library(request.library_id, request.paths, include=request.include,
                                            exclude=request.exclude, on_progress=on_progress,
                                            cancelled=self._cancel.is_set)


class IngestPanel(QWidget):
    """Progress of the running ingest (current file, files and bytes, the files read so
    far, Cancel), then its summary and every file that could not be read or was skipped,
    with why."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._job: IngestJob | None = None
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.bar = QProgressBar()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.files = QListWidget()
        self.files.setMaximumHeight(110)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.failures = QListWidget()  # the files not read, then the ones skipped
        self.failures.setMaximumHeight(110)
        self.failures.setWordWrap(True)
        self.hide_button = QPushButton("Hide")
        self.hide_button.clicked.connect(self.hide)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        summary_row = QHBoxLayout()
        summary_row.addWidget(self.summary, 1)
        summary_row.addWidget(self.hide_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.status)
        layout.addLayout(row)
        layout.addWidget(self.files)
        layout.addLayout(summary_row)
        layout.addWidget(self.failures)
        self._show_running(False)
        self.summary.hide()
        self.failures.hide()
        self.hide()

    @property
    def running(self) -> bool:
        return self._job is not None

    def start(self, job: IngestJob, library_name: str) -> None:
        self._job = job
        job.progress.connect(self.on_progress)
        self.files.clear()
        self.bar.setRange(0, 0)  # busy until the scan has counted the files
        self.status.setText(f"Adding to {library_name}: looking for files…")
        self.cancel_button.setEnabled(True)
        self._show_running(True)
        self.summary.hide()
        self.failures.hide()
        self.show()

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.cancel_button.setEnabled(False)
            self.status.setText(self.status.text() + " — cancelling after this file…")

    def on_progress(self, progress: IngestProgress, started: list[str]) -> None:
        if self._job is None:
            return
        for path in started:
            self.files.addItem(Path(path).name)
        while self.files.count() > MAX_LISTED_FILES:
            self.files.takeItem(0)
        self.files.scrollToBottom()
        self.bar.setRange(0, max(progress.files_total, 1))
        self.bar.setValue(progress.files_done)
        amount = (f"{progress.files_done} of {progress.files_total} files "
                  f"({format_size(progress.bytes_done)} of {format_size(progress.bytes_total)})")
        if progress.detail:  # a page a vision model is transcribing
            current = f" — {progress.detail}"
        else:
            current = f" — reading {Path(progress.current).name}" if progress.current else ""
        if not self.cancel_button.isEnabled():
            current += " — cancelling…"
        self.status.setText(f"{amount}{current}")

    def finish(self, report: IngestReport) -> None:
        self._job = None
        self._show_running(False)
        self.status.setText("Cancelled: the files read so far were kept." if report.cancelled else "Done.")
        self.summary.setText(report_summary(report) + ".")
        self.summary.show()
        self.failures.clear()
        for path, _reason, message in report.failed:
            name = Path(path).name
            item = QListWidgetItem(message if name in message else f"{name}: {message}")
            item.setForeground(QColor(error_color()))
            item.setToolTip(path)
            self.failures.addItem(item)
        for path, why in report.skipped[:MAX_LISTED_FILES]:
            item = QListWidgetItem(f"{Path(path).name} — skipped: {why}")
            item.setToolTip(path)
            self.failures.addItem(item)
        self.failures.setVisible(self.failures.count() > 0)

    def fail(self, message: str) -> None:
        self._job = None
        self._show_running(False)
        self.status.setText(f"Adding files failed: {message}")
        self.summary.hide()
        self.failures.hide()

    def _show_running(self, running: bool) -> None:
        self.hide_button.setVisible(not running)
        self.bar.setVisible(running)
        self.cancel_button.setVisible(running)
        self.files.setVisible(running)
