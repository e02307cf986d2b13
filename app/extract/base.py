"""The records every extractor shares: limits, the result, the one error type, and small helpers.

Every format module returns an :class:`Extracted` or raises :class:`ExtractionError`; the
dispatcher in ``__init__`` turns anything else a library throws into an ``ExtractionError`` too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inference.errors import EnclaveError

if TYPE_CHECKING:
    from app.images import PageImage

REASONS = frozenset({"too_large", "encrypted", "no_text", "corrupt", "binary", "unsupported", "unreadable",
                     "vanished", "zip_bomb", "empty", "too_slow", "policy", "mislabelled", "too_many_pixels",
                     "truncated"})


@dataclass(frozen=True)
class Limits:
    """Guards against files that would take too long, too much memory or too much prompt."""

    max_file_bytes: int = 50 * 2**20  # bigger files are refused (the user can raise it)
    max_text_chars: int = 20_000_000  # extracted text is cut here
    max_uncompressed_bytes: int = 200 * 2**20  # zip-based formats: the sum of declared member sizes
    max_compression_ratio: float = 100.0  # zip-based formats: per large member, uncompressed / compressed
    max_pdf_pages: int = 5000
    max_sheet_cells: int = 2_000_000  # spreadsheets and CSV/TSV
    max_seconds: float = 300.0  # per rich document (isolated.py); a 5,000-page PDF takes about a minute
    max_image_pixels: int = 64_000_000  # per image, from its header, before decoding (app/images.py)
    max_image_pages: int = 500  # pages of a multi-page TIFF; scanned PDF pages whose images are kept
    # Keep the images of pages without text (scanned PDF pages, image files) for a vision model to
    # transcribe (``Extracted.pages_to_transcribe``). False when the library has no vision model:
    # image files are then refused and a PDF's scanned pages only listed (``Extracted.scanned_pages``).
    page_images: bool = False


# What to do about a page or an image without text; appended to those refusals.
VISION_HINT = "choose a vision model for this library: enclave library vision LIB MODEL"


@dataclass(frozen=True)
class Extracted:
    text: str
    title: str  # document metadata title, first heading, or the file name
    kind: str  # "text", "markdown", "code", "html", "pdf", "docx", "pptx", "xlsx", "csv", "tsv", "json", "email",
    # "image"
    pages: tuple[int, ...] = ()  # PDF pages / PPTX slides: offset in ``text`` where each one starts
    encoding: str | None = None  # detected encoding of text-like files
    warnings: tuple[str, ...] = ()
    # Pages without a text layer (1-based), and with ``Limits.page_images`` their images in page
    # order (several per page when a page holds several), for a vision model to transcribe. An image
    # file is one page (one per page of a multi-page TIFF) with ``text`` empty.
    scanned_pages: tuple[int, ...] = ()
    pages_to_transcribe: tuple[PageImage, ...] = ()


class ExtractionError(EnclaveError):
    """A file could not be turned into text. The message says what is wrong and what to do;
    ``reason`` is a short code for programs (see ``REASONS``)."""

    reason: str

    def __init__(self, message: str, *, reason: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown extraction failure reason {reason!r}")
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions pickle as ``cls(*args)``, which would lose the keyword-only reason; this keeps
        # the error intact across a process pool.
        return (_restore_error, (type(self), str(self), self.reason))


def _restore_error(cls: type[ExtractionError], message: str, reason: str) -> ExtractionError:
    return cls(message, reason=reason)


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t\u00a0]+\n")


def tidy(text: str) -> str:
    """Newlines normalised, NULs and trailing spaces dropped, runs of blank lines cut to one, ends stripped."""
    text = _TRAILING_SPACE.sub("\n", normalise_newlines(text).replace("\x00", ""))
    return _BLANK_RUNS.sub("\n\n", text).strip()


# Titles that tools write on their own; a title like this says nothing about the document.
_GENERIC_TITLES = frozenset({"untitled", "document", "presentation", "powerpoint presentation", "slide 1",
                             "title", "book1", "workbook", "sheet1", "microsoft word document", "none", "null"})
_TOOL_PREFIX = re.compile(r"^(microsoft (word|powerpoint|excel)|word|powerpoint|excel) - ", re.IGNORECASE)


def clean_title(candidate: object) -> str:
    """A metadata or heading title made presentable, or "" when it is empty or generic."""
    if not isinstance(candidate, str):
        return ""
    title = " ".join(candidate.split())
    title = _TOOL_PREFIX.sub("", title)  # "Microsoft Word - report.docx" -> "report.docx"
    if title.lower() in _GENERIC_TITLES:
        return ""
    return title[:300]


def title_or_name(path: Path, *candidates: object) -> str:
    for candidate in candidates:
        title = clean_title(candidate)
        if title:
            return title
    return path.name


def human_size(n: int | float) -> str:
    if n >= 2**20:
        mb = n / 2**20
        return f"{mb:.0f} MB" if mb >= 10 or mb == int(mb) else f"{mb:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{int(n)} bytes"


def human_seconds(seconds: float) -> str:
    return f"{seconds:g} second" + ("" if seconds == 1 else "s")
