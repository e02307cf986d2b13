"""What the proofs look at: processes, memory and file handles (from /proc), and whether a
database is sound after a kill."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from app.store import Store, StoreError, open_store

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process now."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _stat(pid: str) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def children(pid: int | None = None) -> list[int]:
    """The direct child processes of ``pid`` (this process by default), zombies included."""
    parent = os.getpid() if pid is None else pid
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) is not None and stat[1] == parent:
            found.append(int(entry))
    return sorted(found)


def alive(pid: int) -> bool:
    stat = _stat(str(pid))
    return stat is not None and stat[0] != "Z"


def still_running(pids: Iterable[int], timeout: float) -> list[int]:
    """Which of ``pids`` are still running after waiting up to ``timeout`` seconds for them to end."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def snapshot_rows(database: Path, sql: str) -> list[tuple]:
    """Rows as a reader sees them right now (committed data only; WAL), without disturbing
    the process that owns the database. Empty while the database or its tables do not exist."""
    if not database.exists() or database.stat().st_size == 0:
        return []
    conn = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def database_problems(database: Path) -> list[str]:
    """Open the database the way Enclave starts (instance lock, WAL recovery, migrations)
    and run SQLite's integrity and foreign-key checks; what is wrong, or nothing."""
    if not database.exists():
        return []
    try:
        with open_store(database) as store:
            return store_problems(store)
    except StoreError as exc:  # a stale lock, a damaged file
        return [f"the database cannot be opened after the kill: {exc}"]


def store_problems(store: Store) -> list[str]:
    """SQLite's integrity and foreign-key checks on an open store: what is wrong, or nothing."""
    integrity = store.integrity_check()
    problems = [] if integrity == ["ok"] else [f"integrity_check: {integrity[:3]}"]
    if foreign := store.read().execute("PRAGMA foreign_key_check").fetchall():
        problems.append(f"foreign_key_check: {foreign[:3]}")
    return problems
