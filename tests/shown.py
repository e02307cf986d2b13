"""A widget under test, shown: owned by pytest-qt (closed after the test), at a size, and
exposed (laid out and painted once) before the test looks at it."""

from __future__ import annotations

from typing import Any, TypeVar

from PySide6.QtWidgets import QWidget

W = TypeVar("W", bound=QWidget)


def shown(qtbot: Any, widget: W, size: tuple[int, int]) -> W:
    qtbot.addWidget(widget)
    widget.resize(*size)
    widget.show()
    qtbot.waitExposed(widget)
    return widget
