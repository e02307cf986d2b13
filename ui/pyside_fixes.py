"""A guard against PySide6 6.12.0's ``Signal.emit`` reference leak, applied once on import.

``SignalInstance.emit`` returns ``True`` without taking a reference to it. On Python 3.11
and older, where ``True`` is an ordinary reference-counted object, every emit from Python
code (``TaskRunner``'s relay for each streamed token, ``dataChanged``…) takes one reference
away from ``True``; after a few thousand — one long reply — the count reaches zero and the
interpreter aborts with "Fatal Python error: bool_dealloc". Signals Qt emits are unaffected.

The guard gives ``True`` what Python 3.12 gives it anyway: a reference count no program
can exhaust. It runs only when a probe shows the leak, so a fixed PySide6 or a newer Python
is left alone. Import this module before the first window (``ui/app.py``, test conftest).
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

PROBES = 16
RESERVE = 1 << 40  # references; at a million emits a second, 12 days of them


class _Probe(QObject):
    ping = Signal()


def emit_leaks_true() -> bool:
    """Whether ``Signal.emit`` loses a reference to ``True`` (the probe gives its own back)."""
    if sys.version_info >= (3, 12):
        return False  # True is immortal
    probe = _Probe()
    before = sys.getrefcount(True)
    results = [probe.ping.emit() for _ in range(PROBES)]
    lost = before + sum(r is True for r in results) - sys.getrefcount(True)
    del results
    if lost > 0:
        for _ in range(lost):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))
    return lost >= PROBES // 2


def keep_true_alive() -> bool:
    """Apply the guard if this PySide6 needs it; whether it did. Idempotent enough: a
    second call adds another reserve, which is harmless."""
    if not emit_leaks_true():
        return False
    ctypes.c_ssize_t.from_address(id(True)).value += RESERVE
    return True


GUARDED = keep_true_alive()
