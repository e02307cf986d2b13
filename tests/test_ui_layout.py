"""The window at 1024×700 and at 1920×1080: every page with something on it, no control
clipped or squeezed below its minimum (``tests/layout_check.py``); the sidebar keeps its
width and elides long titles; the side panel folds when the window is narrow and comes
back; a remembered layout can neither hide the sidebar nor overflow a smaller screen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QByteArray, QEvent, QSettings, Qt
from PySide6.QtWidgets import QApplication, QPushButton, QSplitter, QWidget

from app.services import Services
from tests.layout_check import clipped_controls, why_so_wide
from tests.shown import shown
from ui.main_window import LAYOUT_FILE, MainWindow
from ui.sidebar import MIN_WIDTH
from ui.tasks import TaskRunner

SMALL = (1024, 700)
LARGE = (1920, 1080)
PAGES = ("chat", "models", "libraries", "settings", "first_run")
LONG_TITLE = "A very long conversation title about the planner, its experts in RAM and the KV cache in VRAM"

@pytest.fixture
def filled(services: Services, moe_model: Path, tmp_path: Path) -> Services:
    """A model (the default), a conversation with a long title and a library of two files."""
    model = services.models.import_files([moe_model], "in_place")
    services.settings.set("default_model", model.id)
    chat = services.conversations.create(title=LONG_TITLE)
    services.conversations.add_message(chat.id, "user", "Where do the experts go?")
    services.conversations.add_message(chat.id, "assistant", "To RAM first; attention stays in VRAM. " * 12)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "memo.txt").write_text("The planner keeps attention in VRAM.\n")
    (docs / "plan.md").write_text("# Plan\n\nExperts go to RAM first.\n")
    library = services.libraries.create("Project notes")
    services.add_to_library(library.id, [docs])
    return services


@pytest.fixture
def open_window(qtbot, filled: Services) -> Iterator[Callable[[tuple[int, int]], MainWindow]]:
    def make(size: tuple[int, int]) -> MainWindow:
        window = MainWindow(filled, TaskRunner(synchronous=True))
        shown(qtbot, window, size)
        return window

    yield make
    delete_windows()


def delete_windows() -> None:
    """Windows gone before the services close: a page left alive would answer the next
    test's palette change by reading a closed database."""
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, MainWindow):
            widget.close()
            widget.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def show(window: MainWindow, page: str, services: Services) -> None:
    """A page with something on it: a conversation, a selected model, an open library."""
    if page == "chat":
        window.open_conversation(services.conversations.recent(1)[0].id)
    elif page == "models":
        window.show_page("models")
        window.models.select_model(services.models.all()[0].id)
    elif page == "libraries":
        window.show_page("libraries")
        window.libraries.open_library(services.libraries.all()[0].id)
    else:
        window.show_page(page)
    for _ in range(3):
        QApplication.processEvents()


def page_cases() -> list[object]:
    return [pytest.param(page, size, id=f"{page}-{size[0]}x{size[1]}") for size in (SMALL, LARGE) for page in PAGES]


@pytest.mark.parametrize(("page", "size"), page_cases())
def test_no_control_is_clipped(open_window, filled: Services, page: str, size: tuple[int, int]) -> None:
    """Each page at exactly this size: the window is held to it even if another page needs
    more (that is the next test's finding), so each page answers for itself."""
    window = open_window(size)
    window.setMinimumSize(1, 1)  # the pages' minimum no longer holds the window wider
    window.resize(*size)
    show(window, page, filled)
    assert window.current_page() == page
    assert (window.width(), window.height()) == size
    problems = clipped_controls(window)
    assert not problems, "\n".join(str(p) for p in problems)


def test_the_window_can_be_1024_by_700(open_window, filled: Services) -> None:
    """Every page (the stack is as wide as its widest) and the sidebar fit 1024×700, with
    the longest conversation title open in the chat."""
    window = open_window(SMALL)
    for page in PAGES:
        show(window, page, filled)
    window.resize(*SMALL)
    QApplication.processEvents()
    room = SMALL[0] - window.sidebar.minimumWidth()
    assert (window.width(), window.height()) == SMALL, (
        f"the window cannot be {SMALL[0]}×{SMALL[1]}: it needs at least {window.minimumSizeHint().width()}×"
        f"{window.minimumSizeHint().height()}; beside the sidebar there are {room} px, and "
        + "; ".join(f"{name}: {why_so_wide(p)}" for name, p in window.pages.items()
                    if p.minimumSizeHint().width() > room))


def test_the_checker_sees_a_squeezed_button(qtbot) -> None:
    """The check itself: a button narrower than its text, and one pushed out of its parent."""
    host = QWidget()
    qtbot.addWidget(host)
    host.resize(200, 100)
    squeezed = QPushButton("A label far too long for forty pixels", host)
    squeezed.setGeometry(0, 0, 40, 30)
    outside = QPushButton("Out", host)
    outside.setGeometry(180, 50, 80, 30)
    host.show()
    qtbot.waitExposed(host)
    problems = {p.what: p.problem for p in clipped_controls(host)}
    assert "needs" in problems["QPushButton 'A label far too long for forty pixels'"]
    assert problems["QPushButton 'Out'"].startswith("only 20×30 of 80×30")


# The sidebar ----------------------------------------------------------------------------


def test_the_sidebar_keeps_its_width_and_elides_long_titles(open_window, filled: Services) -> None:
    window = open_window(SMALL)
    show(window, "chat", filled)
    sidebar = window.sidebar
    width = sidebar.width()
    assert width >= MIN_WIDTH
    for n in range(3):  # still longer titles arrive
        filled.conversations.create(title=LONG_TITLE * (n + 2))
    sidebar.refresh()
    QApplication.processEvents()
    assert sidebar.width() == width
    view = sidebar.list
    assert not view.horizontalScrollBar().isVisible()
    for row in range(sidebar.model.rowCount()):
        index = sidebar.model.index(row)
        assert view.visualRect(index).width() <= view.viewport().width()
    longest = sidebar.model.index(0)
    assert longest.data() == LONG_TITLE * 4 and longest.data(Qt.ItemDataRole.ToolTipRole) == LONG_TITLE * 4


def test_the_sidebar_cannot_be_dragged_to_nothing(open_window) -> None:
    window = open_window(SMALL)
    window.splitter.setSizes([0, SMALL[0]])
    QApplication.processEvents()
    assert window.sidebar.width() >= MIN_WIDTH


# The side panel -------------------------------------------------------------------------


def open_short_chat(window: MainWindow, services: Services) -> None:
    """A conversation whose title fits anywhere: these tests are about the panel."""
    window.open_conversation(services.conversations.create(title="Short").id)
    QApplication.processEvents()


def test_the_side_panel_folds_in_a_narrow_window_and_comes_back(open_window, filled: Services) -> None:
    window = open_window((1400, 800))
    open_short_chat(window, filled)
    assert window.side_panel.isVisible() and window.side_panel_button.isVisible()
    window.resize(*SMALL)
    QApplication.processEvents()
    assert not window.side_panel.isVisible() and not window.side_panel_action.isChecked()
    window.resize(1400, 800)
    QApplication.processEvents()
    assert window.side_panel.isVisible() and window.side_panel_action.isChecked()
    assert window.side_panel.width() >= window.side_panel.minimumSizeHint().width()

    window.side_panel_button.click()  # the user hides it: a wider window does not bring it back
    assert not window.side_panel.isVisible()
    window.resize(*SMALL)
    QApplication.processEvents()
    window.resize(1600, 900)
    QApplication.processEvents()
    assert not window.side_panel.isVisible()


def test_the_side_panel_can_be_asked_for_in_a_narrow_window(open_window, filled: Services) -> None:
    window = open_window(SMALL)
    open_short_chat(window, filled)
    assert not window.side_panel.isVisible()
    window.side_panel_button.click()
    QApplication.processEvents()
    assert window.side_panel.isVisible()
    assert window.side_panel.width() >= window.side_panel.minimumSizeHint().width()
    assert window.chat.width() >= window.chat.minimumSizeHint().width()
    window.show_page("settings")
    assert not window.side_panel_button.isVisible()  # the chat's panel: its button only there


# The remembered layout ------------------------------------------------------------------


def splitter_state(sizes: list[int]) -> QByteArray:
    """A saved splitter state with these sizes (as an older version, or a drag to the edge,
    could have left)."""
    splitter = QSplitter()
    for _ in sizes:
        splitter.addWidget(QWidget())
    splitter.setSizes(sizes)
    return splitter.saveState()


def test_a_restored_state_cannot_hide_the_sidebar_or_the_panel(open_window, filled: Services) -> None:
    ini = QSettings(str(filled.paths.config / LAYOUT_FILE), QSettings.Format.IniFormat)
    ini.setValue("window/splitter", splitter_state([0, 1400]))
    ini.setValue("window/chat_splitter", splitter_state([1100, 0]))
    ini.sync()
    window = open_window((1400, 800))
    show(window, "chat", filled)
    assert window.sidebar.width() >= MIN_WIDTH
    assert window.side_panel.isVisible()
    assert window.side_panel.width() >= window.side_panel.minimumSizeHint().width()


def test_a_window_saved_on_a_larger_screen_fits_this_one(open_window, filled: Services) -> None:
    window = open_window(LARGE)
    window.move(600, 400)
    saved: QByteArray = window.saveGeometry()
    window.close()
    ini = QSettings(str(filled.paths.config / LAYOUT_FILE), QSettings.Format.IniFormat)
    ini.setValue("window/geometry", saved)
    ini.sync()
    again = MainWindow(filled, TaskRunner(synchronous=True))
    screen = again.screen().availableGeometry()
    assert screen.width() < LARGE[0]  # the offscreen screen is smaller than the saved window
    again.show()
    QApplication.processEvents()
    least = again.minimumSizeHint()  # a screen smaller than the window's minimum: that minimum
    assert again.width() <= max(screen.width(), least.width())
    assert again.height() <= max(screen.height(), least.height())
    assert screen.contains(again.frameGeometry().topLeft())
    again.close()
