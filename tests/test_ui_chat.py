"""The chat page: streaming, stop, crash, composer keys, drafts, laziness, reasoning, citations."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication

from app.chat import PromptProgress
from app.conversations import Message, Source
from app.services import Services
from tests.shown import shown
from ui.chat_delegate import REASONING_HREF, SOURCES_HREF, reply_footer
from ui.chat_model import CACHE_SIZE
from ui.chat_view import ChatPage
from ui.chat_widgets import PromptProgress as PromptProgressRow
from ui.markdown import parse_citation, prepare
from ui.tasks import TaskRunner

LONG_REPLY = 600  # max_tokens for replies we interrupt: long enough to stop, short enough if we miss




@pytest.fixture
def with_model(services: Services, moe_model: Path) -> Services:
    model = services.models.import_files([moe_model], "in_place")
    for key, value in {"default_model": model.id, "max_tokens": 12, "temperature": 0.0, "context_length": 1024,
                       "threads": 2}.items():
        services.settings.set(key, value)
    return services


@pytest.fixture
def make_page(qtbot, services: Services) -> Iterator[Callable[..., ChatPage]]:
    """A shown ``ChatPage``; threaded runners are waited for before the services close."""
    runners: list[TaskRunner] = []

    def make(*, threaded: bool = False) -> ChatPage:
        tasks = TaskRunner(synchronous=not threaded)
        runners.append(tasks)
        page = ChatPage(services, tasks)
        shown(qtbot, page, (800, 600))
        return page

    yield make
    for tasks in runners:
        with_chat = services._chat
        if with_chat is not None:
            with_chat.cancel()
        assert tasks.wait(60_000)


def reply_streaming(qtbot, page: ChatPage, text: str) -> None:
    """Send ``text`` on a threaded page and wait until the reply has begun to stream."""
    page.composer.setPlainText(text)
    page.submit()
    qtbot.waitUntil(lambda: page.model.rowCount() == 2 and page.model.message_at(1).content != "", timeout=60_000)


def shown_document_text(page: ChatPage, row: int) -> str:
    index = page.model.index(row)
    return page.delegate.document(index, None, page.view.viewport().width()).doc.toPlainText()


def click_link(qtbot, page: ChatPage, row: int, href: str) -> None:
    """A real mouse click where the link is drawn."""
    index = page.model.index(row)
    page.view.scrollTo(index)
    rect = page.view.visualRect(index)
    point = page.delegate.anchor_point(rect, index, href)
    assert point is not None, f"no link {href} in row {row}"
    qtbot.mouseClick(page.view.viewport(), Qt.MouseButton.LeftButton, pos=point)


# Sending ------------------------------------------------------------------------------------------


def test_a_reply_streams_into_the_view_and_is_what_is_stored(qtbot, make_page, with_model: Services) -> None:
    page = make_page()
    live_texts: list[str] = []
    page.model.dataChanged.connect(lambda top, _bottom: live_texts.append(page.model.message_at(top.row()).content))
    changed: list[int] = []
    page.conversationsChanged.connect(lambda: changed.append(1))

    page.composer.setPlainText("Hello there")
    page.submit()

    assert page.model.rowCount() == 2
    assert page.composer.toPlainText() == ""
    user, reply = (page.model.message_at(r) for r in range(2))
    stored = with_model.conversations.message(reply.id)
    assert user.content == "Hello there" and user.role == "user"
    assert stored.status == "complete" and stored.content
    assert len(live_texts) >= 3  # the reply grew in place, delta by delta
    assert live_texts[-2] == stored.content  # the last streamed text, before the stored row replaced it
    assert reply == stored
    assert stored.completion_tokens and "tokens/s" in shown_document_text(page, 1)
    assert page.title.text() == "Hello there"
    assert changed  # created, titled, messages added
    assert not page.error_bar.isVisible()


def test_a_threaded_reply_arrives_on_the_gui_thread(qtbot, make_page, with_model: Services) -> None:
    page = make_page(threaded=True)
    qtbot.keyClicks(page.composer, "Tell me something")
    qtbot.keyClick(page.composer, Qt.Key.Key_Return)
    assert page.busy and page.send_button.text() == "Stop"
    qtbot.waitUntil(lambda: not page.busy, timeout=60_000)
    assert page.model.rowCount() == 2
    reply = page.model.message_at(1)
    assert reply.status == "complete"
    assert with_model.conversations.message(reply.id).content == reply.content
    assert page.send_button.text() == "Send"


def test_stop_keeps_the_partial_reply_and_says_so(qtbot, make_page, with_model: Services) -> None:
    with_model.settings.set("max_tokens", LONG_REPLY)
    page = make_page(threaded=True)
    reply_streaming(qtbot, page, "Write a long story")
    page.stop()
    qtbot.waitUntil(lambda: not page.busy, timeout=60_000)
    reply = with_model.conversations.message(page.model.message_at(1).id)
    assert reply.status == "partial" and reply.stop_reason == "cancelled"
    assert reply.content and (reply.completion_tokens or 0) < LONG_REPLY
    assert page.model.message_at(1).content == reply.content
    assert "Stopped: the reply is incomplete." in shown_document_text(page, 1)


def test_a_worker_crash_shows_a_banner_and_the_next_send_works(qtbot, make_page, with_model: Services) -> None:
    with_model.settings.set("max_tokens", LONG_REPLY)
    page = make_page(threaded=True)
    reply_streaming(qtbot, page, "Go on and on")
    pid = with_model.runtime.worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: not page.busy, timeout=60_000)

    assert page.crash_banner.isVisible()
    assert "crashed" in page.crash_banner.text()
    failed = with_model.conversations.message(page.model.message_at(1).id)
    assert failed.status == "error" and "crashed" in (failed.error or "")
    assert not page.error_bar.isVisible()  # a crash is not an exception: the turn ended normally

    with_model.settings.set("max_tokens", 12)
    assert page.crash_banner.action is not None
    page.crash_banner.action.click()  # reload the model in the background
    assert not page.crash_banner.isVisible()
    page.composer.setPlainText("Are you back?")
    page.submit()
    qtbot.waitUntil(lambda: not page.busy, timeout=60_000)
    assert page.model.rowCount() == 4
    assert page.model.message_at(3).status == "complete"
    assert not page.crash_banner.isVisible()


# The composer -------------------------------------------------------------------------------------


def test_enter_sends_and_shift_enter_starts_a_new_line(qtbot, make_page, with_model: Services) -> None:
    page = make_page()
    qtbot.keyClicks(page.composer, "first line")
    qtbot.keyClick(page.composer, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(page.composer, "second line")
    assert page.composer.toPlainText() == "first line\nsecond line"
    assert page.model.rowCount() == 0

    qtbot.keyClick(page.composer, Qt.Key.Key_Return)
    assert page.model.rowCount() == 2
    assert page.model.message_at(0).content == "first line\nsecond line"
    assert page.composer.toPlainText() == ""


def test_the_draft_survives_an_error_and_a_switch_of_conversation(qtbot, make_page, services: Services) -> None:
    page = make_page()  # no model registered, no default
    page.composer.setPlainText("my precious draft")
    page.submit()
    assert page.error_bar.isVisible()
    assert "No model chosen" in page.error_bar.text()
    assert "Traceback" not in page.error_bar.text()
    assert page.composer.toPlainText() == "my precious draft"
    first = page.conversation_id
    assert first is not None and page.model.rowCount() == 0

    other = services.chat.start()
    page.open_conversation(other.id)
    assert page.composer.toPlainText() == ""
    page.composer.setPlainText("another draft")
    page.open_conversation(first)
    assert page.composer.toPlainText() == "my precious draft"
    page.open_conversation(other.id)
    assert page.composer.toPlainText() == "another draft"


def test_regenerate_and_edit_and_resend(qtbot, make_page, with_model: Services) -> None:
    page = make_page()
    page.composer.setPlainText("Hi")
    page.submit()
    first_reply = page.model.message_at(1)

    page.regenerate()
    assert page.model.rowCount() == 2
    again = page.model.message_at(1)
    assert not page.error_bar.isVisible(), page.error_bar.text()
    assert again.created_at > first_reply.created_at  # a new row (SQLite may reuse the id)
    assert again == page.services.conversations.message(again.id)
    assert with_model.conversations.message_ids(page.conversation_id or 0) == page.model.ids()

    page.composer.setPlainText("unsent words")
    page.edit_last()
    assert page.composer.toPlainText() == "Hi"
    page.composer.setPlainText("Hello, instead")
    page.submit()
    assert [m.role for m in (page.model.message_at(r) for r in range(2))] == ["user", "assistant"]
    assert page.model.message_at(0).content == "Hello, instead"
    assert with_model.conversations.message_ids(page.conversation_id or 0) == page.model.ids()


# The message list -----------------------------------------------------------------------------------


def test_the_message_model_is_lazy_over_ten_thousand_messages(qtbot, make_page, services: Services) -> None:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"}
                for i in range(10_000)]
    conversation = services.conversations.insert_whole(title="long", model=None, system_prompt="", sampling={},
                                                       messages=messages)
    page = make_page()
    page.open_conversation(conversation.id)
    qtbot.wait(50)

    assert page.model.rowCount() == 10_000
    assert page.model.cached_count() <= 100  # a page or two, not ten thousand
    assert page.model.queries <= 3
    assert "message number 9999" in shown_document_text(page, 9_999)
    bar = page.view.verticalScrollBar()
    assert bar.value() == bar.maximum()  # the newest messages are in view

    page.view.scrollToTop()
    qtbot.wait(50)
    assert page.model.message_at(0).content == "message number 0"
    assert page.model.cached_count() <= CACHE_SIZE
    assert page.model.queries <= 6


def test_a_reasoning_section_is_folded_and_unfolds(qtbot, make_page, services: Services) -> None:
    conversation = services.chat.start()
    services.conversations.add_message(conversation.id, "user", "Why?")
    services.conversations.add_message(conversation.id, "assistant", "Because.", reasoning="secret musings",
                                       reasoning_seconds=4.2)
    page = make_page()
    page.open_conversation(conversation.id)
    text = shown_document_text(page, 1)
    assert "Thought for 4 s" in text and "Because." in text
    assert "secret musings" not in text

    click_link(qtbot, page, 1, REASONING_HREF)
    assert "secret musings" in shown_document_text(page, 1)


def test_citations_are_links_that_open_the_document_at_its_page(qtbot, make_page, services: Services,
                                                                 tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4 not really")
    page_one, page_two = "First page text.\n", "Second page: the cited passage.\n"
    library = services.libraries.create("papers")
    document = services.libraries.save_document(library.id, str(pdf), size=10, mtime=0.0, sha256="ab" * 32,
                                                title="Report", kind="pdf", text=page_one + page_two,
                                                pages=(0, len(page_one)))
    conversation = services.chat.start(library_id=library.id)
    services.conversations.add_message(conversation.id, "user", "What does it say?")
    services.conversations.add_message(conversation.id, "assistant",
                                       f"It says so [doc {document.id}, p. 2].\n\n```\ncode [doc 9]\n```\n")
    page = make_page()
    page.open_conversation(conversation.id)
    assert page.library_label.text().endswith("papers")

    click_link(qtbot, page, 1, f"cite:{document.id}:2")
    viewer = page.viewer
    assert viewer is not None and viewer.isVisible()
    assert viewer.text.toPlainText() == page_one + page_two
    assert viewer.span == (len(page_one), len(page_one) + len(page_two))
    assert viewer.text.textCursor().position() == len(page_one)
    assert viewer.open_external.isVisible()
    viewer.close()

    click_link(qtbot, page, 1, "enclave:copy:0")  # the citation inside code stayed text
    assert QGuiApplication.clipboard().text() == "code [doc 9]"
    assert page.delegate.anchor_point(page.view.visualRect(page.model.index(1)), page.model.index(1),
                                      "cite:9") is None


def test_a_library_answer_lists_its_sources_and_each_opens_its_passage(qtbot, make_page, services: Services,
                                                                       tmp_path: Path) -> None:
    library = services.libraries.create("papers")
    text = "Intro.\n" + "The second part holds the passage we want.\n"
    saved = [services.libraries.save_document(library.id, str(tmp_path / f"{name}.txt"), size=10, mtime=0.0,
                                              sha256=f"{i:02}" * 32, title=title, kind="txt", text=text)
             for i, (name, title) in enumerate([("a", "Alpha report"), ("b", "b.txt"), ("c", "c.txt"),
                                                ("d", "Delta")])]
    a, b, c, d = saved
    start = text.index("The second")
    sources = (Source(a.id, a.title, a.path), Source(b.id, b.title, b.path, section=1, start=start, end=len(text)),
               Source(c.id, c.title, c.path), Source(d.id, d.title, d.path, left_out=True))
    conversation = services.chat.start(library_id=library.id)
    services.conversations.add_message(conversation.id, "user", "What is in part two?")
    services.conversations.add_message(conversation.id, "assistant", f"Part two says so [doc {b.id}].",
                                       sources=sources)
    assert services.conversations.messages(conversation.id)[-1].sources == sources  # stored as given
    page = make_page()
    page.open_conversation(conversation.id)
    shown = shown_document_text(page, 1)
    assert "Sources" in shown and f"Cited: [doc {b.id}] b.txt, part 2" in shown
    assert "▸ Also read: 2 documents" in shown and "Alpha report (a.txt)" not in shown  # folded
    assert f"Left out (did not fit): [doc {d.id}] Delta (d.txt)" in shown

    click_link(qtbot, page, 1, f"cite:{b.id}::{start}-{len(text)}")  # the cited passage
    viewer = page.viewer
    assert viewer is not None and viewer.span == (start, len(text))
    assert viewer.text.textCursor().position() == start
    viewer.close()

    click_link(qtbot, page, 1, SOURCES_HREF)
    shown = shown_document_text(page, 1)
    assert "▾ Also read: 2 documents" in shown and f"[doc {a.id}] Alpha report (a.txt) · [doc {c.id}] c.txt" in shown
    click_link(qtbot, page, 1, f"cite:{a.id}")
    assert page.viewer is not None and page.viewer.document is not None and page.viewer.document.id == a.id


def test_prompt_progress_shows_done_total_speed_and_time_left(qtbot, make_page, services: Services) -> None:
    row = PromptProgressRow()
    qtbot.addWidget(row)
    row.update_progress(1_000, 5_000, now=10.0)
    row.update_progress(2_000, 5_000, now=11.0)
    assert row.bar.value() == 2_000 and row.bar.maximum() == 5_000
    assert "2,000 / 5,000 tokens" in row.label.text()
    assert "1,000 tokens/s" in row.label.text() and "3 s left" in row.label.text()

    page = make_page()
    page._on_event(page.conversation_id, PromptProgress(300, 4_000))
    assert page.progress.isVisible()
    page._on_event(page.conversation_id, PromptProgress(4_000, 4_000))
    assert not page.progress.isVisible()


# Pure parts -----------------------------------------------------------------------------------------


def test_markdown_links_citations_outside_code_only() -> None:
    prepared = prepare("See [doc 3] and [doc 4, p. 12]; `[doc 5]` stays.\n```py\nx = '[doc 6]'\n```\nend")
    assert "(cite:3)" in prepared.markdown and "(cite:4:12)" in prepared.markdown
    assert "cite:5" not in prepared.markdown and "cite:6" not in prepared.markdown
    assert prepared.code_blocks == ["x = '[doc 6]'"]
    assert parse_citation("cite:4:12") is not None and parse_citation("https://x") is None


def test_the_footer_tells_speed_counts_note_and_status() -> None:
    done = Message(1, 1, "assistant", "hi", completion_tokens=50, generation_seconds=2.0, prompt_tokens=1200,
                   cached_tokens=1000, context_note="3 of 5 documents")
    assert reply_footer(done, live=False) == ["50 tokens · 25.0 tokens/s · prompt 1,200 tokens (1,000 cached)",
                                              "3 of 5 documents"]
    failed = Message(2, 1, "assistant", "", status="error", error="boom")
    assert reply_footer(failed, live=False) == ["Error: boom"]
    assert reply_footer(Message(3, 1, "assistant", ""), live=True) == ["Writing…"]


def test_the_footer_tells_how_many_tokens_were_drafted_and_accepted() -> None:
    drafted = Message(1, 1, "assistant", "hi", completion_tokens=80, generation_seconds=2.0, prompt_tokens=1200,
                      cached_tokens=1000, drafted_tokens=1052, accepted_tokens=40)
    assert reply_footer(drafted, live=False) == [
        "80 tokens · 40.0 tokens/s · prompt 1,200 tokens (1,000 cached) · 1,052 drafted, 40 accepted"]
    plain = Message(2, 1, "assistant", "hi", completion_tokens=80, generation_seconds=2.0)
    assert reply_footer(plain, live=False) == ["80 tokens · 40.0 tokens/s"]  # nothing drafted: nothing said


def test_links_are_found_where_they_are_drawn(qtbot, make_page, services: Services) -> None:
    conversation = services.chat.start()
    services.conversations.add_message(conversation.id, "assistant", "Read [doc 1].")
    page = make_page()
    page.open_conversation(conversation.id)
    index = page.model.index(0)
    rect = page.view.visualRect(index)
    point = page.delegate.anchor_point(rect, index, "cite:1")
    assert point is not None
    assert page.delegate.anchor_at(rect, index, point) == "cite:1"
    assert page.delegate.anchor_at(rect, index, QPoint(rect.left() + 1, rect.bottom() - 1)) == ""


def test_streaming_many_items_cannot_exhaust_true(qtbot) -> None:
    """PySide6 6.12's emit loses a reference to True per call; the guard keeps it alive."""
    from ui import pyside_fixes

    runner = TaskRunner()
    got: list[int] = []
    runner.stream(lambda: range(5_000), on_item=got.append, on_done=lambda _: got.append(-1))
    qtbot.waitUntil(lambda: got[-1:] == [-1], timeout=30_000)
    assert len(got) == 5_001
    if pyside_fixes.GUARDED:
        assert sys.getrefcount(True) > pyside_fixes.RESERVE // 2
