"""Page: the libraries — their documents, drag-and-drop ingestion, and whether a library
fits the model's context.

Left: the libraries (documents, unreadable ones), New / Delete. Right: the selected
library's documents (under the table, the selected one in full: its path and why it was not
read; double-click or Open to read its text), Add files… / Add folder… with include/exclude
globs, the running
ingest, the whole-library token line, "Size context" and "Chat" (with this library).
Files and folders dropped on the page go to the selected library, dropped
on a library in the list to that one.

Naming a new library: when ``default_name`` is set (tests, scripted use) the page names
new libraries after it (made unique: "Documents", "Documents 2", …) without a dialog;
when it is None (the default) a dialog asks, pre-filled with such a name.

Reading the library list and document rows happens on the GUI thread (small indexed
queries); ingestion, token counting and sizing run through ``TaskRunner``.
"""

from __future__ import annotations

import html
from collections import deque
from pathlib import Path

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.extract import describe_supported
from app.ingest import IngestReport
from app.libraries import Library
from app.library_service import LibraryTokens, SizingResult
from app.services import Services
from app.types import EnclaveError
from app.warming import WarmReport, Warmth
from ui.document_viewer import DocumentViewer
from ui.empty_state import EmptyState
from ui.library_documents import (
    STATUS,
    TITLE,
    DocumentTableModel,
    ElideRightDelegate,
    document_details,
)
from ui.library_ingest import IngestJob, IngestPanel, IngestRequest
from ui.library_warm import WarmJob, warming_text, warmth_text
from ui.tasks import TaskRunner
from ui.theme import SPACE, error_color, font, icon
from ui.widgets import dropped_paths

LIBRARY_ID = Qt.ItemDataRole.UserRole
NOBODY = "Nobody — record scans as unread"


def split_globs(text: str) -> tuple[str, ...]:
    """'*.md, docs/*  *.txt' -> ('*.md', 'docs/*', '*.txt')."""
    return tuple(p for p in text.replace(",", " ").split() if p)


class LibrariesPage(QWidget):
    librariesChanged = Signal()
    chatWithLibrary = Signal(int)
    warmProgress = Signal(int, int, int)  # (library id, tokens done, tokens in all) of a background warm-up

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.default_name: str | None = None  # see the module docstring
        self.progress_interval = 0.05  # seconds between progress updates of an ingest
        self._queue: deque[IngestRequest] = deque()
        self._job: IngestJob | None = None
        self._measure_generation = 0
        self._warmth_generation = 0
        self._warming: dict[int, int] = {}  # library id -> percent, while it is warmed (or waits to be)
        self._warm_jobs: list[WarmJob] = []
        self.tokens: LibraryTokens | None = None  # the last whole-library figure shown
        self.viewer: DocumentViewer | None = None  # the last document opened
        self.setAcceptDrops(True)
        self._build()
        self.refresh()

    # Layout ---------------------------------------------------------------------------

    def _build(self) -> None:
        self.library_list = QListWidget()
        self.library_list.setWordWrap(True)  # "N documents, M not readable" wraps rather than scrolls
        self.library_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.library_list.currentItemChanged.connect(lambda *_: self._show_selected())
        self.new_button = QPushButton(icon("libraries"), "New library")
        self.new_button.clicked.connect(self.new_library)
        self.delete_button = QPushButton(icon("trash"), "Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(SPACE.L, SPACE.L, 0, SPACE.L)
        left_layout.addWidget(self.library_list, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.new_button)
        buttons.addWidget(self.delete_button)
        left_layout.addLayout(buttons)

        self.title = QLabel()
        self.title.setFont(font("title"))
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.vision_combo = QComboBox()
        self.vision_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.vision_combo.setToolTip("The vision model that reads the text of scanned PDF pages and images "
                                     "(PNG, JPEG, TIFF, WebP) as they are added. Only models imported with their "
                                     "projector are listed.")
        self.vision_combo.activated.connect(lambda _index: self._vision_chosen())
        vision_label = QLabel("Transcribe scans with")
        vision_label.setBuddy(self.vision_combo)
        self.vision_note = QLabel()
        self.vision_note.setFont(font("small"))
        vision_row = QHBoxLayout()
        vision_row.addWidget(vision_label)
        vision_row.addWidget(self.vision_combo)
        vision_row.addWidget(self.vision_note, 1)
        self.add_files_button = QPushButton(icon("upload"), "Add files…")
        self.add_files_button.clicked.connect(self.choose_files)
        self.add_folder_button = QPushButton(icon("folder"), "Add folder…")
        self.add_folder_button.clicked.connect(self.choose_folder)
        self.include_edit = QLineEdit()
        self.include_edit.setPlaceholderText("include, e.g. *.pdf *.md")
        self.exclude_edit = QLineEdit()
        self.exclude_edit.setPlaceholderText("exclude, e.g. drafts/*")
        for edit in (self.include_edit, self.exclude_edit):
            edit.setToolTip("Globs separated by spaces or commas, matched against the file name and its path "
                            "inside the folder; they apply to dropped files and folders too.")
        add_row = QHBoxLayout()
        for widget in (self.add_files_button, self.add_folder_button, self.include_edit, self.exclude_edit):
            add_row.addWidget(widget)

        self.documents = DocumentTableModel(self)
        self.table = QTableView()
        self.table.setModel(self.documents)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # keeps a name's start and its extension
        self.table.setItemDelegateForColumn(STATUS, ElideRightDelegate(self.table))  # a sentence reads from its start
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(TITLE, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(STATUS, QHeaderView.ResizeMode.Stretch)  # the why is a sentence
        self.table.doubleClicked.connect(lambda index: self.open_document(index.row()))
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._show_details())
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.remove_button = QPushButton(icon("trash"), "Remove")
        self.remove_button.setToolTip("Remove the selected documents from this library; the files stay on disk.")
        self.remove_button.clicked.connect(self.remove_selected_documents)
        self.open_button = QPushButton(icon("document"), "Open")
        self.open_button.setToolTip("Read the selected document's text, as the model is given it.")
        self.open_button.clicked.connect(lambda: self.open_document(self._current_row()))

        self.ingest_panel = IngestPanel()

        self.token_line = QLabel()
        self.token_line.setWordWrap(True)
        self.count_button = QPushButton("Count exactly")
        self.count_button.clicked.connect(lambda: self._measure(load=True))
        self.size_button = QPushButton("Size context")
        self.size_button.setToolTip("Count the whole library with the default model and set the context its "
                                    "profile loads with, if this machine holds it.")
        self.size_button.clicked.connect(self.size_context)
        self.sizing_line = QLabel()
        self.sizing_line.setWordWrap(True)
        self.warmth_line = QLabel()
        self.warmth_line.setWordWrap(True)
        self.chat_button = QPushButton(icon("chat"), "Chat")
        self.chat_button.setToolTip("Start a chat whose answers come from this whole library.")
        self.chat_button.clicked.connect(self._chat)
        token_row = QHBoxLayout()
        token_row.addWidget(self.token_line, 1)
        token_row.addWidget(self.count_button)
        action_row = QHBoxLayout()
        action_row.addWidget(self.open_button)
        action_row.addWidget(self.remove_button)
        action_row.addStretch(1)
        action_row.addWidget(self.size_button)
        action_row.addWidget(self.chat_button)

        right = QWidget()
        self.empty = EmptyState("upload", "", "")
        self.table_or_empty = QStackedWidget()
        self.table_or_empty.addWidget(self.table)
        self.table_or_empty.addWidget(self.empty)
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(SPACE.L, SPACE.L, SPACE.XL, SPACE.L)
        right_layout.setSpacing(SPACE.S)
        right_layout.addWidget(self.title)
        right_layout.addWidget(self.message)
        right_layout.addLayout(vision_row)
        right_layout.addLayout(add_row)
        right_layout.addWidget(self.table_or_empty, 1)
        right_layout.addWidget(self.details)
        right_layout.addWidget(self.ingest_panel)
        right_layout.addLayout(token_row)
        right_layout.addWidget(self.warmth_line)
        right_layout.addWidget(self.sizing_line)
        right_layout.addLayout(action_row)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([220, 640])
        page = QVBoxLayout(self)
        page.setContentsMargins(0, 0, 0, 0)
        page.addWidget(splitter)

    # Contract -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the libraries (keeping the selection) and the selected one's documents."""
        selected = self.selected_library_id()
        self.library_list.blockSignals(True)
        self.library_list.clear()
        for library in self.services.libraries.all():
            item = QListWidgetItem(self._label(library))
            item.setData(LIBRARY_ID, library.id)
            self.library_list.addItem(item)
        if self.library_list.count():
            self.library_list.setCurrentItem(self._item(selected) or self.library_list.item(0))
        self.library_list.blockSignals(False)
        self._show_selected()

    def open_library(self, library_id: int) -> None:
        item = self._item(library_id)
        if item is None:
            self.refresh()
            item = self._item(library_id)
        if item is not None:
            self.library_list.setCurrentItem(item)

    def add_paths(self, paths: list[Path], library_id: int | None = None) -> None:
        """Ingest ``paths`` (files and folders) into ``library_id``, else the selected
        library, else a new one (named as the module docstring says). Queued behind a
        running ingest."""
        if not paths:
            return
        if library_id is None:
            library_id = self.selected_library_id()
        if library_id is None:
            created = self._create_library()
            if created is None:
                return
            library_id = created.id
        self._queue.append(IngestRequest(library_id, tuple(paths), split_globs(self.include_edit.text()),
                                         split_globs(self.exclude_edit.text())))
        self._start_next()

    # Libraries ------------------------------------------------------------------------

    def selected_library_id(self) -> int | None:
        item = self.library_list.currentItem()
        return None if item is None else int(item.data(LIBRARY_ID))

    def new_library(self) -> Library | None:
        created = self._create_library()
        if created is not None:
            self.open_library(created.id)
        return created

    def delete_selected(self) -> None:
        library_id = self.selected_library_id()
        if library_id is None:
            return
        if self._is_busy_with(library_id):
            self._say("Files are being added to this library: wait for them (or cancel), then delete it.")
            return
        library = self.services.libraries.find(library_id)
        if library is None:
            self.refresh()
            return
        answer = QMessageBox.question(
            self, "Delete library",
            f"Delete the library {library.name!r} and its {library.documents + library.failed} documents? "
            "The files on disk are not touched.")
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.services.delete_library(library_id)
        self.refresh()
        self.librariesChanged.emit()

    def _create_library(self) -> Library | None:
        name = self._ask_name()
        if not name:
            return None
        try:
            created = self.services.libraries.create(name)
        except EnclaveError as exc:
            self._say(str(exc))
            return None
        self.refresh()
        self.open_library(created.id)
        self.librariesChanged.emit()
        return created

    def _ask_name(self) -> str | None:
        if self.default_name is not None:
            return self._unique(self.default_name)
        name, ok = QInputDialog.getText(self, "New library", "Name of the new library:",
                                        text=self._unique("Documents"))
        return name.strip() if ok and name.strip() else None

    def _unique(self, base: str) -> str:
        taken = {lib.name for lib in self.services.libraries.all()}
        n, name = 1, base
        while name in taken:
            n += 1
            name = f"{base} {n}"
        return name

    def _item(self, library_id: int | None) -> QListWidgetItem | None:
        for row in range(self.library_list.count()):
            item = self.library_list.item(row)
            if item.data(LIBRARY_ID) == library_id:
                return item
        return None

    @staticmethod
    def _label(library: Library) -> str:
        failed = f", {library.failed} not readable" if library.failed else ""
        return f"{library.name}\n{library.documents} documents{failed}"

    # Documents ------------------------------------------------------------------------

    def _show_selected(self) -> None:
        library_id = self.selected_library_id()
        library = self.services.libraries.find(library_id) if library_id is not None else None
        has = library is not None
        for widget in (self.delete_button, self.remove_button, self.size_button, self.chat_button, self.table,
                       self.vision_combo):
            widget.setEnabled(has)
        self._show_vision(library)
        self.sizing_line.clear()
        self.count_button.hide()
        if library is None:
            self.title.setText("Libraries")
            self.message.clear()
            self._show_empty("No library yet", "Drop files or folders here, or press Add files… or Add folder…: "
                             "a library is made for them. A model answers questions from its documents, "
                             "on this machine.", "libraries")
            self.documents.set_documents([])
            self._show_details()
            self.token_line.clear()
            self.warmth_line.clear()
            self.tokens = None
            return
        self.title.setText(library.name)
        self.message.clear()
        self.documents.set_documents(self.services.libraries.documents(library.id))
        if self.documents.rowCount():
            self.table_or_empty.setCurrentWidget(self.table)
        else:
            self._show_empty("This library has no documents yet",
                             "Drop files or folders here, or press Add files… or Add folder…. Enclave reads "
                             f"{describe_supported()}.", "upload")
        self._show_details()
        self._measure()
        self._show_warmth()

    # Vision model -----------------------------------------------------------------------

    def _show_vision(self, library: Library | None) -> None:
        """The combo: nobody, then the models that read images; the library's choice selected (a
        chosen model that no longer reads images is listed as such, so the choice is not hidden)."""
        self.vision_combo.blockSignals(True)
        self.vision_combo.clear()
        self.vision_combo.addItem(NOBODY, None)
        for model in self.services.vision_models():
            self.vision_combo.addItem(model.name, model.id)
        chosen = library.vision_model if library is not None else None
        index = self.vision_combo.findData(chosen) if chosen else 0
        if chosen and index < 0:
            name = self.services.vision_model_name(library) if library is not None else chosen
            self.vision_combo.addItem(f"{name} (no longer reads images)", chosen)
            index = self.vision_combo.count() - 1
        self.vision_combo.setCurrentIndex(index)
        self.vision_combo.blockSignals(False)
        unread = len(self.services.libraries.unread_scans(library.id)) if library is not None else 0
        self.vision_note.setText(f"{unread} scanned {'document' if unread == 1 else 'documents'} unread"
                                 if unread else "")
        if self.vision_combo.count() == 1:
            self.vision_combo.setToolTip("No model that reads images yet: import one with its projector "
                                         "(Models page, or 'enclave models import MODEL --mmproj FILE').")

    def _vision_chosen(self) -> None:
        """Save the library's vision model; with one chosen, offer to read the unread scans now."""
        library_id = self.selected_library_id()
        if library_id is None:
            return
        model = self.vision_combo.currentData()
        try:
            library = self.services.set_library_vision(library_id, model)
        except EnclaveError as exc:
            self._say(str(exc))
            self._show_vision(self.services.libraries.find(library_id))
            return
        unread = self.services.libraries.unread_scans(library_id)
        self._show_vision(library)
        if model is None or not unread:
            return
        count = len(unread)
        answer = QMessageBox.question(
            self, "Transcribe scans",
            f"Transcribe the {count} scanned {'document' if count == 1 else 'documents'} now? "
            f"{self.vision_combo.currentText()} reads them page by page; you can cancel at any time.")
        if answer == QMessageBox.StandardButton.Yes:
            self._queue.append(IngestRequest(library_id, tuple(Path(d.path) for d in unread), (), ()))
            self._start_next()

    def _show_empty(self, heading: str, text: str, icon_name: str) -> None:
        self.empty.show_text(heading, text, icon_name)
        self.table_or_empty.setCurrentWidget(self.empty)

    def _current_row(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if len(rows) == 1 else None

    def _show_details(self) -> None:
        """The selected document in full under the table (its reason in words, not only on hover)."""
        row = self._current_row()
        doc = self.documents.document(row) if row is not None else None
        self.open_button.setEnabled(doc is not None and doc.ok)
        if doc is None:
            self.details.setText("Select a document to see where it is and, if it was not read, why; "
                                 "double-click one to read its text." if self.documents.rowCount() else "")
            return
        text = document_details(doc, tokens=self.documents.tokens_of(doc))
        if doc.transcription_note:
            text += f"<br>Scanned: {html.escape(doc.transcription_note)}."
        self.details.setText(text)

    def open_document(self, row: int | None) -> None:
        """Show the document's text (and pages) in the viewer a citation opens."""
        if row is None:
            self._say("Select a document to open first.")
            return
        doc = self.documents.document(row)
        if not doc.ok:  # the details line already says why, and what to do
            self._say(f"{doc.error or 'This document was not read.'} There is no text to show.")
            return
        self.viewer = DocumentViewer(self.services.libraries, doc.id, None, self)
        self.viewer.show()

    def remove_selected_documents(self) -> None:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        if not rows:
            self._say("Select the documents to remove from the library first.")
            return
        for row in rows:
            self.services.libraries.remove_document(self.documents.document(row).id)
        self._after_change()
        library_id = self.selected_library_id()
        if library_id is not None:  # warm again: with document blocks nothing is read, else the rest is
            self._warm_in_background(library_id)

    def _after_change(self) -> None:
        library_id = self.selected_library_id()
        self.refresh()
        if library_id is not None:
            self.open_library(library_id)
        self.librariesChanged.emit()

    def choose_files(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(self, "Add files to the library")
        self.add_paths([Path(n) for n in names])

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder to the library")
        if folder:
            self.add_paths([Path(folder)])

    # Ingestion ------------------------------------------------------------------------

    @property
    def ingesting(self) -> bool:
        return self._job is not None

    def stop(self) -> None:
        """Cancel the running ingest (it stops after the file being read) and drop the
        queued ones: for a window that is closing."""
        self._queue.clear()
        if self._job is not None:
            self.ingest_panel.cancel()
        for warm_job in self._warm_jobs:
            warm_job.cancel()

    def _is_busy_with(self, library_id: int) -> bool:
        return any(r.library_id == library_id for r in self._queue) or (
            self._job is not None and self._job.request.library_id == library_id)

    def _start_next(self) -> None:
        if self._job is not None or not self._queue:
            return
        request = self._queue.popleft()
        library = self.services.libraries.find(request.library_id)
        if library is None:
            self._say("That library was deleted before its files could be added.")
            self._start_next()
            return
        job = IngestJob(self.services, request, interval=self.progress_interval, parent=self)
        self._job = job
        self.ingest_panel.start(job, library.name)
        self.tasks.run(job.run, on_result=lambda report: self._ingest_done(job, report),
                       on_error=lambda message: self._ingest_failed(job, message), serial=False)

    def _ingest_done(self, job: IngestJob, report: IngestReport) -> None:
        self.ingest_panel.finish(report)
        self._finish_job(job)
        if report.added or report.updated:
            self._warm_in_background(job.request.library_id)

    def _ingest_failed(self, job: IngestJob, message: str) -> None:
        self.ingest_panel.fail(message)
        self._finish_job(job)

    def _finish_job(self, job: IngestJob) -> None:
        self._job = None
        job.deleteLater()
        self._after_change()
        self._start_next()

    # Tokens and context ---------------------------------------------------------------

    def _measure(self, *, load: bool = False) -> None:
        """The whole-library token line, computed on the serial (model) thread; a newer
        request makes an older answer stale."""
        library_id = self.selected_library_id()
        if library_id is None:
            return
        self._measure_generation += 1
        generation = self._measure_generation
        self.token_line.setText("Whole library: counting tokens…")

        def shown(value: LibraryTokens) -> None:
            if generation == self._measure_generation and value.library_id == self.selected_library_id():
                self._show_tokens(value)

        def failed(message: str) -> None:
            if generation == self._measure_generation:
                self.token_line.setText(f"Whole library: tokens unknown — {message}")

        self.tasks.run(lambda: self.services.library_tokens(library_id, load=load), on_result=shown,
                       on_error=failed, serial=True)

    def _show_tokens(self, value: LibraryTokens) -> None:
        self.tokens = value
        self.token_line.setText(value.describe())
        self.token_line.setStyleSheet("" if value.fits else f"color: {error_color()};")
        self.documents.set_token_counts(value.per_document)
        self._show_details()
        self.count_button.setVisible(not value.exact and value.model_name is not None)

    # Warmth ---------------------------------------------------------------------------

    def _show_warmth(self) -> None:
        """The selected library's state for the default model: warming (this page knows),
        else ready or cold (the prompt cache's table says; on the serial thread, where the
        runtime is used, as it reads the model file's header)."""
        library_id = self.selected_library_id()
        if library_id is None:
            return
        if library_id in self._warming:
            self.warmth_line.setText(warming_text(self._warming_model, self._warming[library_id]))
            return
        self._warmth_generation += 1
        generation = self._warmth_generation

        def shown(warmth: Warmth) -> None:
            if (generation == self._warmth_generation and warmth.library_id == self.selected_library_id()
                    and warmth.library_id not in self._warming):
                self.warmth_line.setText(warmth_text(warmth))

        def failed(message: str) -> None:
            if generation == self._warmth_generation:
                self.warmth_line.setText(f"Warmth unknown: {message}")

        self.warmth_line.setText("Warmth: checking…")
        self.tasks.run(lambda: self.services.library_warmth(library_id), on_result=shown, on_error=failed,
                       serial=True)

    def _warm_in_background(self, library_id: int) -> None:
        """Warm the library for the default model on the serial thread (a question asked
        meanwhile waits behind it, then restores what it saved)."""
        if not self.services.current_settings().default_model:
            return
        job = WarmJob(self.services, library_id, parent=self)
        job.progress.connect(self._warm_progress)
        self._warm_jobs.append(job)
        self._warming[library_id] = 0
        self._show_warmth()
        self.tasks.run(job.run, on_result=lambda report: self._warm_finished(job, report),
                       on_error=lambda message: self._warm_finished(job, None, message), serial=True)

    def _warm_progress(self, library_id: int, done: int, total: int) -> None:
        self.warmProgress.emit(library_id, done, total)
        self._warming[library_id] = done * 100 // total if total else 0
        if library_id == self.selected_library_id():
            self.warmth_line.setText(warming_text(self._warming_model, self._warming[library_id]))

    def _warm_finished(self, job: WarmJob, report: WarmReport | None, error: str | None = None) -> None:
        self._warm_jobs.remove(job)
        job.deleteLater()
        if not any(j.library_id == job.library_id for j in self._warm_jobs):
            self._warming.pop(job.library_id, None)
        if job.library_id != self.selected_library_id():
            return
        if error is not None:
            self.warmth_line.setText(f"Not warmed: {error}")
        else:
            self._show_warmth()

    @property
    def _warming_model(self) -> str | None:
        model = self.services.current_settings().default_model
        if not model:
            return None
        registered = self.services.registered_model(model)  # named as the warmth line names it
        return registered.name if registered is not None else Path(model).name

    def size_context(self) -> None:
        library_id = self.selected_library_id()
        if library_id is None:
            return
        self.size_button.setEnabled(False)
        self.sizing_line.setText("Sizing the context for this library…")

        def failed(message: str) -> None:
            self.size_button.setEnabled(True)
            self.sizing_line.setText(message)

        self.tasks.run(lambda: self.services.size_library(library_id), on_result=self._sized, on_error=failed,
                       serial=True)

    def _sized(self, result: SizingResult) -> None:
        self.size_button.setEnabled(True)
        sizing = result.sizing
        text = f"{result.model_name}: {sizing.describe()}"
        if sizing.fits:
            try:
                self.services.configure_model(result.model, n_ctx=sizing.needed_ctx)
                text += f" {result.model_name} now loads with a context of {sizing.needed_ctx:,} tokens."
            except EnclaveError as exc:
                text += f" The context was left as it is: {exc}"
        else:
            text += " The context was left as it is."
        self.sizing_line.setText(text)
        if result.library_id == self.selected_library_id():
            self._measure()

    def _chat(self) -> None:
        library_id = self.selected_library_id()
        if library_id is not None:
            self.chatWithLibrary.emit(library_id)

    def _say(self, text: str) -> None:
        self.message.setText(text)

    # Drag and drop --------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_paths(event.mimeData()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if dropped_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = dropped_paths(event.mimeData())
        if not paths:
            return
        event.acceptProposedAction()
        self.add_paths(paths, self.library_at(event.position().toPoint()))

    def library_at(self, pos: QPoint) -> int | None:
        """The library under ``pos`` (page coordinates) in the list, if any."""
        viewport = self.library_list.viewport()
        local = viewport.mapFrom(self, pos)
        if not viewport.rect().contains(local):
            return None
        item = self.library_list.itemAt(local)
        return None if item is None else int(item.data(LIBRARY_ID))
