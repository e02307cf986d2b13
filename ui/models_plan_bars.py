"""One horizontal bar per device of a ``Plan``, in llama.cpp's order (RPC hosts' devices,
this machine's GPUs, RAM last): weights, experts, KV cache, compute, a draft model and a vision
projector as coloured
segments against the device's budget (a marker line; what lies beyond it is red), under
the device's name and the layers it holds. ``rows()`` is the geometry ``paintEvent``
draws, so tests can check it. Titles, detail lines and the legend wrap when the widget
is narrow (the chat's side panel; a host's long address), so its height follows its
width; a single word longer than a line is elided, the whole title in the tooltip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QHelpEvent, QPainter, QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from app.types import DeviceUse, Plan, format_size

PARTS = (("weights", "Weights"), ("experts", "Experts"), ("kv", "KV cache"), ("compute", "Compute"),
         ("draft", "Draft model"), ("projector", "Projector"))
OPTIONAL = {"draft", "projector"}  # shown (detail, legend) only where there is one
COLORS = {"weights": QColor("#4e79a7"), "experts": QColor("#59a14f"), "kv": QColor("#f28e2b"),
          "compute": QColor("#b07aa1"), "draft": QColor("#76b7b2"), "projector": QColor("#edc948"),
          "over": QColor(214, 39, 40, 170)}
PAD, BAR_HEIGHT, GAP = 8, 22, 10
HINT_WIDTH = 480
BUDGET_LABEL = "Budget (free less the margin)"


@dataclass(frozen=True)
class Segment:
    part: str  # one of PARTS' keys
    n_bytes: int
    rect: QRectF


@dataclass(frozen=True)
class Row:
    use: DeviceUse
    title: str
    detail: str
    title_y: float
    bar: QRectF  # the whole track: 0 .. max(budget, total)
    segments: tuple[Segment, ...]
    budget_x: float
    over: QRectF | None  # the part beyond the budget
    detail_lines: tuple[str, ...] = ()  # ``detail`` wrapped to the widget's width
    title_lines: tuple[str, ...] = ()  # ``title`` wrapped (and elided) to the widget's width


def _bytes_of(use: DeviceUse, part: str) -> int:
    return {"weights": use.weights_bytes, "experts": use.experts_bytes, "kv": use.kv_bytes,
            "compute": use.compute_bytes, "draft": use.draft_bytes, "projector": use.projector_bytes}[part]


def _detail_parts(use: DeviceUse) -> list[str]:
    return [f"{label} {format_size(_bytes_of(use, part))}" for part, label in PARTS
            if part not in OPTIONAL or _bytes_of(use, part)]


def device_name(use: DeviceUse) -> str:
    """The device for people, with the layers it holds: "RPC0 on 10.0.0.5:50052 · 20 layers"."""
    name = use.label or use.device
    if use.layers:
        name += f" · {use.layers} layer{'' if use.layers == 1 else 's'}"
    return name


def _title_parts(use: DeviceUse) -> tuple[str, str]:
    """(the device, its use) of a bar's title: one line when the width allows, else two."""
    name = device_name(use)
    if use.total_bytes == 0 and use.device != "RAM":
        if use.budget_bytes <= 0:
            return f"{name}:", "not used — too little free memory"
        return f"{name}:", f"not used ({format_size(use.budget_bytes)} usable)"
    usage = f"{format_size(use.total_bytes)} of {format_size(max(use.budget_bytes, 0))} usable"
    if not use.fits:
        usage += f" — {format_size(use.total_bytes - use.budget_bytes)} over"
    return f"{name}:", usage


def describe_use(use: DeviceUse) -> tuple[str, str]:
    """(title, detail) lines of a device's bar."""
    return " ".join(_title_parts(use)), " · ".join(_detail_parts(use))


def flow(parts: Sequence[str], separator: str, width: float, metrics: QFontMetrics) -> list[str]:
    """``parts`` joined by ``separator`` into as few lines of at most ``width`` as fit
    (a part longer than a line gets a line of its own)."""
    lines: list[str] = []
    for part in parts:
        joined = f"{lines[-1]}{separator}{part}" if lines else part
        if lines and metrics.horizontalAdvance(joined) <= width:
            lines[-1] = joined
        else:
            lines.append(part)
    return lines


def _elided(lines: list[str], width: float, metrics: QFontMetrics) -> tuple[str, ...]:
    return tuple(metrics.elidedText(line, Qt.TextElideMode.ElideMiddle, int(width)) for line in lines)


def wrapped(use: DeviceUse, width: float, metrics: QFontMetrics) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(title lines, detail lines) of ``use``'s bar at ``width``."""
    title = flow(_title_parts(use), " ", width, metrics)
    unused = use.total_bytes == 0 and use.device != "RAM"  # a row of zeros says nothing the title does not
    detail = [] if unused else flow(_detail_parts(use), " · ", width, metrics)
    return _elided(title, width, metrics), _elided(detail, width, metrics)


class PlanBars(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._plan: Plan | None = None
        policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setMinimumWidth(240)

    def set_plan(self, plan: Plan | None) -> None:
        self._plan = plan
        self.updateGeometry()
        self.update()

    def _line(self) -> int:
        return self.fontMetrics().height()

    def _row_height(self, title_lines: int = 1, detail_lines: int = 1) -> int:
        return (title_lines + detail_lines) * self._line() + BAR_HEIGHT + GAP + 4

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        inner = max(width - 2 * PAD, 10)
        rows = self._plan.devices if self._plan else ()
        height = sum(self._row_height(*map(len, wrapped(use, inner, self.fontMetrics()))) for use in rows)
        legend = 1 + max((n for _, n, *_ in self._legend_layout(inner)), default=0)
        return PAD + height + legend * self._line() + PAD

    def sizeHint(self) -> QSize:
        return QSize(HINT_WIDTH, self.heightForWidth(HINT_WIDTH))

    def minimumSizeHint(self) -> QSize:
        return QSize(240, self.heightForWidth(max(self.width(), 240)))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self.heightForWidth(event.size().width()) != self.heightForWidth(event.oldSize().width()):
            self.updateGeometry()  # lines wrapped differently: the layout asks for the height again

    def rows(self) -> list[Row]:
        if self._plan is None:
            return []
        line, width = self._line(), max(self.width() - 2 * PAD, 10)
        out, y = [], float(PAD)
        for use in self._plan.devices:
            scale = width / max(use.budget_bytes, use.total_bytes, 1)
            title_lines, lines = wrapped(use, width, self.fontMetrics())
            bar_y = y + len(title_lines) * line + 2
            x, segments = float(PAD), []
            for part, _ in PARTS:
                n = _bytes_of(use, part)
                segments.append(Segment(part, n, QRectF(x, bar_y, n * scale, BAR_HEIGHT)))
                x += n * scale
            budget_x = PAD + max(use.budget_bytes, 0) * scale
            over = QRectF(budget_x, bar_y, x - budget_x, BAR_HEIGHT) if not use.fits else None
            title, detail = describe_use(use)
            out.append(Row(use, title, detail, y, QRectF(PAD, bar_y, width, BAR_HEIGHT), tuple(segments),
                           budget_x, over, lines, title_lines))
            y += self._row_height(len(title_lines), len(lines))
        return out

    def _legend_layout(self, width: float) -> list[tuple[float, int, QColor, str, bool]]:
        """(x, line number, colour, label, is the budget marker) of each legend item."""
        metrics, line = self.fontMetrics(), self._line()
        shown = {p for p, _ in PARTS if p not in OPTIONAL or (
            self._plan is not None and any(_bytes_of(use, p) for use in self._plan.devices))}
        items = [(COLORS[p], label, False) for p, label in PARTS if p in shown]
        budget = self.palette().windowText().color()  # the marker in the text's colour: seen on light and dark
        items += [(COLORS["over"], "Over budget", False), (budget, BUDGET_LABEL, True)]
        out: list[tuple[float, int, QColor, str, bool]] = []
        x, n = float(PAD), 0
        for color, label, marker in items:
            item_width = (6 if marker else line) + metrics.horizontalAdvance(label) + (0 if marker else 14)
            if x > PAD and x + item_width > PAD + width:
                x, n = float(PAD), n + 1
            out.append((x, n, color, label, marker))
            x += item_width
        return out

    def row_at(self, point: QPointF) -> Row | None:
        """The row whose title, bar or detail lines are under ``point``."""
        line = self._line()
        for row in self.rows():
            bottom = row.bar.bottom() + 2 + len(row.detail_lines) * line
            if row.title_y <= point.y() <= bottom:
                return row
        return None

    def segment_at(self, point: QPointF) -> tuple[Row, Segment] | None:
        for row in self.rows():
            for seg in row.segments:
                if seg.rect.contains(point):
                    return row, seg
        return None

    def event(self, event: QEvent) -> bool:
        """A tooltip naming the segment under the pointer and its size."""
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            point = QPointF(event.pos())
            hit, row = self.segment_at(point), self.row_at(point)
            if hit is not None:
                seg = hit[1]
                text = f"{device_name(hit[0].use)}: {dict(PARTS)[seg.part]} {format_size(seg.n_bytes)}"
                QToolTip.showText(event.globalPos(), text, self)
            elif row is not None:  # the whole title and detail, in case a narrow widget elided them
                QToolTip.showText(event.globalPos(), f"{row.title}\n{row.detail}", self)
            else:
                QToolTip.hideText()
            return True
        return super().event(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        line = self._line()
        text_color = self.palette().windowText().color()
        rows = self.rows()
        for row in rows:
            painter.setPen(COLORS["over"].darker(130) if not row.use.fits else text_color)
            for n, text in enumerate(row.title_lines):
                painter.drawText(QPointF(PAD, row.title_y + n * line + self.fontMetrics().ascent()), text)
            painter.fillRect(row.bar, self.palette().alternateBase())
            for seg in row.segments:
                painter.fillRect(seg.rect, COLORS[seg.part])
            if row.over is not None:
                painter.fillRect(row.over, COLORS["over"])
            painter.setPen(QPen(text_color, 2))
            painter.drawLine(QPointF(row.budget_x, row.bar.top() - 3), QPointF(row.budget_x, row.bar.bottom() + 3))
            painter.setPen(text_color)
            for n, text in enumerate(row.detail_lines):
                painter.drawText(QPointF(PAD, row.bar.bottom() + 2 + n * line + self.fontMetrics().ascent()), text)
        if rows:
            last = rows[-1]
            self._legend(painter, last.title_y + self._row_height(len(last.title_lines), len(last.detail_lines)),
                         line, text_color)
        painter.end()

    def _legend(self, painter: QPainter, y: float, line: int, text_color: QColor) -> None:
        ascent = self.fontMetrics().ascent()
        for x, n, color, label, marker in self._legend_layout(max(self.width() - 2 * PAD, 10)):
            top = y + n * line
            if marker:
                painter.setPen(QPen(color, 2))
                painter.drawLine(QPointF(x, top), QPointF(x, top + line))
                painter.setPen(text_color)
                painter.drawText(QPointF(x + 6, top + ascent), label)
            else:
                painter.fillRect(QRectF(x, top + 2, line - 4, line - 4), color)
                painter.setPen(text_color)
                painter.drawText(QPointF(x + line, top + ascent), label)
