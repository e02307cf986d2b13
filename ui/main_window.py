"""The window: the sidebar on the left, the pages on the right; beside the chat (only
there), the side panel with the model, its memory plan and the context in use.

It owns what joins the pages: navigation, drag-and-drop routing (``.gguf`` → models,
anything else → libraries), the shortcuts, the start screen until a model exists, and
the remembered layout — an INI file in Enclave's config folder, so nothing lands in the
registry or outside ``ENCLAVE_HOME``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QMimeData, QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QMainWindow, QSplitter, QStackedWidget, QWidget

from app.services import Services
from ui.chat_view import ChatPage
from ui.first_run import FirstRunPage
from ui.libraries_page import LibrariesPage
from ui.models_page import ModelsPage
from ui.settings_page import SettingsPage
from ui.side_panel import SidePanel
from ui.sidebar import Sidebar
from ui.tasks import TaskRunner
from ui.widgets import dropped_paths

LAYOUT_FILE = "window.ini"
SIDE_PANEL_KEY = "window/side_panel"
STATUS_MS = 8000


def is_model_file(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and not path.is_dir()


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
        self.chat_splitter = QSplitter(Qt.Orientation.Horizontal)  # the chat and its side panel
        self.chat_splitter.addWidget(self.chat)
        self.chat_splitter.addWidget(self.side_panel)
        self.chat_splitter.setStretchFactor(0, 1)
        self.chat_splitter.setCollapsible(0, False)
        self.chat_splitter.setCollapsible(1, False)  # hidden only by "Show side panel"
        self.chat_splitter.setSizes([620, 320])
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
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(1, False)
        self.splitter.setSizes([260, 940])
        self.setCentralWidget(self.splitter)
        self.statusBar().setSizeGripEnabled(True)

        self.side_panel_action = QAction("Show side panel", self, checkable=True, checked=True)
        self.side_panel_action.setShortcut(QKeySequence("Ctrl+Alt+B"))
        self.side_panel_action.setToolTip("The chat's model, its memory plan and the context in use")
        self.menuBar().addMenu("&View").addAction(self.side_panel_action)
        self.menuBar().addMenu("&Help").addAction("&About Enclave", self.show_about)

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
        self.side_panel_action.toggled.connect(self.show_side_panel)
        self.first_run.modelReady.connect(self._model_ready)

    def _shortcuts(self) -> None:
        QShortcut(QKeySequence("Ctrl+N"), self, self.new_chat)
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

    def show_side_panel(self, on: bool) -> None:
        """View ▸ Show side panel; the choice is remembered."""
        self.side_panel_action.setChecked(on)
        self.side_panel.setVisible(on)
        self.layout_settings.setValue(SIDE_PANEL_KEY, on)

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
        """Route dropped paths: model files to the models page, everything else (documents,
        folders) to the libraries page, which is then shown."""
        paths = dropped_paths(mime)
        if not paths:
            return False
        models = [p for p in paths if is_model_file(p)]
        documents = [p for p in paths if not is_model_file(p)]
        if models:
            self.show_page("models")
            self.models.import_paths(models)
        if documents:
            self.show_page("libraries")
            self.libraries.add_paths(documents)
        return True

    # Layout ----------------------------------------------------------------------------

    def restore_layout(self) -> None:
        geometry = self.layout_settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1200, 800)
        for key, splitter in (("window/splitter", self.splitter), ("window/chat_splitter", self.chat_splitter)):
            state = self.layout_settings.value(key)
            if isinstance(state, QByteArray) and not state.isEmpty():
                splitter.restoreState(state)
        self.show_side_panel(self.layout_settings.value(SIDE_PANEL_KEY, True, type=bool))

    def save_layout(self) -> None:
        self.layout_settings.setValue("window/geometry", self.saveGeometry())
        self.layout_settings.setValue("window/splitter", self.splitter.saveState())
        self.layout_settings.setValue("window/chat_splitter", self.chat_splitter.saveState())
        self.layout_settings.setValue(SIDE_PANEL_KEY, self.side_panel_action.isChecked())
        self.layout_settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_layout()
        self.chat.stop()  # a reply still streaming stops and keeps its text
        super().closeEvent(event)

    def show_about(self) -> None:
        from ui.about import AboutDialog

        AboutDialog(self.services.paths, self).exec()
