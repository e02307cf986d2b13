"""Work off the GUI thread, results back on it: the one helper every view uses.

``TaskRunner.run(fn)`` runs ``fn`` on a pool thread and calls ``on_result`` /
``on_error`` on the GUI thread. ``TaskRunner.stream(make)`` iterates what ``make()``
returns on a pool thread and delivers each item to ``on_item`` on the GUI thread, in order.
``serial=True`` work (anything that talks to the model worker) runs on one dedicated
thread, one job at a time, because the worker serves one request at a time.

Errors a user can cause (``EnclaveError``) arrive as their message; anything else is
logged with its traceback and arrives as a short "unexpected error" message. Views never
see a traceback and the window never freezes.

Tests construct ``TaskRunner(synchronous=True)``: everything then runs inline, in order.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from app.types import EnclaveError

log = logging.getLogger(__name__)
Callback = Callable[[Any], None]


def describe(exc: BaseException) -> str:
    if isinstance(exc, EnclaveError):
        return str(exc)
    log.error("unexpected error in a background task:\n%s", "".join(traceback.format_exception(exc)))
    return f"Unexpected error: {type(exc).__name__}: {exc}. Details are in Enclave's log."


class _Relay(QObject):
    """Lives on the GUI thread; signals emitted from pool threads arrive here queued."""

    item = Signal(object, object)  # (callback, value)

    @Slot(object, object)
    def deliver(self, callback: Callback, value: object) -> None:
        callback(value)


class Task(QRunnable):
    def __init__(self, body: Callable[[Task], None]) -> None:
        super().__init__()
        self._body = body
        self.cancelled = False

    def cancel(self) -> None:
        """Ask the task to stop; what it does about it is up to its body."""
        self.cancelled = True

    def run(self) -> None:
        self._body(self)


class TaskRunner(QObject):
    def __init__(self, *, synchronous: bool = False, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.synchronous = synchronous
        self._relay = _Relay()
        self._relay.item.connect(self._relay.deliver)
        self._serial = QThreadPool(self)
        self._serial.setMaxThreadCount(1)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(4)

    def _post(self, callback: Callback | None, value: object) -> None:
        if callback is None:
            return
        if self.synchronous:
            callback(value)
        else:
            self._relay.item.emit(callback, value)

    def _start(self, task: Task, serial: bool) -> Task:
        if self.synchronous:
            task.run()
        else:
            task.setAutoDelete(False)
            (self._serial if serial else self._pool).start(task)
        return task

    def run(self, fn: Callable[[], Any], *, on_result: Callback | None = None, on_error: Callback | None = None,
            serial: bool = False) -> Task:
        def body(task: Task) -> None:
            try:
                value = fn()
            except BaseException as exc:
                self._post(on_error, describe(exc))
            else:
                self._post(on_result, value)

        return self._start(Task(body), serial)

    def stream(self, make: Callable[[], Iterable[Any]], *, on_item: Callback, on_done: Callback | None = None,
               on_error: Callback | None = None, serial: bool = True) -> Task:
        def body(task: Task) -> None:
            try:
                for item in make():
                    self._post(on_item, item)
            except BaseException as exc:
                self._post(on_error, describe(exc))
            else:
                self._post(on_done, None)

        return self._start(Task(body), serial)

    def wait(self, msecs: int = 30_000) -> bool:
        """Wait for every started task (tests, and closing the window)."""
        return self._serial.waitForDone(msecs) and self._pool.waitForDone(msecs)
