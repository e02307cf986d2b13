"""Drawing one message: a card (``chat_card``: author, time, actions) around a
``QTextDocument`` built from its Markdown, painted by a delegate.

Everything clickable in a message is a link inside its document — the "Thought for N s"
fold, "Copy code" under a code block, citations — so a click is just ``anchorAt`` on the
document, and the list stays a plain ``QListView`` that scrolls 10,000 rows smoothly.

Heights are remembered per (message, revision, fold, width); a row whose message has not
been fetched yet gets its last known height or an estimate, so size hints never query the
database. When a drawn row turns out taller or shorter than laid out, ``heightChanged``
asks the page for a relayout.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import (
    QEvent,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QPointF,
    QRect,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QAbstractTextDocumentLayout,
    QColor,
    QFont,
    QHelpEvent,
    QIcon,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QPixmap,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)
from PySide6.QtWidgets import QAbstractItemView, QStyle, QStyledItemDelegate, QStyleOptionViewItem, QToolTip, QWidget

from app.conversations import Message, Source
from ui.chat_card import (
    ICON,
    ICONS,
    RADIUS,
    THUMB,
    CardAction,
    author,
    card_actions,
    card_rect,
    chrome_height,
    header_font,
    header_height,
    images_height,
    scheme,
    text_origin,
    text_width,
    thumb_rects,
    time_label,
)
from ui.chat_model import MessageListModel
from ui.markdown import CITATION, FEATURES, prepare, source_href
from ui.theme import SPACE, font, icon

ESTIMATE = 96  # height of a row not measured yet
DOCS_KEPT = 150
REASONING_HREF = "enclave:reasoning"
SOURCES_HREF = "enclave:sources"
Index = QModelIndex | QPersistentModelIndex


@dataclass
class MessageDoc:
    doc: QTextDocument
    code_blocks: list[str]


def reply_footer(message: Message, live: bool) -> list[str]:
    """The lines under a reply: speed and token counts, the library note, its status."""
    lines: list[str] = []
    stats: list[str] = []
    if message.completion_tokens:
        stats.append(f"{message.completion_tokens:,} tokens")
        if message.generation_seconds:
            stats.append(f"{message.completion_tokens / message.generation_seconds:.1f} tokens/s")
    if message.prompt_tokens:
        cached = f" ({message.cached_tokens:,} cached)" if message.cached_tokens else ""
        stats.append(f"prompt {message.prompt_tokens:,} tokens{cached}")
    if message.drafted_tokens:  # speculative decoding: proposed tokens, and the ones the model kept
        stats.append(f"{message.drafted_tokens:,} drafted, {message.accepted_tokens:,} accepted")
    if stats:
        lines.append(" · ".join(stats))
    if message.context_note:
        lines.append(message.context_note)
    if live:
        lines.append("Writing…")
    elif message.status == "error":
        lines.append(f"Error: {message.error or 'the reply failed'}")
    elif message.status == "partial":
        lines.append("Stopped: the reply is incomplete." if message.stop_reason == "cancelled"
                     else "Interrupted: the reply is incomplete.")
    return lines


def reasoning_label(message: Message, live: bool, expanded: bool) -> str:
    arrow = "▾" if expanded else "▸"
    if live and not message.content:
        return f"{arrow} Thinking…"
    if message.reasoning_seconds is not None:
        return f"{arrow} Thought for {max(1, round(message.reasoning_seconds))} s"
    return f"{arrow} Thoughts"


def _plain_html(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def _new_block(cursor: QTextCursor) -> None:
    """A plain paragraph: nothing of the block before (a list, a code block) carries over."""
    cursor.insertBlock(QTextBlockFormat(), QTextCharFormat())


def _shade_code(doc: QTextDocument, color: QColor) -> None:
    block = doc.begin()
    while block.isValid():
        fmt = block.blockFormat()
        if fmt.hasProperty(QTextFormat.Property.BlockCodeFence) or fmt.nonBreakableLines():
            cursor = QTextCursor(block)
            fmt.setBackground(color)
            cursor.setBlockFormat(fmt)
        block = block.next()


def sources_html(message: Message, *, open_all: bool, muted: str) -> str:
    """The sources under a library answer: the documents (and passages) it cites first, then
    — folded unless ``open_all`` — everything else it was given, then what was left out. Each
    opens the document viewer at that passage or page."""
    cited = {int(m.group(1)) for m in CITATION.finditer(message.content)}
    given = [s for s in message.sources if not s.left_out]
    left_out = [s for s in message.sources if s.left_out]
    first = [s for s in given if s.document_id in cited]
    rest = [s for s in given if s.document_id not in cited]

    def links(sources: list[Source]) -> str:
        return " · ".join(f'<a href="{source_href(s)}">{html.escape(source_label(s))}</a>' for s in sources)

    lines = [f'<span style="color:{muted}; font-weight:600">Sources</span>']
    if first:
        lines.append(f"Cited: {links(first)}")
    if rest:
        noun = "passage" if all(s.section is not None for s in rest) else "document"
        label = (f"{'▾' if open_all else '▸'} {'Also read' if first else 'Read'}: {len(rest)} {noun}"
                 f"{'s' if len(rest) != 1 else ''}")
        lines.append(f'<a href="{SOURCES_HREF}" style="color:{muted}">{html.escape(label)}</a>')
        if open_all:
            lines.append(links(rest))
    if left_out:
        lines.append(f'<span style="color:{muted}">Left out (did not fit): </span>{links(left_out)}')
    return '<span style="font-size:small">' + "<br>".join(lines) + "</span>"


def source_label(source: Source) -> str:
    where = f", p. {source.page}" if source.page is not None else ""
    part = f", part {source.section + 1}" if source.section is not None else ""
    return f"[doc {source.document_id}] {source.name}{part}{where}"


def build_document(message: Message, *, live: bool, expanded: bool, width: int, font: QFont,
                   palette: QPalette, sources_open: bool = False) -> MessageDoc:
    doc = QTextDocument()
    doc.setDocumentMargin(0)
    doc.setDefaultFont(font)
    colours = scheme(palette)
    muted = colours.muted
    cursor = QTextCursor(doc)
    started = False  # the first block is the document's own: nothing to start before it
    if message.reasoning:
        started = True
        label = reasoning_label(message, live, expanded)
        cursor.insertHtml(f'<a href="{REASONING_HREF}" style="color:{muted}">{html.escape(label)}</a>')
        if expanded:
            _new_block(cursor)
            cursor.insertHtml(f'<span style="color:{muted}; font-style:italic">{_plain_html(message.reasoning)}</span>')
    prepared = prepare(message.content) if message.role == "assistant" else None
    if started:
        _new_block(cursor)
    if prepared is not None:
        cursor.insertMarkdown(prepared.markdown, FEATURES)
        card = QColor(colours.card)
        _shade_code(doc, card.lighter(135) if card.lightness() < 128 else card.darker(105))
    else:
        cursor.insertHtml(_plain_html(message.content))
    if message.role == "assistant" and message.sources and not live:
        cursor.movePosition(QTextCursor.MoveOperation.End)
        _new_block(cursor)
        cursor.insertHtml(sources_html(message, open_all=sources_open, muted=muted))
    if message.role == "assistant":
        footer = reply_footer(message, live)
        if footer:
            cursor.movePosition(QTextCursor.MoveOperation.End)
            _new_block(cursor)
            color = colours.error if message.status == "error" and not live else muted
            cursor.insertHtml(f'<span style="color:{color}; font-size:small">'
                              f'{"<br>".join(html.escape(line) for line in footer)}</span>')
    doc.setTextWidth(max(50, width))
    return MessageDoc(doc, prepared.code_blocks if prepared else [])


class MessageDelegate(QStyledItemDelegate):
    heightChanged = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._docs: OrderedDict[tuple, MessageDoc] = OrderedDict()
        self._heights: dict[tuple, int] = {}
        self._last_height: dict[int, int] = {}
        self._icons: dict[tuple[str, str], QIcon] = {}
        self.model_name: Callable[[str | None], str | None] = lambda ref: None  # a reply's author, by its model
        # a message's image fitted into a square of so many device pixels; None until read
        self.thumbnail: Callable[[str, int], QPixmap | None] = lambda sha256, box: None
        self.hovered: tuple[int, str] | None = None  # (row, action) under the mouse

    def forget(self) -> None:
        """A new conversation: nothing measured applies any more."""
        self._docs.clear()
        self._heights.clear()
        self._last_height.clear()

    # Geometry ----------------------------------------------------------------------------------

    @staticmethod
    def _model(index: Index) -> MessageListModel:
        model = index.model()
        assert isinstance(model, MessageListModel)
        return model

    def _key(self, index: Index, width: int) -> tuple[int, int, bool, bool, bool, int]:
        return (*self._model(index).row_state(index.row()), width)

    def _font(self, option: QStyleOptionViewItem | None) -> QFont:
        widget = self.parent()
        return option.font if option is not None else (widget.font() if isinstance(widget, QWidget) else QFont())

    def document(self, index: Index, option: QStyleOptionViewItem | None, width: int) -> MessageDoc:
        """The message's text laid out for a row ``width`` wide (its card's text width)."""
        inner = text_width(width)
        key = self._key(index, inner)
        found = self._docs.get(key)
        if found is not None:
            self._docs.move_to_end(key)
            return found
        model = self._model(index)
        message = model.message_at(index.row())
        _id, _revision, expanded, live, sources_open = key[:5]
        widget = self.parent()
        base = self._font(option)
        palette = option.palette if option is not None else (
            widget.palette() if isinstance(widget, QWidget) else QPalette())
        built = build_document(message, live=live, expanded=expanded, width=inner, font=base, palette=palette,
                               sources_open=sources_open)
        self._docs[key] = built
        while len(self._docs) > DOCS_KEPT:
            self._docs.popitem(last=False)
        height = round(built.doc.size().height()) + chrome_height(base, images_height(message, inner))
        self._heights[key] = height
        self._last_height[message.id] = height
        return built

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        width = option.rect.width() if option.rect.width() > 0 else 600
        key = self._key(index, text_width(width))
        height = self._heights.get(key)
        if height is None:
            if self._model(index).peek(index.row()) is not None:
                self.document(index, option, width)
                height = self._heights[key]
            else:
                height = self._last_height.get(key[0], ESTIMATE)
        return QSize(width, height)

    def _doc_origin(self, rect: QRect, index: Index, base: QFont | None = None) -> QPoint:
        message = self._model(index).message_at(index.row())
        x, y = text_origin(card_rect(rect), base if base is not None else self._font(None), message)
        return QPoint(x, y)

    def image_rects(self, rect: QRect, index: Index, base: QFont | None = None) -> list[QRect]:
        """Where the images of the message in the row at ``rect`` are drawn (and clicked)."""
        message = self._model(index).message_at(index.row())
        return thumb_rects(card_rect(rect), message, base if base is not None else self._font(None))

    def image_at(self, rect: QRect, index: Index, pos: QPoint) -> int | None:
        """Which of the message's images is under ``pos`` (view coordinates), if one is."""
        return next((i for i, r in enumerate(self.image_rects(rect, index)) if r.contains(pos)), None)

    def actions(self, rect: QRect, index: Index, base: QFont | None = None) -> list[CardAction]:
        """The actions drawn under the message of the row at ``rect``."""
        model = self._model(index)
        row = index.row()
        message = model.message_at(row)
        live = model.row_state(row)[3]
        return card_actions(card_rect(rect), message, last=model.is_last_of_role(row), live=live,
                            base=base if base is not None else self._font(None))

    def action_at(self, rect: QRect, index: Index, pos: QPoint) -> CardAction | None:
        """The enabled action under ``pos`` (view coordinates) in the row drawn in ``rect``."""
        return next((a for a in self.actions(rect, index) if a.rect.contains(pos) and a.enabled
                     and a.name != "count"), None)

    # Drawing ------------------------------------------------------------------------------------

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        built = self.document(index, option, option.rect.width())
        needed = self._heights[self._key(index, text_width(option.rect.width()))]
        message = self._model(index).message_at(index.row())
        colours = scheme(option.palette)
        card = card_rect(option.rect)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        border = QColor(option.palette.color(QPalette.ColorRole.Highlight)) if (
            option.state & QStyle.StateFlag.State_Selected) else QColor(colours.border)
        painter.setPen(QPen(border, 1))
        painter.setBrush(QColor(colours.card_user if message.role == "user" else colours.card))
        painter.drawRoundedRect(card.adjusted(0, 0, -1, -1), RADIUS, RADIUS)
        self._paint_header(painter, option, card, message)
        self._paint_actions(painter, option, index, message)
        self._paint_images(painter, option, index, message)
        painter.translate(self._doc_origin(option.rect, index, option.font))
        context = QAbstractTextDocumentLayout.PaintContext()
        context.palette = option.palette
        built.doc.documentLayout().draw(painter, context)
        painter.restore()
        if needed != option.rect.height():
            self.heightChanged.emit()

    def _paint_header(self, painter: QPainter, option: QStyleOptionViewItem, card: QRect, message: Message) -> None:
        """The author in bold, then the time, muted."""
        name_font = header_font(option.font)
        name_font.setWeight(QFont.Weight.DemiBold)
        top = card.top() + SPACE.M
        line = QRect(card.left() + SPACE.M, top, card.width() - 2 * SPACE.M, header_height(option.font))
        who = author(message, self.model_name(message.model) if message.role == "assistant" else None)
        painter.setFont(name_font)
        painter.setPen(option.palette.color(QPalette.ColorRole.Text))
        who = painter.fontMetrics().elidedText(who, Qt.TextElideMode.ElideRight, line.width() * 2 // 3)
        painter.drawText(line, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, who)
        shift = painter.fontMetrics().horizontalAdvance(who) + SPACE.S
        painter.setFont(font("caption", option.font))
        painter.setPen(QColor(scheme(option.palette).muted))
        painter.drawText(line.adjusted(shift, 0, 0, 0), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         time_label(message.created_at))

    def _paint_images(self, painter: QPainter, option: QStyleOptionViewItem, index: Index, message: Message) -> None:
        """The message's images, rounded, each in its place; a quiet placeholder until read."""
        colours = scheme(option.palette)
        ratio = painter.device().devicePixelRatioF() if painter.device() is not None else 1.0
        box = round(THUMB * ratio)
        for image, rect in zip(message.images, self.image_rects(option.rect, index, option.font), strict=True):
            pixmap = self.thumbnail(image.sha256, box)
            path = QPainterPath()
            path.addRoundedRect(QRectF(rect).adjusted(0.5, 0.5, -0.5, -0.5), 6, 6)
            painter.save()
            if pixmap is None:
                painter.fillPath(path, QColor(colours.border))
            else:
                painter.setClipPath(path)
                painter.drawPixmap(rect, pixmap)
                painter.setClipping(False)
                painter.setPen(QPen(QColor(colours.border), 1))  # a white chart on a light card keeps its edge
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.drawPath(path)
            painter.restore()

    def _paint_actions(self, painter: QPainter, option: QStyleOptionViewItem, index: Index, message: Message
                       ) -> None:
        colours = scheme(option.palette)
        for action in self.actions(option.rect, index, option.font):
            if action.name == "count":
                painter.setFont(header_font(option.font))
                painter.setPen(QColor(colours.muted))
                painter.drawText(action.rect, Qt.AlignmentFlag.AlignCenter, action.label)
                continue
            if self.hovered == (index.row(), action.name) and action.enabled:
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(QColor(colours.border))
                painter.drawRoundedRect(action.rect, 4, 4)
            tint = colours.muted if action.enabled else colours.border
            inset = (action.rect.width() - ICON) // 2
            self._icon(ICONS[action.name], tint).paint(painter, action.rect.adjusted(inset, inset, -inset, -inset))

    def _icon(self, name: str, tint: str) -> QIcon:
        key = (name, tint)
        if key not in self._icons:
            self._icons[key] = icon(name, tint, ICON)
        return self._icons[key]

    def helpEvent(self, event: QHelpEvent, view: QAbstractItemView, option: QStyleOptionViewItem,
                  index: Index) -> bool:
        """An action's tooltip; elsewhere none (the message's text is on screen already)."""
        if event.type() == QEvent.Type.ToolTip and index.isValid():
            found = next((a for a in self.actions(view.visualRect(index), index) if a.rect.contains(event.pos())),
                         None)
            if found is not None:
                QToolTip.showText(event.globalPos(), found.tooltip, view)
                return True
            picture = self.image_at(view.visualRect(index), index, event.pos())
            if picture is not None:
                image = self._model(index).message_at(index.row()).images[picture]
                QToolTip.showText(event.globalPos(), f"{image.name or 'Pasted image'} ({image.width} × "
                                  f"{image.height}): click to open it large", view)
                return True
            QToolTip.hideText()
            return True
        return super().helpEvent(event, view, option, index)

    # Links ----------------------------------------------------------------------------------------

    def anchor_at(self, rect: QRect, index: Index, pos: QPoint) -> str:
        """The link under ``pos`` (view coordinates) in the row drawn in ``rect``."""
        built = self.document(index, None, rect.width())
        local = QPointF(pos - self._doc_origin(rect, index))
        return built.doc.documentLayout().anchorAt(local)
    def anchor_point(self, rect: QRect, index: Index, href: str) -> QPoint | None:
        """Where the link ``href`` is drawn in the row at ``rect`` (for tests and keyboard use)."""
        built = self.document(index, None, rect.width())
        layout = built.doc.documentLayout()
        block = built.doc.begin()
        while block.isValid():
            it = block.begin()
            while not it.atEnd():
                fragment = it.fragment()
                if fragment.charFormat().anchorHref() == href:
                    position = fragment.position() + fragment.length() // 2 - block.position()
                    line = block.layout().lineForTextPosition(position)
                    top = layout.blockBoundingRect(block).top()
                    point = QPointF(line.cursorToX(position)[0], top + line.y() + line.height() / 2)
                    return self._doc_origin(rect, index) + point.toPoint()
                it += 1
            block = block.next()
        return None

    def code_block(self, index: Index, width: int, number: int) -> str | None:
        blocks = self.document(index, None, width).code_blocks
        return blocks[number] if 0 <= number < len(blocks) else None
