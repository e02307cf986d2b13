"""Is any visible control of a window clipped, or squeezed below the size it needs?

``clipped_controls(window)`` walks the visible controls (buttons, labels with text, line
edits, combo and spin boxes, sliders, progress bars, tables and lists) and reports each
one that is narrower (or lower) than its ``minimumSizeHint`` — text cut off — or whose
rectangle is not wholly inside what its ancestors show of it. Inside a scroll area the
walk stops at the viewport: content scrolled out of sight is not clipped, but the scroll
area itself must fit. Used by ``tests/test_ui_layout.py``; usable on any widget.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QScrollArea,
    QScrollBar,
    QTabBar,
    QWidget,
)

CONTROLS = (QAbstractButton, QLabel, QLineEdit, QComboBox, QAbstractSpinBox, QAbstractSlider, QProgressBar,
            QAbstractItemView)
TOLERANCE = 1  # px: rounding in layouts


@dataclass(frozen=True)
class Clipped:
    """One control that does not fit, described so that its owner can find it."""

    where: str  # the chain of classes (and object names) from the window down
    what: str  # its class and text
    problem: str

    def __str__(self) -> str:
        return f"{self.what} in {self.where}: {self.problem}"


def describe(widget: QWidget) -> str:
    text = ""
    for getter in ("text", "placeholderText", "currentText", "title"):
        method = getattr(widget, getter, None)
        if callable(method):
            try:
                value = method()
            except TypeError:
                continue
            if isinstance(value, str) and value.strip():
                text = value.strip().replace("\n", " ")
                break
    name = type(widget).__name__ + (f"#{widget.objectName()}" if widget.objectName() else "")
    return f"{name} {text[:60]!r}" if text else name


def path_of(widget: QWidget, window: QWidget) -> str:
    chain: list[str] = []
    parent = widget.parentWidget()
    while parent is not None and parent is not window:
        if not parent.objectName().startswith("qt_"):
            chain.append(type(parent).__name__ + (f"#{parent.objectName()}" if parent.objectName() else ""))
        parent = parent.parentWidget()
    return " > ".join(reversed(chain[:4])) or type(window).__name__


def rect_in(widget: QWidget, window: QWidget) -> QRect:
    return QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())


def visible_area(widget: QWidget, window: QWidget) -> QRect:
    """What the ancestors show of a widget (window coordinates), up to a scroll area's
    viewport, beyond which content scrolls rather than clips."""
    area = rect_in(widget, window)
    parent = widget.parentWidget()
    while parent is not None:
        area = area.intersected(rect_in(parent, window))
        if parent is window or _is_viewport(parent):
            break
        parent = parent.parentWidget()
    return area


def _is_viewport(widget: QWidget) -> bool:
    owner = widget.parentWidget()
    return isinstance(owner, QAbstractScrollArea) and owner.viewport() is widget


def _inside_scrolled_content(widget: QWidget) -> bool:
    parent = widget.parentWidget()
    while parent is not None:
        if _is_viewport(parent):
            return True
        parent = parent.parentWidget()
    return False


def _is_control(widget: QWidget) -> bool:
    if not isinstance(widget, CONTROLS) or isinstance(widget, QScrollBar):
        return False
    if isinstance(widget.parentWidget(), (QTabBar, *CONTROLS)):  # a part of a control: a spin box's editor
        return False
    if isinstance(widget, QLabel):
        return bool(widget.text().strip())
    return True


def _too_small(widget: QWidget) -> str | None:
    hint = widget.minimumSizeHint()
    needs_w = max(hint.width(), widget.minimumWidth())
    needs_h = max(hint.height(), widget.minimumHeight())
    if isinstance(widget, QLabel) and widget.wordWrap():
        needs_w = widget.minimumWidth()
        if widget.hasHeightForWidth():
            needs_h = max(widget.heightForWidth(widget.width()), widget.minimumHeight())
    if isinstance(widget, QAbstractItemView):  # a table scrolls: it needs room for a row, not its minimum hint
        needs_w = needs_h = 0
    problems = []
    if hint.isValid() and widget.width() + TOLERANCE < needs_w:
        problems.append(f"{widget.width()} px wide, needs {needs_w}")
    if hint.isValid() and widget.height() + TOLERANCE < needs_h:
        problems.append(f"{widget.height()} px high, needs {needs_h}")
    if widget.width() <= 0 or widget.height() <= 0:
        problems.append("squeezed to nothing")
    return "; ".join(problems) or None


def clipped_controls(window: QWidget) -> list[Clipped]:
    """Every visible control of ``window`` (shown and laid out) that is clipped or too small,
    and every page-like scroll area that has to scroll sideways (its content too wide)."""
    found: list[Clipped] = []
    for widget in window.findChildren(QWidget):
        if not widget.isVisibleTo(window):
            continue
        if _scrolls_sideways(widget):
            found.append(Clipped(path_of(widget, window), describe(widget),
                                 "scrolls sideways: its content is wider than the room it has"))
        if not _is_control(widget):
            continue
        problem = _too_small(widget)
        if problem is None and not _inside_scrolled_content(widget):
            shown, whole = visible_area(widget, window), rect_in(widget, window)
            if shown.width() + TOLERANCE < whole.width() or shown.height() + TOLERANCE < whole.height():
                problem = f"only {shown.width()}×{shown.height()} of {whole.width()}×{whole.height()} px shown"
        if problem is not None:
            found.append(Clipped(path_of(widget, window), describe(widget), problem))
    return found


def _scrolls_sideways(widget: QWidget) -> bool:
    """A scroll area holding widgets (a page, a form), not an item or text view, with its
    horizontal scroll bar up."""
    return isinstance(widget, QScrollArea) and widget.horizontalScrollBar().isVisible()


def _needs(widget: QWidget) -> int:
    return max(widget.minimumSizeHint().width(), widget.minimumWidth())


def why_so_wide(widget: QWidget, depth: int = 6) -> str:
    """The chain of children that sets a widget's minimum width: down through the child that
    needs the most, until no one child explains it (a row of several: all of them are named).
    For a message that names the culprit."""
    steps = [f"{describe(widget)} {_needs(widget)}"]
    current = widget
    for _ in range(depth):
        children = sorted((c for c in current.findChildren(QWidget) if c.parentWidget() is current and not c.isHidden()
                           and not c.objectName().startswith("qt_")), key=_needs, reverse=True)
        if not children:
            break
        if _needs(children[0]) < 0.7 * _needs(current):  # a row: the sum of several sets the width
            steps.append("[" + ", ".join(f"{describe(c)} {_needs(c)}" for c in children[:6]) + "]")
            break
        current = children[0]
        steps.append(f"{describe(current)} {_needs(current)}")
    return " > ".join(steps)
