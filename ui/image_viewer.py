"""An image of a message shown large: a plain dialog that fits the screen; Escape closes it."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPixmap
from PySide6.QtWidgets import QDialog, QLabel, QVBoxLayout, QWidget

from ui.theme import SPACE, font

SCREEN_SHARE = 0.85  # of the screen's available area, at most


class ImageViewer(QDialog):
    """``png`` at its own size, or scaled down (aspect kept) to fit the screen; never enlarged."""

    def __init__(self, png: bytes, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(name or "Image")
        self.image = QImage.fromData(png, "PNG")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(SPACE.M, SPACE.M, SPACE.M, SPACE.M)
        layout.setSpacing(SPACE.S)
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption = QLabel(f"{name} · {self.image.width()} × {self.image.height()}" if name
                              else f"{self.image.width()} × {self.image.height()}")
        self.caption.setFont(font("small"))
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.picture, 1)
        layout.addWidget(self.caption)
        self._show_fitted()

    def _room(self) -> QSize:
        screen = (self.parentWidget().screen() if self.parentWidget() else None) or QGuiApplication.primaryScreen()
        area = screen.availableGeometry().size() if screen else QSize(1024, 700)
        chrome = 2 * SPACE.M + SPACE.S + self.caption.sizeHint().height()
        return QSize(int(area.width() * SCREEN_SHARE) - 2 * SPACE.M, int(area.height() * SCREEN_SHARE) - chrome)

    def _show_fitted(self) -> None:
        if self.image.isNull():
            self.picture.setText("This image could not be shown.")
            return
        room = self._room()
        size = self.image.size()
        if size.width() > room.width() or size.height() > room.height():
            size = size.scaled(room, Qt.AspectRatioMode.KeepAspectRatio)
        ratio = self.devicePixelRatioF()
        pixmap = QPixmap.fromImage(self.image.scaled(size * ratio, Qt.AspectRatioMode.KeepAspectRatio,
                                                     Qt.TransformationMode.SmoothTransformation))
        pixmap.setDevicePixelRatio(ratio)
        self.picture.setPixmap(pixmap)
        self.picture.setMinimumSize(size)
