"""Adding files and folders to a library: scan, hash, extract, store — one file at a time.

Each document is stored in its own transaction, so a cancel (checked between files) or a
crash never leaves half a document, and a file that cannot be read is recorded with the
reason while the rest of the folder goes in. Unchanged files (same size and modification
time, or the same bytes) are not read again; identical content is stored once.
The caller runs ``ingest`` on whatever thread it likes and gets progress callbacks.
With a ``transcriber`` (the library's vision model), scanned pages and image files are read
by it page by page (``app.transcription``), with a progress callback before each page.
"""

from __future__ import annotations

import errno
import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from stat import S_ISREG

from app.extract import Extracted, ExtractionError, Limits, extract, kind_of
from app.extract.isolated import IsolatedExtractor
from app.hashing import sha256_file
from app.libraries import Library, LibraryRepository
from app.policy import PolicyRefusal
from app.transcription import PageTranscriber, TranscriptionCancelled, transcribe_document


@dataclass(frozen=True)
class IngestProgress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current: str
    detail: str = ""  # what is happening within the file: "Transcribing scan.pdf, page 3 of 12"


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, message)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): hidden, unsupported, excluded
    cancelled: bool = False

    def summary(self) -> str:
        parts = [f"{len(self.added)} added", f"{len(self.updated)} updated", f"{len(self.unchanged)} unchanged",
                 f"{len(self.failed)} could not be read", f"{len(self.skipped)} skipped"]
        return ", ".join(parts) + (" (cancelled)" if self.cancelled else "")


@dataclass(frozen=True)
class _Candidate:
    path: Path
    size: int


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _document_size(path: Path) -> int | tuple[str, str, str]:
    """The size of ``path`` when it is a regular file, else why it cannot be read as a document:
    never open a pipe (it would block), a device, a socket, or follow a broken or looping link."""
    try:
        stat = path.stat()
    except OSError as exc:
        if path.is_symlink():
            what = "loops back on itself" if exc.errno == errno.ELOOP else "points to something that is not there"
            return str(path), "unreadable", f"{path}: this link {what}."
        return str(path), "unreadable", f"{path}: cannot be read ({exc.strerror or exc})."
    if not S_ISREG(stat.st_mode):
        return str(path), "unreadable", (f"{path}: not a regular file (a device, pipe or socket), so it cannot be "
                                         "added as a document.")
    return stat.st_size


def scan(paths: Iterable[Path], include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
         ) -> tuple[list[_Candidate], list[tuple[str, str]], list[tuple[str, str, str]]]:
    """The files to read under ``paths``: folders recursively, hidden files and folders
    skipped (unless named directly), ``include``/``exclude`` globs matched against the
    path inside the folder and the file name. Links to folders are not followed (so a link
    to a parent cannot loop); folders that cannot be listed, broken or looping links and what
    is not a regular file are returned with the reason. Returns (files, skipped, missing)."""
    files: list[_Candidate] = []
    skipped: list[tuple[str, str]] = []
    missing: list[tuple[str, str, str]] = []

    def consider(path: Path, rel: str, named: bool) -> None:
        if not named and path.name.startswith("."):
            skipped.append((str(path), "hidden"))
        elif include and not _matches(rel, include):
            skipped.append((str(path), "not included"))
        elif exclude and _matches(rel, exclude):
            skipped.append((str(path), "excluded"))
        elif kind_of(path) is None:
            skipped.append((str(path), f"not a supported type ({path.suffix or 'no extension'})"))
        elif isinstance(size := _document_size(path), tuple):
            missing.append(size)  # why it cannot be read
        else:
            files.append(_Candidate(path, size))

    def unlistable(error: OSError) -> None:
        folder = error.filename
        missing.append((str(folder), "unreadable", f"{folder}: this folder cannot be read "
                        f"({error.strerror or error}); nothing in it was added."))

    for given in paths:
        root = Path(given).expanduser().absolute()
        if root.is_dir():
            for folder, dirs, names in os.walk(root, onerror=unlistable, followlinks=False):
                links = {d for d in dirs if not d.startswith(".") and os.path.islink(os.path.join(folder, d))}
                skipped += [(str(Path(folder) / d), "a link to a folder (not followed)") for d in sorted(links)]
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in links)
                for name in sorted(names):
                    path = Path(folder) / name
                    consider(path, path.relative_to(root).as_posix(), named=False)
        elif root.exists() or root.is_symlink():
            consider(root, root.name, named=True)
        else:
            missing.append((str(root), "vanished", f"{root}: no such file or folder."))
    return files, skipped, missing


def ingest(repo: LibraryRepository, library: Library, paths: Iterable[Path], *, include: tuple[str, ...] = (),
           exclude: tuple[str, ...] = (), limits: Limits | None = None,
           on_progress: Callable[[IngestProgress], None] = lambda p: None,
           cancelled: Callable[[], bool] = lambda: False,
           transcriber: PageTranscriber | None = None) -> IngestReport:
    """``transcriber``: the library's vision model; the reader then keeps the images of pages
    without text (``Limits.page_images``) and each is transcribed."""
    limits = limits or Limits()
    if transcriber is not None:
        limits = replace(limits, page_images=True)
    files, skipped, missing = scan(paths, include, exclude)
    report = IngestReport(skipped=skipped)
    for path, reason, message in missing:
        repo.save_failure(library.id, path, size=0, mtime=None, kind=None, reason=reason, error=message)
        report.failed.append((path, reason, message))
    total_bytes = sum(f.size for f in files)
    done_bytes = 0
    with IsolatedExtractor() as extractor:
        for index, candidate in enumerate(files):
            if cancelled():
                report.cancelled = True
                break
            on_progress(IngestProgress(index, len(files), done_bytes, total_bytes, str(candidate.path)))

            def say(detail: str, index: int = index, done: int = done_bytes) -> None:
                on_progress(IngestProgress(index, len(files), done, total_bytes, "", detail))

            reading = _Reading(extractor.extract, transcriber, say, cancelled)
            try:
                _ingest_one(repo, library, candidate.path, limits, report, reading)
            except (KeyboardInterrupt, TranscriptionCancelled):  # nothing of this file was stored
                report.cancelled = True
                break
            done_bytes += candidate.size
    on_progress(IngestProgress(len(files) if not report.cancelled else index, len(files), done_bytes,
                               total_bytes, ""))
    repo.touch(library.id)
    return report


@dataclass(frozen=True)
class _Reading:
    """How one file is read: the isolated reader, then the vision model for its pages without text."""

    extract: Callable[[Path, Limits], Extracted]
    transcriber: PageTranscriber | None = None
    say: Callable[[str], None] = lambda detail: None
    cancelled: Callable[[], bool] = lambda: False


def _ingest_one(repo: LibraryRepository, library: Library, path: Path, limits: Limits,
                report: IngestReport, reading: _Reading) -> None:
    key = str(path)
    kind = kind_of(path)
    existing = repo.document_at(library.id, key)
    try:
        stat = path.stat()
        if existing is not None and existing.ok and existing.size == stat.st_size and existing.mtime == stat.st_mtime:
            report.unchanged.append(key)
            return
        if stat.st_size > limits.max_file_bytes:
            extract(path, limits)  # raises the too-large error with its message, reading nothing
        sha = sha256_file(path)
        if existing is not None and existing.ok and existing.sha256 == sha:
            repo.touch_document(existing.id, stat.st_mtime)
            report.unchanged.append(key)
            return
        if (stored := repo.stored_kind(sha)) is not None:  # its text is stored already: not read again
            title, stored_kind = stored
            repo.save_document(library.id, key, size=stat.st_size, mtime=stat.st_mtime, sha256=sha,
                               title=title, kind=stored_kind)
        else:
            doc = reading.extract(path, limits)
            transcribed_by, transcribed = None, ()
            if doc.pages_to_transcribe and reading.transcriber is not None:
                done = transcribe_document(doc, path.name, reading.transcriber, reading.say, reading.cancelled)
                doc, transcribed = done.document, done.pages
                transcribed_by = reading.transcriber.model_name if transcribed else None
                if not doc.text.strip():
                    raise _not_transcribed(path, reading.transcriber.model_name, doc.warnings)
            repo.save_document(library.id, key, size=stat.st_size, mtime=stat.st_mtime, sha256=sha, title=doc.title,
                               kind=doc.kind, text=doc.text, pages=doc.pages, warnings=doc.warnings,
                               transcribed_by=transcribed_by, transcribed_pages=transcribed)
    except ExtractionError as exc:
        _fail(repo, library, path, kind, exc.reason, str(exc), report)
        return
    except PolicyRefusal as exc:  # the library is as large as the organisation allows
        _fail(repo, library, path, kind, "policy", str(exc), report)
        return
    except FileNotFoundError:
        _fail(repo, library, path, kind, "vanished", f"{path}: the file disappeared while it was being read.", report)
        return
    except OSError as exc:
        _fail(repo, library, path, kind, "unreadable", f"{path}: cannot be read ({exc.strerror or exc}).", report)
        return
    (report.updated if existing is not None else report.added).append(key)


def _not_transcribed(path: Path, model: str, warnings: tuple[str, ...]) -> ExtractionError:
    why = "; ".join(w for w in warnings if "transcribed" in w or "no text" in w)
    return ExtractionError(f"{path.name} has no text layer, and {model} read no text from its pages"
                           f"{f' ({why})' if why else ''}. Try another vision model: enclave library vision "
                           "LIB MODEL.", reason="no_text")


def _fail(repo: LibraryRepository, library: Library, path: Path, kind: str | None, reason: str, message: str,
          report: IngestReport) -> None:
    try:
        stat = path.stat()
        size, mtime = stat.st_size, stat.st_mtime
    except OSError:
        size, mtime = 0, None
    repo.save_failure(library.id, str(path), size=size, mtime=mtime, kind=kind, reason=reason, error=message)
    report.failed.append((str(path), reason, message))


