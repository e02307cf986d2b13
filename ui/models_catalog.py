"""The catalog tab: a few good quantized models (shipped with Enclave: MoE models for a GPU,
small ones for a CPU-only machine), which of them fit this machine or a simulated one, and
a Download button (only when Enclave may go online and the model fits) that fetches,
verifies and registers one — the sequence of ``enclave models pull``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.catalog import CATALOG, CatalogEntry, Fit, fits, load_catalog
from app.models import Model, Progress
from app.policy import SET_BY
from app.services import Services
from app.types import format_size
from ui.models_jobs import JobBar
from ui.models_machine import MachinePicker
from ui.tasks import TaskRunner
from ui.widgets import list_table

COLUMNS = ("Model", "Quant", "Size", "Verdict", "")


def verdict_text(fit: Fit) -> str:
    """'fits (up to 40,960 tokens)', or why not: 'does not fit: needs 11.4 GiB more RAM'."""
    if fit.default.fits:
        return f"fits (up to {fit.largest.n_ctx:,} tokens)"
    short = next(d for d in reversed(fit.default.devices) if not d.fits)
    memory = "memory" if fit.default.unified_memory else "RAM" if short.device == "RAM" else "VRAM"
    return f"does not fit: needs {format_size(short.total_bytes - short.budget_bytes)} more {memory}"


def size_text(entry: CatalogEntry) -> str:
    return format_size(entry.size_bytes) if entry.size_known else f"~{format_size(entry.size_bytes)}"


def download_and_register(services: Services, entry: CatalogEntry, on_progress: Progress,
                          cancelled: Callable[[], bool]) -> Model:
    """Runs on a pool thread: the catalog entry's file pulled as ``enclave models pull`` does."""
    return services.pull_model(entry.repo, file=entry.files[0] if entry.files else None, quant=entry.quant,
                               on_progress=on_progress, cancelled=cancelled)


class CatalogTab(QWidget):
    modelAdded = Signal(object)  # the downloaded, registered Model

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None, *,
                 catalog: Path = CATALOG) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.entries: list[CatalogEntry] = []
        self.fits: list[Fit] = []
        self.machine_picker = MachinePicker(services, tasks)
        self.context = QSpinBox()
        self.context.setRange(512, 10_485_760)
        self.context.setSingleStep(1024)
        self.context.setValue(8192)
        self.context.setSuffix(" tokens")
        self.context.setKeyboardTracking(False)
        self.summary = QLabel("Reading the catalog…")
        self.summary.setWordWrap(True)
        self.table = list_table(COLUMNS, stretch=3)
        self.offline_note = QLabel()
        self.offline_note.setWordWrap(True)
        self.jobs = JobBar()
        form = QHBoxLayout()
        form.addWidget(QLabel("Context"))
        form.addWidget(self.context)
        form.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.machine_picker)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.offline_note)
        layout.addWidget(self.jobs)
        self.machine_picker.machineChanged.connect(self.judge)
        self.context.valueChanged.connect(self.judge)
        self.tasks.run(lambda: load_catalog(catalog), on_result=self._loaded,
                       on_error=lambda message: self.summary.setText(f"The catalog cannot be read: {message}"))

    def _loaded(self, entries: list[CatalogEntry]) -> None:
        self.entries = entries
        self.judge()

    def judge(self, *_: object) -> None:
        """Plan every entry for the chosen machine (pure and quick: on the GUI thread)."""
        machine = self.machine_picker.machine()
        if machine is None or not self.entries:
            return
        self.fits = fits(self.entries, machine, self.context.value())
        self.summary.setText(f"For {machine.describe()}{' (simulated)' if machine.simulated else ''}, "
                             f"at a context of {self.context.value():,} tokens:")
        self.table.setRowCount(len(self.fits))
        for row, fit in enumerate(self.fits):
            entry = fit.entry
            cells = (entry.name, entry.quant, size_text(entry), verdict_text(fit))
            for col, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setToolTip(f"{entry.name}: {entry.about}\n{entry.repo} — {entry.license}\n{fit.default.verdict}")
                if col == 2:
                    cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, cell)
            if self.table.cellWidget(row, 4) is None:
                button = QPushButton("Download")
                button.clicked.connect(lambda _=False, r=row: self.download(r))
                self.table.setCellWidget(row, 4, button)
        self.update_offline()

    def download_button(self, row: int) -> QPushButton:
        widget = self.table.cellWidget(row, 4)
        assert isinstance(widget, QPushButton)
        return widget

    def update_offline(self) -> None:
        """Download buttons only when Enclave may go online, nothing is downloading and the
        model fits the machine judged."""
        offline = self.services.offline
        for row in range(self.table.rowCount()):
            button, fit = self.download_button(row), self.fits[row]
            button.setEnabled(not offline and not self.jobs.busy and fit.default.fits)
            if offline:
                button.setToolTip(self.offline_reason())
            elif not fit.default.fits:
                button.setToolTip(f"Not offered: {fit.default.verdict}")
            else:
                button.setToolTip(f"Download {fit.entry.repo} from the Hugging Face hub.")
        note = (f"{self.offline_reason()} Copy a GGUF file onto this machine and import it"
                + (", or turn the offline setting off." if self.services.policy.downloads else "."))
        self.offline_note.setText(note if offline else "")

    def offline_reason(self) -> str:
        if not self.services.policy.downloads:
            return f"{SET_BY}: downloads are turned off."
        return "Enclave works offline (the offline setting or ENCLAVE_OFFLINE=1): downloads are off."

    def download(self, row: int) -> None:
        if self.jobs.busy or self.services.offline or not self.fits[row].default.fits:
            return
        entry = self.fits[row].entry
        progress, cancelled = self.jobs.start(f"Downloading {entry.name} ({size_text(entry)})…", cancellable=True)
        self.update_offline()
        self.tasks.run(lambda: download_and_register(self.services, entry, progress, cancelled),
                       on_result=self._downloaded,
                       on_error=lambda message: self._failed(entry, message))

    def _downloaded(self, model: Model) -> None:
        self.jobs.finish(f"Downloaded and verified {model.name} ({format_size(model.size)}) as {model.id}.")
        self.update_offline()
        self.modelAdded.emit(model)

    def _failed(self, entry: CatalogEntry, message: str) -> None:
        self.jobs.finish(f"{entry.name} was not downloaded: {message}", error=True)
        self.update_offline()
