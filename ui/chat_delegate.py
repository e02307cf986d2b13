"""Drawing one message: a ``QTextDocument`` built from its Markdown, painted by a delegate.

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
from dataclasses import dataclass

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, QPointF, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QAbstractTextDocumentLayout,
    QColor,
    QFont,
    QPainter,
    QPalette,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from app.conversations import Message, Source
from ui.chat_model import MessageListModel
from ui.markdown import CITATION, FEATURES, prepare, source_href

MARGIN = 10  # around each message
PADDING = 8  # inside a message's bubble
ESTIMATE = 64  # height of a row not measured yet
DOCS_KEPT = 150
REASONING_HREF = "enclave:reasoning"
SOURCES_HREF = "enclave:sources"
ERROR_COLOR = "#c0392b"
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
    muted = palette.color(QPalette.ColorRole.PlaceholderText).name()
    cursor = QTextCursor(doc)
    who = "You" if message.role == "user" else ("Assistant" if message.role == "assistant" else message.role)
    cursor.insertHtml(f'<span style="color:{muted}; font-weight:600">{html.escape(who)}</span>')
    if message.reasoning:
        _new_block(cursor)
        label = reasoning_label(message, live, expanded)
        cursor.insertHtml(f'<a href="{REASONING_HREF}" style="color:{muted}">{html.escape(label)}</a>')
        if expanded:
            _new_block(cursor)
            cursor.insertHtml(f'<span style="color:{muted}; font-style:italic">{_plain_html(message.reasoning)}</span>')
    prepared = prepare(message.content) if message.role == "assistant" else None
    _new_block(cursor)
    if prepared is not None:
        cursor.insertMarkdown(prepared.markdown, FEATURES)
        _shade_code(doc, palette.color(QPalette.ColorRole.AlternateBase))
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
            color = ERROR_COLOR if message.status == "error" and not live else muted
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

    def forget(self) -> None:
        """A new conversation: nothing measured applies any more."""
        self._docs.clear()
        self._heights.clear()
        self._last_height.clear()

    # Geometry ----------------------------------------------------------------------------------

    @staticmethod
    def _text_width(rect_width: int) -> int:
        return max(50, rect_width - 2 * (MARGIN + PADDING))

    @staticmethod
    def _model(index: Index) -> MessageListModel:
        model = index.model()
        assert isinstance(model, MessageListModel)
        return model

    def _key(self, index: Index, width: int) -> tuple[int, int, bool, bool, bool, int]:
        return (*self._model(index).row_state(index.row()), width)

    def document(self, index: Index, option: QStyleOptionViewItem | None, width: int) -> MessageDoc:
        text_width = self._text_width(width)
        key = self._key(index, text_width)
        found = self._docs.get(key)
        if found is not None:
            self._docs.move_to_end(key)
            return found
        model = self._model(index)
        message = model.message_at(index.row())
        _id, _revision, expanded, live, sources_open = key[:5]
        widget = self.parent()
        font = option.font if option is not None else (widget.font() if isinstance(widget, QWidget) else QFont())
        palette = option.palette if option is not None else (
            widget.palette() if isinstance(widget, QWidget) else QPalette())
        built = build_document(message, live=live, expanded=expanded, width=text_width, font=font, palette=palette,
                               sources_open=sources_open)
        self._docs[key] = built
        while len(self._docs) > DOCS_KEPT:
            self._docs.popitem(last=False)
        height = round(built.doc.size().height()) + 2 * (MARGIN + PADDING) - MARGIN
        self._heights[key] = height
        self._last_height[message.id] = height
        return built

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        width = option.rect.width() if option.rect.width() > 0 else 600
        key = self._key(index, self._text_width(width))
        height = self._heights.get(key)
        if height is None:
            if self._model(index).peek(index.row()) is not None:
                self.document(index, option, width)
                height = self._heights[key]
            else:
                height = self._last_height.get(key[0], ESTIMATE)
        return QSize(width, height)

    def _doc_origin(self, rect: QRect) -> QPoint:
        return QPoint(rect.left() + MARGIN + PADDING, rect.top() + MARGIN // 2 + PADDING)

    # Drawing ------------------------------------------------------------------------------------

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        built = self.document(index, option, option.rect.width())
        needed = self._heights[self._key(index, self._text_width(option.rect.width()))]
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        message = self._model(index).message_at(index.row())
        bubble = option.rect.adjusted(MARGIN, MARGIN // 2, -MARGIN, -MARGIN // 2)
        if message.role == "user":
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(option.palette.color(QPalette.ColorRole.AlternateBase))
            painter.drawRoundedRect(bubble, 8, 8)
        if option.state & QStyle.StateFlag.State_Selected:
            pen = QColor(option.palette.color(QPalette.ColorRole.Highlight))
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(bubble, 8, 8)
        origin = self._doc_origin(option.rect)
        painter.translate(origin)
        context = QAbstractTextDocumentLayout.PaintContext()
        context.palette = option.palette
        built.doc.documentLayout().draw(painter, context)
        painter.restore()
        if needed != option.rect.height():
            self.heightChanged.emit()

    # Links ----------------------------------------------------------------------------------------

    def anchor_at(self, rect: QRect, index: Index, pos: QPoint) -> str:
        """The link under ``pos`` (view coordinates) in the row drawn in ``rect``."""
        built = self.document(index, None, rect.width())
        local = QPointF(pos - self._doc_origin(rect))
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
                    return self._doc_origin(rect) + point.toPoint()
                it += 1
            block = block.next()
        return None

    def code_block(self, index: Index, width: int, number: int) -> str | None:
        blocks = self.document(index, None, width).code_blocks
        return blocks[number] if 0 <= number < len(blocks) else None
