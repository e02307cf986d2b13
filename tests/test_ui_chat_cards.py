"""Messages as cards: author, time and actions; a readable column at any window size;
regenerate keeps alternatives and the arrows switch between them."""

from __future__ import annotations

from datetime import datetime, timezone

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication

from app.services import Services
from tests import test_ui_chat
from tests.test_ui_chat import shown_document_text
from ui.chat_card import COLUMN_MAX, PADDING, card_rect, scheme, time_label
from ui.chat_view import ChatPage

make_page = test_ui_chat.make_page  # the chat page's fixtures, shared
with_model = test_ui_chat.with_model


def click_action(qtbot, page: ChatPage, row: int, name: str) -> None:
    """A real mouse click on an action under the card at ``row``."""
    index = page.model.index(row)
    page.view.scrollTo(index)
    rect = page.view.visualRect(index)
    action = next((a for a in page.delegate.actions(rect, index) if a.name == name), None)
    assert action is not None, f"no {name} under row {row}"
    qtbot.mouseClick(page.view.viewport(), Qt.MouseButton.LeftButton, pos=action.rect.center())


def action_names(page: ChatPage, row: int) -> list[str]:
    index = page.model.index(row)
    return [a.name for a in page.delegate.actions(page.view.visualRect(index), index)]


def test_regenerate_keeps_alternatives_and_the_arrows_switch_them(qtbot, make_page, with_model: Services) -> None:
    with_model.settings.set("temperature", 1.0)  # two replies that differ
    page = make_page()
    page.composer.setPlainText("Hi")
    page.submit()
    first = page.model.message_at(1)
    assert action_names(page, 0) == ["copy", "edit"] and action_names(page, 1) == ["copy", "regenerate"]

    click_action(qtbot, page, 1, "regenerate")
    second = page.model.message_at(1)
    assert page.model.rowCount() == 2 and second.id != first.id
    assert (second.alternative, second.alternatives) == (2, 2)
    assert action_names(page, 1) == ["previous", "count", "next", "copy", "regenerate"]
    index = page.model.index(1)
    count = next(a for a in page.delegate.actions(page.view.visualRect(index), index) if a.name == "count")
    assert count.label == "2 / 2"

    click_action(qtbot, page, 1, "previous")
    shown = page.model.message_at(1)
    assert shown.id == first.id and (shown.alternative, shown.alternatives) == (1, 2)
    assert shown_document_text(page, 1).startswith(first.content[:20])
    cid = page.conversation_id or 0
    assert [m.id for m in with_model.conversations.messages(cid)] == [page.model.message_at(0).id, first.id]
    history = with_model.chat._history(with_model.conversations.get(cid))  # what the next prompt holds
    assert [m.content for m in history] == ["Hi", first.content]

    click_action(qtbot, page, 1, "next")
    assert page.model.message_at(1).id == second.id
    assert shown_document_text(page, 1).startswith(second.content[:20])

    page.open_conversation(cid)  # the choice is stored
    assert page.model.message_at(1).id == second.id


def test_copy_puts_the_message_on_the_clipboard(qtbot, make_page, with_model: Services) -> None:
    page = make_page()
    page.composer.setPlainText("Copy me")
    page.submit()
    click_action(qtbot, page, 0, "copy")
    assert QGuiApplication.clipboard().text() == "Copy me"
    click_action(qtbot, page, 0, "edit")
    assert page.composer.toPlainText() == "Copy me" and page.edit_note.isVisibleTo(page)


def test_a_card_has_its_author_time_and_colours(qtbot, make_page, with_model: Services) -> None:
    page = make_page()
    page.composer.setPlainText("Hello")
    page.submit()
    [model] = with_model.models.all()
    reply = page.model.message_at(1)
    assert page.delegate.model_name(reply.model) == model.name  # a reply's author is its model
    assert len(time_label(reply.created_at)) == 5  # today: the time alone, "14:05"
    image = page.view.viewport().grab().toImage()
    index = page.model.index(0)
    card = card_rect(page.view.visualRect(index))
    inside = image.pixelColor(card.left() + 4, card.center().y()).name()
    assert inside == scheme(page.palette()).card_user  # your message on the user's card colour


def test_a_time_from_another_day_says_the_day() -> None:
    now = datetime(2026, 12, 3, 15, 0, tzinfo=timezone.utc).astimezone()
    earlier = datetime(2026, 11, 28, 9, 7, tzinfo=timezone.utc)
    local = earlier.astimezone()
    assert time_label(earlier.isoformat(), now) == f"{local.day} Nov {local.strftime('%H:%M')}"
    assert time_label("not a time", now) == ""


def test_the_column_is_readable_at_1920_and_nothing_is_clipped_at_1024(qtbot, make_page, with_model: Services
                                                                         ) -> None:
    page = make_page()
    page.composer.setPlainText("A question " * 80)
    page.submit()
    for width, height in ((1920, 1080), (1024, 700)):
        page.resize(width, height)
        qtbot.wait(50)
        page.view.doItemsLayout()
        viewport = page.view.viewport().width()
        for row in range(page.model.rowCount()):
            index = page.model.index(row)
            rect = page.view.visualRect(index)
            card = card_rect(rect)
            assert card.width() <= COLUMN_MAX + 2 * PADDING
            assert card.left() >= 0 and card.right() < viewport  # nothing past the edge
            assert abs((card.left() - rect.left()) - (rect.right() - card.right())) <= 1  # centred
            doc = page.delegate.document(index, None, rect.width()).doc
            assert doc.textWidth() <= COLUMN_MAX
            assert doc.size().height() + 40 < rect.height()  # the text and the actions fit in the row
            for action in page.delegate.actions(rect, index):
                assert card.contains(action.rect)
        if width == 1920:
            assert page.view.visualRect(page.model.index(0)).width() > COLUMN_MAX + 400  # the column, not the row
        composer_box = page.composer.geometry()
        assert composer_box.width() <= COLUMN_MAX + 2 * PADDING + 40
        send = page.send_button
        assert send.width() >= send.minimumSizeHint().width()
        assert page.rect().contains(send.mapTo(page, QPoint(send.width() - 1, send.height() - 1)))
