"""Page: the start screen, shown until there is a model to talk to.

Three ways in, all off the GUI thread: import a GGUF file (copied into Enclave's folder
or used where it is), use a model another app already downloaded, or pick one from the
catalog — which says what fits this machine, and downloads it unless Enclave is offline.
Whichever succeeds registers the model and emits ``modelReady``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.discovery import FoundModel
from app.models import Model
from app.policy import SET_BY
from app.services import Services
from app.types import format_size
from ui.empty_state import EmptyState
from ui.models_jobs import ProgressRelay
from ui.tasks import TaskRunner
from ui.theme import SPACE, colors, error_color, font, icon

ImportMode = str  # "copy" | "in_place"


def _clear(layout: QVBoxLayout) -> None:
    while layout.count():
        item = layout.takeAt(0)
        if item.widget() is not None:
            item.widget().deleteLater()


class FirstRunPage(QWidget):
    modelReady = Signal()

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self._busy = False
        self._cancel_requested = False
        self._report = ProgressRelay(self._show_progress, self)  # called on pool threads

        title = QLabel("Welcome to Enclave")
        title.setFont(font("title"))
        intro = QLabel("Enclave runs AI models entirely on this computer. Nothing you type leaves it.")
        intro.setWordWrap(True)
        self.drop_hint = EmptyState(
            "upload", "Start with a model",
            "Drop a .gguf model file anywhere on this window, or choose one of the ways below: import a file, "
            "use a model another app already downloaded, or pick one from the catalog.")

        self.import_button = QPushButton(icon("upload"), "Import a model file…")
        self.import_button.clicked.connect(self.choose_file)
        self.find_button = QPushButton(icon("search"), "Find models already on this machine")
        self.find_button.clicked.connect(self.find_models)
        self.catalog_button = QPushButton(icon("download"), "Pick from the catalog")
        self.catalog_button.clicked.connect(self.show_catalog)
        actions = QHBoxLayout()
        for button in (self.import_button, self.find_button, self.catalog_button):
            button.setMinimumHeight(36)
            actions.addWidget(button)

        self.progress = QProgressBar()
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.results_box = QGroupBox()
        self.results_box.hide()
        self.results = QVBoxLayout(self.results_box)

        column = QWidget()
        column.setMaximumWidth(820)
        layout = QVBoxLayout(column)
        layout.setContentsMargins(SPACE.XL, SPACE.XL, SPACE.XL, SPACE.XL)
        layout.setSpacing(SPACE.M)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addWidget(self.drop_hint)
        layout.addLayout(actions)
        layout.addLayout(progress_row)
        layout.addWidget(self.status)
        layout.addWidget(self.results_box)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        holder = QWidget()
        centred = QHBoxLayout(holder)
        centred.addStretch(1)
        centred.addWidget(column, 4)
        centred.addStretch(1)
        scroll.setWidget(holder)
        QVBoxLayout(self).addWidget(scroll)

    # Busy state ----------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._busy

    def _start(self, label: str, work: Callable[[], Any], on_result: Callable[[Any], None], *,
               cancellable: bool = False) -> None:
        for button in (self.import_button, self.find_button, self.catalog_button):
            button.setEnabled(False)
        self._cancel_requested = False
        self.status.setStyleSheet("")
        self.status.setText(label)
        self.progress.setRange(0, 0)  # busy until the first progress report
        self.progress.show()
        self.cancel_button.setVisible(cancellable)

        def finished(value: Any) -> None:
            self._idle()
            on_result(value)

        def failed(message: str) -> None:
            self._idle()
            self.show_error(message)

        self._busy = True
        self.tasks.run(work, on_result=finished, on_error=failed)

    def _idle(self) -> None:
        self._busy = False
        self.progress.hide()
        self.cancel_button.hide()
        for button in (self.import_button, self.find_button, self.catalog_button):
            button.setEnabled(True)

    def _show_progress(self, done: int, total: int) -> None:
        if total:
            self.progress.setRange(0, 1000)
            self.progress.setValue(done * 1000 // total)
            self.progress.setFormat(f"{format_size(done)} of {format_size(total)}  (%p%)")

    def cancel(self) -> None:
        self._cancel_requested = True
        self.status.setText("Stopping…")

    def _cancelled(self) -> bool:
        return self._cancel_requested

    def show_error(self, message: str) -> None:
        self.status.setStyleSheet(f"color: {error_color()};")
        self.status.setText(message)

    def _adopt(self, model: Model) -> Model:
        """On the pool thread: the first model becomes the default, so a new chat can start."""
        if self.services.settings.load().default_model is None:
            self.services.settings.set("default_model", model.id)
        return model

    def _ready(self, model: Model) -> None:
        self.status.setStyleSheet("")
        self.status.setText(f"{model.name} is ready ({format_size(model.size)}).")
        self.modelReady.emit()

    # 1. Import a file ----------------------------------------------------------------

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a model file", str(Path.home()),
                                              "GGUF models (*.gguf);;All files (*)")
        if not path:
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Import a model file",
                          f"{Path(path).name}\n\nCopy it into Enclave's own folder, or use it where it is?",
                          parent=self)
        copy = box.addButton("Copy into Enclave", QMessageBox.ButtonRole.AcceptRole)
        in_place = box.addButton("Use where it is", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        if box.clickedButton() in (copy, in_place):
            self.import_model(Path(path), "copy" if box.clickedButton() is copy else "in_place")

    def import_model(self, path: Path, mode: ImportMode) -> None:
        """Validate, hash (and copy) ``path`` on a pool thread, then register it."""
        self._start(f"Importing {path.name}…",
                    lambda: self._adopt(self.services.models.import_files(
                        [path], mode, on_progress=self._report, cancelled=self._cancelled)),  # type: ignore[arg-type]
                    self._ready, cancellable=True)

    # 2. Models other apps downloaded -------------------------------------------------

    def find_models(self) -> None:
        from app.discovery import discover

        self._start("Looking in the folders of Hugging Face, LM Studio, Ollama, GPT4All, Jan and llama.cpp…",
                    discover, self._show_found)

    def _show_found(self, found: list[Any]) -> None:
        _clear(self.results)
        self.results_box.setTitle("Models already on this machine")
        self.results_box.show()
        if not found:
            self.status.setText("No models from other apps were found. Import a file or pick one from the catalog.")
            return
        self.status.setText(f"Found {len(found)}. “Use” registers a model where it is, without copying it.")
        for item in found:
            use = QPushButton("Use")
            use.clicked.connect(lambda _c=False, item=item: self.use_found(item))
            self._add_row(f"<b>{item.name}</b><br><small>{item.app} · {format_size(item.size)} · {item.path}</small>",
                          use)

    def use_found(self, item: FoundModel) -> None:
        self._start(f"Checking {item.name}…",
                    lambda: self._adopt(self.services.models.register_found(
                        item, on_progress=self._report, cancelled=self._cancelled)),
                    self._ready, cancellable=True)

    # 3. The catalog ------------------------------------------------------------------

    def show_catalog(self) -> None:
        def judge() -> tuple[str, list[Any]]:
            from app.catalog import fits, load_catalog

            machine = self.services.machine()
            return machine.describe(), fits(load_catalog(), machine)

        self._start("Checking what fits this machine…", judge, self._show_catalog)

    def _show_catalog(self, result: tuple[str, list[Any]]) -> None:
        machine, results = result
        offline = self.services.offline
        _clear(self.results)
        self.results_box.setTitle(f"The catalog — for this machine: {machine}")
        self.results_box.show()
        self.status.setText(f"{SET_BY}: downloads are turned off. Copy a model file onto this machine and import "
                            "it." if not self.services.policy.downloads else
                            "Enclave is offline: copy a model file onto this machine and import it, or run the "
                            "command shown on a machine with network." if offline else
                            "Models that fit this machine are marked. Downloads come from the Hugging Face hub.")
        for fit in sorted(results, key=lambda f: (not f.default.fits, f.entry.size_bytes)):
            entry = fit.entry
            size = format_size(entry.size_bytes) if entry.size_known else f"about {format_size(entry.size_bytes)}"
            verdict = (f"<span style='color: {colors().success}'>fits (up to {fit.largest.n_ctx:,} tokens of "
                       "context)</span>" if fit.default.fits
                       else f"<span style='color: {colors().error}'>does not fit this machine</span>")
            command = f"enclave models pull {entry.repo} --quant {entry.quant}"
            text = (f"<b>{entry.name}</b> · {entry.quant} · {size} · {verdict}<br><small>{entry.about}</small>"
                    f"<br><small><code>{command}</code></small>")
            button = None
            if not offline:
                button = QPushButton("Download")
                button.clicked.connect(lambda _c=False, entry=entry: self.download(entry.repo, entry.quant))
            self._add_row(text, button)

    def download(self, repo: str, quant: str) -> None:
        """What ``enclave models pull REPO --quant Q`` does: list, choose, download and
        verify, register; resumable, cancellable."""

        def pull() -> Model:
            return self._adopt(self.services.pull_model(repo, quant=quant, on_progress=self._report,
                                                        cancelled=self._cancelled))

        self._start(f"Downloading {repo} ({quant})…", pull, self._ready, cancellable=True)

    def _add_row(self, html: str, button: QPushButton | None) -> None:
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 4, 0, 4)
        label = QLabel(html)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        line.addWidget(label, 1)
        if button is not None:
            line.addWidget(button, 0, Qt.AlignmentFlag.AlignTop)
        self.results.addWidget(row)
