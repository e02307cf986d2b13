"""The desktop app, started the way ``enclave gui`` starts it (``ui.app.main``), driven like
a user would: open a conversation, search the history in the sidebar, look at the models
and libraries pages, type a message and press Send, wait for the reply, close the window.

    python -m tests.airgap_gui CONVERSATION_ID SEARCH_WORD MESSAGE

Used by ``tests/airgap_check.py`` inside a network namespace. Prints one JSON line with
what it saw and exits with main()'s code, or 1 when a step did not happen.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from tests.event_loop import spin_until
from ui.app import application, main
from ui.main_window import MainWindow

STEP_TIMEOUT = 120.0


class StepFailed(Exception):
    pass


def wait_until(done: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT) -> None:
    """Run the event loop until ``done()``; the app's own work (pool threads, the worker) goes on."""
    if not spin_until(done, timeout):
        error = the_window().chat.error_bar
        shown = f" (it shows: {error.text()})" if error.isVisible() else ""
        raise StepFailed(f"the GUI did not {what} within {timeout:.0f} s{shown}")


def the_window() -> MainWindow:
    windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    if not windows:
        raise StepFailed("no main window was shown")
    return windows[0]


def drive(conversation_id: int, search_word: str, message: str) -> dict[str, object]:
    window = the_window()
    window.open_conversation(conversation_id)
    opened_rows = window.chat.model.rowCount()
    if opened_rows == 0:
        raise StepFailed(f"conversation {conversation_id} opened with no messages")
    window.sidebar.search_box.setText(search_word)
    wait_until(lambda: window.sidebar.model.rowCount() > 0, f"find {search_word!r} in the sidebar")
    found = window.sidebar.model.rowCount()
    window.sidebar.search_box.clear()
    for page in ("models", "libraries", "settings"):
        window.show_page(page)
        wait_until(lambda p=page: window.current_page() == p, f"show the {page} page")
    window.new_chat()
    window.chat.composer.setPlainText(message)
    window.chat.send_button.click()
    chat = window.chat
    wait_until(lambda: (not chat.busy and chat.model.rowCount() >= 2) or chat.error_bar.isVisible(),
               "show the message and its reply")
    if chat.error_bar.isVisible():
        raise StepFailed(f"the reply failed: {chat.error_bar.text()}")
    reply = chat.model.message_at(chat.model.rowCount() - 1)
    if reply.role != "assistant" or reply.status != "complete" or not reply.completion_tokens:
        raise StepFailed(f"the reply was not complete: {reply!r}")
    return {"opened_messages": opened_rows, "search_hits": found, "pages": ["models", "libraries", "settings"],
            "sent": message, "reply_tokens": reply.completion_tokens, "conversation": window.chat.conversation_id}


def run(argv: list[str]) -> int:
    conversation_id, search_word, message = int(argv[0]), argv[1], argv[2]
    app = application([sys.argv[0]])
    failure: list[str] = []

    def scripted() -> None:
        try:
            print(json.dumps(drive(conversation_id, search_word, message)), flush=True)
            the_window().close()  # as the close button: main() then waits for tasks and closes the services
        except StepFailed as exc:
            failure.append(str(exc))
            app.exit(1)

    QTimer.singleShot(0, scripted)
    code = main([sys.argv[0]])
    if failure:
        print(f"airgap_gui: {failure[0]}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
