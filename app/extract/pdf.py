"""PDF text with pypdf, page by page, remembering where each page starts in the text."""

from __future__ import annotations

import io
from pathlib import Path

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from app.extract.base import Extracted, ExtractionError, Limits, tidy, title_or_name

PAGE_SEPARATOR = "\n\n"


def _corrupt(path: Path) -> ExtractionError:
    return ExtractionError(f"{path.name} is damaged or is not really a PDF; open it in a PDF viewer, save or "
                           "print it to a new PDF, and add that copy instead.", reason="corrupt")


def _encrypted(path: Path) -> ExtractionError:
    return ExtractionError(f"{path.name} is password-protected; open it with its password, save an unprotected "
                           "copy, and add that copy instead.", reason="encrypted")


def _open(data: bytes, path: Path) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except Exception as exc:
        raise _corrupt(path) from exc
    if reader.is_encrypted:
        # Many PDFs are "encrypted" with an empty user password only to restrict printing or copying.
        try:
            result = reader.decrypt("")
        except (DependencyError, NotImplementedError) as exc:
            raise ExtractionError(f"{path.name} uses a kind of encryption Enclave cannot open; save an "
                                  "unprotected copy and add that instead.", reason="encrypted") from exc
        except Exception as exc:
            raise _encrypted(path) from exc
        if result == PasswordType.NOT_DECRYPTED:
            raise _encrypted(path)
    return reader


def _page_warnings(empty: list[int]) -> list[str]:
    if len(empty) <= 5:
        return [f"page {n} has no text layer" for n in empty]
    shown = ", ".join(str(n) for n in empty[:5])
    return [f"{len(empty)} pages have no text layer (pages {shown}, …); they may be scanned images"]


def extract_pdf(data: bytes, path: Path, limits: Limits) -> Extracted:
    reader = _open(data, path)
    try:
        count = len(reader.pages)
    except FileNotDecryptedError as exc:
        raise _encrypted(path) from exc
    except Exception as exc:
        raise _corrupt(path) from exc
    if count == 0:
        raise ExtractionError(f"{path.name} has no pages, so there is nothing to add.", reason="empty")
    warnings: list[str] = []
    if count > limits.max_pdf_pages:
        warnings.append(f"only the first {limits.max_pdf_pages} of {count} pages were read")
    parts: list[str] = []
    pages: list[int] = []
    empty: list[int] = []
    unreadable: list[int] = []
    length = 0
    for index in range(min(count, limits.max_pdf_pages)):
        try:
            page_text = tidy(reader.pages[index].extract_text() or "")
        except FileNotDecryptedError as exc:
            raise _encrypted(path) from exc
        except Exception:  # one bad page should not lose the others
            page_text = ""
            unreadable.append(index + 1)
        if index:
            parts.append(PAGE_SEPARATOR)
            length += len(PAGE_SEPARATOR)
        pages.append(length)
        parts.append(page_text)
        length += len(page_text)
        if not page_text and index + 1 not in unreadable:
            empty.append(index + 1)
        if length > limits.max_text_chars:
            warnings.append(f"reading stopped at page {index + 1}: the text reached the size limit")
            break
    if len(empty) + len(unreadable) == len(pages):
        if unreadable and not empty:
            raise _corrupt(path)
        raise ExtractionError(f"{path.name} has no text layer: it looks like a scanned document. Enclave cannot "
                              "read text from images (no OCR); run it through an OCR tool first, then add the "
                              "result.", reason="no_text")
    warnings += _page_warnings(empty)
    warnings += [f"page {n} could not be read" for n in unreadable]
    try:
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception:
        meta_title = None
    # The first line of a PDF is too often a running header or a page number to be a title.
    title = title_or_name(path, meta_title)
    return Extracted(text="".join(parts), title=title, kind="pdf", pages=tuple(pages), warnings=tuple(warnings))
