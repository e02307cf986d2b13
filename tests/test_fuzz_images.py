"""Images against truncation and mutation: real small images of every allowed format, changed
byte by byte, always end in a SanitizedImage (a PNG Enclave wrote) or an ExtractionError with a
known reason, in this process and through the isolated reader, and never hang."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from app.extract import ExtractionError
from app.extract.base import REASONS
from app.extract.isolated import IsolatedExtractor
from app.images import SanitizedImage, sanitize_image
from tests.fuzzing import case, fuzz_settings
from tests.test_fuzz_documents import mutated_bytes

EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def originals() -> dict[str, bytes]:
    picture = Image.effect_noise((48, 32), 40).convert("RGB")
    picture.paste((250, 10, 10), (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 8
    frames = [Image.new("L", (24, 24), shade) for shade in (0, 128, 255)]
    return {
        "PNG": _encoded(picture.convert("RGBA"), "PNG"),
        "JPEG": _encoded(picture, "JPEG", exif=exif.tobytes()),
        "TIFF": _encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw"),
        "WEBP": _encoded(picture, "WEBP"),
        "GIF": _encoded(picture.convert("P"), "GIF", save_all=True, append_images=[picture.convert("P")]),
        "BMP": _encoded(picture, "BMP"),
    }


def outcome_of(data: bytes, name: str, fmt: str) -> list[SanitizedImage] | ExtractionError:
    with case(f"images {fmt}"):
        try:
            return sanitize_image(data, name)
        except ExtractionError as error:
            return error


def check(outcome: list[SanitizedImage] | ExtractionError, name: str) -> None:
    if isinstance(outcome, ExtractionError):
        assert outcome.reason in REASONS
        assert name in str(outcome) and "Traceback" not in str(outcome)
        return
    assert outcome
    for image in outcome:
        assert image.png.startswith(b"\x89PNG\r\n\x1a\n") and 0 < image.width <= 2048 and 0 < image.height <= 2048


@fuzz_settings(default=150)
@given(data=st.data())
def test_a_damaged_image_gives_a_png_or_a_reason(originals: dict[str, bytes], data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from(sorted(originals)))
    content = data.draw(mutated_bytes(originals[fmt]))
    name = "damaged" + EXTENSIONS[fmt]
    check(outcome_of(content, name, fmt), name)


def test_every_format_is_fuzzed(originals: dict[str, bytes]) -> None:
    """The originals themselves read (so the mutations start from real images)."""
    for fmt, content in originals.items():
        outcome = outcome_of(content, "original" + EXTENSIONS[fmt], fmt)
        assert isinstance(outcome, list) and outcome, fmt
    fax = outcome_of(originals["TIFF"], "fax.tif", "TIFF")
    assert isinstance(fax, list) and [image.page for image in fax] == [1, 2, 3]


@pytest.fixture(scope="module")
def reader() -> Iterator[IsolatedExtractor]:
    """One reader process for the run; it replaces itself after a crash or a time-out."""
    with IsolatedExtractor() as extractor:
        yield extractor


@fuzz_settings(default=25)
@given(data=st.data())
def test_the_reader_process_survives_damaged_images(originals: dict[str, bytes], reader: IsolatedExtractor,
                                                    data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from(sorted(originals)))
    content = data.draw(mutated_bytes(originals[fmt]))
    name = "pasted" + EXTENSIONS[fmt]
    with case(f"images {fmt} isolated"):
        try:
            outcome: list[SanitizedImage] | ExtractionError = reader.read_image_bytes(content, name)
        except ExtractionError as error:
            outcome = error
    check(outcome, name)
