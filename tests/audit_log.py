"""The log written by the network audit hook (``tests/net_audit/sitecustomize.py``): how to
put the hook into every process a command starts, and what the log says afterwards."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HOOK_DIR = Path(__file__).resolve().parent / "net_audit"
ROOT = HOOK_DIR.parent.parent
LOG_ENV = "ENCLAVE_NET_AUDIT"
NETWORK_KINDS = ("connect", "dns", "tool")  # what counts as network use; "exec" is only listed


def hooked_env(log: Path, **extra: str) -> dict[str, str]:
    """This process's environment, plus the hook for every Python process started with it
    (the hook's folder first on PYTHONPATH, then the source tree) and where it writes."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join((str(HOOK_DIR), str(ROOT))), LOG_ENV: str(log), **extra}


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    argv: tuple[str, ...]

    @property
    def role(self) -> str:
        command = " ".join(self.argv)
        if "multiprocessing.spawn" in command:
            return "llama.cpp worker"
        if "multiprocessing.resource_tracker" in command:
            return "multiprocessing helper"
        if "tests.airgap_gui" in command:
            return "GUI"
        return "command"


@dataclass
class AuditLog:
    processes: dict[int, Process] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> AuditLog:
        log = cls()
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        for entry in map(json.loads, lines):
            if entry["kind"] == "hook":
                detail = entry["detail"]
                log.processes[entry["pid"]] = Process(entry["pid"], detail["ppid"], tuple(detail["argv"]))
            else:
                log.events.append(entry)
        return log

    def descendants(self, pid: int) -> set[int]:
        """``pid`` and every hooked process started under it."""
        found = {pid}
        grew = True
        while grew:
            more = {p.pid for p in self.processes.values() if p.ppid in found} - found
            found |= more
            grew = bool(more)
        return found

    def of_kind(self, kind: str, pids: Iterable[int] | None = None) -> list[dict]:
        wanted = None if pids is None else set(pids)
        return [e for e in self.events if e["kind"] == kind and (wanted is None or e["pid"] in wanted)]

    def network_use(self, pids: Iterable[int] | None = None) -> list[dict]:
        wanted = None if pids is None else set(pids)
        return [e for kind in NETWORK_KINDS for e in self.of_kind(kind, wanted)]
