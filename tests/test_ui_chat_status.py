"""Honest status in the chat and its side panel: loading (with the seconds), reading the
prompt, stopping, the model really in the worker, a full context, a worker that died idle."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from app.chat import ChatEvent, ModelLoaded, ModelLoading, ReplyDelta, WorkerBusy
from app.conversations import Message
from app.services import Services
from tests import test_ui_chat
from tests.shown import shown
from tests.test_ui_chat import LONG_REPLY, reply_streaming
from ui.chat_view import ChatPage
from ui.side_panel import STOPPED, SidePanel
from ui.tasks import TaskRunner

make_page = test_ui_chat.make_page  # the chat page's fixtures, shared
with_model = test_ui_chat.with_model


def record_status(page: ChatPage) -> list[str]:
    """Every sentence the status row shows, in order."""
    shown: list[str] = []
    real = page.progress.show_status

    def recording(text: str, **kwargs: bool) -> None:
        shown.append(text)
        real(text, **kwargs)

    page.progress.show_status = recording  # type: ignore[method-assign]
    return shown


def make_panel(qtbot, services: Services) -> SidePanel:
    return shown(qtbot, SidePanel(services, TaskRunner(synchronous=True)), (320, 600))


def test_send_says_loading_then_reading_then_the_reply_streams(qtbot, make_page, with_model: Services) -> None:
    page = make_page()
    [model] = with_model.models.all()
    shown = record_status(page)
    page.composer.setPlainText("Hello")
    page.submit()
    assert shown[0] == "Sending…"
    loading = next(i for i, text in enumerate(shown) if text.startswith(f"Loading {model.name} ("))
    assert shown[loading].endswith(" s)…")
    assert shown.index("Reading the prompt…") > loading
    assert page.model.message_at(1).status == "complete" and not page.progress.isVisible()

    shown.clear()
    page.composer.setPlainText("Again")
    page.submit()  # loaded already: no "Loading" this time
    assert shown[0] == "Sending…" and not any(text.startswith("Loading") for text in shown)


def test_the_loading_seconds_count_while_the_model_loads(qtbot, make_page, with_model: Services) -> None:
    page = make_page()
    [model] = with_model.models.all()
    page._busy = True
    page._on_event(page.conversation_id, ModelLoading(model.id))
    assert page.progress.isVisible() and page.progress.label.text() == f"Loading {model.name} (0 s)…"
    page._loading = (model.name, time.monotonic() - 3.0)  # three seconds later: the next tick says so
    qtbot.waitUntil(lambda: page.progress.label.text() == f"Loading {model.name} (3 s)…", timeout=900)
    page._on_event(page.conversation_id, ModelLoaded(model.id, 3.2))
    assert page.progress.label.text() == "Reading the prompt…"
    page._finished(page.conversation_id, None)
    assert not page.progress.isVisible()


def test_a_turn_waiting_for_the_api_servers_requests_says_so(qtbot, make_page, with_model: Services) -> None:
    page = make_page()
    [model] = with_model.models.all()
    page._busy = True
    page._on_event(page.conversation_id, WorkerBusy())
    assert page.progress.isVisible()
    assert page.progress.label.text() == "Waiting for the API server's requests to finish…"
    page._on_event(page.conversation_id, ModelLoading(model.id))  # its turn came
    assert page.progress.label.text().startswith(f"Loading {model.name}")
    page._finished(page.conversation_id, None)


def test_stop_says_stopping_at_once_until_the_worker_confirms(qtbot, make_page, with_model: Services) -> None:
    with_model.settings.set("max_tokens", LONG_REPLY)
    page = make_page(threaded=True)
    reply_streaming(qtbot, page, "Write a long story")
    page.stop()
    assert page.send_button.text() == "Stopping…" and not page.send_button.isEnabled()
    assert page.progress.isVisible() and page.progress.label.text() == "Stopping…"
    assert not page.progress.cancel.isEnabled()
    qtbot.waitUntil(lambda: not page.busy, timeout=60_000)
    assert page.send_button.text() == "Send" and page.send_button.isEnabled()
    assert not page.progress.isVisible()
    reply = with_model.conversations.message(page.model.message_at(1).id)
    assert reply.stop_reason == "cancelled" and reply.content == page.model.message_at(1).content != ""


def test_the_panel_shows_the_model_really_in_the_worker_while_it_answers(qtbot, make_page, with_model: Services,
                                                                         dense_model: Path) -> None:
    moe = with_model.models.all()[0]
    dense = with_model.models.import_files([dense_model], "in_place")
    page = make_page()
    panel = make_panel(qtbot, with_model)
    page.conversationChanged.connect(lambda cid: panel.show_conversation(cid if cid >= 0 else None,
                                                                         page.chosen_model()))
    other = with_model.chat.start(model=dense.id)
    list(with_model.chat.send(other.id, "load the dense one"))  # dense is in the worker now
    conversation = with_model.chat.start(model=moe.id)
    page.open_conversation(conversation.id)
    assert not panel.loaded and f"{dense_model.name} is in memory now" in panel.status.text()

    while_answering: list[str] = []
    real = page._on_event

    def spying(cid: int | None, event: ChatEvent) -> None:
        real(cid, event)
        if isinstance(event, ReplyDelta) and not while_answering:
            while_answering.append(panel.status.text())

    page._on_event = spying  # type: ignore[method-assign]
    page.composer.setPlainText("now the moe one")
    page.submit()
    assert while_answering and while_answering[0].startswith("● Loaded"), while_answering
    assert panel.loaded and panel.model_name.text() == moe.name

    with_model.runtime.loading = Path(str(moe.path)).resolve()  # as during a load
    panel.refresh()
    assert panel.status.text().startswith("◌ Loading")
    with_model.runtime.loading = None


def test_the_context_in_use_never_shows_more_than_the_whole(qtbot, with_model: Services) -> None:
    panel = make_panel(qtbot, with_model)
    over = Message(1, 1, "assistant", "x", prompt_tokens=10_307, completion_tokens=0)
    panel._show_context(over, 8_192)
    assert panel.context_bar.text() == "8,192 of 8,192 tokens (full)"
    assert panel.context_bar.value() == panel.context_bar.maximum() == 8_192
    assert "the oldest turns were dropped" in panel.context_note.text()
    within = Message(2, 1, "assistant", "x", prompt_tokens=1_000, completion_tokens=24)
    panel._show_context(within, 8_192)
    assert panel.context_bar.text() == "1,024 of 8,192 tokens" and "1,000 tokens" in panel.context_note.text()


def test_a_worker_that_dies_while_idle_is_shown_stopped_and_the_next_send_works(qtbot, make_page,
                                                                                with_model: Services) -> None:
    page = make_page()
    panel = make_panel(qtbot, with_model)
    page.conversationChanged.connect(lambda cid: panel.show_conversation(cid if cid >= 0 else None,
                                                                         page.chosen_model()))
    page.composer.setPlainText("Hello")
    page.submit()
    assert panel.loaded and panel.status.text().startswith("● Loaded")

    pid = with_model.runtime.worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # idle: no request runs
    qtbot.waitUntil(lambda: panel.status.text() == STOPPED, timeout=15_000)
    assert not panel.loaded and panel.stopped
    assert "Not loaded — the model stopped unexpectedly" in panel.status.text()

    shown = record_status(page)
    page.composer.setPlainText("Are you there?")
    page.submit()
    assert any(text.startswith("Loading ") for text in shown)  # loaded again, and said so
    assert page.model.message_at(3).status == "complete"
    assert panel.status.text().startswith("● Loaded") and not panel.stopped


def test_a_worker_that_crashes_mid_reply_is_shown_stopped(qtbot, make_page, with_model: Services) -> None:
    with_model.settings.set("max_tokens", LONG_REPLY)
    page = make_page(threaded=True)
    panel = make_panel(qtbot, with_model)
    reply_streaming(qtbot, page, "Go on and on")
    pid = with_model.runtime.worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: not page.busy, timeout=60_000)
    panel.show_conversation(page.conversation_id)
    assert panel.status.text() == STOPPED
