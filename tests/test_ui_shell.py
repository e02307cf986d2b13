"""The desktop shell: window, sidebar, settings, start screen, drag-and-drop, ``enclave gui``.

The chat, models and libraries pages are stood in for by recorders that follow the page
contract in ui/README.md, so these tests check what the shell asks of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDropEvent, QKeySequence
from PySide6.QtWidgets import QAbstractButton, QApplication, QInputDialog, QMessageBox, QWidget

import ui.main_window
from app.cli import cli
from app.services import Services
from ui.first_run import FirstRunPage
from ui.main_window import MainWindow
from ui.sidebar import PAGE_SIZE
from ui.tasks import TaskRunner
from ui.theme import colors


class _Recorder(QWidget):
    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.calls: list[tuple[Any, ...]] = []

    def refresh(self) -> None:
        self.calls.append(("refresh",))


class FakeChat(_Recorder):
    conversationsChanged = Signal()
    conversationChanged = Signal(int)

    def chosen_model(self) -> str | None:
        return None

    def open_conversation(self, conversation_id: int) -> None:
        self.calls.append(("open", conversation_id))

    def new_conversation(self, library_id: int | None = None) -> None:
        self.calls.append(("new", library_id))

    def stop(self) -> None:
        self.calls.append(("stop",))

    def focus_composer(self) -> None:
        self.calls.append(("focus",))

    def show_library_warming(self, library_id: int, done: int, total: int) -> None:
        self.calls.append(("warming", library_id, done, total))


class FakeModels(_Recorder):
    modelsChanged = Signal()

    def import_paths(self, paths: list[Path]) -> None:
        self.calls.append(("import", paths))

    def choose_files(self) -> None:
        self.calls.append(("choose",))


class FakeLibraries(_Recorder):
    librariesChanged = Signal()
    chatWithLibrary = Signal(int)
    warmProgress = Signal(int, int, int)

    def add_paths(self, paths: list[Path], library_id: int | None = None) -> None:
        self.calls.append(("add", paths, library_id))

    def open_library(self, library_id: int) -> None:
        self.calls.append(("open", library_id))

    def choose_files(self) -> None:
        self.calls.append(("choose",))




@pytest.fixture
def with_model(services: Services, moe_model: Path) -> Services:
    model = services.models.import_files([moe_model], "in_place")
    services.settings.set("default_model", model.id)
    return services


@pytest.fixture
def make_window(qtbot, monkeypatch: pytest.MonkeyPatch, services: Services):
    monkeypatch.setattr(ui.main_window, "ChatPage", FakeChat)
    monkeypatch.setattr(ui.main_window, "ModelsPage", FakeModels)
    monkeypatch.setattr(ui.main_window, "LibrariesPage", FakeLibraries)

    windows: list[MainWindow] = []  # held for the test: qtbot keeps only weak references

    def make() -> MainWindow:
        window = MainWindow(services, TaskRunner(synchronous=True))
        qtbot.addWidget(window)
        windows.append(window)
        return window

    return make


def conversation(services: Services, title: str, *messages: str) -> int:
    created = services.conversations.create(title=title)
    for text in messages:
        services.conversations.add_message(created.id, "user", text)
    return created.id


# The start screen -----------------------------------------------------------------------


def test_first_run_screen_until_there_is_a_model(make_window) -> None:
    window = make_window()
    assert window.current_page() == "first_run"
    window.new_chat()  # Ctrl+N, "New chat": still nothing to chat with
    assert window.current_page() == "first_run"
    assert ("new", None) not in window.chat.calls


def test_with_a_model_the_window_opens_on_a_new_chat(with_model: Services, make_window) -> None:
    window = make_window()
    assert window.current_page() == "chat"
    assert window.chat.calls[:2] == [("new", None), ("focus",)]


def test_importing_on_the_start_screen_registers_the_model_and_opens_the_chat(
        services: Services, make_window, moe_model: Path, qtbot) -> None:
    window = make_window()
    with qtbot.waitSignal(window.first_run.modelReady, timeout=10_000):
        window.first_run.import_model(moe_model, "in_place")
    [model] = services.models.all()
    assert model.origin == "in_place" and model.path == moe_model
    assert services.settings.load().default_model == model.id  # a new chat has a model to use
    assert window.current_page() == "chat"
    assert ("new", None) in window.chat.calls
    assert "tiny-moe is ready" in window.first_run.status.text()


def test_a_bad_file_on_the_start_screen_is_a_message(services: Services, qtbot, tmp_path: Path) -> None:
    page = FirstRunPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("not a model")
    with qtbot.assertNotEmitted(page.modelReady):
        page.import_model(bogus, "copy")
    assert "not a GGUF model file" in page.status.text()
    assert not page.busy and page.import_button.isEnabled()
    assert services.models.all() == []


def test_start_screen_progress_of_a_model_beyond_2_gib(services: Services, qtbot) -> None:
    """Progress crosses from pool threads as Python ints: a C int would overflow past 2 GiB."""
    page = FirstRunPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    page._report(3 * 2**30, 5 * 2**30)
    qtbot.waitUntil(lambda: page.progress.value() == 600)
    assert page.progress.format().startswith("3.0 GiB of 5.0 GiB")


# The sidebar ----------------------------------------------------------------------------


def test_sidebar_lists_conversations_newest_first(with_model: Services, make_window) -> None:
    first = conversation(with_model, "first", "hello")
    second = conversation(with_model, "second", "hi")
    third = conversation(with_model, "third", "hey")
    window = make_window()
    assert window.sidebar.model.ids() == [third, second, first]
    with_model.conversations.add_message(first, "user", "back to the first")
    window.chat.conversationsChanged.emit()  # the chat page reports a message added
    assert window.sidebar.model.ids() == [first, third, second]
    assert window.sidebar.model.titles() == ["first", "third", "second"]


def test_sidebar_loads_titles_a_page_at_a_time(with_model: Services, make_window) -> None:
    total = PAGE_SIZE * 2 + 17
    for n in range(total):
        with_model.conversations.create(title=f"chat {n}")
    model = make_window().sidebar.model
    assert model.rowCount() == PAGE_SIZE
    assert model.titles()[0] == f"chat {total - 1}"
    while model.canFetchMore(model.index(-1)):
        model.fetchMore(model.index(-1))
    assert model.rowCount() == total
    assert model.titles()[-1] == "chat 0"


def test_search_filters_the_list_live(with_model: Services, make_window, qtbot) -> None:
    fruit = conversation(with_model, "Fruit", "I like bananas", "and a banana split")
    conversation(with_model, "Weather", "rain tomorrow")
    titled = conversation(with_model, "banana bread recipe")
    window = make_window()
    window.focus_search()
    qtbot.keyClicks(window.sidebar.search_box, "banana")
    qtbot.waitUntil(lambda: window.sidebar.model.searching, timeout=2000)
    assert set(window.sidebar.model.ids()) == {fruit, titled}
    window.sidebar.search_box.clear()
    qtbot.waitUntil(lambda: not window.sidebar.model.searching, timeout=2000)
    assert window.sidebar.model.rowCount() == 3


def test_clicking_a_conversation_opens_it(with_model: Services, make_window, qtbot) -> None:
    wanted = conversation(with_model, "wanted", "hello")
    window = make_window()
    window.sidebar.list.activated.emit(window.sidebar.model.index(0))
    assert window.chat.calls[-1] == ("open", wanted)
    assert window.current_conversation == wanted


def test_rename_from_the_menu_and_inline(with_model: Services, make_window, monkeypatch: pytest.MonkeyPatch) -> None:
    chat_id = conversation(with_model, "old title", "hello")
    window = make_window()
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("  Trip planning  ", True))
    window.sidebar.ask_rename(chat_id)
    assert with_model.conversations.get(chat_id).title == "Trip planning"
    assert window.sidebar.model.titles() == ["Trip planning"]

    model = window.sidebar.model
    assert model.setData(model.index(0), "Edited in place")
    assert with_model.conversations.get(chat_id).title == "Edited in place"


def test_delete_asks_first(with_model: Services, make_window, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = conversation(with_model, "keep", "hello")
    doomed = conversation(with_model, "doomed", "bye")
    window = make_window()
    window.open_conversation(doomed)
    asked: list[str] = []

    def answer(reply: QMessageBox.StandardButton):
        def question(parent: object, title: str, text: str, *rest: object) -> QMessageBox.StandardButton:
            asked.append(text)
            return reply
        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Cancel))
    window.sidebar.ask_delete(doomed)
    assert with_model.conversations.count() == 2
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    window.sidebar.ask_delete(doomed)
    assert "doomed" in asked[0]
    assert [c.id for c in with_model.conversations.recent()] == [keep]
    assert window.sidebar.model.ids() == [keep]
    assert window.chat.calls[-2:] == [("new", None), ("focus",)]  # the open chat was the deleted one


# Navigation, shortcuts and drops --------------------------------------------------------


def test_navigation_is_a_list_of_places_with_icons(with_model: Services, make_window) -> None:
    window = make_window()
    buttons = window.sidebar.nav_buttons
    assert [b.text() for b in buttons.values()] == ["Chat", "Libraries", "Models", "Settings"]
    assert all(not b.icon().isNull() for b in buttons.values())
    assert buttons["chat"].isChecked()  # the window opened on a new chat
    buttons["models"].click()
    assert window.current_page() == "models"
    assert [k for k, b in buttons.items() if b.isChecked()] == ["models"]
    assert buttons["models"].focusPolicy() & Qt.FocusPolicy.TabFocus  # reachable from the keyboard
    accent = colors(False).accent
    assert accent in buttons["models"].styleSheet() and ":checked" in buttons["models"].styleSheet()
    buttons["chat"].click()
    assert window.current_page() == "chat"


def test_no_emoji_in_the_sidebar(with_model: Services, make_window) -> None:
    """Symbols a font may lack (the issue saw an empty box): the sidebar uses bundled SVGs."""
    conversation(with_model, "hello", "hi")
    window = make_window()
    sidebar = window.sidebar
    texts = [w.text() for w in sidebar.findChildren(QAbstractButton)]
    texts += [sidebar.search_box.placeholderText(), sidebar.empty_text()]
    assert all(ord(ch) < 0x2190 or ch in "—…“”‘’" for text in texts for ch in text), texts


def test_empty_list_and_empty_search_say_what_to_do(with_model: Services, make_window, qtbot) -> None:
    window = make_window()
    sidebar = window.sidebar
    assert sidebar.conversations.currentWidget() is sidebar.empty_label
    assert sidebar.empty_label.text() == "No conversations yet — press New chat or Ctrl+N."
    conversation(with_model, "Trip to Lisbon", "trains or planes?")
    sidebar.refresh()
    assert sidebar.conversations.currentWidget() is sidebar.list
    qtbot.keyClicks(sidebar.search_box, "zebra")
    qtbot.waitUntil(lambda: sidebar.model.searching, timeout=2000)
    assert sidebar.conversations.currentWidget() is sidebar.empty_label
    assert sidebar.empty_label.text() == "No conversations match “zebra”."
    sidebar.search_box.clear()
    qtbot.waitUntil(lambda: not sidebar.model.searching, timeout=2000)
    assert sidebar.conversations.currentWidget() is sidebar.list and sidebar.model.rowCount() == 1


def test_the_file_menu(with_model: Services, make_window) -> None:
    window = make_window()
    [file_menu] = [a.menu() for a in window.menuBar().actions() if a.text() == "&File"]
    assert [a.text() for a in file_menu.actions() if not a.isSeparator()] == [
        "&New chat", "&Import model…", "&Add documents to a library…", "&Quit"]
    assert window.new_chat_action.shortcut() == QKeySequence("Ctrl+N")
    assert QKeySequence("Ctrl+Q") in window.quit_action.shortcuts()
    window.import_model_action.trigger()
    assert window.current_page() == "models" and window.models.calls[-1] == ("choose",)
    window.add_documents_action.trigger()
    assert window.current_page() == "libraries" and window.libraries.calls[-1] == ("choose",)
    window.chat.calls.clear()
    window.new_chat_action.trigger()
    assert window.current_page() == "chat" and ("new", None) in window.chat.calls


def test_ctrl_q_closes_the_window_and_saves_its_layout(with_model: Services, make_window, qtbot,
                                                       enclave_home: Path) -> None:
    window = make_window()
    with qtbot.waitActive(window):
        window.show()
        window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    assert not window.isVisible()
    assert (enclave_home / "config" / "window.ini").is_file()


def test_navigation_and_chat_with_library(with_model: Services, make_window) -> None:
    window = make_window()
    window.sidebar.nav_buttons["libraries"].click()
    assert window.current_page() == "libraries" and ("refresh",) in window.libraries.calls
    window.sidebar.nav_buttons["settings"].click()
    assert window.current_page() == "settings"
    window.libraries.chatWithLibrary.emit(7)
    assert window.current_page() == "chat"
    assert ("new", 7) in window.chat.calls


def test_shortcuts(with_model: Services, make_window, qtbot) -> None:
    window = make_window()
    with qtbot.waitActive(window):
        window.show()
        window.activateWindow()
    window.chat.calls.clear()
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert ("new", None) in window.chat.calls
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert ("stop",) in window.chat.calls
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(window.sidebar.search_box.hasFocus, timeout=2000)


def mime_of(*paths: Path | str) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl(p) if isinstance(p, str) else QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def test_dropped_model_files_go_to_the_models_page(with_model: Services, make_window, moe_model: Path) -> None:
    window = make_window()
    mime = mime_of(moe_model)  # the event does not own it: keep it alive
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert event.isAccepted()
    assert window.models.calls[-1] == ("import", [moe_model])
    assert window.libraries.calls == [] or all(c[0] == "refresh" for c in window.libraries.calls)
    assert window.current_page() == "models"


def test_dropped_documents_and_folders_go_to_the_libraries_page(with_model: Services, make_window,
                                                               tmp_path: Path, moe_model: Path) -> None:
    folder = tmp_path / "papers"
    folder.mkdir()
    note = tmp_path / "note.md"
    note.write_text("# hi")
    window = make_window()
    assert window.handle_drop(mime_of(folder, note, moe_model))
    assert ("add", [folder, note], None) in window.libraries.calls
    assert ("import", [moe_model]) in window.models.calls
    assert window.current_page() == "libraries"


def test_a_drop_without_local_files_is_refused(with_model: Services, make_window) -> None:
    window = make_window()
    assert not window.handle_drop(mime_of("https://example.com/model.gguf"))
    text_only = QMimeData()
    text_only.setText("hello")
    assert not window.handle_drop(text_only)
    assert window.current_page() == "chat"


# Settings -------------------------------------------------------------------------------


def test_settings_saved_in_the_window_are_said_in_the_status_bar(with_model: Services, make_window) -> None:
    """The page's own behaviour is tests/test_ui_settings.py's; the window's part is the message."""
    window = make_window()
    window.show_page("settings")
    page = window.settings_page
    page.editors["threads"].setValue(3)  # type: ignore[union-attr]
    page.save()
    assert with_model.settings.load().threads == 3
    assert window.statusBar().currentMessage() == "Settings saved."


def test_settings_show_the_data_folder_and_the_models(with_model: Services, make_window, enclave_home: Path) -> None:
    page = make_window().settings_page
    assert str(with_model.paths.data) in page.data_label.text()
    assert "ENCLAVE_HOME is set" in page.data_label.text()
    combo = page.editors["default_model"]
    [model] = with_model.models.all()
    assert combo.currentData() == model.id
    assert combo.findData(None) == 0


# The remembered layout ------------------------------------------------------------------


def test_window_layout_is_saved_under_enclave_home(with_model: Services, make_window, enclave_home: Path,
                                                   qtbot) -> None:
    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    window.resize(720, 520)
    window.splitter.setSizes([300, 600])
    window.close()
    ini = enclave_home / "config" / "window.ini"
    assert ini.is_file()
    assert "geometry" in ini.read_text() and "splitter" in ini.read_text()
    again = make_window()
    assert (again.width(), again.height()) == (720, 520)
    assert again.splitter.saveState() == window.splitter.saveState()


# Starting the app -----------------------------------------------------------------------


def test_gui_command_and_no_command_start_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    import ui.app

    started: list[bool] = []
    monkeypatch.setattr(ui.app, "main", lambda: started.append(True) or 0)
    assert "gui" in CliRunner().invoke(cli, ["--help"]).output
    result = CliRunner().invoke(cli, ["gui"])
    assert result.exit_code == 0 and started == [True]
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0 and started == [True, True]


def test_without_a_display_the_command_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import ui.app

    monkeypatch.setattr(ui.app, "main", lambda: pytest.fail("the app must not start without a display"))
    monkeypatch.setattr("sys.platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 2
    assert "no display to open Enclave's window on" in result.output


def test_default_qsettings_stay_under_enclave_home(enclave_home: Path) -> None:
    import ui.app

    ui.app.keep_settings_in(enclave_home / "config")
    assert QSettings().fileName().startswith(str(enclave_home / "config"))


def test_data_folder_in_use_is_a_message_and_exit_2(services: Services, monkeypatch: pytest.MonkeyPatch,
                                                   qapp) -> None:
    import ui.app

    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text: shown.append(text))
    assert ui.app.main([]) == 2  # ``services`` holds the data folder, like another Enclave would
    assert len(shown) == 1 and "already running with this data folder" in shown[0]


def test_damaged_database_is_a_message_and_exit_2(enclave_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                 qapp) -> None:
    import ui.app

    database = enclave_home / "data" / "enclave.db"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"this is not a database" * 100)
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text: shown.append(text))
    assert ui.app.main([]) == 2
    assert len(shown) == 1 and "cannot be used" in shown[0]


def test_main_opens_the_window_and_closes_the_services(monkeypatch: pytest.MonkeyPatch, qapp,
                                                       moe_model: Path) -> None:
    import ui.app

    monkeypatch.setattr(ui.main_window, "ChatPage", FakeChat)
    monkeypatch.setattr(ui.main_window, "ModelsPage", FakeModels)
    monkeypatch.setattr(ui.main_window, "LibrariesPage", FakeLibraries)
    seen: list[str] = []

    def close_windows() -> None:
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, MainWindow) and widget.isVisible():
                seen.append(widget.current_page())
                widget.close()

    QTimer.singleShot(200, close_windows)
    assert ui.app.main([]) == 0
    assert seen == ["first_run"]
    assert qapp.style().name().lower() == "fusion"
    with Services.open() as again:  # the data folder was let go
        assert again.models.all() == []


def test_the_real_pages_fit_the_shell(with_model: Services, qtbot, tmp_path: Path) -> None:
    """The window with the pages as they are, not the recorders: built, navigated, a drop routed."""
    window = MainWindow(with_model, TaskRunner(synchronous=True))
    qtbot.addWidget(window)
    assert window.current_page() == "chat"
    chat_id = conversation(with_model, "hello there", "hi")
    window.chat.conversationsChanged.emit()
    assert window.sidebar.model.ids() == [chat_id]
    window.open_conversation(chat_id)
    for page in ("models", "libraries", "settings", "chat"):
        window.show_page(page)
        assert window.current_page() == page
    monkeypatched: list[list[Path]] = []
    window.libraries.add_paths = lambda paths, library_id=None: monkeypatched.append(paths)  # no dialog
    assert window.handle_drop(mime_of(tmp_path))
    assert monkeypatched == [[tmp_path]] and window.current_page() == "libraries"


def test_about_shows_the_version_and_the_bundled_licences(qtbot, enclave_home) -> None:
    from app import __version__
    from app.paths import app_paths
    from ui.about import AboutDialog

    dialog = AboutDialog(app_paths())
    qtbot.addWidget(dialog)
    text = dialog.licenses.toPlainText()
    assert "llama.cpp" in text and "LGPL" in text and "PySide6" in text
    assert __version__ in dialog.findChildren(type(dialog.layout().itemAt(0).widget()))[0].text()
