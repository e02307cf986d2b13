"""Enclave's design system: light or dark following the system, one spacing scale, one
type scale, the semantic colours beyond Qt's palette, and the bundled icons.

Fusion draws the same on every platform, so one palette per scheme looks right
everywhere; the native styles ignore parts of a custom palette. When the system
switches scheme while Enclave runs (Qt 6.5+ ``colorSchemeChanged``), the palette follows.

Pages use these rather than numbers of their own: ``SPACE`` for margins and gaps,
``font(role)`` for text sizes, ``colors()`` for what the palette has no role for (cards,
borders, muted text, success/warning/error), and ``icon(name)`` for the SVGs in
``assets/icons/ui`` (drawn in the text colour of the current scheme; no emoji a font may lack).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PySide6.QtCore import QByteArray, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

ICONS = Path(__file__).resolve().parent.parent / "assets" / "icons" / "ui"


class SPACE:
    """Margins and gaps, in pixels: one scale for every page."""

    XS = 4
    S = 8
    M = 12
    L = 16
    XL = 24


# the type scale: point-size steps relative to the application's font
TYPE_SCALE = {"caption": -2, "small": -1, "body": 0, "heading": 2, "title": 5}
BOLD_ROLES = {"heading", "title"}


def font(role: str, base: QFont | None = None) -> QFont:
    """The font for a role of the type scale: caption, small, body, heading or title."""
    result = QFont(base if base is not None else QApplication.font())
    size = result.pointSizeF() if result.pointSizeF() > 0 else 10.0
    result.setPointSizeF(max(6.0, size + TYPE_SCALE[role]))
    if role in BOLD_ROLES:
        result.setWeight(QFont.Weight.DemiBold)
    return result


@dataclass(frozen=True)
class Colors:
    """What the palette has no role for."""

    accent: str  # selection in navigation, primary buttons, links
    card: str  # a message or a panel on the window's background
    card_user: str  # the user's own messages
    border: str
    muted: str  # secondary text: times, sizes, hints
    success: str
    warning: str
    error: str


DARK_COLORS = Colors(accent="#8ab4f8", card="#26282b", card_user="#1e3150", border="#3c4043", muted="#9aa0a6",
                     success="#81c995", warning="#fdd663", error="#ff8a80")
LIGHT_COLORS = Colors(accent="#2f6fdb", card="#ffffff", card_user="#e8f0fe", border="#d0d7de", muted="#57606a",
                      success="#1a7f37", warning="#9a6700", error="#b3261e")

DARK = {
    QPalette.ColorRole.Window: "#202124",
    QPalette.ColorRole.WindowText: "#e8eaed",
    QPalette.ColorRole.Base: "#17181a",
    QPalette.ColorRole.AlternateBase: "#26282b",
    QPalette.ColorRole.ToolTipBase: "#303134",
    QPalette.ColorRole.ToolTipText: "#e8eaed",
    QPalette.ColorRole.PlaceholderText: "#9aa0a6",
    QPalette.ColorRole.Text: "#e8eaed",
    QPalette.ColorRole.Button: "#2d2f33",
    QPalette.ColorRole.ButtonText: "#e8eaed",
    QPalette.ColorRole.BrightText: "#ff6b6b",
    QPalette.ColorRole.Link: "#8ab4f8",
    QPalette.ColorRole.Highlight: "#3d6fd6",
    QPalette.ColorRole.HighlightedText: "#ffffff",
}
LIGHT = {
    QPalette.ColorRole.Window: "#f3f4f6",
    QPalette.ColorRole.WindowText: "#1f2328",
    QPalette.ColorRole.Base: "#ffffff",
    QPalette.ColorRole.AlternateBase: "#f6f8fa",
    QPalette.ColorRole.ToolTipBase: "#ffffff",
    QPalette.ColorRole.ToolTipText: "#1f2328",
    QPalette.ColorRole.PlaceholderText: "#6e7781",
    QPalette.ColorRole.Text: "#1f2328",
    QPalette.ColorRole.Button: "#eaecef",
    QPalette.ColorRole.ButtonText: "#1f2328",
    QPalette.ColorRole.BrightText: "#cf222e",
    QPalette.ColorRole.Link: "#0969da",
    QPalette.ColorRole.Highlight: "#2f6fdb",
    QPalette.ColorRole.HighlightedText: "#ffffff",
}


def is_dark() -> bool:
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def palette_is_dark(palette: QPalette | None = None) -> bool:
    """Whether ``palette`` (by default the application's) is dark, by its window colour:
    what the colours beside it must match, even when it was set by hand rather than by
    the system's scheme."""
    return (palette or QGuiApplication.palette()).color(QPalette.ColorRole.Window).lightness() < 128


def colors(dark: bool | None = None) -> Colors:
    """The semantic colours that go with the palette in use (or with the scheme asked for)."""
    return DARK_COLORS if (palette_is_dark() if dark is None else dark) else LIGHT_COLORS


def palette_for(dark: bool) -> QPalette:
    palette = QPalette()
    for role, color in (DARK if dark else LIGHT).items():
        palette.setColor(role, QColor(color))
    disabled = QColor("#6b6f75" if dark else "#9aa0a6")
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return palette


def error_color() -> str:
    return colors().error


@cache
def _svg(name: str) -> bytes:
    path = ICONS / f"{name}.svg"
    if not path.is_file():
        raise KeyError(f"No icon {name!r} in {ICONS}")
    return path.read_bytes()


def icon(name: str, color: str | None = None, size: int = 20) -> QIcon:
    """A bundled SVG icon (``assets/icons/ui/NAME.svg``, drawn with ``currentColor``) in
    ``color``, by default the text colour of the current scheme; crisp at 1x and 2x."""
    tint = color or QGuiApplication.palette().color(QPalette.ColorRole.WindowText).name()
    renderer = QSvgRenderer(QByteArray(_svg(name).replace(b"currentColor", tint.encode())))
    result = QIcon()
    for scale in (1, 2):
        pixmap = QPixmap(QSize(size * scale, size * scale))
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        renderer.render(painter, QRectF(0, 0, size * scale, size * scale))
        painter.end()
        pixmap.setDevicePixelRatio(scale)
        result.addPixmap(pixmap)
    return result


def apply_theme(app: QApplication) -> None:
    """Fusion and the palette of the system's scheme, now and whenever it changes."""
    app.setStyle("Fusion")
    app.setPalette(palette_for(is_dark()))
    app.styleHints().colorSchemeChanged.connect(lambda scheme: app.setPalette(palette_for(
        scheme == Qt.ColorScheme.Dark)))
