"""One file in, its text out: what Enclave puts in the prompt for a library document.

``extract(path)`` picks the reader by file type, applies the size guards in ``Limits`` and
raises only ``ExtractionError`` (with a ``reason`` code and a message that says what to do).
Pure functions: no Qt, no database, nothing from the rest of ``app``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

from app.extract.base import Extracted, ExtractionError, Limits, human_size
from app.extract.kinds import SUPPORTED_EXTENSIONS, describe_supported, is_probably_binary, kind_of

__all__ = ["SUPPORTED_EXTENSIONS", "Extracted", "ExtractionError", "Limits", "extract", "is_probably_binary",
           "kind_of"]

_DEFAULT_LIMITS = Limits()


def _vanished(path: Path) -> ExtractionError:
    return ExtractionError(f"{path.name} is no longer there (it was moved, renamed or deleted); add it again from "
                           "where it is now.", reason="vanished")


def _unreadable(path: Path, exc: OSError) -> ExtractionError:
    if isinstance(exc, PermissionError):
        return ExtractionError(f"{path.name} could not be opened: permission denied; make sure your user account "
                               "can read it, then add it again.", reason="unreadable")
    if isinstance(exc, IsADirectoryError):
        return _folder(path)
    return ExtractionError(f"{path.name} could not be read from the disk; check that its drive is connected and "
                           "the file opens in another program, then try again.", reason="unreadable")


def _folder(path: Path) -> ExtractionError:
    return ExtractionError(f"{path.name} is a folder, not a document; add the folder itself to the library "
                           "instead.", reason="unreadable")


def _too_large(path: Path, size: int, limits: Limits) -> ExtractionError:
    return ExtractionError(f"{path.name} is {human_size(size)}, over the {human_size(limits.max_file_bytes)} limit "
                           "for documents; raise the limit with 'enclave settings set max_document_mb N' to add it.",
                           reason="too_large")


def _empty(path: Path) -> ExtractionError:
    return ExtractionError(f"{path.name} has no text in it, so there is nothing to add.", reason="empty")


def _read(path: Path, limits: Limits) -> bytes:
    """The whole file, after checking its size on disk; every format then parses from memory,
    so the file is opened exactly once and cannot change under a parser."""
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise _vanished(path) from exc
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if stat.S_ISDIR(info.st_mode):
        raise _folder(path)
    if not stat.S_ISREG(info.st_mode):
        raise ExtractionError(f"{path.name} is not a regular file (it is a device, pipe or socket), so it cannot be "
                              "added as a document.", reason="unreadable")
    if info.st_size > limits.max_file_bytes:
        raise _too_large(path, info.st_size, limits)
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_file_bytes + 1)
    except FileNotFoundError as exc:
        raise _vanished(path) from exc
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if len(data) > limits.max_file_bytes:  # it grew after the stat
        raise _too_large(path, len(data), limits)
    if not data:
        raise ExtractionError(f"{path.name} is empty, so there is nothing to add.", reason="empty")
    return data


def _dispatch(data: bytes, path: Path, kind: str, limits: Limits) -> Extracted:
    # Readers are imported when first needed: a library scan of text files never loads pypdf or openpyxl.
    if kind in ("text", "markdown", "code"):
        from app.extract.text import extract_text
        return extract_text(data, path, kind)
    if kind == "html":
        from app.extract.web import extract_html
        return extract_html(data, path)
    if kind == "pdf":
        from app.extract.pdf import extract_pdf
        return extract_pdf(data, path, limits)
    if kind in ("docx", "pptx", "xlsx"):
        from app.extract import office
        reader = {"docx": office.extract_docx, "pptx": office.extract_pptx, "xlsx": office.extract_xlsx}[kind]
        return reader(data, path, limits)
    if kind in ("csv", "tsv"):
        from app.extract.data import extract_table
        return extract_table(data, path, kind, limits)
    if kind == "json":
        from app.extract.data import extract_json
        return extract_json(data, path)
    if kind == "email":
        from app.extract.mail import extract_email
        return extract_email(data, path)
    if kind == "image":
        from app.extract.image import extract_image
        return extract_image(data, path, limits)
    raise AssertionError(f"no reader for kind {kind!r}")


def _finish(result: Extracted, path: Path, limits: Limits) -> Extracted:
    """The shared end: refuse empty text (unless pages wait for a vision model to transcribe them),
    apply the text cap, make sure there is a title."""
    text = result.text
    if not text.strip() and not result.pages_to_transcribe:
        raise _empty(path)
    pages = result.pages
    warnings = result.warnings
    if len(text) > limits.max_text_chars:
        text = text[: limits.max_text_chars]
        pages = tuple(p for p in pages if p < len(text))
        warnings = (*warnings, f"the text was cut at {limits.max_text_chars:,} characters")
    return replace(result, text=text, title=result.title or path.name, pages=pages, warnings=warnings)


def extract(path: Path, limits: Limits = _DEFAULT_LIMITS) -> Extracted:
    """The text of the document at ``path``.

    Raises ExtractionError, and nothing else, for every file it cannot turn into text: missing,
    unreadable, too big, of an unsupported type, binary, encrypted, scanned, damaged or empty.
    """
    path = Path(path)
    try:
        kind = kind_of(path)
        if kind is None:
            if not os.path.lexists(path):  # a missing file is "vanished" whatever its type
                raise _vanished(path)
            raise ExtractionError(f"Enclave cannot read {path.suffix or 'extension-less'} files like {path.name}; it "
                                  f"reads {describe_supported()}.", reason="unsupported")
        data = _read(path, limits)
        return _finish(_dispatch(data, path, kind, limits), path, limits)
    except ExtractionError:
        raise
    except MemoryError as exc:
        raise ExtractionError(f"{path.name} needs more memory to read than this computer has free; lower the "
                              "document size limit or close other programs, then try again.",
                              reason="too_large") from exc
    except Exception as exc:  # a reader library failed in a way its module did not foresee
        raise ExtractionError(f"{path.name} could not be read: it may be damaged or use a feature Enclave does not "
                              "understand; open it and save a new copy, then add it again.", reason="corrupt") from exc
