"""Images made safe to keep and to show a vision model: decoded with Pillow, re-encoded as a plain PNG.

``sanitize_image`` is pure and runs only inside the isolated reader process
(``app.extract.isolated``): a hostile file (a decompression bomb, a truncated or mislabelled
file, a parser bug) costs that child, never the window or the model worker. What comes out is
an RGB PNG Enclave wrote itself — EXIF orientation applied, transparency composited on white,
the longest edge at most ``MAX_EDGE`` pixels, no metadata (no EXIF, GPS, ICC or text chunks) —
named by the SHA-256 of its bytes (``app.image_store`` keeps each once).
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import PurePath

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from app.extract.base import ExtractionError

MAX_EDGE = 2048  # what vision models' encoders use at most; larger only costs memory and time
MAX_PIXELS = 64_000_000  # per image (per page of a TIFF), checked from the header before decoding
MAX_PAGES = 500  # pages of a multi-page TIFF (a long fax)

# Pillow's format name -> what a person calls it. MPO is a camera's multi-picture JPEG.
ALLOWED_FORMATS: dict[str, str] = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF", "WEBP": "WebP",
                                   "GIF": "GIF", "BMP": "BMP"}
IMAGE_EXTENSIONS: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
                                    ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WebP", ".gif": "GIF", ".bmp": "BMP",
                                    ".dib": "BMP"}
_EXTENSION_FOR = {"PNG": "png", "JPEG": "jpg", "TIFF": "tif", "WebP": "webp", "GIF": "gif", "BMP": "bmp"}
_OPENERS = ["PNG", "JPEG", "TIFF", "WEBP", "GIF", "BMP"]  # Pillow's JPEG opener gives MPO files too
_READABLE = "PNG, JPEG, TIFF, WebP, GIF and BMP images"

# What a file that is not one of the allowed images really is, by its first bytes.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image"), (b"\xff\xd8\xff", 0, "a JPEG image"), (b"GIF8", 0, "a GIF image"),
    (b"II*\x00", 0, "a TIFF image"), (b"MM\x00*", 0, "a TIFF image"), (b"BM", 0, "a BMP image"),
    (b"WEBP", 8, "a WebP image"), (b"%PDF", 0, "a PDF document"), (b"PK\x03\x04", 0, "a ZIP archive"),
    (b"ftypheic", 4, "a HEIC photo"), (b"ftypheix", 4, "a HEIC photo"), (b"ftypmif1", 4, "a HEIF image"),
    (b"ftypavif", 4, "an AVIF image"), (b"\x00\x00\x01\x00", 0, "an icon (.ico)"), (b"8BPS", 0, "a Photoshop file"),
    (b"\x00\x00\x00\x0cjP  ", 0, "a JPEG 2000 image"), (b"\xff\x4f\xff\x51", 0, "a JPEG 2000 image"),
    (b"<svg", 0, "an SVG drawing"), (b"<?xml", 0, "an XML file (an SVG drawing?)"),
)


@dataclass(frozen=True)
class SanitizedImage:
    png: bytes  # RGB, 8 bits, no metadata, written by Enclave
    width: int
    height: int
    sha256: str  # of ``png``
    source_format: str  # "PNG", "JPEG", "TIFF", "WebP", "GIF" or "BMP": what the file really was
    page: int | None = None  # 1-based page of a multi-page TIFF; None for a single image


@dataclass(frozen=True)
class PageImage:
    """An image a vision model should transcribe: a scanned PDF page's image, or an image file's page."""

    page: int  # 1-based
    image: SanitizedImage


def what_it_is(data: bytes) -> str | None:
    """'a PDF document', 'a JPEG image', …: what ``data`` is by its first bytes; None when unknown."""
    head = data[:32]
    for magic, offset, name in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    if head.lstrip()[:5].lower() in (b"<svg ", b"<?xml"):
        return "an SVG drawing"
    return None


def _expected_format(name: str) -> str | None:
    return IMAGE_EXTENSIONS.get(PurePath(name).suffix.lower())


def _refuse_unreadable(data: bytes, name: str) -> ExtractionError:
    found = what_it_is(data)
    expected = _expected_format(name)
    if found is not None and expected is not None and found.split()[1] != expected:
        return ExtractionError(f"{name} is {found}, not a {expected} image: rename it to what it is, or save it as "
                               f"an image; Enclave reads {_READABLE}.", reason="mislabelled")
    if found is not None and found.split()[1] not in ALLOWED_FORMATS.values():
        return ExtractionError(f"{name} is {found}; Enclave reads {_READABLE}: save it as one of those.",
                               reason="unsupported")
    return ExtractionError(f"{name} is damaged or is not an image Enclave can read; open it in an image viewer, "
                           f"save a new copy as PNG or JPEG, and add that instead.", reason="corrupt")


def _too_many_pixels(name: str, pixels: int, limit: int) -> ExtractionError:
    return ExtractionError(f"{name} has {_millions(pixels)} pixels; Enclave reads images up to {_millions(limit)} "
                           "(a larger one could be a decompression bomb). Scale it down in an image editor, then "
                           "add it again.", reason="too_many_pixels")


def _millions(pixels: int) -> str:
    if pixels >= 1_000_000 and (pixels % 1_000_000 == 0 or pixels >= 100_000_000):
        return f"{pixels / 1_000_000:,.0f} million"
    return f"{pixels:,}"


def _truncated(name: str) -> ExtractionError:
    return ExtractionError(f"{name} is cut short (truncated): part of the image is missing. Copy it again from "
                           "where it came from, then add it again.", reason="truncated")


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The image's header read (nothing decoded yet), restricted to the allowed formats."""
    Image.init()  # every plugin registered, so the allowed formats below all have their openers
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard (a global limit) warns before it refuses; both become a refusal here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_OPENERS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise _too_many_pixels(name, _bomb_pixels(exc), max_pixels) from None
    except UnidentifiedImageError:
        raise _refuse_unreadable(data, name) from None
    real = ALLOWED_FORMATS.get(image.format or "")
    if real is None:
        raise _refuse_unreadable(data, name)
    expected = _expected_format(name)
    if expected is not None and expected != real:
        article = "an" if real[0] in "AEIOU" else "a"
        raise ExtractionError(f"{name} is {article} {real} image, not a {expected}: rename it to end in "
                              f".{_EXTENSION_FOR[real]} (or save it as {expected}), then add it again.",
                              reason="mislabelled")
    return image


_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


def _bomb_pixels(exc: BaseException) -> int:
    """The pixel count in Pillow's bomb warning or error ('Image size (N pixels) exceeds …'); 0 if absent."""
    found = _BOMB_SIZE.search(str(exc))
    return int(found.group(1)) if found else 0


def _check_size(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ExtractionError(f"{name} has no pixels (it says it is {width}×{height}); it is damaged.",
                              reason="corrupt")
    if width * height > max_pixels:
        raise _too_many_pixels(name, width * height, max_pixels)


def _decode(image: Image.Image, name: str) -> None:
    """Decode the current frame now, so a truncated or damaged file is refused here, not later."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # never: a half image would be shown to the model as whole
        raise RuntimeError("ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except OSError as exc:
        if "truncated" in str(exc) or "broken data stream" in str(exc):
            raise _truncated(name) from exc
        raise _refuse_unreadable(b"", name) from exc
    except EOFError as exc:
        raise _truncated(name) from exc


def _upright(image: Image.Image) -> Image.Image:
    """EXIF orientation applied; a damaged EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:
        return image


_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparency composited on white (a transparent PNG's text stays readable)."""
    if image.mode in _SIXTEEN_BIT:  # 16-bit greys: scaled to 8 bits, not clipped to white
        low, high = image.convert("F").getextrema()
        span = (high - low) or 1.0
        image = image.convert("F").point(lambda v: (v - low) * 255.0 / span).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _scaled(image: Image.Image, max_edge: int) -> Image.Image:
    width, height = image.size
    if max(width, height) <= max_edge:
        return image
    ratio = max_edge / max(width, height)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _png(image: Image.Image, source_format: str, page: int | None) -> SanitizedImage:
    # A fresh image from the pixels alone: nothing of the file's info (EXIF, ICC, text) can follow.
    clean = Image.frombytes("RGB", image.size, image.tobytes())
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG", compress_level=6)
    png = buffer.getvalue()
    return SanitizedImage(png=png, width=clean.width, height=clean.height, sha256=hashlib.sha256(png).hexdigest(),
                          source_format=source_format, page=page)


def _frame(image: Image.Image, name: str, source_format: str, page: int | None, max_edge: int) -> SanitizedImage:
    _decode(image, name)
    try:
        rgb = _to_rgb(_upright(image))
    except (ValueError, OSError) as exc:  # a colour mode Pillow cannot convert (LAB, odd TIFFs)
        raise ExtractionError(f"{name} uses a colour format Enclave cannot convert; open it in an image editor, "
                              "save it as PNG or JPEG, and add that copy instead.", reason="corrupt") from exc
    return _png(_scaled(rgb, max_edge), source_format, page)


def _frame_count(image: Image.Image) -> int:
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:
        return 1


def sanitize_image(data: bytes, name: str, *, max_pixels: int = MAX_PIXELS, max_pages: int = MAX_PAGES,
                   max_edge: int = MAX_EDGE) -> list[SanitizedImage]:
    """``data`` (a file called ``name``) as Enclave's own PNGs: one, or one per page of a multi-page TIFF.

    Raises ExtractionError, and nothing else, for anything it will not read: a format other than
    PNG, JPEG, TIFF, WebP, GIF or BMP; content that is not what the name's extension says (names
    without an image extension, such as pasted images, skip that check); more than ``max_pixels``
    pixels; a truncated or damaged file. GIF, WebP and APNG animations give their first frame.
    """
    name = name or "the image"
    try:
        with _open(data, name, max_pixels) as image:
            _check_size(image, name, max_pixels)
            source_format = ALLOWED_FORMATS[image.format or ""]
            if source_format != "TIFF":
                return [_frame(image, name, source_format, None, max_edge)]
            pages = _frame_count(image)
            if pages > max_pages:
                raise ExtractionError(f"{name} has {pages:,} pages; Enclave reads image files of up to "
                                      f"{max_pages:,} pages. Split it into smaller files, then add those.",
                                      reason="too_large")
            result = []
            for index in range(pages):
                image.seek(index)
                _check_size(image, name, max_pixels)
                result.append(_frame(image, name, source_format, index + 1 if pages > 1 else None, max_edge))
            return result
    except ExtractionError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise _too_many_pixels(name, _bomb_pixels(exc), max_pixels) from None
    except MemoryError as exc:
        raise ExtractionError(f"{name} needs more memory to read than this computer has free; scale it down, "
                              "then add it again.", reason="too_large") from exc
    except Exception as exc:  # a decoder failed in a way nobody foresaw: the file is refused, never the app
        raise _refuse_unreadable(data, name) from exc
