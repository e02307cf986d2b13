"""Waiting in a script that drives the real window: the Qt event loop runs (so the app's
queued work arrives and paints) until a condition holds or time is up."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QEventLoop, QTimer


def spin_until(done: Callable[[], bool], seconds: float, poll_ms: int = 25) -> bool:
    """Run the event loop until ``done()`` or ``seconds`` have passed; returns ``done()``."""
    loop = QEventLoop()
    deadline = time.monotonic() + seconds
    poll = QTimer(interval=poll_ms)
    poll.timeout.connect(lambda: loop.quit() if done() or time.monotonic() > deadline else None)
    poll.start()
    loop.exec()
    poll.stop()
    return done()
