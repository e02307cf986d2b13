"""Adding files and folders to a library: scan, hash, extract, store — one file at a time.

Each document is stored in its own transaction, so a cancel (checked between files) or a
crash never leaves half a document, and a file that cannot be read is recorded with the
reason while the rest of the folder goes in. Unchanged files (same size and modification
time, or the same bytes) are not read again; identical content is stored once.
The caller runs ``ingest`` on whatever thread it likes and gets progress callbacks.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from app.extract import Extracted, ExtractionError, Limits, extract, kind_of
from app.extract.isolated import IsolatedExtractor
from app.hashing import sha256_file
from app.libraries import Library, LibraryRepository


@dataclass(frozen=True)
class IngestProgress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current: str


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


def scan(paths: Iterable[Path], include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
         ) -> tuple[list[_Candidate], list[tuple[str, str]], list[tuple[str, str, str]]]:
    """The files to read under ``paths``: folders recursively, hidden files and folders
    skipped (unless named directly), ``include``/``exclude`` globs matched against the
    path inside the folder and the file name. Returns (files, skipped, missing)."""
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
        else:
            try:
                files.append(_Candidate(path, path.stat().st_size))
            except OSError as exc:
                missing.append((str(path), "unreadable", f"{path}: cannot be read ({exc.strerror or exc})."))

    for given in paths:
        root = Path(given).expanduser().absolute()
        if root.is_dir():
            for folder, dirs, names in os.walk(root, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    path = Path(folder) / name
                    consider(path, path.relative_to(root).as_posix(), named=False)
        elif root.exists():
            consider(root, root.name, named=True)
        else:
            missing.append((str(root), "vanished", f"{root}: no such file or folder."))
    return files, skipped, missing


def ingest(repo: LibraryRepository, library: Library, paths: Iterable[Path], *, include: tuple[str, ...] = (),
           exclude: tuple[str, ...] = (), limits: Limits | None = None,
           on_progress: Callable[[IngestProgress], None] = lambda p: None,
           cancelled: Callable[[], bool] = lambda: False) -> IngestReport:
    limits = limits or Limits()
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
            try:
                _ingest_one(repo, library, candidate.path, limits, report, extractor.extract)
            except KeyboardInterrupt:  # the file's transaction rolled back: nothing half-stored
                report.cancelled = True
                break
            done_bytes += candidate.size
    on_progress(IngestProgress(len(files) if not report.cancelled else index, len(files), done_bytes,
                               total_bytes, ""))
    repo.touch(library.id)
    return report


def _ingest_one(repo: LibraryRepository, library: Library, path: Path, limits: Limits,
                report: IngestReport, read: Callable[[Path, Limits], Extracted]) -> None:
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
        if repo.has_content(sha):
            content = repo.content(sha)
            repo.save_document(library.id, key, size=stat.st_size, mtime=stat.st_mtime, sha256=sha,
                               title=content.title, kind=content.kind)
        else:
            doc = read(path, limits)
            repo.save_document(library.id, key, size=stat.st_size, mtime=stat.st_mtime, sha256=sha, title=doc.title,
                               kind=doc.kind, text=doc.text, pages=doc.pages, warnings=doc.warnings)
    except ExtractionError as exc:
        _fail(repo, library, path, kind, exc.reason, str(exc), report)
        return
    except FileNotFoundError:
        _fail(repo, library, path, kind, "vanished", f"{path}: the file disappeared while it was being read.", report)
        return
    except OSError as exc:
        _fail(repo, library, path, kind, "unreadable", f"{path}: cannot be read ({exc.strerror or exc}).", report)
        return
    (report.updated if existing is not None else report.added).append(key)


def _fail(repo: LibraryRepository, library: Library, path: Path, kind: str | None, reason: str, message: str,
          report: IngestReport) -> None:
    try:
        size = path.stat().st_size
        mtime: float | None = path.stat().st_mtime
    except OSError:
        size, mtime = 0, None
    repo.save_failure(library.id, str(path), size=size, mtime=mtime, kind=kind, reason=reason, error=message)
    report.failed.append((str(path), reason, message))


