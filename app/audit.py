"""The audit log an organisation's policy can turn on: append-only JSON lines of what was
done with models, libraries and exports — who, where, when — never what was said or read.

Each record carries the SHA-256 of the line before it (``prev``; the first carries
``GENESIS``), so an edited, inserted or removed record breaks the chain and ``verify``
finds it. Records are appended under an inter-process lock (the CLI, the GUI and its
worker may write at once), each with a single ``write`` on a file opened ``O_APPEND``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from inference.errors import EnclaveError

GENESIS = "0" * 64
TAIL_CHUNK = 4096


class AuditError(EnclaveError):
    """The audit log the policy requires cannot be written: Enclave does not go on without it."""


def os_user() -> str:
    """The account this process runs as (not $USER, which anyone can set)."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return getpass.getuser()


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _last_line(fd: int) -> bytes | None:
    """The file's last line (without its newline), read backwards from the end."""
    end = os.lseek(fd, 0, os.SEEK_END)
    position, tail = end, b""
    while position > 0:
        step = min(TAIL_CHUNK, position)
        position -= step
        os.lseek(fd, position, os.SEEK_SET)
        tail = os.read(fd, step) + tail
        if b"\n" in tail.rstrip(b"\n"):
            break
    body = tail.rstrip(b"\n")
    return body.rsplit(b"\n", 1)[-1] if body else None


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640))
        except OSError as exc:
            raise AuditError(f"the audit log {path} required by your organisation's policy cannot be written "
                             f"({exc.strerror or exc}); ask your administrator.") from exc

    def append(self, event: str, details: dict[str, Any]) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "user": os_user(),
                  "host": platform.node(), "pid": os.getpid(), "event": event, "details": details}
        try:
            with self._lock:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    previous = _last_line(fd)
                    record["prev"] = GENESIS if previous is None else line_hash(previous)
                    os.write(fd, json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n")
                finally:
                    os.close(fd)
        except OSError as exc:
            raise AuditError(f"the audit log {self.path} cannot be written ({exc.strerror or exc}); "
                             "ask your administrator.") from exc


@dataclass
class AuditCheck:
    records: int = 0
    problems: list[str] = field(default_factory=list)
    last_hash: str = GENESIS  # note it elsewhere: a log cut short after it then shows

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(path: Path) -> AuditCheck:
    """Check every record's link to the one before it."""
    check = AuditCheck()
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\n")
            check.records = number
            try:
                prev = json.loads(line).get("prev")
            except (ValueError, AttributeError):
                check.problems.append(f"line {number}: not a JSON record (damaged or edited)")
                prev = None
            if prev is not None and prev != check.last_hash:
                check.problems.append(
                    f"line {number}: does not follow line {number - 1} (a record before it was changed, inserted "
                    "or removed)" if number > 1 else "line 1: is not the log's first record (the start was removed)")
            check.last_hash = line_hash(line)
    return check
