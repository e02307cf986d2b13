""""Find models on this machine": GGUF files other apps (Hugging Face cache, LM Studio,
Ollama, GPT4All, Jan, llama.cpp) downloaded, each with an Add button that registers it
where it lies (no copy)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.discovery import FoundModel, discover
from app.models import Model
from app.services import Services
from app.types import format_size
from ui.models_jobs import JobBar
from ui.tasks import TaskRunner
from ui.widgets import list_table

COLUMNS = ("App", "Model", "Size", "Where", "")


class DiscoverTab(QWidget):
    modelAdded = Signal(object)  # the registered Model

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.locations: dict[str, list[Path]] | None = None  # None: every app's usual folders
        self.found: list[tuple[FoundModel, str | None]] = []  # (model, id it is registered as)
        self.search_button = QPushButton("Find models on this machine")
        self.search_button.clicked.connect(self.search)
        self.summary = QLabel("Looks in the folders of the Hugging Face cache, LM Studio, Ollama, GPT4All, Jan "
                              "and llama.cpp. Nothing is copied; added models are used where they are.")
        self.summary.setWordWrap(True)
        self.table = list_table(COLUMNS, stretch=3)
        self.jobs = JobBar()
        top = QHBoxLayout()
        top.addWidget(self.search_button)
        top.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.jobs)

    def search(self) -> None:
        self.search_button.setEnabled(False)
        self.summary.setText("Searching…")
        locations = self.locations

        def work() -> list[tuple[FoundModel, str | None]]:
            found = discover(locations)
            known = [self.services.models.registered_found(f) for f in found]
            return [(f, k.id if k else None) for f, k in zip(found, known, strict=True)]

        self.tasks.run(work, on_result=self._show, on_error=self._failed)

    def _failed(self, message: str) -> None:
        self.search_button.setEnabled(True)
        self.summary.setText(f"Could not search: {message}")

    def _show(self, found: list[tuple[FoundModel, str | None]]) -> None:
        self.search_button.setEnabled(True)
        self.found = found
        self.summary.setText(f"{len(found)} model{'s' if len(found) != 1 else ''} found in other apps' folders."
                             if found else "No models from other apps found on this machine.")
        self.table.setRowCount(len(found))
        for row, (item, known) in enumerate(found):
            cells = (item.app, item.name, format_size(item.size), str(item.path))
            for col, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setToolTip("\n".join(str(p) for p in item.files) if col == 3 else text)
                if col == 2:
                    cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, cell)
            self._set_state(row, known)

    def _set_state(self, row: int, known: str | None) -> None:
        if known:
            self.table.setCellWidget(row, 4, None)  # type: ignore[arg-type]
            self.table.setItem(row, 4, QTableWidgetItem(f"added as {known}"))
            return
        button = QPushButton("Add")
        button.setToolTip("Register it where it is: Enclave reads and hashes it, nothing is copied.")
        button.clicked.connect(lambda _=False, r=row: self.add(r))
        self.table.setCellWidget(row, 4, button)

    def add_button(self, row: int) -> QPushButton | None:
        widget = self.table.cellWidget(row, 4)
        return widget if isinstance(widget, QPushButton) else None

    def add(self, row: int) -> None:
        item, known = self.found[row]
        if known or self.jobs.busy:
            return
        progress, cancelled = self.jobs.start(f"Hashing {item.name}…", cancellable=True)
        self.tasks.run(lambda: self.services.models.register_found(item, on_progress=progress, cancelled=cancelled),
                       on_result=lambda model: self._added(row, model),
                       on_error=lambda message: self.jobs.finish(f"{item.name} was not added: {message}", error=True))

    def _added(self, row: int, model: Model) -> None:
        item, _ = self.found[row]
        self.found[row] = (item, model.id)
        self._set_state(row, model.id)
        self.jobs.finish(f"Added {model.name} as {model.id}, used where it is.")
        self.modelAdded.emit(model)
