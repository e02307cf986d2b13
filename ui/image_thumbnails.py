"""Messages' thumbnails: each stored image decoded once, off the GUI thread, and kept scaled.

The delegate asks ``get`` while painting; a thumbnail not decoded yet is ``None`` (the card
draws a placeholder) and is read on a pool thread, after which ``loaded`` asks for a repaint.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage, QPixmap

from ui.image_attachments import scaled_thumbnail
from ui.tasks import TaskRunner

KEPT = 200  # thumbnails kept (about 60 KB each at 120 px, 2x)


class ThumbnailCache(QObject):
    loaded = Signal()

    def __init__(self, png: Callable[[str], bytes], tasks: TaskRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._png = png
        self._tasks = tasks
        self._pixmaps: OrderedDict[tuple[str, int], QPixmap] = OrderedDict()
        self._pending: set[tuple[str, int]] = set()
        self.failed: set[str] = set()  # images that could not be read (deleted meanwhile): not asked again

    def get(self, sha256: str, box: int) -> QPixmap | None:
        """The image ``sha256`` fitted into ``box`` × ``box`` device pixels, or None until read."""
        key = (sha256, box)
        found = self._pixmaps.get(key)
        if found is not None:
            self._pixmaps.move_to_end(key)
            return found
        if key not in self._pending and sha256 not in self.failed:
            self._pending.add(key)
            self._tasks.run(lambda: scaled_thumbnail(self._png(sha256), box),
                            on_result=lambda image: self._store(key, image),
                            on_error=lambda _message: self._fail(key))
        return self._pixmaps.get(key)  # a synchronous runner has it already

    def _store(self, key: tuple[str, int], image: QImage) -> None:
        self._pending.discard(key)
        if image.isNull():
            self._fail(key)
            return
        self._pixmaps[key] = QPixmap.fromImage(image)
        while len(self._pixmaps) > KEPT:
            self._pixmaps.popitem(last=False)
        self.loaded.emit()

    def _fail(self, key: tuple[str, int]) -> None:
        self._pending.discard(key)
        self.failed.add(key[0])
        self.loaded.emit()
