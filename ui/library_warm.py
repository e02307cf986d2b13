"""Warming a library in the background, and the line that says how warm it is.

After documents are added, the libraries page warms the library for the default model
(``Services.warm_library``) on the serial task thread, so a question asked meanwhile waits
behind it and then restores the saved prefix. The page's line says *cold*, *warming 43 %*
or *ready* for the default model.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal

from app.services import Services
from app.warming import WarmReport, Warmth


class WarmJob(QObject):
    progress = Signal(int, int, int)  # (library id, tokens done, tokens in all)

    def __init__(self, services: Services, library_id: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.library_id = library_id
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def run(self) -> WarmReport | None:
        """On the serial thread: touches no widget. None: it was warm already (nothing loaded)."""
        if self._cancel.is_set() or self.services.library_warmth(self.library_id).state == "ready":
            return None
        return self.services.warm_library(
            self.library_id, on_progress=lambda done, total: self.progress.emit(self.library_id, done, total),
            cancelled=self._cancel.is_set)


def warming_text(model_name: str | None, percent: int) -> str:
    return f"Warming for {model_name or 'the default model'}: {percent} %"


def warmth_text(warmth: Warmth) -> str:
    if warmth.model_name is None:
        return "Cold: choose a default model and the library warms by itself when documents are added."
    if warmth.state == "cold":
        return f"Cold for {warmth.model_name}: the first question reads the whole library."
    kept = "" if warmth.saved else " (while Enclave runs: the database is encrypted)"
    return f"Ready for {warmth.model_name}{kept}: a question evaluates only itself."
