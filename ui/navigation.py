"""Navigation buttons for the sidebar: a bundled icon and a label, a clear selected state in
the accent colour, hover, and a focus ring for the keyboard.

Qt's palette has no role for "accent", so the look is a small style sheet made from
``theme.colors()`` — built here, once, and made again when the palette changes (light ↔
dark), so the sidebar never holds colours of the other scheme.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication, QSizePolicy, QToolButton, QWidget

from ui import theme

ICON_SIZE = 18
NAV_OBJECT = "navButton"


def two_state_icon(name: str, off: str, on: str, size: int = ICON_SIZE) -> QIcon:
    """``name`` drawn in ``off`` normally and in ``on`` when its button is checked."""
    result = QIcon()
    for state, color in ((QIcon.State.Off, off), (QIcon.State.On, on)):
        source = theme.icon(name, color=color, size=size)
        for scale in (1, 2):
            pixmap = source.pixmap(QSize(size, size), scale)
            result.addPixmap(pixmap, QIcon.Mode.Normal, state)
    return result


def nav_style(colors: theme.Colors, text: str) -> str:
    selected = QColor(colors.accent)
    selected.setAlpha(40)
    hover = QColor(text)
    hover.setAlpha(22)
    rgba = "rgba({}, {}, {}, {})"
    return f"""
QToolButton#{NAV_OBJECT} {{
    color: {text}; border: 1px solid transparent; border-radius: 6px; text-align: left;
    padding: {theme.SPACE.XS + 2}px {theme.SPACE.S}px;
}}
QToolButton#{NAV_OBJECT}:hover {{
    background: {rgba.format(hover.red(), hover.green(), hover.blue(), hover.alpha())};
}}
QToolButton#{NAV_OBJECT}:checked {{
    background: {rgba.format(selected.red(), selected.green(), selected.blue(), selected.alpha())};
    color: {colors.accent}; font-weight: 600;
}}
QToolButton#{NAV_OBJECT}:focus {{ border: 1px solid {colors.accent}; }}
"""


class NavButton(QToolButton):
    """One place to go: icon and label, checkable (the window checks the page on show).

    Tab reaches it, a click does not take the focus from where the user types. Its owner
    calls ``restyle`` when the palette changes: with a style sheet of its own, the button is
    not told."""

    def __init__(self, text: str, icon_name: str, tooltip: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.icon_name = icon_name
        self._styled_for: tuple[str, str] | None = None
        self.setObjectName(NAV_OBJECT)
        self.setText(text)
        self.setToolTip(tooltip or text)
        self.setCheckable(True)
        self.setAutoRaise(True)
        self.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.setIconSize(QSize(ICON_SIZE, ICON_SIZE))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.restyle()

    def restyle(self) -> None:
        """Colours of the scheme in use; nothing happens when they did not change (setting a
        style sheet sends a palette change of its own)."""
        palette = QApplication.palette()  # this widget's own is the style sheet's
        colors = theme.colors(theme.palette_is_dark(palette))
        text = palette.color(QPalette.ColorRole.ButtonText).name()
        if self._styled_for == (colors.accent, text):
            return
        self._styled_for = (colors.accent, text)
        self.setIcon(two_state_icon(self.icon_name, text, colors.accent))
        self.setStyleSheet(nav_style(colors, text))
