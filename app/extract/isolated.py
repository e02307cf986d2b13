"""Documents read in a child process, each within a time limit.

A parser on a hostile file can run for hours: a 2 KB PDF whose pages all share one
half-megabyte content stream keeps pypdf busy for minutes, and a few hundred thousand nested
HTML tags take seconds per megabyte. Rich formats (PDF, Office, HTML, e-mail) are therefore
read in one reusable child process; a document that takes longer than ``Limits.max_seconds``
is recorded as too slow, the child is killed and the next document gets a fresh one. Plain
text, code and data files are read in this process, where they cost nothing extra.

Images (``app.images``: image files, pasted images, a scanned PDF's pages) are decoded only
here too, never in the window's or the worker's process: ``read_image_file`` and
``read_image_bytes`` return Enclave's own sanitized PNGs, or raise ``ExtractionError``.

The child writes nothing to the terminal: its output, its logging and its warnings (pypdf's
"EOF marker not found" on a damaged PDF, say) go to the app's log file.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from app.extract import Extracted, ExtractionError, Limits, extract, kind_of
from app.extract.base import human_seconds
from app.logs import log_child_to, log_file
from inference.orphans import exit_with_parent

if TYPE_CHECKING:
    from app.images import SanitizedImage

_IMAGE_LIMITS = Limits(max_seconds=60.0)  # one image: a minute is far more than a sound one takes
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
            job, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", _JOBS[job](*args)))
        except ExtractionError as exc:
            conn.send(("error", exc))


def _image_file(path: str, limits: Limits) -> list[SanitizedImage]:
    from app.extract import _read  # the same size and file checks as documents
    return _image_bytes(_read(Path(path), limits), Path(path).name, limits)


def _image_bytes(data: bytes, name: str, limits: Limits) -> list[SanitizedImage]:
    from app.images import sanitize_image
    try:
        return sanitize_image(data, name, max_pixels=limits.max_image_pixels, max_pages=limits.max_image_pages)
    except MemoryError as exc:
        raise ExtractionError(f"{name} needs more memory to read than this computer has free.",
                              reason="too_large") from exc


def _document(path: str, limits: Limits) -> Extracted:
    return extract(Path(path), limits)


# What the parent may ask the child to do: name -> function of picklable arguments.
_JOBS: dict[str, Any] = {"extract": _document, "image_file": _image_file, "image_bytes": _image_bytes}


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
        result: Extracted = self._run("extract", (str(path), limits), path.name, limits)
        return result

    def read_image_file(self, path: Path, limits: Limits | None = None) -> list[SanitizedImage]:
        """The image at ``path`` as Enclave's own PNGs (one per page of a multi-page TIFF)."""
        limits = limits or _IMAGE_LIMITS
        result: list[SanitizedImage] = self._run("image_file", (str(path), limits), Path(path).name, limits)
        return result

    def read_image_bytes(self, data: bytes, name: str, limits: Limits | None = None) -> list[SanitizedImage]:
        """A pasted or dropped image's bytes (``name``: its file name, or a label such as "pasted image")."""
        limits = limits or _IMAGE_LIMITS
        if len(data) > limits.max_file_bytes:
            from app.extract import _too_large
            raise _too_large(Path(name), len(data), limits)
        result: list[SanitizedImage] = self._run("image_bytes", (data, name, limits), name, limits)
        return result

    def _run(self, job: str, args: tuple[Any, ...], name: str, limits: Limits) -> Any:
        """``job`` done in the child within ``limits.max_seconds``; a child that hangs is killed, one
        that dies is replaced at the next call, and both become an ``ExtractionError`` naming the file."""
        conn = self._connection()
        conn.send((job, args))
        if not conn.poll(limits.max_seconds):
            self._stop(kill=True)
            raise ExtractionError(f"{name} took longer than {human_seconds(limits.max_seconds)} to read and "
                                  "was stopped; it may be damaged or made to be slow to read. Open it and save a "
                                  "new copy (or print it to PDF), then add that instead.", reason="too_slow")
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            self._stop(kill=True)
            raise ExtractionError(f"{name} made the document reader stop unexpectedly (it ran out of memory "
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


def read_image_file(path: Path, extractor: IsolatedExtractor | None = None,
                    limits: Limits | None = None) -> list[SanitizedImage]:
    """The image at ``path``, decoded in the reader process (``extractor``'s, else a reader started
    for this one image): Enclave's own PNGs, or ``ExtractionError`` saying why not."""
    if extractor is not None:
        return extractor.read_image_file(path, limits)
    with IsolatedExtractor() as own:
        return own.read_image_file(path, limits)


def read_image_bytes(data: bytes, name: str, extractor: IsolatedExtractor | None = None,
                     limits: Limits | None = None) -> list[SanitizedImage]:
    """A pasted image's bytes, decoded in the reader process like ``read_image_file``."""
    if extractor is not None:
        return extractor.read_image_bytes(data, name, limits)
    with IsolatedExtractor() as own:
        return own.read_image_bytes(data, name, limits)
