"""Page: the chat — header, messages, composer, streaming replies.

Every turn is one ``TaskRunner.stream`` over ``ChatService.send`` / ``regenerate`` /
``edit_and_resend`` (serial: the worker serves one request at a time); its events arrive
here on the GUI thread. The draft in the composer is cleared only once the service says
the message is saved, so a failed send never loses it.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QMouseEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListView,
    QMenu,
    QMessageBox,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

import ui.pyside_fixes  # noqa: F401 - guards True against PySide6 6.12's emit leak
from app.chat import (
    ChatEvent,
    ContextRaised,
    ContextTrimmed,
    LibraryContextNeed,
    ModelLoaded,
    ModelLoading,
    PromptProgress,
    ReplyDelta,
    ReplyFinished,
    UserMessageSaved,
    WorkerBusy,
)
from app.conversations import Conversation, ImageRef
from app.library_chat import LibraryCounting
from app.services import Services
from app.types import EnclaveError
from ui.chat_card import COLUMN_MAX, PADDING, SIDE
from ui.chat_delegate import REASONING_HREF, SOURCES_HREF, MessageDelegate
from ui.chat_model import MessageListModel
from ui.chat_widgets import MessageBar
from ui.chat_widgets import PromptProgress as PromptProgressRow
from ui.document_viewer import DocumentViewer
from ui.image_attachments import (
    FILE_FILTER,
    STRIP_THUMB,
    AttachmentStrip,
    ImageComposer,
    ImageItem,
    ReadResult,
    read_each,
)
from ui.image_thumbnails import ThumbnailCache
from ui.image_viewer import ImageViewer
from ui.markdown import COPY_PREFIX, parse_citation
from ui.tasks import TaskRunner
from ui.theme import SPACE, font, icon
from ui.widgets import ElidedLabel

PROGRESS_MIN_TOKENS = 256  # shorter prompts are read too fast for a progress bar to help
TICK_MS = 500  # how often "Loading … (n s)" counts
RELAYOUT_MS = 60  # heights that change while a reply streams are laid out at most this often
NEW = -1  # the drafts key of a conversation not created yet


class ChatPage(QWidget):
    conversationsChanged = Signal()
    conversationChanged = Signal(int)  # the id shown (NEW: not created yet): opened, created, model, reply done

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.conversation: Conversation | None = None
        self._new_library: int | None = None  # the library of a chat not created yet
        self._drafts: dict[int, str] = {}
        self._draft_images: dict[int, list] = {}  # the images attached to each draft (with their thumbnails)
        self._reading_images = 0  # images being read for the message box
        self._busy = False  # a turn is running (set before it starts: a synchronous runner finishes inside)
        self._sent_text: str | None = None  # what the running turn sent, to clear it once saved
        self._sent_images: list[ImageRef] = []  # and the images it sent
        self._editing = False  # the composer holds the last user message, to resend
        self._stick_to_bottom = True
        self._format_noted: set[int] = set()  # conversations told that their model's chat format is a guess
        self._stopping = False  # Stop was pressed; the worker has not confirmed yet
        self._loading: tuple[str, float] | None = None  # the model being loaded and since when
        self._model_names: dict[str, str] = {}
        self.viewer: DocumentViewer | None = None
        self.image_viewer: ImageViewer | None = None
        self.thumbnails = ThumbnailCache(services.image_png, tasks, self)
        self._build()
        self.new_conversation()

    # Building ------------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.crash_banner = MessageBar("warning", "Reload model")
        self.crash_banner.actionTriggered.connect(self.reload_model)
        layout.addWidget(self.crash_banner)

        header = QHBoxLayout()
        self.title = ElidedLabel()
        self.title.setFont(font("heading"))
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.library_icon = QLabel()
        self.library_label = QLabel()
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(200)
        self.model_combo.setToolTip("The model that answers in this chat")
        self.model_combo.activated.connect(self._model_chosen)
        header.addWidget(self.title, 1)
        header.addWidget(self.library_icon)
        header.addWidget(self.library_label)
        header.addWidget(self.model_combo)
        layout.addLayout(header)

        self.error_bar = MessageBar("error")
        self.notice_bar = MessageBar("info")
        layout.addWidget(self.error_bar)
        layout.addWidget(self.notice_bar)

        self.model = MessageListModel(self.services.conversations)
        self.view = QListView()
        self.view.setModel(self.model)
        self.delegate = MessageDelegate(self.view)
        self.delegate.model_name = self._model_name
        self.delegate.thumbnail = self.thumbnails.get
        self.thumbnails.loaded.connect(lambda: self.view.viewport().update())
        self.view.setItemDelegate(self.delegate)
        self.view.setFrameShape(QListView.Shape.NoFrame)
        self.view.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.view.verticalScrollBar().setSingleStep(24)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setMouseTracking(True)
        self.view.setWordWrap(True)
        self.view.viewport().installEventFilter(self)
        bar = self.view.verticalScrollBar()
        bar.valueChanged.connect(self._scrolled)
        bar.rangeChanged.connect(self._range_changed)
        self._relayout_timer = QTimer(self, singleShot=True, interval=RELAYOUT_MS, timeout=self._relayout)
        self.delegate.heightChanged.connect(self._schedule_relayout)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        layout.addWidget(self.view, 1)

        self._tick = QTimer(self, interval=TICK_MS, timeout=self._show_loading)
        column = QWidget()  # the status and the composer, as wide as the messages' column
        column.setMaximumWidth(COLUMN_MAX + 2 * (PADDING + SIDE))
        below = QVBoxLayout(column)
        below.setContentsMargins(SIDE, 0, SIDE, 0)
        below.setSpacing(SPACE.XS)
        self.progress = PromptProgressRow()
        self.progress.cancelRequested.connect(self.stop)
        below.addWidget(self.progress)

        self.edit_note = QLabel("Editing your last message: Enter resends it, Escape cancels.")
        self.edit_note.hide()
        below.addWidget(self.edit_note)
        self.image_error = MessageBar("error")  # why an image was not attached, until dismissed
        below.addWidget(self.image_error)
        self.attachments = AttachmentStrip()
        self.attachments.changed.connect(self._update_buttons)
        below.addWidget(self.attachments)
        row = QHBoxLayout()
        self.composer = ImageComposer()
        self.composer.submitted.connect(self.submit)
        self.composer.escaped.connect(self._cancel_edit)
        self.composer.imagesGiven.connect(self.attach_images)
        buttons = QVBoxLayout()
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self._send_or_stop)
        self.regenerate_button = self._tool_button("regenerate", "Answer the last message again (the reply "
                                                   "shown now is kept as an alternative)", self.regenerate)
        self.edit_button = self._tool_button("edit", "Edit your last message and send it again", self.edit_last)
        self.attach_button = self._tool_button("image", "Attach images (PNG, JPEG, TIFF, WebP, GIF, BMP) for a "
                                               "model that reads images; you can also paste or drop them here",
                                               self.choose_images)
        self.attach_button.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.attach_button.setAccessibleName("Attach images")
        buttons.addWidget(self.send_button)
        tools = QHBoxLayout()
        tools.addWidget(self.attach_button)
        tools.addSpacing(SPACE.S)  # the message box's tool apart from the last message's
        tools.addWidget(self.regenerate_button)
        tools.addWidget(self.edit_button)
        tools.addStretch(1)
        buttons.addLayout(tools)
        buttons.addStretch(1)
        row.addWidget(self.composer, 1)
        row.addLayout(buttons)
        below.addLayout(row)
        centred = QHBoxLayout()
        centred.addWidget(column)
        layout.addLayout(centred)
        self._set_send_icon()

    def _tool_button(self, name: str, tip: str, slot: object) -> QToolButton:
        button = QToolButton()
        button.setIcon(icon(name))
        button.setToolTip(tip)
        button.setAutoRaise(True)
        button.clicked.connect(slot)  # type: ignore[arg-type]
        return button

    def _set_send_icon(self) -> None:
        self.send_button.setIcon(icon("stop" if self.busy else "send", size=16))

    # The contract ------------------------------------------------------------------------------

    def open_conversation(self, conversation_id: int) -> None:
        self._stash_draft()
        try:
            self.conversation = self.services.conversations.get(conversation_id)
        except EnclaveError as exc:
            self.show_error(str(exc))
            return
        self._new_library = self.conversation.library_id
        self._show_conversation()

    def new_conversation(self, library_id: int | None = None) -> None:
        """An empty chat; it is created in the database with its first message."""
        self._stash_draft()
        self.conversation = None
        self._new_library = library_id
        self._show_conversation()

    def stop(self) -> None:
        """Stop the reply being generated (or the prompt being read, the model loading); its
        text so far is kept. "Stopping…" at once, until the worker confirms."""
        if self.busy and not self._stopping:
            self._stopping = True
            self.services.chat.cancel()
            self._tick.stop()
            self.progress.show_status("Stopping…", cancellable=False)
            self._update_buttons()

    def focus_composer(self) -> None:
        self.composer.setFocus()

    def changeEvent(self, event: QEvent) -> None:
        """Light ↔ dark: icons and the messages' documents are drawn again in the new colours."""
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "delegate"):
            self.delegate.forget()
            self.view.doItemsLayout()
            self.regenerate_button.setIcon(icon("regenerate"))
            self.edit_button.setIcon(icon("edit"))
            self.attach_button.setIcon(icon("image"))
            self.attachments.restyle()
            self._set_send_icon()
            self.library_icon.setPixmap(icon("libraries", size=16).pixmap(16, 16))  # no database read

    def showEvent(self, event: QShowEvent) -> None:
        """Models may have been imported on another page meanwhile."""
        super().showEvent(event)
        self._fill_models()

    # State ----------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def conversation_id(self) -> int | None:
        return self.conversation.id if self.conversation else None

    def _draft_key(self) -> int:
        return self.conversation.id if self.conversation else NEW

    def _stash_draft(self) -> None:
        self._cancel_edit()
        self._drafts[self._draft_key()] = self.composer.toPlainText()
        self._draft_images[self._draft_key()] = self.attachments.snapshot()

    def _show_conversation(self) -> None:
        self.error_bar.hide()
        self.notice_bar.hide()
        self.delegate.forget()
        self.model.set_conversation(self.conversation_id)
        self._stick_to_bottom = True
        self.view.scrollToBottom()
        self.composer.setPlainText(self._drafts.pop(self._draft_key(), ""))
        self.attachments.set_refs(self._draft_images.pop(self._draft_key(), []))
        self.image_error.hide()
        self._refresh_header()
        self._update_buttons()
        self.conversationChanged.emit(self._draft_key())

    def _refresh_header(self) -> None:
        if self.conversation is not None:
            try:
                self.conversation = self.services.conversations.get(self.conversation.id)
            except EnclaveError:  # deleted from the sidebar meanwhile
                self.conversation = None
                self.model.set_conversation(None)
        self.title.setText((self.conversation.title if self.conversation else "") or "New chat")
        library_id = self.conversation.library_id if self.conversation else self._new_library
        library = self.services.libraries.find(library_id) if library_id is not None else None
        self.library_label.setText(library.name if library else "")
        self.library_label.setToolTip("Answers in this chat come from this library" if library else "")
        self.library_icon.setPixmap(icon("libraries", size=16).pixmap(16, 16))
        self.library_label.setVisible(library is not None)
        self.library_icon.setVisible(library is not None)
        self._fill_models()

    def _fill_models(self) -> None:
        current = self.chosen_model() if self.model_combo.count() else None
        wanted = (self.conversation.model if self.conversation else current) or \
            self.services.settings.load().default_model
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for model in self.services.models.all():
            self.model_combo.addItem(model.name, model.id)
        for remote in self.services.remote_models.all():  # served elsewhere: the name says where
            self.model_combo.addItem(f"{remote.name} · on {remote.where}", remote.name)
            self.model_combo.setItemData(self.model_combo.count() - 1,
                                         f"{remote.model_id} on the server at {remote.where}",
                                         Qt.ItemDataRole.ToolTipRole)
        if wanted:
            index = self.model_combo.findData(wanted)
            if index < 0:
                try:
                    found = self.services.registered_model(wanted)
                except EnclaveError:  # an ambiguous id prefix
                    found = None
                index = self.model_combo.findData(found.id) if found else -1
            if index < 0:  # a file that is not registered: show it anyway
                self.model_combo.addItem(Path(wanted).name, wanted)
                index = self.model_combo.count() - 1
            self.model_combo.setCurrentIndex(index)
        else:
            self.model_combo.setCurrentIndex(-1)
            self.model_combo.setPlaceholderText("Choose a model")
        self.model_combo.blockSignals(False)

    def chosen_model(self) -> str | None:
        return self.model_combo.currentData() if self.model_combo.currentIndex() >= 0 else None

    def _model_chosen(self) -> None:
        if self.conversation is not None and self.chosen_model():
            self.conversation = self.services.conversations.update(self.conversation.id, model=self.chosen_model())
        self.conversationChanged.emit(self._draft_key())

    def _update_buttons(self) -> None:
        self.send_button.setText("Stopping…" if self._stopping else "Stop" if self.busy else "Send")
        self.send_button.setEnabled(not self._stopping)
        self._set_send_icon()
        has_messages = self.model.rowCount() > 0
        self.regenerate_button.setEnabled(not self.busy and has_messages)
        self.edit_button.setEnabled(not self.busy and has_messages)
        self.attach_button.setEnabled(not self._editing)  # a resend keeps the message's own images

    def show_error(self, text: str) -> None:
        self.error_bar.show_text(text)

    # Turns ------------------------------------------------------------------------------------------

    def _send_or_stop(self) -> None:
        if self.busy:
            self.stop()
        else:
            self.submit()

    def submit(self) -> None:
        """Enter or Send: send the composer's text and attached images (or resend the text,
        when editing). While images are still being read, nothing is sent yet."""
        text = self.composer.toPlainText().strip()
        images = [] if self._editing else self.attachments.refs()
        if not (text or images) or self.busy:
            return
        if self._reading_images:
            self.notice_bar.show_text("Your images are still being read: send again in a moment.")
            return
        cid = self._ensure_conversation()
        if cid is None:
            return
        self._sent_images = images
        if self._editing:
            last_user = self._last_row("user")
            if last_user is not None:
                self.model.remove_from(last_user)
            self._start(lambda: self.services.chat.edit_and_resend(cid, text), text)
        else:
            self._start(lambda: self.services.chat.send(cid, text, images), text)

    # Images in the message box ------------------------------------------------------------------

    def choose_images(self) -> None:
        """The Attach button: images chosen in a file dialog."""
        files = self.ask_image_files()
        if files:
            self.attach_images(files)

    def ask_image_files(self) -> list[Path]:
        """A method of its own so tests can answer it."""
        names, _ = QFileDialog.getOpenFileNames(self, "Attach images", str(Path.home()), FILE_FILTER)
        return [Path(name) for name in names]

    def attach_images(self, items: list[ImageItem]) -> None:
        """Read ``items`` (files, or pasted PNG bytes with a name) on a pool thread and attach
        what was read; a refused image's reason is shown, the rest are attached."""
        if not items:
            return
        self._reading_images += len(items)
        self.attachments.set_reading(self._reading_images)
        box = round(STRIP_THUMB * self.devicePixelRatioF())
        self.tasks.run(lambda: read_each(self.services.add_images, self.services.image_png, items, box),
                       on_result=lambda result: self._images_read(len(items), result),
                       on_error=lambda message: self._images_read(len(items), ReadResult([], [message])))

    def _images_read(self, count: int, result: ReadResult) -> None:
        self._reading_images = max(0, self._reading_images - count)
        self.attachments.set_reading(self._reading_images)
        for ref, image in result.attached:
            self.attachments.add(ref, image)
        if result.refused:
            self.image_error.show_text("\n".join(result.refused))
        elif result.attached:
            self.image_error.hide()

    def regenerate(self) -> None:
        if self.busy or self.conversation is None:
            return
        last = self.model.rowCount() - 1
        if last >= 0 and self.model.message_at(last).role == "assistant":
            self.model.remove_from(last)
        cid = self.conversation.id
        self._start(lambda: self.services.chat.regenerate(cid), None)

    def edit_last(self) -> None:
        row = self._last_row("user")
        if self.busy or row is None:
            return
        self._drafts[NEW - 1] = self.composer.toPlainText()  # what was typed before, back on Escape
        self._draft_images[NEW - 1] = self.attachments.snapshot()
        self.attachments.clear()
        self.composer.setPlainText(self.model.message_at(row).content)
        self._editing = True
        self.edit_note.show()
        self._update_buttons()
        self.focus_composer()

    def _cancel_edit(self) -> None:
        if self._editing:
            self._editing = False
            self.edit_note.hide()
            self.composer.setPlainText(self._drafts.pop(NEW - 1, ""))
            self.attachments.set_refs(self._draft_images.pop(NEW - 1, []))
            self._update_buttons()

    def _last_row(self, role: str) -> int | None:
        for row in range(self.model.rowCount() - 1, max(-1, self.model.rowCount() - 50), -1):
            if self.model.message_at(row).role == role:
                return row
        return None

    def _ensure_conversation(self) -> int | None:
        if self.conversation is not None:
            return self.conversation.id
        try:
            self.conversation = self.services.chat.start(model=self.chosen_model(), library_id=self._new_library)
        except EnclaveError as exc:
            self.show_error(str(exc))
            return None
        self.model.set_conversation(self.conversation.id)
        self.conversationsChanged.emit()
        self.conversationChanged.emit(self.conversation.id)
        return self.conversation.id

    def _start(self, make: object, sent_text: str | None) -> None:
        self.error_bar.hide()
        self.notice_bar.hide()
        self.crash_banner.hide()
        self._sent_text = sent_text
        self._stick_to_bottom = True
        cid = self.conversation_id
        self._busy = True
        self._stopping = False
        self._update_buttons()
        self.progress.show_status("Sending…")
        if cid is None or self.conversation is None or self.conversation.library_id is None:
            self._stream(cid, make)
            return
        # The library's tokens counted exactly for the model first (with progress), so the
        # context is sized from them.
        self.tasks.stream(lambda: self.services.chat.count_library(cid),
                          on_item=lambda event: self._on_event(cid, event),
                          on_done=lambda _: self._ask_context_then_stream(cid, make),
                          on_error=lambda message: self._finished(cid, message), serial=True)

    def _ask_context_then_stream(self, cid: int, make: object) -> None:
        # A library that needs more context than the model's profile gives: ask first.
        self.tasks.run(lambda: self.services.chat.library_context_need(cid),
                       on_result=lambda need: self._resolve_context_then_stream(cid, need, make),
                       on_error=lambda message: self._finished(cid, message), serial=True)

    def ask_library_context(self, need: LibraryContextNeed) -> str:
        """'raise' (save the longer context in the profile), 'keep' (the profile's, for this
        conversation) or 'cancel'. A method of its own so tests can answer it."""
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("This library needs a longer context")
        if need.whole:
            box.setText(f"The whole library needs a context of {need.needed:,} tokens, and this machine holds it. "
                        f"The model's profile loads {need.profile_ctx:,}.")
        else:
            box.setText(f"The whole library is more than this machine holds, but a context of {need.needed:,} "
                        f"tokens holds more of it than the {need.profile_ctx:,} the model's profile loads.")
        box.setInformativeText(f"Use {need.needed:,} tokens from now on (saved in the model's profile), or keep "
                               f"{need.profile_ctx:,}? Where the library does not fit, each answer reads the "
                               "documents most relevant to the question.")
        use = box.addButton(f"Use {need.needed:,}", QMessageBox.ButtonRole.AcceptRole)
        keep = box.addButton(f"Keep {need.profile_ctx:,}", QMessageBox.ButtonRole.RejectRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(use)
        box.exec()
        return "raise" if box.clickedButton() is use else "keep" if box.clickedButton() is keep else "cancel"

    def _resolve_context_then_stream(self, cid: int, need: LibraryContextNeed | None, make: object) -> None:
        if need is not None:
            answer = self.ask_library_context(need)
            if answer == "cancel":
                self._finished(cid, None)
                return
            try:
                if answer == "raise":
                    self.services.configure_model(need.model, n_ctx=need.needed)
                else:
                    self.services.chat.keep_profile_context.add(cid)
            except EnclaveError as exc:
                self._finished(cid, str(exc))
                return
        self._stream(cid, make)

    def _stream(self, cid: int | None, make: object) -> None:
        self.tasks.stream(
            make,  # type: ignore[arg-type]
            on_item=lambda event: self._on_event(cid, event),
            on_done=lambda _: self._finished(cid, None),
            on_error=lambda message: self._finished(cid, message),
            serial=True,
        )

    def show_library_warming(self, library_id: int, done: int, total: int) -> None:
        """A background warm-up of a library (the libraries page's): a question on it waits
        behind it on the serial thread, so its progress is the question's, shown here."""
        waiting = self._busy and self.conversation is not None and self.conversation.library_id == library_id
        if waiting and done < total:
            self.progress.update_progress(done, total, what="Reading the library before your question")
        elif waiting:
            self.progress.reset()

    def _on_event(self, cid: int | None, event: ChatEvent) -> None:
        here = cid == self.conversation_id
        if isinstance(event, UserMessageSaved):
            if here:
                self.model.append(event.message)
                if self._sent_text is not None and self.composer.toPlainText().strip() == self._sent_text:
                    self.composer.clear()
                    self._editing = False
                    self.edit_note.hide()
                if self._sent_images and self.attachments.refs() == self._sent_images:
                    self.attachments.clear()
            elif cid is not None:
                self._drafts.pop(cid, None)
                self._draft_images.pop(cid, None)
            self._sent_text = None
            self._sent_images = []
            self.conversationsChanged.emit()
        elif self._stopping and isinstance(event, LibraryCounting | WorkerBusy | ModelLoading | ModelLoaded
                                           | PromptProgress):
            pass  # "Stopping…" stays until the turn ends
        elif isinstance(event, WorkerBusy):
            if here:
                self.progress.show_status("Waiting for the API server's requests to finish…")
        elif isinstance(event, LibraryCounting):
            if here and event.done < event.total:
                self.progress.show_step(event.done, event.total, event.describe())
            else:
                self.progress.reset()
        elif isinstance(event, ModelLoading):
            self._loading = (self._model_name(event.model) or Path(event.model).name, time.monotonic())
            self._show_loading()
            self._tick.start()
            self.conversationChanged.emit(self._draft_key())  # the side panel says "Loading…"
        elif isinstance(event, ModelLoaded):
            self._loading = None
            self._tick.stop()
            self.progress.show_status("Reading the prompt…")
            self.conversationChanged.emit(self._draft_key())  # the side panel shows it loaded
        elif isinstance(event, PromptProgress):
            if here and event.images and event.images_done < event.images:
                self.progress.show_step(event.images_done, event.images, f"{event.describe()}…")
            elif here and event.total >= PROGRESS_MIN_TOKENS and event.done < event.total:
                self.progress.update_progress(event.done, event.total)
            elif here and event.done < event.total:
                self.progress.show_status(f"Reading the prompt {event.done:,} / {event.total:,}")
            elif event.done >= event.total:
                self.progress.reset()  # read: the reply's card says "Writing…" from its first word
        elif isinstance(event, ContextRaised):
            if here:
                self.notice_bar.show_text(f"{event.describe()} The Models page keeps it for good.")
        elif isinstance(event, ContextTrimmed):
            if here:
                self.notice_bar.show_text(
                    f"{event.dropped} earlier message{'s' if event.dropped != 1 else ''} left out of the prompt "
                    f"to fit the model's context of {event.n_ctx:,} tokens.")
        elif isinstance(event, ReplyDelta):
            if not self._stopping:
                self.progress.reset()
            if here:
                if not self.model.is_live(event.message_id):
                    self.model.start_live(self.services.conversations.message(event.message_id))
                self.model.add_delta(event.message_id, event.answer, event.reasoning)
        elif isinstance(event, ReplyFinished):
            if not self._stopping:
                self.progress.reset()
            if here:
                self.model.append(event.message)
            message = event.message
            if message.status == "error" and "crashed" in (message.error or ""):
                self.crash_banner.show_text(f"The model stopped working: {message.error}")

    def _show_loading(self) -> None:
        if self._loading is not None and not self._stopping:
            name, since = self._loading
            self.progress.show_status(f"Loading {name} ({int(time.monotonic() - since)} s)…")

    def _model_name(self, ref: str | None) -> str | None:
        """What the user calls the model ``ref`` (a registered model's name; else its file's)."""
        if not ref:
            return None
        if ref not in self._model_names:
            remote = self.services.remote_model(ref)
            try:
                found = None if remote else self.services.registered_model(ref)
            except EnclaveError:
                found = None
            self._model_names[ref] = (f"{remote.name} on {remote.where}" if remote
                                      else found.name if found else Path(ref).name)
        return self._model_names[ref]

    def _finished(self, cid: int | None, error: str | None) -> None:
        self._busy = False
        self._stopping = False
        self._loading = None
        self._tick.stop()
        self.progress.reset()
        if error is not None:
            self.show_error(error)
        if cid == self.conversation_id:
            self.model.sync()  # a failed regenerate or edit deleted nothing after all, or did
            self._refresh_header()
            self._note_guessed_format(cid)
        self._update_buttons()
        self.conversationsChanged.emit()
        self.conversationChanged.emit(self._draft_key())  # the model is loaded now, the context grew

    def _note_guessed_format(self, cid: int | None) -> None:
        """Once per conversation: the loaded model has no chat template and none is known for
        it, so replies use ChatML; say so and where to choose another."""
        loaded = self.services.runtime.model
        if cid is None or cid in self._format_noted or loaded is None or not loaded.chat_format_guessed:
            return
        self._format_noted.add(cid)
        note = (f"{self.model_combo.currentText() or 'This model'} has no chat template and Enclave does not know "
                "its architecture's format; replies use ChatML. Choose another on the Models page: Chat format.")
        shown = "" if self.notice_bar.isHidden() else self.notice_bar.text()
        self.notice_bar.show_text(f"{shown}\n{note}" if shown else note)

    def reload_model(self) -> None:
        """Load the model again after a crash (the next send would, too)."""
        self.crash_banner.hide()
        if self.busy:
            return
        self.tasks.run(self.services.runtime.reload, serial=True, on_error=self.show_error)

    # Links and scrolling ----------------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.view.viewport() and event.type() in (QEvent.Type.MouseButtonRelease,
                                                                 QEvent.Type.MouseMove):
            assert isinstance(event, QMouseEvent)
            pos = event.position().toPoint()
            action = self._action_at(pos)
            picture = None if action else self._image_at(pos)
            href = "" if action or picture is not None else self._anchor_at(pos)
            if event.type() == QEvent.Type.MouseMove:
                clickable = href or action or picture is not None
                shape = Qt.CursorShape.PointingHandCursor if clickable else Qt.CursorShape.ArrowCursor
                self.view.viewport().setCursor(shape)
                self._hover(pos, action)
            elif action and event.button() == Qt.MouseButton.LeftButton:
                self.activate_action(self.view.indexAt(pos).row(), action)
                return True
            elif picture is not None and event.button() == Qt.MouseButton.LeftButton:
                self.open_image(self.view.indexAt(pos).row(), picture)
                return True
            elif href and event.button() == Qt.MouseButton.LeftButton:
                self.activate_link(self.view.indexAt(pos).row(), href)
                return True
        elif watched is self.view.viewport() and event.type() == QEvent.Type.Leave and self.delegate.hovered:
            self.delegate.hovered = None
            self.view.viewport().update()
        return super().eventFilter(watched, event)

    def _action_at(self, pos: QPoint) -> str:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return ""
        found = self.delegate.action_at(self.view.visualRect(index), index, pos)
        return found.name if found else ""

    def _image_at(self, pos: QPoint) -> int | None:
        index = self.view.indexAt(pos)
        return self.delegate.image_at(self.view.visualRect(index), index, pos) if index.isValid() else None

    def open_image(self, row: int, number: int) -> None:
        """The message's image ``number`` shown large (its stored PNG, read now)."""
        image = self.model.message_at(row).images[number]
        try:
            png = self.services.image_png(image.sha256)
        except EnclaveError as exc:
            self.show_error(str(exc))
            return
        self.image_viewer = ImageViewer(png, image.name, self)
        self.image_viewer.show()

    def _hover(self, pos: QPoint, action: str) -> None:
        hovered = (self.view.indexAt(pos).row(), action) if action else None
        if hovered != self.delegate.hovered:
            self.delegate.hovered = hovered
            self.view.viewport().update()

    def activate_action(self, row: int, name: str) -> None:
        """An action under the message at ``row`` was clicked: copy, regenerate, edit,
        previous or next (between a reply's alternatives)."""
        message = self.model.message_at(row)
        if name == "copy":
            QGuiApplication.clipboard().setText(message.content)
            self.notice_bar.show_text("Copied.")
        elif name == "regenerate":
            self.regenerate()
        elif name == "edit":
            self.edit_last()
        elif name in ("previous", "next"):
            self.switch_alternative(row, -1 if name == "previous" else 1)

    def switch_alternative(self, row: int, step: int) -> None:
        """Show the reply before (-1) or after (1) the one at ``row``; the choice is stored,
        and the next prompt holds the reply shown."""
        message = self.model.message_at(row)
        if self.model.is_live(message.id) or (self.busy and self.model.is_last_of_role(row)):
            return
        group = self.services.conversations.alternatives(message.id)
        place = next((i for i, m in enumerate(group) if m.id == message.id), None)
        if place is None or not 0 <= place + step < len(group):
            return
        self.model.replace_row(row, self.services.conversations.show_alternative(group[place + step].id))
        self._schedule_relayout()
        self.conversationChanged.emit(self._draft_key())  # the context in use is that reply's

    def _anchor_at(self, pos: QPoint) -> str:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return ""
        return self.delegate.anchor_at(self.view.visualRect(index), index, pos)

    def activate_link(self, row: int, href: str) -> None:
        """A link in the message at ``row`` was clicked."""
        index = self.model.index(row)
        message = self.model.message_at(row)
        if href == REASONING_HREF:
            self.model.toggle_expanded(message.id)
            self._schedule_relayout()
        elif href == SOURCES_HREF:
            self.model.toggle_sources(message.id)
            self._schedule_relayout()
        elif href.startswith(COPY_PREFIX):
            code = self.delegate.code_block(index, self.view.viewport().width(), int(href[len(COPY_PREFIX):]))
            if code is not None:
                QGuiApplication.clipboard().setText(code)
                self.notice_bar.show_text("Code copied.")
        elif (citation := parse_citation(href)) is not None:
            self.viewer = DocumentViewer(self.services.libraries, citation.document_id, citation.page, self,
                                         span=citation.span)
            self.viewer.show()

    def _scrolled(self, value: int) -> None:
        bar = self.view.verticalScrollBar()
        self._stick_to_bottom = value >= bar.maximum() - 8

    def _range_changed(self, _minimum: int, maximum: int) -> None:
        if self._stick_to_bottom:
            self.view.verticalScrollBar().setValue(maximum)

    def _schedule_relayout(self) -> None:
        """A full layout costs about 6 ms per 1,000 rows: the longer the chat, the rarer."""
        if not self._relayout_timer.isActive():
            self._relayout_timer.start(max(RELAYOUT_MS, self.model.rowCount() // 50))

    def _context_menu(self, pos: QPoint) -> None:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        message = self.model.message_at(index.row())
        menu = QMenu(self)
        menu.addAction("Copy message", lambda: QGuiApplication.clipboard().setText(message.content))
        if message.reasoning:
            menu.addAction("Copy reasoning", lambda: QGuiApplication.clipboard().setText(message.reasoning))
        menu.exec(self.view.viewport().mapToGlobal(pos))

    def _relayout(self) -> None:
        """Lay rows out again after heights changed, keeping the row at the top in place
        (or the bottom in view, while following a reply)."""
        if self._stick_to_bottom:
            self.view.doItemsLayout()
            self.view.scrollToBottom()
            return
        anchor = self.view.indexAt(QPoint(0, 0))
        before = self.view.visualRect(anchor).top() if anchor.isValid() else 0
        self.view.doItemsLayout()
        if anchor.isValid():
            bar = self.view.verticalScrollBar()
            bar.setValue(bar.value() + self.view.visualRect(anchor).top() - before)

