"""This machine, probed once per session and again before a load.

The probe runs in a child process (``inference.probe``), so neither the window's nor the
CLI's process ever starts a llama.cpp backend. ``MachineProbe`` keeps the last answer:
the GUI's pool threads and the CLI ask it freely; ``refresh=True`` (before a load: free
memory changes as other programs run) probes again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path

from app.hosts import Host, HostProbe, HostStatus, check_hosts
from inference.devices import Machine
from inference.errors import EnclaveError
from inference.probe import MachineReport, probe_host, probe_report

FRESH_SECONDS = 2.0  # a refresh asked for sooner than this after a probe takes that probe's answer


class MachineProbe:
    def __init__(self, log_path: Path, probe: Callable[[Path], MachineReport] = probe_report,
                 probe_host: HostProbe = probe_host) -> None:
        self.log_path = log_path
        self._probe = probe
        self._probe_host = probe_host
        self._host_answer: tuple[tuple[Host, ...], list[HostStatus]] | None = None
        self._good: dict[str, HostStatus] = {}  # each host's last answer with its devices
        self._hosts_at = 0.0
        self._host_lock = threading.Lock()
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

    def hosts(self, hosts: Sequence[Host], refresh: bool = False, holding: Collection[str] = (),
              *, force: bool = False) -> list[HostStatus]:
        """Each RPC host's devices and link (or why it did not answer), asked on first use,
        when the list changes, or when ``refresh`` (before a load: a host may have gone).
        A host serves one client at a time, so the hosts in ``holding`` (the loaded model's)
        cannot answer: they keep what they said last, before that model was loaded, which is
        what the next load, replacing it, will find. ``force``: ask again even if the last
        answer is a moment old (a host may just have gone)."""
        with self._host_lock:
            stale = force or (refresh and time.monotonic() - self._hosts_at > FRESH_SECONDS)
            if self._host_answer is None or self._host_answer[0] != tuple(hosts) or stale:
                asked = check_hosts([h for h in hosts if h.endpoint not in holding], self.log_path, self._probe_host)
                answers = {s.host.endpoint: s for s in asked}
                for host in hosts:
                    if host.endpoint in holding:
                        kept = self._good.get(host.endpoint)
                        answers[host.endpoint] = replace(kept, host=host) if kept else HostStatus(
                            host, None, "it serves the loaded model and cannot be asked now")
                    elif answers[host.endpoint].report is not None:
                        self._good[host.endpoint] = answers[host.endpoint]
                self._host_answer = (tuple(hosts), [answers[h.endpoint] for h in hosts])
                self._hosts_at = time.monotonic()
            return list(self._host_answer[1])
