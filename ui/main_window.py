"""The window: the sidebar on the left, the pages on the right; beside the chat (only
there), the side panel with the model, its memory plan and the context in use.

It owns what joins the pages: navigation, drag-and-drop routing (``.gguf`` → models,
images → the message box while the chat is shown, anything else → libraries), the
shortcuts, the start screen until a model exists, and
the File menu, the remembered layout — an INI file in Enclave's config folder, so nothing
lands in the registry or outside ``ENCLAVE_HOME`` — and a layout for any window from
1024×700 up: the sidebar keeps its minimum width, and the side panel folds away by itself
when the window is too narrow for chat and panel (``PANEL_ROOM``), unless the user asks
for it, and comes back when the window is wide enough again.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QEvent, QMimeData, QObject, QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QMainWindow, QSplitter, QStackedWidget, QToolButton, QWidget

from app.services import Services
from ui import theme
from ui.chat_view import ChatPage
from ui.first_run import FirstRunPage
from ui.image_attachments import is_image_file
from ui.libraries_page import LibrariesPage
from ui.models_page import ModelsPage
from ui.settings_page import SettingsPage
from ui.side_panel import SidePanel
from ui.sidebar import Sidebar
from ui.tasks import TaskRunner
from ui.widgets import dropped_paths
from ui.window_layout import ChatSplitter, splitter_state_usable

LAYOUT_FILE = "window.ini"
SIDE_PANEL_KEY = "window/side_panel"
STATUS_MS = 8000
DEFAULT_SIZE = (1200, 800)
PANEL_WIDTH = 320
# Below this width of the pages' area (a window of about 1,150 px with the sidebar at its
# usual width) the chat and its side panel do not both fit: the panel folds away by itself.
PANEL_ROOM = 900


def is_model_file(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and not path.is_dir()


def quit_shortcuts() -> list[QKeySequence]:
    """The platform's Quit keys (Ctrl+Q on Linux, Cmd+Q on macOS); Ctrl+Q where it has none
    (Windows)."""
    keys = QKeySequence.keyBindings(QKeySequence.StandardKey.Quit)
    return keys or [QKeySequence("Ctrl+Q")]


class MainWindow(QMainWindow):
    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.current_conversation: int | None = None
        self.setWindowTitle("Enclave")
        self.setAcceptDrops(True)
        self.layout_settings = QSettings(str(services.paths.config / LAYOUT_FILE), QSettings.Format.IniFormat)

        self.sidebar = Sidebar(services, tasks)
        self.chat = ChatPage(services, tasks)
        self.models = ModelsPage(services, tasks)
        self.libraries = LibrariesPage(services, tasks)
        self.libraries.warmProgress.connect(self.chat.show_library_warming)  # a question may wait for it
        self.settings_page = SettingsPage(services, tasks)
        self.first_run = FirstRunPage(services, tasks)
        self.side_panel = SidePanel(services, tasks)
        self.chat_splitter = ChatSplitter()
        self.chat_splitter.addWidget(self.chat)
        self.chat_splitter.addWidget(self.side_panel)
        self.chat_splitter.setStretchFactor(0, 1)
        self.chat_splitter.setCollapsible(0, False)
        self.chat_splitter.setCollapsible(1, False)  # hidden by "Show side panel" or a narrow window
        self.chat_splitter.setSizes([DEFAULT_SIZE[0] - PANEL_WIDTH, PANEL_WIDTH])
        self.stack = QStackedWidget()
        # the pages by name, as the stack holds them (the chat inside its splitter)
        self.pages: dict[str, QWidget] = {"chat": self.chat_splitter, "models": self.models,
                                          "libraries": self.libraries, "settings": self.settings_page,
                                          "first_run": self.first_run}
        for page in self.pages.values():
            self.stack.addWidget(page)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(self.stack)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(0, False)  # never dragged (or restored) to nothing
        self.splitter.setCollapsible(1, False)
        self.splitter.setSizes([self.sidebar.sizeHint().width(), DEFAULT_SIZE[0] - self.sidebar.sizeHint().width()])
        self.setCentralWidget(self.splitter)
        self.statusBar().setSizeGripEnabled(True)
        self.stack.installEventFilter(self)  # its width decides whether the side panel fits

        self._panel_wanted = True  # the user's choice (View ▸ Show side panel), remembered
        self._panel_room: bool | None = None  # chat and panel both fit, at the last resize
        self._menus()
        self._connect()
        self._shortcuts()
        self.restore_layout()
        if self.needs_first_run():
            self.show_page("first_run")
        else:
            self.new_chat()

    # Wiring ----------------------------------------------------------------------------

    def _connect(self) -> None:
        self.sidebar.newChatRequested.connect(self.new_chat)
        self.sidebar.conversationActivated.connect(self.open_conversation)
        self.sidebar.conversationDeleted.connect(self._conversation_deleted)
        self.sidebar.pageRequested.connect(self.show_page)
        self.sidebar.errorOccurred.connect(self.show_message)
        self.chat.conversationsChanged.connect(self._conversations_changed)
        self.chat.conversationChanged.connect(self._chat_changed)
        self.models.modelsChanged.connect(self._models_changed)
        self.libraries.chatWithLibrary.connect(self.chat_with_library)
        self.settings_page.settingsChanged.connect(self._settings_changed)
        self.side_panel_action.triggered.connect(self.show_side_panel)  # the user's choice, not a fold
        self.first_run.modelReady.connect(self._model_ready)

    def _menus(self) -> None:
        """File, View and Help; the side panel's toggle is also a button at the menu bar's end."""
        self.new_chat_action = QAction("&New chat", self)
        self.new_chat_action.setShortcut(QKeySequence("Ctrl+N"))
        self.new_chat_action.triggered.connect(lambda: self.new_chat())
        self.import_model_action = QAction("&Import model…", self)
        self.import_model_action.setToolTip("Import a GGUF model file from this machine")
        self.import_model_action.triggered.connect(self.import_model)
        self.add_documents_action = QAction("&Add documents to a library…", self)
        self.add_documents_action.triggered.connect(self.add_documents)
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcuts(quit_shortcuts())
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        self.quit_action.triggered.connect(self.close)
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addActions([self.new_chat_action, self.import_model_action, self.add_documents_action])
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)

        self.side_panel_action = QAction("Show side panel", self, checkable=True, checked=True)
        self.side_panel_action.setShortcut(QKeySequence("Ctrl+Alt+B"))
        self.side_panel_action.setToolTip("Show or hide the chat's model, its memory plan and the context in use "
                                          "(Ctrl+Alt+B)")
        self.menuBar().addMenu("&View").addAction(self.side_panel_action)
        self.menuBar().addMenu("&Help").addAction("&About Enclave", self.show_about)
        self.side_panel_button = QToolButton()
        self.side_panel_button.setDefaultAction(self.side_panel_action)
        self.side_panel_button.setAutoRaise(True)
        self.side_panel_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.menuBar().setCornerWidget(self.side_panel_button, Qt.Corner.TopRightCorner)
        self._tint_icons()

    def _tint_icons(self) -> None:
        """The menus' icons, in the text colour of the scheme in use."""
        for action, name in ((self.new_chat_action, "new-chat"), (self.import_model_action, "models"),
                             (self.add_documents_action, "libraries"), (self.side_panel_action, "panel")):
            action.setIcon(theme.icon(name))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._tint_icons()

    def _shortcuts(self) -> None:
        QShortcut(QKeySequence("Ctrl+F"), self, self.focus_search)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop_reply)

    # Navigation ------------------------------------------------------------------------

    def needs_first_run(self) -> bool:
        return not self.services.models.all() and self.services.settings.load().default_model is None

    def current_page(self) -> str:
        return next(name for name, page in self.pages.items() if page is self.stack.currentWidget())

    def show_page(self, name: str) -> None:
        """Show a page by name; the chat waits behind the start screen until there is a model."""
        if name == "chat" and self.needs_first_run():
            name = "first_run"
        page = self.pages[name]
        if name in ("models", "libraries", "settings"):
            page.refresh()  # type: ignore[attr-defined]
        self.stack.setCurrentWidget(page)
        self.sidebar.mark_page(name if name in self.sidebar.nav_buttons else None)
        self.side_panel_button.setVisible(name == "chat")  # the panel is the chat's
        if name != "chat":
            self.sidebar.select_conversation(None)

    def new_chat(self, library_id: int | None = None) -> None:
        self.show_page("chat")
        if self.current_page() != "chat":
            return
        self.current_conversation = None
        self.sidebar.select_conversation(None)
        self.chat.new_conversation(library_id=library_id)
        self.chat.focus_composer()

    def open_conversation(self, conversation_id: int) -> None:
        self.show_page("chat")
        if self.current_page() != "chat":
            return
        self.current_conversation = conversation_id
        self.sidebar.select_conversation(conversation_id)
        self.chat.open_conversation(conversation_id)

    def chat_with_library(self, library_id: int) -> None:
        self.new_chat(library_id=library_id)

    def focus_search(self) -> None:
        self.sidebar.focus_search()

    def stop_reply(self) -> None:
        if self.current_page() == "chat":
            self.chat.stop()

    def show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, STATUS_MS)

    def import_model(self) -> None:
        """File ▸ Import model…: the models page and its file dialog."""
        self.show_page("models")
        self.models.choose_files()

    def add_documents(self) -> None:
        """File ▸ Add documents to a library…: the libraries page and its file dialog (into
        the selected library, or a new one it asks the name of)."""
        self.show_page("libraries")
        self.libraries.choose_files()

    def show_side_panel(self, on: bool) -> None:
        """The user's choice (View ▸ Show side panel, its button, Ctrl+Alt+B), remembered.
        Asked for in a narrow window, the panel shows anyway, until the window is resized
        across the width where it folds."""
        self._panel_wanted = on
        self.layout_settings.setValue(SIDE_PANEL_KEY, on)
        self.chat_splitter.panel_folds = self._panel_room is not False  # asked for where it does not fit
        self._set_panel_visible(on)

    def _set_panel_visible(self, on: bool) -> None:
        self.side_panel_action.setChecked(on)  # setChecked does not emit ``triggered``
        self.side_panel.setVisible(on)
        self.chat_splitter.updateGeometry()  # its minimum width changes with the panel
        sizes = self.chat_splitter.sizes()
        if on and len(sizes) == 2 and sizes[1] < self.side_panel.minimumSizeHint().width():
            self.chat_splitter.setSizes([max(sizes[0] - PANEL_WIDTH, 0), PANEL_WIDTH])  # never back at 0 px

    def _fit_side_panel(self) -> None:
        """Fold the side panel when the pages' area gets too narrow for chat and panel, and
        bring it back (if the user wants it) when it is wide enough again."""
        room = self.stack.width() >= PANEL_ROOM
        if room == self._panel_room:
            return
        self._panel_room = room
        self.chat_splitter.panel_folds = True
        self._set_panel_visible(self._panel_wanted and room)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.stack and event.type() == QEvent.Type.Resize:
            self._fit_side_panel()
        return super().eventFilter(watched, event)

    # What the pages report -------------------------------------------------------------

    def _conversations_changed(self) -> None:
        self.sidebar.refresh()
        self.sidebar.select_conversation(self.current_conversation)

    def _chat_changed(self, conversation_id: int) -> None:
        """The chat shows another conversation, or a reply finished: ``-1`` is a new chat."""
        self.side_panel.show_conversation(conversation_id if conversation_id >= 0 else None,
                                          self.chat.chosen_model())

    def _settings_changed(self) -> None:
        self.show_message("Settings saved.")
        self.side_panel.refresh()  # the default model, the context length

    def _conversation_deleted(self, conversation_id: int) -> None:
        if conversation_id == self.current_conversation and self.current_page() == "chat":
            self.new_chat()

    def _models_changed(self) -> None:
        self.settings_page.refresh()  # the default-model choices
        self.side_panel.refresh()
        if self.current_page() == "first_run" and not self.needs_first_run():
            self.new_chat()

    def _model_ready(self) -> None:
        self.models.refresh()
        self.settings_page.refresh()
        self.new_chat()

    # Drag and drop ---------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_paths(event.mimeData()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if dropped_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        if self.handle_drop(event.mimeData()):
            event.acceptProposedAction()

    def handle_drop(self, mime: QMimeData) -> bool:
        """Route dropped paths: model files to the models page; images, while the chat is shown,
        to its message box; everything else (documents, folders; images elsewhere) to the
        libraries page, which is then shown."""
        paths = dropped_paths(mime)
        if not paths:
            return False
        models = [p for p in paths if is_model_file(p)]
        images = [p for p in paths if is_image_file(p)] if self.stack.currentWidget() is self.chat_splitter else []
        if images:
            self.chat.attach_images(list(images))
        documents = [p for p in paths if not is_model_file(p) and p not in images]
        if models:
            self.show_page("models")
            self.models.import_paths(models)
        if documents:
            self.show_page("libraries")
            self.libraries.add_paths(documents)
        return True

    # Layout ----------------------------------------------------------------------------

    def restore_layout(self) -> None:
        """The window as it was left. Qt fits a geometry saved on a larger screen into this
        one; a splitter state that would leave a pane narrower than its minimum (a sidebar
        of 0 px, a side panel saved while hidden) is ignored."""
        geometry = self.layout_settings.value("window/geometry")
        if not (isinstance(geometry, QByteArray) and not geometry.isEmpty() and self.restoreGeometry(geometry)):
            self.resize(*DEFAULT_SIZE)
        self._restore_splitter("window/splitter", self.splitter)
        self._restore_splitter("window/chat_splitter", self.chat_splitter)
        self._panel_wanted = self.layout_settings.value(SIDE_PANEL_KEY, True, type=bool)
        self._set_panel_visible(self._panel_wanted)

    def _restore_splitter(self, key: str, splitter: QSplitter) -> None:
        state = self.layout_settings.value(key)
        if not isinstance(state, QByteArray) or state.isEmpty():
            return
        before = splitter.sizes()
        if not splitter.restoreState(state) or not splitter_state_usable(splitter):
            splitter.setSizes(before)

    def save_layout(self) -> None:
        self.layout_settings.setValue("window/geometry", self.saveGeometry())
        self.layout_settings.setValue("window/splitter", self.splitter.saveState())
        if self.side_panel.isVisible():  # a hidden panel's 0 px is not a width to come back to
            self.layout_settings.setValue("window/chat_splitter", self.chat_splitter.saveState())
        self.layout_settings.setValue(SIDE_PANEL_KEY, self._panel_wanted)
        self.layout_settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_layout()
        self.chat.stop()  # a reply still streaming stops and keeps its text
        self.settings_page.serve.shutdown()  # after: its batch may be waiting for the worker that reply holds
        super().closeEvent(event)

    def show_about(self) -> None:
        from ui.about import AboutDialog

        AboutDialog(self.services.paths, self).exec()
