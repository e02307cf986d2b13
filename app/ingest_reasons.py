"""Plain words for what ingestion reports: why a document was not read, what "skipped"
covered, and the one-line summary of an ingest. The window and ``enclave library``
print the same words.

The extractors' messages (``Document.error``) are full sentences naming the file and what
to do; the phrases here are the short form that fits in a table cell or a summary line.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.ingest import IngestReport

NOT_READ = "Not read"
READ = "Read"

# One phrase per ``app.extract.base.REASONS`` code (tests check that none is missing).
REASON_PHRASES: dict[str, str] = {
    "too_large": "too large (over the size limit)",
    "encrypted": "password-protected",
    "no_text": "scanned or an image: needs a vision model",
    "corrupt": "damaged, or not the type its name says",
    "binary": "not text (binary data)",
    "unsupported": "a type of file Enclave cannot read",
    "unreadable": "could not be opened",
    "vanished": "moved or deleted since it was added",
    "zip_bomb": "unpacks to far more than its size (a possible zip bomb)",
    "empty": "empty: no text to add",
    "too_slow": "took too long to read",
    "policy": "the library is at your organisation's size limit",
    "mislabelled": "not the type of image its name says",
    "too_many_pixels": "too many pixels (a possible decompression bomb)",
    "truncated": "cut short (truncated)",
}

# What ``app.ingest.scan`` records as the why of a skipped path, by its first words.
_SKIP_PHRASES: dict[str, str] = {
    "hidden": "hidden",
    "not included": "not matching the include filter",
    "excluded": "matching the exclude filter",
    "not a supported type": "of a type Enclave does not read",
    "a link to a folder": "links to folders (not followed)",
}


def reason_phrase(reason: str | None) -> str | None:
    """The short phrase for a failure ``reason`` code, None when the code is unknown."""
    return REASON_PHRASES.get(reason or "")


def status_text(error: str | None, reason: str | None) -> str:
    """'Read', or 'Not read: <why, in a few words>'."""
    if error is None:
        return READ
    phrase = reason_phrase(reason)
    return f"{NOT_READ}: {phrase}" if phrase else f"{NOT_READ}: {error}"


def _skip_kind(why: str) -> str:
    return next((phrase for start, phrase in _SKIP_PHRASES.items() if why.startswith(start)), why)


def skipped_text(skipped: list[tuple[str, str]]) -> str:
    """'3 skipped (2 of a type Enclave does not read: .png, .exe; 1 hidden)', '' when none.
    Skipped files were never read: unchanged files are counted apart, as 'unchanged'."""
    if not skipped:
        return ""
    kinds = Counter(_skip_kind(why) for _, why in skipped)
    unsupported = _SKIP_PHRASES["not a supported type"]
    suffixes = sorted({Path(path).suffix or "no extension" for path, why in skipped if _skip_kind(why) == unsupported})
    parts = []
    for kind, count in kinds.most_common():
        detail = f": {', '.join(suffixes[:5])}{', …' if len(suffixes) > 5 else ''}" if kind == unsupported else ""
        parts.append(f"{count} {kind}{detail}")
    return f"{len(skipped)} skipped ({'; '.join(parts)})"


def report_summary(report: IngestReport) -> str:
    """The one line after an ingest, without the counts that are zero, e.g. '3 added,
    1 unchanged (already in the library), 1 could not be read, 1 skipped (1 hidden)'."""
    parts = [f"{len(report.added)} added" if report.added else "",
             f"{len(report.updated)} updated (changed since last added)" if report.updated else "",
             f"{len(report.unchanged)} unchanged (already in the library)" if report.unchanged else "",
             f"{len(report.failed)} could not be read" if report.failed else "",
             skipped_text(report.skipped)]
    line = ", ".join(p for p in parts if p) or "No files were found to add"
    return line + (" (cancelled)" if report.cancelled else "")
