"""PDF text with pypdf, page by page, remembering where each page starts in the text.

Pages without a text layer are listed (``Extracted.scanned_pages``); with ``Limits.page_images``
their images are kept, sanitized like any image (``app.images``), for a vision model to transcribe.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from app.extract.base import VISION_HINT, Extracted, ExtractionError, Limits, tidy, title_or_name
from app.images import PageImage, sanitize_image

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


def _declared_pixels(page: Any, key: str | list[str]) -> int:
    """Width × height an image XObject declares (a key from ``page.images.keys()``: a name, or the
    path of names through forms), read before pypdf decodes it; 0 when it cannot be told."""
    try:
        holder = page
        names = [key] if isinstance(key, str) else list(key)
        for name in names:
            holder = holder["/Resources"].get_object()["/XObject"].get_object()[name].get_object()
        return int(holder["/Width"]) * int(holder["/Height"])
    except Exception:
        return 0


def _page_images(page: Any, number: int, path: Path, limits: Limits, warnings: list[str]) -> list[PageImage]:
    """The images of scanned page ``number``, each sanitized, in the order the page lists them. An image
    that cannot be read is a warning: the page's other images, and the other pages, still count."""
    where = f"page {number} of {path.name}"
    found: list[PageImage] = []
    try:
        keys = list(page.images.keys())
    except Exception:
        warnings.append(f"the images on page {number} could not be read")
        return found
    for key in keys:
        declared = _declared_pixels(page, key)
        if declared > limits.max_image_pixels:
            warnings.append(f"an image on page {number} was not read: it has {declared:,} pixels, over the "
                            f"{limits.max_image_pixels:,} limit")
            continue
        try:
            data = page.images[key].data
            images = sanitize_image(data, where, max_pixels=limits.max_image_pixels, max_pages=1)
        except ExtractionError as exc:
            warnings.append(f"an image on page {number} was not read: {exc}")
            continue
        except Exception:
            warnings.append(f"an image on page {number} could not be read (it may be damaged)")
            continue
        found += [PageImage(number, image) for image in images]
    return found


def _no_text_layer(path: Path) -> ExtractionError:
    return ExtractionError(f"{path.name} has no text layer: it looks like a scanned document. Enclave cannot "
                           "read text from images (no OCR) without a vision model; run it through an OCR tool "
                           f"first and add the result, or {VISION_HINT}.", reason="no_text")


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
    scanned: list[PageImage] = []
    if limits.page_images:
        kept = empty[:limits.max_image_pages]
        if len(kept) < len(empty):
            warnings.append(f"only the first {len(kept)} of {len(empty)} pages without text were kept for the "
                            "vision model")
        for number in kept:
            scanned += _page_images(reader.pages[number - 1], number, path, limits, warnings)
    if len(empty) + len(unreadable) == len(pages) and not scanned:
        if unreadable and not empty:
            raise _corrupt(path)
        if limits.page_images:
            raise ExtractionError(f"{path.name} has no text layer, and the images of its pages could not be read "
                                  f"({'; '.join(warnings[-3:]) or 'none found'}).", reason="no_text")
        raise _no_text_layer(path)
    with_images = {p.page for p in scanned}
    warnings += _page_warnings([n for n in empty if n not in with_images])
    warnings += [f"page {n} could not be read" for n in unreadable]
    try:
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception:
        meta_title = None
    # The first line of a PDF is too often a running header or a page number to be a title.
    title = title_or_name(path, meta_title)
    return Extracted(text="".join(parts), title=title, kind="pdf", pages=tuple(pages), warnings=tuple(warnings),
                     scanned_pages=tuple(empty), pages_to_transcribe=tuple(scanned))
