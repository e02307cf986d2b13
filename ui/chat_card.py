"""A message card's geometry and its parts around the text: the author and time above it,
the actions below it (copy, regenerate, edit; ‹ n / m › between a reply's alternatives).

The delegate paints from these and the page hit-tests with the same functions, so what is
drawn is what is clicked. The column has a readable maximum width (``COLUMN_MAX`` of text,
about 90 characters a line), centred in a wide window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QRect
from PySide6.QtGui import QFont, QFontMetrics, QPalette

from app.conversations import Message
from ui.theme import SPACE, Colors, colors, font, palette_is_dark

COLUMN_MAX = 780  # the text of a message is at most this wide: lines a reader's eye can follow
ROW_GAP = SPACE.S  # between two cards
SIDE = SPACE.M  # at least this much on each side of a card
PADDING = SPACE.M  # inside a card, around its parts
BUTTON = 26  # an action's square
ICON = 16
RADIUS = 8


@dataclass(frozen=True)
class CardAction:
    name: str  # copy, regenerate, edit, previous, next; "count" is the ‹ n / m › label, not clickable
    rect: QRect
    tooltip: str
    enabled: bool = True
    label: str = ""


def scheme(palette: QPalette) -> Colors:
    """The semantic colours that go with ``palette`` (light or dark by its window colour),
    so a card matches the palette it is drawn with."""
    return colors(dark=palette_is_dark(palette))


def card_width(row_width: int) -> int:
    return max(120, min(row_width - 2 * SIDE, COLUMN_MAX + 2 * PADDING))


def text_width(row_width: int) -> int:
    return card_width(row_width) - 2 * PADDING


def card_rect(row: QRect) -> QRect:
    """The card in the row ``row``: centred, at most ``COLUMN_MAX`` of text wide."""
    width = card_width(row.width())
    left = row.left() + (row.width() - width) // 2
    return QRect(left, row.top() + ROW_GAP // 2, width, row.height() - ROW_GAP)


def header_font(base: QFont) -> QFont:
    return font("small", base)


def header_height(base: QFont) -> int:
    return QFontMetrics(header_font(base)).height()


def chrome_height(base: QFont) -> int:
    """A card's height beyond its text: padding, the header and the row of actions."""
    return PADDING + header_height(base) + SPACE.XS + SPACE.XS + BUTTON + SPACE.XS + ROW_GAP


def text_origin(card: QRect, base: QFont) -> tuple[int, int]:
    return card.left() + PADDING, card.top() + PADDING + header_height(base) + SPACE.XS


def author(message: Message, model_name: str | None) -> str:
    if message.role == "user":
        return "You"
    if message.role == "assistant":
        return model_name or (Path(message.model).name if message.model else "Assistant")
    return message.role.capitalize()


def time_label(stamp: str, now: datetime | None = None) -> str:
    """'14:05' today, '3 Dec 14:05' another day (local time); '' when unknown."""
    try:
        when = datetime.fromisoformat(stamp).astimezone()
    except ValueError:
        return ""
    now = now or datetime.now().astimezone()
    clock = when.strftime("%H:%M")
    return clock if when.date() == now.date() else f"{when.day} {when.strftime('%b')} {clock}"


def card_actions(card: QRect, message: Message, *, last: bool, live: bool, base: QFont) -> list[CardAction]:
    """The actions under a card, left to right. ``last``: the message is the last of its
    role (regenerate on the last reply, edit on your last message)."""
    top = card.bottom() + 1 - SPACE.XS - BUTTON
    x = card.left() + PADDING - (BUTTON - ICON) // 2
    actions: list[CardAction] = []

    def add(name: str, tooltip: str, enabled: bool = True, width: int = BUTTON, label: str = "") -> None:
        nonlocal x
        actions.append(CardAction(name, QRect(x, top, width, BUTTON), tooltip, enabled, label))
        x += width

    if live:
        return actions
    if message.role == "assistant" and message.alternatives > 1:
        count = f"{message.alternative} / {message.alternatives}"
        add("previous", "The reply before this one", message.alternative > 1)
        add("count", f"Reply {message.alternative} of {message.alternatives}",
            width=QFontMetrics(header_font(base)).horizontalAdvance(count) + SPACE.S, label=count)
        add("next", "The reply after this one", message.alternative < message.alternatives)
        x += SPACE.S
    add("copy", "Copy the message")
    if message.role == "assistant" and last:
        add("regenerate", "Answer again (this reply is kept: ‹ › switch between them)")
    if message.role == "user" and last:
        add("edit", "Edit your message and send it again")
    return actions


ICONS = {"copy": "copy", "regenerate": "regenerate", "edit": "edit", "previous": "chevron-left",
         "next": "chevron-right"}
