"""Images made safe (app/images.py), kept once (app/image_store.py), read only in the isolated
reader (app/extract/isolated.py), and the pages that wait for a vision model (app/extract)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageFile

from app.extract import ExtractionError, Limits, extract
from app.extract.base import REASONS, VISION_HINT
from app.extract.isolated import IsolatedExtractor, read_image_bytes, read_image_file
from app.image_store import ImageMissingError, ImageStore
from app.images import MAX_EDGE, sanitize_image
from app.ingest_reasons import REASON_PHRASES
from app.store import open_store

FORMATS = [("PNG", "png", "PNG"), ("JPEG", "jpg", "JPEG"), ("TIFF", "tiff", "TIFF"), ("WEBP", "webp", "WebP"),
           ("GIF", "gif", "GIF"), ("BMP", "bmp", "BMP")]


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def refusal(data: bytes, name: str, **options: int) -> ExtractionError:
    with pytest.raises(ExtractionError) as error:
        sanitize_image(data, name, **options)
    assert error.value.reason in REASONS and "Traceback" not in str(error.value)
    return error.value


def pixels_of(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


@pytest.mark.parametrize(("fmt", "ext", "called"), FORMATS)
def test_each_allowed_format_becomes_an_rgb_png(fmt: str, ext: str, called: str) -> None:
    source = Image.new("RGB", (64, 40), (200, 30, 30))
    [image] = sanitize_image(encoded(source, fmt), f"photo.{ext}")
    assert (image.width, image.height, image.source_format, image.page) == (64, 40, called, None)
    out = pixels_of(image.png)
    assert out.mode == "RGB" and out.size == (64, 40)
    red, green, blue = out.getpixel((32, 20))
    assert red > 150 and green < 90 and blue < 90
    assert image.sha256 == hashlib.sha256(image.png).hexdigest()


def test_a_file_is_what_its_content_says_not_its_name() -> None:
    jpeg = encoded(Image.new("RGB", (8, 8)), "JPEG")
    error = refusal(jpeg, "x.png")
    assert error.reason == "mislabelled" and "x.png is a JPEG image, not a PNG" in str(error) and "rename" in str(error)
    error = refusal(b"%PDF-1.7\n1 0 obj<<>>endobj\n", "scan.jpg")
    assert error.reason == "mislabelled" and "scan.jpg is a PDF document, not a JPEG image" in str(error)
    # a pasted image has no extension to check: only the content counts
    assert sanitize_image(jpeg, "pasted image")[0].source_format == "JPEG"
    error = refusal(encoded(Image.new("RGB", (16, 16)), "ICO"), "pasted image")
    assert error.reason == "unsupported" and "an icon" in str(error)
    assert refusal(b"just some words", "notes.png").reason == "corrupt"


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = encoded(Image.new("1", (20000, 20000)), "PNG")  # 400 million pixels in ~50 KB
    error = refusal(bomb, "bomb.png")
    assert error.reason == "too_many_pixels"
    assert "bomb.png has 400 million pixels; Enclave reads images up to 64 million" in str(error)
    # the limit is per call, and Pillow's global one is left alone
    before = Image.MAX_IMAGE_PIXELS
    small = encoded(Image.new("RGB", (100, 100)), "PNG")
    assert refusal(small, "a.png", max_pixels=5000).reason == "too_many_pixels"
    assert sanitize_image(small, "a.png")[0].width == 100
    assert before == Image.MAX_IMAGE_PIXELS and ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_a_truncated_image_is_refused() -> None:
    noisy = Image.effect_noise((300, 300), 60).convert("RGB")
    for fmt, name in (("JPEG", "cut.jpg"), ("PNG", "cut.png")):
        data = encoded(noisy, fmt)
        error = refusal(data[: len(data) // 2], name)
        assert error.reason == "truncated" and f"{name} is cut short (truncated)" in str(error)


def test_exif_orientation_is_applied_and_metadata_dropped() -> None:
    source = Image.new("RGB", (60, 20), "white")
    source.paste((0, 0, 255), (0, 0, 10, 20))  # a blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to show"
    exif[0x010F] = "SecretCam"  # camera maker: must not survive
    data = encoded(source, "JPEG", exif=exif.tobytes(), quality=95)
    [image] = sanitize_image(data, "phone.jpg")
    assert (image.width, image.height) == (20, 60)  # turned upright
    out = pixels_of(image.png)
    assert out.getpixel((10, 2))[0] < 60 and out.getpixel((10, 57))[0] > 200  # the blue band is now on top
    assert b"SecretCam" not in image.png and not out.getexif()
    assert set(out.info) <= {"dpi"} and b"eXIf" not in image.png and b"iCCP" not in image.png
    assert b"tEXt" not in image.png and b"iTXt" not in image.png


def test_text_and_icc_chunks_do_not_survive() -> None:
    from PIL import ImageCms, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Private Person")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encoded(Image.new("RGB", (10, 10)), "PNG", pnginfo=info, icc_profile=profile)
    [image] = sanitize_image(data, "meta.png")
    assert b"Private Person" not in image.png and b"iCCP" not in image.png


def test_transparency_is_composited_on_white() -> None:
    source = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    source.paste((0, 0, 0, 255), (0, 0, 10, 20))  # opaque black on the left, transparent on the right
    [image] = sanitize_image(encoded(source, "PNG"), "logo.png")
    out = pixels_of(image.png)
    assert out.getpixel((15, 10)) == (255, 255, 255) and out.getpixel((5, 10)) == (0, 0, 0)
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    [gif] = sanitize_image(encoded(palette, "GIF", transparency=0), "clear.gif")
    assert pixels_of(gif.png).getpixel((5, 5)) == (255, 255, 255)


def test_a_large_image_is_scaled_to_the_longest_edge() -> None:
    [image] = sanitize_image(encoded(Image.new("RGB", (4096, 1024), "gray"), "PNG"), "wide.png")
    assert (image.width, image.height) == (MAX_EDGE, 512)
    assert pixels_of(image.png).size == (MAX_EDGE, 512)


def test_sixteen_bit_greys_are_scaled_not_clipped() -> None:
    grey = Image.new("I;16", (10, 10), 30000)
    grey.paste(0, (0, 0, 5, 10))
    [image] = sanitize_image(encoded(grey, "PNG"), "scan16.png")
    out = pixels_of(image.png)
    assert out.getpixel((8, 5))[0] > 200 and out.getpixel((2, 5))[0] < 50


def multipage_tiff(pages: int) -> bytes:
    frames = [Image.new("L", (40 + i, 30), 255 - 20 * i) for i in range(pages)]
    return encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def test_a_multipage_tiff_gives_one_image_per_page() -> None:
    images = sanitize_image(multipage_tiff(3), "fax.tiff")
    assert [(i.page, i.width) for i in images] == [(1, 40), (2, 41), (3, 42)]
    assert len({i.sha256 for i in images}) == 3
    error = refusal(multipage_tiff(3), "fax.tiff", max_pages=2)
    assert error.reason == "too_large" and "fax.tiff has 3 pages" in str(error)


def test_an_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (12, 12), colour) for colour in ("red", "blue")]
    [image] = sanitize_image(encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]), "anim.gif")
    assert pixels_of(image.png).getpixel((6, 6))[0] > 200


def test_every_reason_has_its_phrase() -> None:
    assert set(REASON_PHRASES) >= REASONS


# The store ----------------------------------------------------------------------------------------

def test_the_store_keeps_each_image_once(tmp_path: Path) -> None:
    [image] = sanitize_image(encoded(Image.new("RGB", (30, 20), "green"), "PNG"), "g.png")
    with open_store(tmp_path / "enclave.db") as store:
        images = ImageStore(store)
        first = images.add(image)
        again = images.add(image)
        assert first == again and (first.sha256, first.width, first.height) == (image.sha256, 30, 20)
        count = store.read().execute("SELECT COUNT(*) FROM images").fetchone()[0]
        assert count == 1
        assert images.get(image.sha256) == first and images.get("0" * 64) is None
        assert images.png(image.sha256) == image.png
        with pytest.raises(ImageMissingError, match="is not in Enclave's database"):
            images.png("f" * 64)


# The isolated reader ------------------------------------------------------------------------------

def test_images_are_read_in_the_reader_process(tmp_path: Path) -> None:
    path = tmp_path / "photo.webp"
    path.write_bytes(encoded(Image.new("RGB", (50, 50), "yellow"), "WEBP"))
    with IsolatedExtractor() as extractor:
        [image] = read_image_file(path, extractor)
        assert image.source_format == "WebP" and extractor.pid is not None  # a child did it
        with pytest.raises(ExtractionError) as error:
            read_image_bytes(b"%PDF-1.4 not an image", "pasted.png", extractor)
        assert error.value.reason == "mislabelled"
        [pasted] = read_image_bytes(encoded(Image.new("RGB", (5, 5)), "BMP"), "pasted image", extractor)
        assert pasted.width == 5
    with pytest.raises(ExtractionError) as error:  # without an extractor: a reader for this one image
        read_image_file(tmp_path / "gone.png")
    assert error.value.reason == "vanished"


def test_a_reader_that_hangs_on_an_image_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(encoded(Image.effect_noise((1500, 1500), 80).convert("RGB"), "PNG", compress_level=1))
    with IsolatedExtractor() as extractor:
        with pytest.raises(ExtractionError) as error:
            extractor.read_image_file(big, Limits(max_seconds=0.05))
        assert error.value.reason == "too_slow" and extractor.pid is None
        [small] = extractor.read_image_bytes(encoded(Image.new("RGB", (4, 4)), "PNG"), "next.png")
        assert small.width == 4  # a fresh reader for the next one


# Pages for a vision model -------------------------------------------------------------------------

def scanned_pdf(folder: Path, text_pages: int = 1) -> Path:
    scan = folder / "scan.png"
    Image.new("RGB", (400, 300), "white").save(scan)
    stamp = folder / "stamp.jpg"
    Image.new("RGB", (50, 60), "red").save(stamp)
    pdf = FPDF()
    for n in range(text_pages):
        pdf.add_page()
        pdf.set_font("helvetica", size=12)
        pdf.cell(text=f"Typed text on page {n + 1}")
    pdf.add_page()
    pdf.image(str(scan), x=10, y=10, w=100)
    pdf.add_page()
    pdf.image(str(scan), x=10, y=10, w=100)
    pdf.image(str(stamp), x=10, y=150, w=50)
    path = folder / "mixed.pdf"
    pdf.output(str(path))
    return path


def test_a_mixed_pdf_keeps_its_text_and_lists_its_scanned_pages(tmp_path: Path) -> None:
    path = scanned_pdf(tmp_path)
    plain = extract(path)
    assert "Typed text on page 1" in plain.text and plain.scanned_pages == (2, 3)
    assert plain.pages_to_transcribe == () and "page 2 has no text layer" in plain.warnings
    seen = extract(path, Limits(page_images=True))
    assert "Typed text on page 1" in seen.text and seen.scanned_pages == (2, 3)
    assert [(p.page, p.image.width, p.image.source_format) for p in seen.pages_to_transcribe] == [
        (2, 400, "PNG"), (3, 400, "PNG"), (3, 50, "JPEG")]
    assert not any("no text layer" in w for w in seen.warnings)


def test_a_wholly_scanned_pdf_needs_a_vision_model(tmp_path: Path) -> None:
    path = scanned_pdf(tmp_path, text_pages=0)
    with pytest.raises(ExtractionError) as error:
        extract(path)
    assert error.value.reason == "no_text" and "no text layer" in str(error.value) and VISION_HINT in str(error.value)
    seen = extract(path, Limits(page_images=True))
    assert seen.text.strip() == "" and [p.page for p in seen.pages_to_transcribe] == [1, 2, 2]


def test_an_image_file_is_a_document_to_transcribe(tmp_path: Path) -> None:
    path = tmp_path / "receipt.jpg"
    Image.new("RGB", (30, 40), "white").save(path, "JPEG")
    with pytest.raises(ExtractionError) as error:
        extract(path)
    assert error.value.reason == "no_text" and VISION_HINT in str(error.value)
    seen = extract(path, Limits(page_images=True))
    assert seen.kind == "image" and seen.text == "" and seen.title == "receipt.jpg"
    [page] = seen.pages_to_transcribe
    assert page.page == 1 and (page.image.width, page.image.height) == (30, 40)
    fax = tmp_path / "fax.tif"
    fax.write_bytes(multipage_tiff(2))
    assert [p.page for p in extract(fax, Limits(page_images=True)).pages_to_transcribe] == [1, 2]


def test_a_hostile_image_in_a_folder_is_refused_and_the_rest_read(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (20, 20), "blue").save(folder / "good.png")
    (folder / "bomb.png").write_bytes(encoded(Image.new("1", (20000, 20000)), "PNG"))
    (folder / "liar.jpg").write_bytes(encoded(Image.new("RGB", (8, 8)), "PNG"))
    (folder / "notes.txt").write_text("plain words about birds")
    scanned_pdf(folder)
    outcomes: dict[str, str] = {}
    with IsolatedExtractor() as extractor:
        for path in sorted(folder.iterdir()):
            if path.suffix in (".png", ".jpg", ".pdf", ".txt") and path.name not in ("scan.png", "stamp.jpg"):
                try:
                    doc = extractor.extract(path, Limits(page_images=True))
                    outcomes[path.name] = f"read {len(doc.pages_to_transcribe)}"
                except ExtractionError as exc:
                    outcomes[path.name] = exc.reason
    assert outcomes == {"bomb.png": "too_many_pixels", "liar.jpg": "mislabelled", "good.png": "read 1",
                        "mixed.pdf": "read 3", "notes.txt": "read 0"}
