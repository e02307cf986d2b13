"""Image files as documents: their pages sanitized (``app.images``) for a vision model to transcribe."""

from __future__ import annotations

from pathlib import Path

from app.extract.base import VISION_HINT, Extracted, ExtractionError, Limits
from app.images import PageImage, sanitize_image


def extract_image(data: bytes, path: Path, limits: Limits) -> Extracted:
    """An image file as a document with no text yet and its pages to transcribe. A hostile or broken
    image is refused whether or not the library has a vision model; a good one without a vision
    model is refused with how to choose one."""
    images = sanitize_image(data, path.name, max_pixels=limits.max_image_pixels, max_pages=limits.max_image_pages)
    if not limits.page_images:
        raise ExtractionError(f"{path.name} is an image: its text can be read only by a vision model. To add it, "
                              f"{VISION_HINT}.", reason="no_text")
    pages = tuple(PageImage(image.page or 1, image) for image in images)
    return Extracted(text="", title=path.name, kind="image", scanned_pages=tuple(p.page for p in pages),
                     pages_to_transcribe=pages)
