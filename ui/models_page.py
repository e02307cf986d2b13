"""The models page: the registry (import, verify, remove, default, export), models other
apps downloaded, the catalog with downloads, and the memory plan of the selected model.

Every job that reads or hashes model files runs through the task runner; its progress
and its result (or the reason it failed) appear in the status line under the buttons.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QItemSelection, Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.models import Model, Verification
from app.policy import SET_BY
from app.services import ImportMode, ModelRemoval, Services
from app.transfer import ImportReport, is_projector_name
from app.types import format_size
from ui.empty_state import EmptyState
from ui.models_catalog import CatalogTab
from ui.models_discover import DiscoverTab
from ui.models_jobs import JobBar
from ui.models_table import ORIGINS, ModelsTableModel
from ui.plan_view import PlanView
from ui.tasks import TaskRunner, describe
from ui.theme import SPACE, icon

IMPORT_MODES: tuple[tuple[ImportMode, str, str], ...] = (
    ("copy", "Copy into Enclave's folder", "The file is copied (and hashed while copying); the original can go."),
    ("link", "Link from Enclave's folder", "A link in Enclave's folder points to the file where it is."),
    ("in_place", "Use where it is", "Enclave records the file's path; moving or deleting it breaks the model."),
)
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def _first_shards_only(files: list[Path]) -> list[Path]:
    """Drop later shards of a split model whose first shard is there too: importing the
    first brings every shard."""
    names = {p.name for p in files}

    def later(p: Path) -> bool:
        m = _SHARD.match(p.name)
        return bool(m) and m["no"] != "00001" and f"{m['prefix']}-00001-of-{m['count']}.gguf" in names  # type: ignore[index]

    return [p for p in files if not later(p)]


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class ModelsPage(QWidget):
    modelsChanged = Signal()

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self._pending: list[Callable[[], None]] = []  # jobs waiting for the one running
        self.table_model = ModelsTableModel(self)
        self._build()
        self.refresh()

    # Layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        self.mode_combo = QComboBox()
        for mode, label, tip in IMPORT_MODES:
            self.mode_combo.addItem(label, mode)
            self.mode_combo.setItemData(self.mode_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.import_file_button = QPushButton(icon("upload"), "Import file…")
        self.import_folder_button = QPushButton(icon("folder"), "Import folder…")
        self.import_file_button.clicked.connect(self.choose_files)
        self.import_folder_button.clicked.connect(self.choose_folder)
        top = QHBoxLayout()
        top.addWidget(QLabel("Import as"))
        top.addWidget(self.mode_combo)
        top.addWidget(self.import_file_button)
        top.addWidget(self.import_folder_button)
        top.addStretch(1)
        self.jobs = JobBar()

        self.table = QTableView()
        self.table.setModel(self.table_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.empty_note = EmptyState(
            "models", "No models yet",
            "Drop a .gguf model file here, or press Import file…. A model another app downloaded is under "
            "“On this machine”; the Catalog tab downloads one that fits this computer.")
        self.verify_button = QPushButton("Verify")
        self.remove_button = QPushButton(icon("trash"), "Remove…")
        self.default_button = QPushButton("Set as default")
        self.export_button = QPushButton("Export for another machine…")
        self.verify_button.clicked.connect(self.verify_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.default_button.clicked.connect(self.set_default_selected)
        self.export_button.clicked.connect(self.export_selected)
        actions = QHBoxLayout()
        for button in (self.verify_button, self.remove_button, self.default_button, self.export_button):
            actions.addWidget(button)
        actions.addStretch(1)

        self.plan_view = PlanView(self.services, self.tasks)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.plan_view)
        plan_pane = QWidget()
        plan_layout = QVBoxLayout(plan_pane)
        plan_layout.setContentsMargins(0, 0, 0, 0)
        plan_layout.addWidget(scroll, 1)
        plan_layout.addWidget(self.plan_view.footer)  # under the scrolled plan: the load button stays in sight
        registry = QWidget()
        registry_layout = QVBoxLayout(registry)
        registry_layout.setContentsMargins(0, 0, 0, 0)
        registry_layout.addWidget(self.empty_note, 1)
        registry_layout.addWidget(self.table, 1)
        registry_layout.addLayout(actions)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(registry)
        split.addWidget(plan_pane)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 3)
        self.split = split
        self._split_sized = False

        self.discover_tab = DiscoverTab(self.services, self.tasks)
        self.catalog_tab = CatalogTab(self.services, self.tasks)
        self.discover_tab.modelAdded.connect(self._added_elsewhere)
        self.catalog_tab.modelAdded.connect(self._added_elsewhere)
        self.tabs = QTabWidget()
        self.tabs.addTab(split, "Your models")
        self.tabs.addTab(self.discover_tab, "On this machine")
        self.tabs.addTab(self.catalog_tab, "Catalog")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(SPACE.L, SPACE.L, SPACE.L, SPACE.L)
        layout.addLayout(top)
        layout.addWidget(self.jobs)
        layout.addWidget(self.tabs, 1)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._split_sized:  # once, when the window's height is known: most of it for the plan
            self._split_sized = True
            height = max(self.split.height(), 400)
            self.split.setSizes([height // 4, height - height // 4])

    # Reading ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the registry again, keeping the selection."""
        keep = self.selected_model()
        self.table_model.set_models(self.services.models.all(), self.services.current_settings().default_model)
        self.empty_note.setVisible(self.table_model.rowCount() == 0)
        self.table.setVisible(self.table_model.rowCount() > 0)
        self.split.widget(1).setVisible(self.table_model.rowCount() > 0)  # no plan without a model
        if keep is not None:
            self.select_model(keep.id)
        self._selection_changed()
        self.catalog_tab.update_offline()

    def selected_model(self) -> Model | None:
        rows = self.table.selectionModel().selectedRows()
        return self.table_model.model_at(rows[0].row()) if rows else None

    def select_model(self, model_id: str) -> None:
        row = self.table_model.row_of(model_id)
        if row >= 0:
            self.table.selectRow(row)

    def _selection_changed(self, *_: QItemSelection) -> None:
        model = self.selected_model()
        for button in (self.verify_button, self.remove_button, self.default_button, self.export_button):
            button.setEnabled(model is not None and not self.jobs.busy)
        if not self.services.policy.export:
            self.export_button.setEnabled(False)
            self.export_button.setToolTip(f"{SET_BY}: exports are turned off.")
        self.plan_view.set_model(model.id if model else None)

    def _name_of(self, model_id: str) -> str:
        model = self.table_model.model_at(self.table_model.row_of(model_id))
        return model.name if model else model_id

    def import_mode(self) -> ImportMode:
        return self.mode_combo.currentData()

    # Jobs: one at a time, the others wait ----------------------------------------------

    def _submit(self, start: Callable[[], None]) -> None:
        if self.jobs.busy:
            self._pending.append(start)
        else:
            start()
        self._selection_changed()

    def _job_done(self, message: str, *, error: bool = False, changed: bool = False) -> None:
        self.jobs.finish(message, error=error)
        if changed:
            self.refresh()
            self.modelsChanged.emit()
        self._selection_changed()
        if self._pending and not self.jobs.busy:
            self._pending.pop(0)()

    # Importing -------------------------------------------------------------------------

    def choose_files(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(self, "Import model files", str(Path.home()),
                                                "GGUF models (*.gguf);;All files (*)")
        if names:
            self.import_paths([Path(n) for n in names])

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a folder of models (or an exported folder)")
        if folder:
            self.import_folder(Path(folder))

    def import_paths(self, paths: list[Path], mode: ImportMode | None = None) -> None:
        """Import dropped or chosen ``.gguf`` files (a split model by its first shard), by
        ``mode`` or the one chosen at the top; each file's result or reason is shown."""
        mode = mode or self.import_mode()
        files = [p for p in paths if p.suffix.lower() == ".gguf"]
        others = [p.name for p in paths if p.suffix.lower() != ".gguf"]
        projectors = [p for p in files if is_projector_name(p.name)]
        files = _first_shards_only([p for p in files if p not in projectors])
        selected = self.selected_model()
        if not files and len(projectors) == 1 and selected is not None and not others:
            self._submit(lambda: self._start_attach(selected, projectors[0], mode))
            return
        if not files:
            self.jobs.finish(
                f"{projectors[0].name} is a vision projector (mmproj), not a model: drop it with its model file, or "
                "select the model and drop it again." if projectors else
                f"Not a model file (Enclave imports .gguf files): {', '.join(others) or 'nothing'}.", error=True)
            return
        others += [p.name for p in projectors[1:]]
        self._submit(lambda: self._start_import(files, mode, others, projectors[0] if projectors else None))

    def _start_attach(self, model: Model, projector: Path, mode: ImportMode) -> None:
        """Give the selected model the dropped projector (checked against it first)."""
        progress, cancelled = self.jobs.start(f"Adding {projector.name} to {model.name}…", cancellable=True)
        models = self.services.models
        self.tasks.run(lambda: models.attach_projector(models.get(model.id), projector, mode, on_progress=progress,
                                                       cancelled=cancelled),
                       on_result=lambda m: self._job_done(f"{m.name} {m.projector.describe()}.", changed=True),
                       on_error=lambda message: self._job_done(f"Not added: {message}", error=True))

    def _start_import(self, files: list[Path], mode: ImportMode, others: list[str],
                      projector: Path | None = None) -> None:
        label = f"Importing {files[0].name}…" if len(files) == 1 else f"Importing {_count(len(files), 'file')}…"
        progress, cancelled = self.jobs.start(label, cancellable=True)

        def work() -> list[tuple[Path, Model | None, str]]:
            done: list[tuple[Path, Model | None, str]] = []
            for path in files:
                if cancelled():
                    done.append((path, None, "cancelled"))
                    continue
                try:
                    report = self.services.import_model(path, mode, mmproj=projector, on_progress=progress,
                                                        cancelled=cancelled)
                    done.append((path, report.imported[0], ""))
                except Exception as exc:  # each file's reason, the rest still goes in
                    done.append((path, None, describe(exc)))
            return done

        self.tasks.run(work, on_result=lambda done: self._imported(done, others),
                       on_error=lambda message: self._job_done(f"Import failed: {message}", error=True))

    def _imported(self, done: list[tuple[Path, Model | None, str]], others: list[str]) -> None:
        lines = [f"Imported {m.name} ({format_size(m.size)}, {ORIGINS[m.origin]}) as {m.id}"
                 + (f"; it {m.projector.describe()}." if m.projector is not None else ".")
                 for _, m, _ in done if m is not None]
        lines += [f"Not imported: {p.name}: {why}" for p, m, why in done if m is None]
        lines += [f"Not imported: {name}: not a .gguf model file." for name in others]
        imported = [m for _, m, _ in done if m is not None]
        self._job_done("\n".join(lines), error=len(imported) < len(done) + len(others), changed=bool(imported))
        if imported:
            self.select_model(imported[-1].id)

    def import_folder(self, folder: Path, mode: ImportMode | None = None) -> None:
        """A folder of GGUF files, or a folder exported from another machine (its manifest
        is checked: every file's size and SHA-256)."""
        mode = mode or self.import_mode()

        def start() -> None:
            progress, cancelled = self.jobs.start(f"Importing from {folder.name}…", cancellable=True)
            self.tasks.run(lambda: self.services.import_model(folder, mode, on_progress=progress, cancelled=cancelled),
                           on_result=self._folder_imported,
                           on_error=lambda message: self._job_done(f"Import failed: {message}", error=True))

        self._submit(start)

    def _folder_imported(self, report: ImportReport) -> None:
        lines = [f"Imported {m.name} ({format_size(m.size)}) as {m.id}"
                 + (f"; it {m.projector.describe()}." if m.projector is not None else ".") for m in report.imported]
        lines += [f"Not imported: {name}: {why}" for name, why in report.refused]
        self._job_done("\n".join(lines) or "Nothing to import.", error=bool(report.refused),
                       changed=bool(report.imported))

    def _added_elsewhere(self, model: Model) -> None:
        self.refresh()
        self.select_model(model.id)
        self.modelsChanged.emit()

    # Verify, remove, default, export ----------------------------------------------------

    def verify_selected(self) -> None:
        model = self.selected_model()
        if model is not None:
            self.verify(model.id)

    def verify(self, model_id: str) -> None:
        """Hash every file of the model again and compare with what was recorded."""
        def start() -> None:
            progress, _ = self.jobs.start(f"Verifying {self._name_of(model_id)}…")
            models = self.services.models
            self.tasks.run(lambda: models.verify(models.get(model_id), progress), on_result=self._verified,
                           on_error=lambda message: self._job_done(f"Not verified: {message}", error=True))

        self._submit(start)

    def _verified(self, result: Verification) -> None:
        m = result.model
        if result.ok:
            self._job_done(f"{m.name}: ok — {_count(len(m.all_files), 'file')}, "
                           f"{format_size(sum(f.size for f in m.all_files))}, every SHA-256 "
                           "matches.", changed=True)
        else:
            self._job_done(f"{m.name}: FAILED\n" + "\n".join(result.problems), error=True, changed=True)

    def remove_selected(self) -> None:
        model = self.selected_model()
        if model is None:
            return
        confirmed, delete_files = self.ask_remove(model)
        if confirmed:
            self.remove(model.id, delete_files=delete_files)

    def ask_remove(self, model: Model) -> tuple[bool, bool]:
        """(remove?, also delete its files in Enclave's folder?)"""
        owned = [f for f in model.files if self.services.models.owns(Path(f.path))]
        box = QMessageBox(QMessageBox.Icon.Question, "Remove model",
                          f"Remove {model.name} from Enclave?\n\nConversations that used it are kept.",
                          QMessageBox.StandardButton.Cancel, self)
        remove = box.addButton("Remove", QMessageBox.ButtonRole.DestructiveRole)
        check = QCheckBox(f"Also delete its files in Enclave's folder ({format_size(sum(f.size for f in owned))})"
                          if owned else "Its files are outside Enclave's folder and are kept")
        check.setEnabled(bool(owned))
        box.setCheckBox(check)
        box.exec()
        return box.clickedButton() is remove, check.isChecked() and bool(owned)

    def remove(self, model_id: str, *, delete_files: bool = False) -> None:
        def start() -> None:
            self.jobs.start("Removing…")
            self.tasks.run(lambda: self.services.remove_model(model_id, delete_files=delete_files),
                           on_result=self._removed,
                           on_error=lambda message: self._job_done(f"Not removed: {message}", error=True))

        self._submit(start)

    def _removed(self, removal: ModelRemoval) -> None:
        lines = [f"Removed {removal.model.name}."] + [f"Kept on disk: {path}" for path in removal.kept]
        if removal.was_default:
            lines.append("It was the default model: choose another for new chats.")
        self._job_done("\n".join(lines), changed=True)

    def set_default_selected(self) -> None:
        model = self.selected_model()
        if model is not None:
            self.set_default(model.id)

    def set_default(self, model_id: str) -> None:
        self.services.settings.set("default_model", model_id)
        self.jobs.finish(f"{model_id} is the default model: new chats use it.")
        self.refresh()
        self.modelsChanged.emit()

    def export_selected(self) -> None:
        model = self.selected_model()
        if model is None:
            return
        folder = QFileDialog.getExistingDirectory(self, f"Export {model.name} to a folder (a USB stick, say)")
        if folder:
            self.export(model.id, Path(folder))

    def export(self, model_id: str, folder: Path) -> None:
        """Copy the model and a manifest (names, sizes, SHA-256) to ``folder``."""
        def start() -> None:
            name = self._name_of(model_id)
            progress, cancelled = self.jobs.start(f"Exporting {name}…", cancellable=True)
            self.tasks.run(lambda: self.services.export_model(model_id, folder, on_progress=progress,
                                                              cancelled=cancelled),
                           on_result=lambda manifest: self._job_done(
                               f"Exported {name} to {folder} ({manifest.name} lists every file's SHA-256). "
                               "On the other machine: Import folder…"),
                           on_error=lambda message: self._job_done(f"Not exported: {message}", error=True))

        self._submit(start)
