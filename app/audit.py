"""The audit log an organisation's policy can turn on: append-only JSON lines of what was
done with models, libraries and exports — who, where, when — never what was said or read.

Each record carries the SHA-256 of the line before it (``prev``; the first carries
``GENESIS``), so a record changed, inserted or removed *within* the log breaks the chain and
``verify`` finds it. The chain cannot show a log rewritten from some record on with the hashes
recomputed, or cut short at its end: only a last hash noted elsewhere can (``verify(path, noted=...)``).
Nor does it say who wrote a record: whoever can append to the file can append a well-formed one.

Records are appended under an inter-process lock (the CLI, the GUI and its worker may write
at once) to a file opened ``O_APPEND``, every byte written or an ``AuditError``. A write cut
short (a process killed, a full disk) leaves a torn last line; the next append first ends it
with a newline, so it stays a line of its own that ``verify`` reports as torn, and the new
record chains to that torn line's bytes, as to any other line: every line of the file is a
link, and removing the torn line later breaks the chain like removing any record.
"""

from __future__ import annotations

import errno
import getpass
import hashlib
import json
import os
import platform
import re
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from inference.errors import EnclaveError

GENESIS = "0" * 64
TAIL_CHUNK = 4096
# Group-writable: in the shared setup (an administrator-owned, group-writable, setgid folder such
# as /var/log/enclave/) the first user to run Enclave creates the log and its lock and owns them;
# everyone else in the folder's group must still be able to append, or cannot start. The files
# keep the group the system gives them (the setgid folder's); the mode is set with fchmod after
# creation, so a umask of 022 does not take the group's write away. Files that already exist are
# left as they are.
FILE_MODE = 0o660
FIELDS = ("prev", "time", "user", "host", "pid", "event", "details")
_FIELD_SET = frozenset(FIELDS)
_is_sha256 = re.compile(r"[0-9a-f]{64}").fullmatch
TORN = "torn: the record stops part-way (its write was cut short: a process killed, a full disk)"


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


def _last_line(fd: int) -> tuple[bytes | None, bool]:
    """The file's last line (without its newline; ``None`` for an empty file), read backwards
    from the end, and whether the file ends with a newline (if not, that last line is torn)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return None, True
    position, tail = end, b""
    while position > 0:
        step = min(TAIL_CHUNK, position)
        position -= step
        os.lseek(fd, position, os.SEEK_SET)
        tail = os.read(fd, step) + tail
        if b"\n" in tail[:-1]:
            break
    complete = tail.endswith(b"\n")
    body = tail[:-1] if complete else tail
    return body.rsplit(b"\n", 1)[-1], complete


def _open_shared(path: Path, flags: int) -> int:
    """Open ``path``, creating it group-writable (``FILE_MODE``) if it does not exist."""
    for _ in range(3):
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            try:
                return os.open(path, flags)
            except FileNotFoundError:  # removed in between: create it again
                continue
        with suppress(AttributeError, OSError):  # no fchmod (Windows before 3.13), or a file system without modes
            os.fchmod(fd, FILE_MODE)
        return fd
    return os.open(path, flags | os.O_CREAT, FILE_MODE)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte (``os.write`` may write fewer: a full disk, a signal); OSError if it cannot."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, f"wrote {len(data) - len(view)} of {len(data)} bytes")
        view = view[written:]


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock", mode=FILE_MODE)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(_open_shared(path, os.O_WRONLY | os.O_APPEND))
            with self._lock:  # the lock must be usable too (another user's read-only lock file is not)
                pass
        except OSError as exc:
            raise AuditError(f"the audit log {path} required by your organisation's policy cannot be written "
                             f"({exc.strerror or exc}); ask your administrator.") from exc

    def append(self, event: str, details: dict[str, Any]) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "user": os_user(),
                  "host": platform.node(), "pid": os.getpid(), "event": event, "details": details}
        try:
            with self._lock:
                fd = _open_shared(self.path, os.O_RDWR | os.O_APPEND)
                try:
                    previous, complete = _last_line(fd)
                    record["prev"] = GENESIS if previous is None else line_hash(previous)
                    line = json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n"
                    _write_all(fd, line if complete else b"\n" + line)  # a torn last line stays a line of its own
                finally:
                    os.close(fd)
        except OSError as exc:
            raise AuditError(f"the audit log {self.path} cannot be written ({exc.strerror or exc}); "
                             "ask your administrator.") from exc


@dataclass
class AuditCheck:
    records: int = 0
    problems: list[str] = field(default_factory=list)
    last_hash: str = GENESIS  # note it elsewhere: verify(path, noted=it) then shows a log cut short or rewritten

    @property
    def ok(self) -> bool:
        return not self.problems


def _aware(time: str) -> bool:
    try:
        return datetime.fromisoformat(time).utcoffset() is not None
    except ValueError:
        return False


def _faults(record: Any) -> list[str]:
    """What keeps a parsed line from being an audit record as ``AuditLog.append`` writes them."""
    if (type(record) is dict and record.keys() == _FIELD_SET and type(pid := record["pid"]) is int and pid > 0
            and type(record["details"]) is dict and type(record["host"]) is str and type(record["user"]) is str
            and record["user"] and type(record["event"]) is str and record["event"] and type(record["prev"]) is str
            and _is_sha256(record["prev"]) and type(record["time"]) is str and _aware(record["time"])):
        return []  # the sound record, checked at once (verify stays fast); the checks below say what is wrong
    if not isinstance(record, dict):
        kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(record))
        return [f"a JSON {kind or 'null'}, not an object"]
    faults = []
    if record.keys() != _FIELD_SET:
        missing = [name for name in FIELDS if name not in record]
        if missing:
            faults.append("no " + ", ".join(missing))
        faults.extend(f"unexpected field {name}" for name in record if name not in _FIELD_SET)
    prev = record.get("prev", GENESIS)
    if not (isinstance(prev, str) and _is_sha256(prev)):
        faults.append("prev is not a SHA-256 in hex")
    if "time" in record and not (isinstance(record["time"], str) and _aware(record["time"])):
        faults.append("time is not an ISO 8601 time with its time zone")
    for name in ("user", "event"):
        if name in record and not (isinstance(record[name], str) and record[name]):
            faults.append(f"{name} is not a non-empty string")
    if "host" in record and not isinstance(record["host"], str):  # platform.node() may be ""
        faults.append("host is not a string")
    pid = record.get("pid", 1)
    if type(pid) is not int or pid <= 0:
        faults.append("pid is not a process id")
    if "details" in record and not isinstance(record["details"], dict):
        faults.append("details is not an object")
    return faults


def _torn(line: bytes, error: Exception) -> bool:
    """Whether a line that is not JSON is a record cut short: it parses up to its very end."""
    if not line.startswith(b"{"):
        return False
    if isinstance(error, UnicodeDecodeError):  # cut inside a character
        return error.end >= len(line)
    if isinstance(error, json.JSONDecodeError):
        return error.pos >= len(error.doc) or error.msg.startswith("Unterminated string")
    return False


def verify(path: Path, noted: str | None = None) -> AuditCheck:
    """Check every line: that it is a whole audit record (every field, of the right type) and
    that it carries the hash of the line before it. Each problem is reported with its line
    number — a line that is not JSON, torn (a write cut short), missing fields, or out of the
    chain — and the check goes on: every line, even a bad one, is the link for the next.

    So a record changed, inserted or removed *within* the log shows. What the chain cannot show
    is a log rewritten from some record on with its hashes recomputed, or cut short at its end:
    that shows only against a last hash kept elsewhere (``AuditCheck.last_hash``, which
    ``enclave audit verify`` prints). Give it as ``noted``: it is then reported if no line of the
    log has that hash any more.
    """
    check = AuditCheck()
    found = noted is None
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            check.records = number
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
                check.problems.append(f"line {number}: {TORN}" if _torn(line, exc)
                                      else f"line {number}: not a JSON record (damaged or edited)")
                record = None
            else:
                if faults := _faults(record):
                    check.problems.append(f"line {number}: not an audit record ({'; '.join(faults)})")
            prev = record.get("prev") if isinstance(record, dict) else None
            if isinstance(prev, str) and prev != check.last_hash:
                check.problems.append(
                    f"line {number}: does not follow line {number - 1} (a record before it was changed, inserted "
                    "or removed)" if number > 1 else "line 1: is not the log's first record (the start was removed)")
            check.last_hash = line_hash(line)
            found = found or check.last_hash == noted
    if not found:
        check.problems.append(f"no line has the hash noted earlier ({noted}): the log was cut short or rewritten "
                              "at or before it")
    return check
