"""One horizontal bar per device of a ``Plan``: weights, experts, KV cache and compute
as coloured segments against the device's budget (a marker line; what lies beyond it
is red). ``rows()`` is the geometry ``paintEvent`` draws, so tests can check it. The
detail lines and the legend wrap when the widget is narrow (the chat's side panel), so
its height follows its width."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize
from PySide6.QtGui import QColor, QFontMetrics, QHelpEvent, QPainter, QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from app.types import DeviceUse, Plan, format_size

PARTS = (("weights", "Weights"), ("experts", "Experts"), ("kv", "KV cache"), ("compute", "Compute"))
COLORS = {"weights": QColor("#4e79a7"), "experts": QColor("#59a14f"), "kv": QColor("#f28e2b"),
          "compute": QColor("#b07aa1"), "over": QColor(214, 39, 40, 170), "budget": QColor("#222222")}
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


def _bytes_of(use: DeviceUse, part: str) -> int:
    return {"weights": use.weights_bytes, "experts": use.experts_bytes, "kv": use.kv_bytes,
            "compute": use.compute_bytes}[part]


def _detail_parts(use: DeviceUse) -> list[str]:
    return [f"{label} {format_size(_bytes_of(use, part))}" for part, label in PARTS]


def describe_use(use: DeviceUse) -> tuple[str, str]:
    """(title, detail) lines of a device's bar."""
    name = "RAM" if use.device == "RAM" else f"{use.device} (VRAM)"
    if use.budget_bytes <= 0 and use.total_bytes == 0:
        return f"{name}: not used — too little free memory", " · ".join(_detail_parts(use))
    title = f"{name}: {format_size(use.total_bytes)} of {format_size(max(use.budget_bytes, 0))} usable"
    if not use.fits:
        title += f" — {format_size(use.total_bytes - use.budget_bytes)} over"
    return title, " · ".join(_detail_parts(use))


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

    def _row_height(self, detail_lines: int = 1) -> int:
        return (1 + detail_lines) * self._line() + BAR_HEIGHT + GAP + 4

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        inner = max(width - 2 * PAD, 10)
        rows = self._plan.devices if self._plan else ()
        height = sum(self._row_height(len(flow(_detail_parts(use), " · ", inner, self.fontMetrics())))
                     for use in rows)
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
            bar_y = y + line + 2
            x, segments = float(PAD), []
            for part, _ in PARTS:
                n = _bytes_of(use, part)
                segments.append(Segment(part, n, QRectF(x, bar_y, n * scale, BAR_HEIGHT)))
                x += n * scale
            budget_x = PAD + max(use.budget_bytes, 0) * scale
            over = QRectF(budget_x, bar_y, x - budget_x, BAR_HEIGHT) if not use.fits else None
            title, detail = describe_use(use)
            lines = tuple(flow(_detail_parts(use), " · ", width, self.fontMetrics()))
            out.append(Row(use, title, detail, y, QRectF(PAD, bar_y, width, BAR_HEIGHT), tuple(segments),
                           budget_x, over, lines))
            y += self._row_height(len(lines))
        return out

    def _legend_layout(self, width: float) -> list[tuple[float, int, QColor, str, bool]]:
        """(x, line number, colour, label, is the budget marker) of each legend item."""
        metrics, line = self.fontMetrics(), self._line()
        items = [(COLORS[p], label, False) for p, label in PARTS]
        items += [(COLORS["over"], "Over budget", False), (COLORS["budget"], BUDGET_LABEL, True)]
        out: list[tuple[float, int, QColor, str, bool]] = []
        x, n = float(PAD), 0
        for color, label, marker in items:
            item_width = (6 if marker else line) + metrics.horizontalAdvance(label) + (0 if marker else 14)
            if x > PAD and x + item_width > PAD + width:
                x, n = float(PAD), n + 1
            out.append((x, n, color, label, marker))
            x += item_width
        return out

    def segment_at(self, point: QPointF) -> tuple[Row, Segment] | None:
        for row in self.rows():
            for seg in row.segments:
                if seg.rect.contains(point):
                    return row, seg
        return None

    def event(self, event: QEvent) -> bool:
        """A tooltip naming the segment under the pointer and its size."""
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            hit = self.segment_at(QPointF(event.pos()))
            if hit is None:
                QToolTip.hideText()
            else:
                row, seg = hit
                label = dict(PARTS)[seg.part]
                QToolTip.showText(event.globalPos(), f"{row.use.device}: {label} {format_size(seg.n_bytes)}", self)
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
            painter.drawText(QPointF(PAD, row.title_y + self.fontMetrics().ascent()), row.title)
            painter.fillRect(row.bar, self.palette().alternateBase())
            for seg in row.segments:
                painter.fillRect(seg.rect, COLORS[seg.part])
            if row.over is not None:
                painter.fillRect(row.over, COLORS["over"])
            painter.setPen(QPen(COLORS["budget"], 2))
            painter.drawLine(QPointF(row.budget_x, row.bar.top() - 3), QPointF(row.budget_x, row.bar.bottom() + 3))
            painter.setPen(text_color)
            for n, text in enumerate(row.detail_lines):
                painter.drawText(QPointF(PAD, row.bar.bottom() + 2 + n * line + self.fontMetrics().ascent()), text)
        if rows:
            last = rows[-1]
            self._legend(painter, last.title_y + self._row_height(len(last.detail_lines)), line, text_color)
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
