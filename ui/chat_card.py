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

from app.conversations import Message, MessageImage
from ui.theme import SPACE, Colors, colors, font, palette_is_dark

COLUMN_MAX = 780  # the text of a message is at most this wide: lines a reader's eye can follow
ROW_GAP = SPACE.S  # between two cards
SIDE = SPACE.M  # at least this much on each side of a card
PADDING = SPACE.M  # inside a card, around its parts
BUTTON = 26  # an action's square
ICON = 16
RADIUS = 8
THUMB = 120  # a message's image fits in a square this wide, aspect kept
THUMBS_PER_ROW = 4
THUMB_GAP = SPACE.S


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


def thumb_size(image: MessageImage) -> tuple[int, int]:
    """The image fitted into ``THUMB`` × ``THUMB``, aspect kept, never enlarged (at least 1 px)."""
    width, height = max(1, image.width), max(1, image.height)
    scale = min(1.0, THUMB / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumb_layout(images: tuple[MessageImage, ...], width: int) -> tuple[list[QRect], int]:
    """The images' rectangles relative to the top left of a text column ``width`` wide (up to
    ``THUMBS_PER_ROW`` a row, fewer when the column is narrow; each row as tall as its
    tallest image), and the height they take with the gap under them (0 without images)."""
    rects: list[QRect] = []
    x = y = row_height = in_row = 0
    for image in images:
        w, h = thumb_size(image)
        if in_row and (in_row == THUMBS_PER_ROW or x + w > width):
            y += row_height + THUMB_GAP
            x = row_height = in_row = 0
        rects.append(QRect(x, y, w, h))
        x += w + THUMB_GAP
        row_height = max(row_height, h)
        in_row += 1
    return rects, (y + row_height + SPACE.S if rects else 0)


def images_height(message: Message, width: int) -> int:
    return thumb_layout(message.images, width)[1] if message.images else 0


def chrome_height(base: QFont, images: int = 0) -> int:
    """A card's height beyond its text: padding, the header, the images (``images``: their
    height, ``images_height``) and the row of actions."""
    return PADDING + header_height(base) + SPACE.XS + images + SPACE.XS + BUTTON + SPACE.XS + ROW_GAP


def images_origin(card: QRect, base: QFont) -> tuple[int, int]:
    """Where a message's images start: under the header, where the text would."""
    return card.left() + PADDING, card.top() + PADDING + header_height(base) + SPACE.XS


def thumb_rects(card: QRect, message: Message, base: QFont) -> list[QRect]:
    """The message's images in the card ``card`` (view coordinates): what is drawn and clicked."""
    if not message.images:
        return []
    x, y = images_origin(card, base)
    return [r.translated(x, y) for r in thumb_layout(message.images, card.width() - 2 * PADDING)[0]]


def text_origin(card: QRect, base: QFont, message: Message | None = None) -> tuple[int, int]:
    """Where the text starts: under the header and the message's images."""
    x, y = images_origin(card, base)
    return x, y + (images_height(message, card.width() - 2 * PADDING) if message is not None else 0)


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
