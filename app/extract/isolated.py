"""Documents read in a child process, each within a time limit.

A parser on a hostile file can run for hours: a 2 KB PDF whose pages all share one
half-megabyte content stream keeps pypdf busy for minutes, and a few hundred thousand nested
HTML tags take seconds per megabyte. Rich formats (PDF, Office, HTML, e-mail) are therefore
read in one reusable child process; a document that takes longer than ``Limits.max_seconds``
is recorded as too slow, the child is killed and the next document gets a fresh one. Plain
text, code and data files are read in this process, where they cost nothing extra.

The child writes nothing to the terminal: its output, its logging and its warnings (pypdf's
"EOF marker not found" on a damaged PDF, say) go to the app's log file.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

from app.extract import Extracted, ExtractionError, Limits, extract, kind_of
from app.extract.base import human_seconds
from app.logs import log_child_to, log_file
from inference.orphans import exit_with_parent

IN_PROCESS_KINDS = frozenset({"text", "markdown", "code", "csv", "tsv", "json"})
_CLOSE_SECONDS = 5.0


def _serve(conn: Connection, log_path: str | None) -> None:
    """The child: read documents until the parent closes the pipe (or dies mid-document)."""
    exit_with_parent()
    if log_path is not None:
        log_child_to(Path(log_path))
    # Ctrl-C in a terminal reaches the whole process group: the parent stops between files;
    # the reader must not die of it mid-document with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            path, limits = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", extract(Path(path), limits)))
        except ExtractionError as exc:
            conn.send(("error", exc))


class IsolatedExtractor:
    """``extract`` with a time limit per document; use as a context manager (one per ingest).
    The reader's output goes to ``log_path``: by default the app's log, when this process has one."""

    def __init__(self, log_path: Path | None = None) -> None:
        self._log_path = log_path or log_file()
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def extract(self, path: Path, limits: Limits) -> Extracted:
        if kind_of(path) in IN_PROCESS_KINDS:
            return extract(path, limits)
        conn = self._connection()
        conn.send((str(path), limits))
        if not conn.poll(limits.max_seconds):
            self._stop(kill=True)
            raise ExtractionError(f"{path.name} took longer than {human_seconds(limits.max_seconds)} to read and "
                                  "was stopped; it may be damaged or made to be slow to read. Open it and save a "
                                  "new copy (or print it to PDF), then add that instead.", reason="too_slow")
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            self._stop(kill=True)
            raise ExtractionError(f"{path.name} made the document reader stop unexpectedly (it ran out of memory "
                                  "or crashed); it may be damaged. Open it and save a new copy, then add that "
                                  "instead.", reason="corrupt") from None
        if status == "error":
            raise value
        return value

    def _connection(self) -> Connection:
        if self._conn is None or self._process is None or not self._process.is_alive():
            self._stop(kill=True)
            parent, child = self._context.Pipe()
            log_path = str(self._log_path) if self._log_path is not None else None
            process = self._context.Process(target=_serve, args=(child, log_path), name="enclave-extract",
                                            daemon=True)
            process.start()
            child.close()
            self._process, self._conn = process, parent
        return self._conn

    def _stop(self, kill: bool) -> None:
        if self._conn is not None:
            self._conn.close()  # the child's recv() ends: it returns
            self._conn = None
        if self._process is not None:
            if kill:
                self._process.kill()
            self._process.join(timeout=_CLOSE_SECONDS)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None

    def close(self) -> None:
        self._stop(kill=False)

    def __enter__(self) -> IsolatedExtractor:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop(kill=exc is not None)
