"""This machine, probed once per session and again before a load.

The probe runs in a child process (``inference.probe``), so neither the window's nor the
CLI's process ever starts a llama.cpp backend. ``MachineProbe`` keeps the last answer:
the GUI's pool threads and the CLI ask it freely; ``refresh=True`` (before a load: free
memory changes as other programs run) probes again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from inference.devices import Machine
from inference.errors import EnclaveError
from inference.probe import MachineReport, probe_report

FRESH_SECONDS = 2.0  # a refresh asked for sooner than this after a probe takes that probe's answer


class MachineProbe:
    def __init__(self, log_path: Path, probe: Callable[[Path], MachineReport] = probe_report) -> None:
        self.log_path = log_path
        self._probe = probe
        self._answer: MachineReport | EnclaveError | None = None
        self._probed_at = 0.0
        self._lock = threading.Lock()  # one probe at a time; callers that wait get its answer

    def report(self, refresh: bool = False) -> MachineReport:
        """The last probe's report: probed now on first use or when ``refresh`` (unless the
        last probe is a moment old). A failed probe is remembered too, until a refresh: a
        probe that hangs costs its time-out once, not on every question."""
        with self._lock:
            stale = refresh and time.monotonic() - self._probed_at > FRESH_SECONDS
            if self._answer is None or stale:
                try:
                    self._answer = self._probe(self.log_path)
                except EnclaveError as exc:
                    self._answer = exc
                self._probed_at = time.monotonic()
            if isinstance(self._answer, EnclaveError):
                raise self._answer
            return self._answer

    def get(self, refresh: bool = False) -> Machine:
        return self.report(refresh).machine
