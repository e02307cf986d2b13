"""One horizontal bar per device of a ``Plan``: weights, experts, KV cache and compute
as coloured segments against the device's budget (a marker line; what lies beyond it
is red). ``rows()`` is the geometry ``paintEvent`` draws, so tests can check it."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize
from PySide6.QtGui import QColor, QHelpEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from inference.devices import format_size
from inference.planner import DeviceUse, Plan

PARTS = (("weights", "Weights"), ("experts", "Experts"), ("kv", "KV cache"), ("compute", "Compute"))
COLORS = {"weights": QColor("#4e79a7"), "experts": QColor("#59a14f"), "kv": QColor("#f28e2b"),
          "compute": QColor("#b07aa1"), "over": QColor(214, 39, 40, 170), "budget": QColor("#222222")}
PAD, BAR_HEIGHT, GAP = 8, 22, 10


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


def _bytes_of(use: DeviceUse, part: str) -> int:
    return {"weights": use.weights_bytes, "experts": use.experts_bytes, "kv": use.kv_bytes,
            "compute": use.compute_bytes}[part]


def describe_use(use: DeviceUse) -> tuple[str, str]:
    """(title, detail) lines of a device's bar."""
    name = "RAM" if use.device == "RAM" else f"{use.device} (VRAM)"
    title = f"{name}: {format_size(use.total_bytes)} of {format_size(max(use.budget_bytes, 0))} usable"
    if not use.fits:
        title += f" — {format_size(use.total_bytes - use.budget_bytes)} over"
    detail = " · ".join(f"{label} {format_size(_bytes_of(use, part))}" for part, label in PARTS)
    return title, detail


class PlanBars(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._plan: Plan | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(240)

    def set_plan(self, plan: Plan | None) -> None:
        self._plan = plan
        self.updateGeometry()
        self.update()

    def _line(self) -> int:
        return self.fontMetrics().height()

    def _row_height(self) -> int:
        return 2 * self._line() + BAR_HEIGHT + GAP + 4

    def sizeHint(self) -> QSize:
        n = len(self._plan.devices) if self._plan else 0
        return QSize(480, PAD + n * self._row_height() + self._line() + PAD)

    def minimumSizeHint(self) -> QSize:
        return QSize(240, self.sizeHint().height())

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
            out.append(Row(use, title, detail, y, QRectF(PAD, bar_y, width, BAR_HEIGHT), tuple(segments),
                           budget_x, over))
            y += self._row_height()
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
            painter.drawText(QPointF(PAD, row.bar.bottom() + 2 + self.fontMetrics().ascent()), row.detail)
        if rows:
            self._legend(painter, rows[-1].title_y + self._row_height(), line, text_color)
        painter.end()

    def _legend(self, painter: QPainter, y: float, line: int, text_color: QColor) -> None:
        x = float(PAD)
        items = [(COLORS[p], label) for p, label in PARTS] + [(COLORS["over"], "Over budget")]
        for color, label in items:
            painter.fillRect(QRectF(x, y + 2, line - 4, line - 4), color)
            x += line
            painter.setPen(text_color)
            painter.drawText(QPointF(x, y + self.fontMetrics().ascent()), label)
            x += self.fontMetrics().horizontalAdvance(label) + 14
        painter.setPen(QPen(COLORS["budget"], 2))
        painter.drawLine(QPointF(x, y), QPointF(x, y + line))
        painter.setPen(text_color)
        painter.drawText(QPointF(x + 6, y + self.fontMetrics().ascent()), "Budget (free less the margin)")
