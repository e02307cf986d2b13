"""Images attached to the message being written: what counts as an image, the composer that
takes pasted and dropped ones, and the strip of thumbnails above it.

Reading an image (the isolated reader decodes it, refuses a hostile file, re-encodes it as
PNG and stores it) happens on a pool thread; the strip only shows what came back. Each image
is read on its own, so one refused file leaves the others attached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMimeData, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QScrollArea, QToolButton, QVBoxLayout, QWidget

from app.conversations import ImageRef
from app.images import IMAGE_EXTENSIONS
from app.types import EnclaveError
from ui.chat_widgets import Composer
from ui.theme import SPACE, colors
from ui.widgets import dropped_paths

STRIP_THUMB = 64  # an attached image's thumbnail, square
PASTED_NAME = "pasted image"
FILE_FILTER = "Images (" + " ".join(f"*{suffix}" for suffix in IMAGE_EXTENSIONS) + ")"

ImageItem = Path | tuple[bytes, str]  # a file, or pasted bytes with the name to show
# Services.add_images: the items, and what to tell of each one refused
AddImages = Callable[[Sequence[ImageItem], Callable[[EnclaveError], None]], list[ImageRef]]


def is_image_file(path: Path) -> bool:
    """An image by its name (PNG, JPEG, TIFF, WebP, GIF, BMP); what it really is, the reader decides."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.is_dir()


def png_bytes(image: QImage) -> bytes:
    """``image`` encoded as PNG (a pasted image; the reader re-encodes it again anyway)."""
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return bytes(data.data())


def images_in(mime: QMimeData) -> list[ImageItem]:
    """The images a paste or a drop carries: image files (when every file in it is one: a mix
    goes to the window's routing), else image data (a screenshot copied) as PNG bytes."""
    paths = dropped_paths(mime)
    if paths:
        return list(paths) if all(is_image_file(p) for p in paths) else []
    if mime.hasImage():
        image = mime.imageData()
        if isinstance(image, QPixmap):
            image = image.toImage()
        if isinstance(image, QImage) and not image.isNull():
            return [(png_bytes(image), PASTED_NAME)]
    return []


def scaled_thumbnail(png: bytes, box: int) -> QImage:
    """A stored image's PNG decoded and scaled to fit ``box`` × ``box`` (device pixels),
    aspect kept; safe on a pool thread (a ``QImage``, not a ``QPixmap``)."""
    image = QImage.fromData(png, "PNG")
    if image.isNull():
        return image
    return image.scaled(box, box, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)


@dataclass(frozen=True)
class ReadResult:
    """What reading a batch of images gave: each one stored (with its thumbnail), and the
    reasons the others were refused."""

    attached: list[tuple[ImageRef, QImage]]
    refused: list[str]


def read_each(add_images: AddImages, png: Callable[[str], bytes], items: Sequence[ImageItem],
              box: int) -> ReadResult:
    """Runs on a pool thread: the items read by one reader, each refusal that item's alone
    (``ExtractionError``: the reader's reason, in words)."""
    refused: list[str] = []
    refs = add_images(items, lambda exc: refused.append(str(exc)))
    return ReadResult([(ref, scaled_thumbnail(png(ref.sha256), box)) for ref in refs], refused)


def rounded(image: QImage, size: int, ratio: float, radius: int = 6) -> QPixmap:
    """``image`` filling a ``size`` square with rounded corners (cropped to the middle, like a
    photo's preview), with the border colour around it."""
    pixmap = QPixmap(round(size * ratio), round(size * ratio))
    pixmap.setDevicePixelRatio(ratio)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    path = QPainterPath()
    path.addRoundedRect(QRectF(0.5, 0.5, size - 1, size - 1), radius, radius)
    painter.fillPath(path, QColor(colors().card))
    painter.setClipPath(path)
    if not image.isNull():
        shown = _fitted(image, size)
        painter.drawImage(QRectF((size - shown.width()) / 2, (size - shown.height()) / 2, shown.width(),
                                 shown.height()), image)
    painter.setClipping(False)
    painter.setPen(QColor(colors().border))
    painter.drawPath(path)
    painter.end()
    return pixmap


def _fitted(image: QImage, size: int) -> QSize:
    return image.size().scaled(QSize(size, size), Qt.AspectRatioMode.KeepAspectRatioByExpanding)


class ImageComposer(Composer):
    """The message box: pasted or dropped images are handed on (``imagesGiven``), not
    inserted as text; anything else behaves as before."""

    imagesGiven = Signal(list)  # list[ImageItem]

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        if source.hasUrls():  # files: only images are ours (documents go to the window's routing)
            return bool(images_in(source))
        return bool(images_in(source)) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        items = images_in(source)
        if items:
            self.imagesGiven.emit(items)
        elif not source.hasUrls():
            super().insertFromMimeData(source)


class Thumbnail(QWidget):
    """One attached image: its thumbnail (the name as tooltip) and an × that removes it."""

    removeRequested = Signal(object)  # the ImageRef

    def __init__(self, ref: ImageRef, image: QImage, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ref = ref
        self._image = image
        name = ref.name or PASTED_NAME
        self.setToolTip(name)
        self.setFixedSize(STRIP_THUMB, STRIP_THUMB)
        self.picture = QLabel(self)
        self.picture.setGeometry(0, 0, STRIP_THUMB, STRIP_THUMB)
        self.picture.setAccessibleName(name)
        self.remove = QToolButton(self)
        self.remove.setText("×")
        self.remove.setToolTip(f"Remove {name}")
        self.remove.setAccessibleName(f"Remove {name}")
        self.remove.setFixedSize(20, 20)
        self.remove.move(STRIP_THUMB - 20 - 2, 2)
        self.remove.clicked.connect(lambda: self.removeRequested.emit(self.ref))
        self.restyle()

    def restyle(self) -> None:
        """Drawn in the current scheme (again after light ↔ dark)."""
        self.picture.setPixmap(rounded(self._image, STRIP_THUMB, self.devicePixelRatioF()))
        scheme = colors()
        self.remove.setStyleSheet(f"QToolButton {{ border-radius: 10px; background: {scheme.card}; "
                                  f"border: 1px solid {scheme.border}; font-weight: 600; padding: 0; }}"
                                  f"QToolButton:hover, QToolButton:focus {{ border-color: {scheme.accent}; }}")


class AttachmentStrip(QWidget):
    """The images attached to the message being written, in order; hidden while there are none.
    A line under it says why an image was refused, until dismissed."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(SPACE.XS)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setFixedHeight(STRIP_THUMB + SPACE.XS)
        holder = QWidget()
        self.row = QHBoxLayout(holder)
        self.row.setContentsMargins(0, 0, 0, 0)
        self.row.setSpacing(SPACE.S)
        self.row.addStretch(1)
        self.scroll.setWidget(holder)
        outer.addWidget(self.scroll)
        self.reading = QLabel()
        self.reading.hide()
        outer.addWidget(self.reading)
        self.thumbnails: list[Thumbnail] = []
        self.scroll.hide()

    def refs(self) -> list[ImageRef]:
        return [t.ref for t in self.thumbnails]

    def set_reading(self, count: int) -> None:
        """"Reading 2 images…" while a batch is read (0: done)."""
        self.reading.setText(f"Reading {count} image{'s' if count != 1 else ''}…" if count else "")
        self.reading.setVisible(count > 0)

    def add(self, ref: ImageRef, image: QImage) -> None:
        if any(t.ref.sha256 == ref.sha256 for t in self.thumbnails):
            return  # the same picture twice says nothing more
        thumb = Thumbnail(ref, image)
        thumb.removeRequested.connect(self.remove)
        self.row.insertWidget(len(self.thumbnails), thumb)
        self.thumbnails.append(thumb)
        self.scroll.show()
        thumb.show()  # now, not at the layout's next queued pass
        self.changed.emit()

    def remove(self, ref: ImageRef) -> None:
        for thumb in self.thumbnails:
            if thumb.ref == ref:
                self.thumbnails.remove(thumb)
                thumb.deleteLater()
                self.row.removeWidget(thumb)
        self.scroll.setVisible(bool(self.thumbnails))
        self.changed.emit()

    def clear(self) -> None:
        for thumb in list(self.thumbnails):
            self.remove(thumb.ref)

    def set_refs(self, attached: Sequence[tuple[ImageRef, QImage]]) -> None:
        self.clear()
        for ref, image in attached:
            self.add(ref, image)

    def snapshot(self) -> list[tuple[ImageRef, QImage]]:
        """What is attached, to keep with a draft while another chat is shown."""
        return [(t.ref, t._image) for t in self.thumbnails]

    def restyle(self) -> None:
        for thumb in self.thumbnails:
            thumb.restyle()
