"""app.extract: every supported format gives its real text, and every bad input gives an
ExtractionError with the right reason and a message that says what to do."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from app.extract import (
    SUPPORTED_EXTENSIONS,
    Extracted,
    ExtractionError,
    Limits,
    extract,
    is_probably_binary,
    kind_of,
)
from tests import docs_samples as samples


def refused(path: Path, reason: str, limits: Limits | None = None) -> ExtractionError:
    with pytest.raises(ExtractionError) as info:
        extract(path, limits) if limits else extract(path)
    assert info.value.reason == reason, str(info.value)
    message = str(info.value)
    assert path.name in message
    assert "Traceback" not in message and "Error" not in message and "0x" not in message
    return info.value


# ---------------------------------------------------------------- text encodings


FRENCH = "Le café est très chaud.\nLa crème brûlée était délicieuse, à bientôt !\n"


@pytest.mark.parametrize(("encoding", "expected"), [
    ("utf-8", "utf-8"),
    ("utf-8-sig", "utf-8-sig"),
    ("utf-16", "utf-16"),
    ("utf-16-be", None),  # with an explicit BOM, see below
    ("cp1252", "cp1252"),
    ("latin-1", "cp1252"),  # the same bytes for these characters; cp1252 is the better guess
])
def test_text_in_several_encodings(tmp_path, encoding, expected):
    data = FRENCH.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
        expected = "utf-16"
    path = tmp_path / "notes.txt"
    path.write_bytes(data)
    result = extract(path)
    assert result.text == FRENCH.strip("\n")
    assert result.encoding == expected
    assert result.kind == "text"
    assert result.title == "notes.txt"
    assert result.pages == ()


def test_newlines_are_normalised(tmp_path):
    path = tmp_path / "dos.txt"
    path.write_bytes(b"one\r\ntwo\rthree\nfour\r\n")
    assert extract(path).text == "one\ntwo\nthree\nfour"


def test_utf8_with_one_broken_byte_stays_utf8(tmp_path):
    path = tmp_path / "mostly.txt"
    path.write_bytes(("Grüße aus München, schöne Grüße! " * 3).encode() + b"\xff end")
    result = extract(path)
    assert result.encoding == "utf-8"
    assert result.text.startswith("Grüße aus München")
    assert result.warnings and "replaced" in result.warnings[0]


def test_markdown_title_is_its_first_heading(tmp_path):
    path = tmp_path / "guide.md"
    path.write_text("Intro line\n\n# Getting Started\n\nInstall **Enclave** first.\n\n## Next\n", encoding="utf-8")
    result = extract(path)
    assert result.kind == "markdown"
    assert result.title == "Getting Started"
    assert "Install **Enclave** first." in result.text


def test_markdown_front_matter_title(tmp_path):
    path = tmp_path / "post.markdown"
    path.write_text("---\ntitle: \"Hello There\"\ndate: 2024-01-01\n---\n# Other heading\nBody\n", encoding="utf-8")
    assert extract(path).title == "Hello There"


def test_source_code_keeps_its_layout(tmp_path):
    source = "def greet(name: str) -> str:\n    if name:\n        return f'hi {name}'\n    return 'hi'\n"
    path = tmp_path / "greet.py"
    path.write_text(source, encoding="utf-8")
    result = extract(path)
    assert result.kind == "code"
    assert result.text == source.strip("\n")
    assert result.title == "greet.py"


def test_html_visible_text_without_script_or_style(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<!doctype html><html><head><title>Trip Notes</title><style>p { color: red }</style>"
        "<script>var secret = 'hidden';</script></head><body><h1>Day one</h1>"
        "<p>We walked   to the\n lake.</p><ul><li>Bread</li><li>Cheese</li></ul>"
        "<table><tr><td>Km</td><td>12</td></tr></table><div>Tired<br>but happy</div></body></html>",
        encoding="utf-8")
    result = extract(path)
    assert result.kind == "html"
    assert result.title == "Trip Notes"
    assert "secret" not in result.text and "color" not in result.text
    lines = result.text.split("\n")
    assert "# Day one" in lines
    assert "We walked to the lake." in lines
    assert "- Bread" in lines and "- Cheese" in lines
    assert "Km\t12" in lines
    assert "Tired" in lines and "but happy" in lines


def test_html_title_falls_back_to_h1_and_honours_meta_charset(tmp_path):
    path = tmp_path / "old.htm"
    path.write_bytes('<html><head><meta charset="windows-1252"></head><body><h1>Crème</h1><p>Déjà vu</p>'
                     "</body></html>".encode("cp1252"))
    result = extract(path)
    assert result.title == "Crème"
    assert "Déjà vu" in result.text


def test_deeply_nested_html_does_not_break(tmp_path):
    path = tmp_path / "deep.html"
    path.write_text("<div>" * 20000 + "bottom of the well" + "</div>" * 20000, encoding="utf-8")
    assert extract(path).text == "bottom of the well"


# ---------------------------------------------------------------- PDF


def test_pdf_pages_and_offsets(tmp_path):
    result = extract(samples.write_pdf(tmp_path / "report.pdf"))
    assert result.kind == "pdf"
    assert result.title == "Quarterly Fruit Report"
    assert len(result.pages) == 3 and result.pages[0] == 0
    bounds = [*result.pages, len(result.text)]
    for number, expected in enumerate(samples.PDF_PAGES):
        page_text = result.text[bounds[number]:bounds[number + 1]]
        assert page_text.strip() == expected
        assert result.text.startswith(expected.split()[0], result.pages[number])
    assert result.warnings == ()


def test_pdf_title_falls_back_to_file_name(tmp_path):
    result = extract(samples.write_pdf(tmp_path / "untitled-scan.pdf", title=None))
    assert result.title == "untitled-scan.pdf"


def test_pdf_with_a_blank_page_among_text_pages_warns(tmp_path):
    path = samples.write_pdf(tmp_path / "gap.pdf", pages=("First words", "", "Last words"))
    result = extract(path)
    assert result.warnings == ("page 2 has no text layer",)
    assert result.text[result.pages[2]:] == "Last words"


def test_encrypted_pdf_is_refused(tmp_path):
    error = refused(samples.write_encrypted_pdf(tmp_path / "secret.pdf", "hunter2"), "encrypted")
    assert "password-protected" in str(error)


def test_pdf_encrypted_with_an_empty_password_is_read(tmp_path):
    result = extract(samples.write_encrypted_pdf(tmp_path / "restricted.pdf", ""))
    assert "bravo bananas" in result.text
    assert len(result.pages) == 3


def test_pdf_without_text_layer_is_refused(tmp_path):
    error = refused(samples.write_pdf(tmp_path / "scan.pdf", pages=("",)), "no_text")
    assert "scanned" in str(error) and "OCR" in str(error)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_pdf_is_corrupt(tmp_path, cut):
    data = samples.pdf_bytes()
    path = tmp_path / "broken.pdf"
    path.write_bytes(data[: int(len(data) * cut)])
    error = refused(path, "corrupt")
    assert "damaged" in str(error)


def test_garbage_named_pdf_is_corrupt(tmp_path):
    path = tmp_path / "fake.pdf"
    path.write_bytes(b"%PDF-1.7\n" + random.Random(1).randbytes(4000))
    refused(path, "corrupt")


# ---------------------------------------------------------------- Office


def test_docx_headings_paragraphs_and_table_in_order(tmp_path):
    result = extract(samples.write_docx(tmp_path / "charter.docx"))
    assert result.kind == "docx"
    assert result.title == "Project Charter"
    text = result.text
    order = ["# Project Orion", "The first paragraph explains the mission.", "## Budget", "Item | Cost",
             "Telescope | 1200", "Tripod | 300", "A closing paragraph after the table."]
    positions = [text.index(piece) for piece in order]
    assert positions == sorted(positions)


def test_docx_title_falls_back_to_first_heading(tmp_path):
    import docx

    document = docx.Document()
    document.add_paragraph("Preface text")
    document.add_heading("The Real Title", level=1)
    path = tmp_path / "notitle.docx"
    document.save(str(path))
    assert extract(path).title == "The Real Title"


def test_docx_starting_with_an_empty_table(tmp_path):
    import docx

    document = docx.Document()
    document.add_table(rows=2, cols=2)
    document.add_paragraph("Text after an empty table")
    path = tmp_path / "table-first.docx"
    document.save(str(path))
    assert extract(path).text == "Text after an empty table"


def test_pptx_slides_and_notes(tmp_path):
    result = extract(samples.write_pptx(tmp_path / "launch.pptx"))
    assert result.kind == "pptx"
    assert result.title == "Launch Plan"
    assert len(result.pages) == 2 and result.pages[0] == 0
    first, second = result.text[: result.pages[1]], result.text[result.pages[1]:]
    assert first.startswith("## Slide 1: Launch Plan")
    assert "Rockets need fuel" in first and "Notes: Speaker note about the countdown" in first
    assert second.startswith("## Slide 2: Landing")
    assert "Parachutes open at altitude" in second
    assert first.count("Launch Plan") == 1  # the title is not repeated as body text


def test_xlsx_sheets_as_tab_separated_blocks(tmp_path):
    result = extract(samples.write_xlsx(tmp_path / "people.xlsx"))
    assert result.kind == "xlsx"
    assert result.text == ("## Sheet: People\nName\tAge\tCity\nAda\t36\tLondon\nGrace\t85\tArlington\n\n"
                           "## Sheet: Totals\nMetric\tValue\nSum\t121.5")
    assert result.title == "people.xlsx"


def test_xlsx_cell_cap(tmp_path):
    path = samples.write_xlsx(tmp_path / "people.xlsx")
    result = extract(path, Limits(max_sheet_cells=7))
    assert "Ada\t36\tLondon" in result.text
    assert "Grace" not in result.text and "Totals" not in result.text
    assert any("cells" in w for w in result.warnings)


# ---------------------------------------------------------------- CSV, TSV, JSON


def test_csv_with_sniffed_dialect(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text('product;price;note\nApple;1,20;"crisp; red"\nPear;0,90;"soft\nand sweet"\n',
                    encoding="utf-8")
    result = extract(path)
    assert result.kind == "csv"
    assert result.text.split("\n") == ["product\tprice\tnote", "Apple\t1,20\tcrisp; red",
                                       "Pear\t0,90\tsoft and sweet"]


def test_tsv_rows(tmp_path):
    path = tmp_path / "table.tsv"
    path.write_text('id\tname\n1\t"quoted\n2\tplain\n', encoding="utf-8")
    result = extract(path)
    assert result.kind == "tsv"
    assert result.text.split("\n") == ["id\tname", '1\t"quoted', "2\tplain"]


def test_json_is_pretty_printed(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"title": "Settings", "items": [1, 2], "name": "Zoë"}', encoding="utf-8")
    result = extract(path)
    assert result.kind == "json"
    assert result.text == json.dumps({"title": "Settings", "items": [1, 2], "name": "Zoë"}, indent=2,
                                     ensure_ascii=False)
    assert result.title == "Settings"
    assert result.warnings == ()


def test_invalid_json_is_kept_with_a_warning(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"a": 1,\n "b": }', encoding="utf-8")
    result = extract(path)
    assert result.text == '{"a": 1,\n "b": }'
    assert result.warnings and "not valid JSON (line 2" in result.warnings[0]


def test_deeply_nested_json_is_kept_as_written(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    result = extract(path)
    assert result.text.startswith("[[[[")
    assert result.warnings == ("too deeply nested or too large to reformat; kept as written",)


# ---------------------------------------------------------------- e-mail


def test_eml_with_plain_body(tmp_path):
    result = extract(samples.write_eml_plain(tmp_path / "lunch.eml"))
    assert result.kind == "email"
    assert result.title == "Lunch on Friday"
    lines = result.text.split("\n")
    assert lines[:4] == ["From: Alice Example <alice@example.org>", "To: Bob Example <bob@example.org>",
                         "Date: Tue, 04 Mar 2025 10:00:00 +0000", "Subject: Lunch on Friday"]
    assert "Shall we meet at the café at noon?" in result.text
    assert "Attachments" not in result.text


def test_eml_with_html_body_and_attachment(tmp_path):
    result = extract(samples.write_eml_html_with_attachment(tmp_path / "news.eml"))
    assert result.title == "Monthly newsletter"
    assert "# News" in result.text and "The garden opened today." in result.text
    assert "track()" not in result.text and "color" not in result.text
    assert result.text.endswith("Attachments: agenda.pdf")


# ---------------------------------------------------------------- bad input


def test_zip_bomb_docx_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    import docx

    def never(*args, **kwargs):
        raise AssertionError("python-docx must not open a zip bomb")

    monkeypatch.setattr(docx, "Document", never)
    path = samples.write_streamed_zip_bomb(tmp_path / "bomb.docx")
    assert path.stat().st_size < 2 * 2**20
    error = refused(path, "zip_bomb")
    assert "300 MB" in str(error)


def test_zip_bomb_by_compression_ratio(tmp_path):
    path = samples.write_streamed_zip_bomb(tmp_path / "dense.xlsx", megabytes=20)
    error = refused(path, "zip_bomb")
    assert "compressed" in str(error)


def test_zip_with_forged_sizes_is_refused(tmp_path):
    path = samples.write_forged_zip(tmp_path / "forged.pptx", declared=300 * 2**20)
    refused(path, "zip_bomb")


def test_random_bytes_named_docx(tmp_path):
    path = tmp_path / "noise.docx"
    path.write_bytes(random.Random(7).randbytes(5000))
    error = refused(path, "corrupt")
    assert "Word document" in str(error)


def test_zip_that_is_not_a_word_document(tmp_path):
    path = samples.write_forged_zip(tmp_path / "wrong.docx", declared=13)
    refused(path, "corrupt")


def test_old_binary_office_file_renamed(tmp_path):
    path = tmp_path / "legacy.docx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(2000))
    error = refused(path, "unsupported")
    assert "Word 97-2003" in str(error)


def test_binary_file_with_text_name(tmp_path):
    path = tmp_path / "photo.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(3).randbytes(3000))
    error = refused(path, "binary")
    assert "binary" in str(error)


def test_utf16_without_bom_counts_as_binary(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_bytes("no byte order mark here".encode("utf-16-le"))
    refused(path, "binary")


def test_presentation_without_text_is_empty(tmp_path):
    from pptx import Presentation

    presentation = Presentation()
    presentation.slides.add_slide(presentation.slide_layouts[6])  # blank layout
    path = tmp_path / "blank.pptx"
    presentation.save(str(path))
    refused(path, "empty")


def test_vanished_file(tmp_path):
    path = tmp_path / "gone.md"
    path.write_text("# soon gone", encoding="utf-8")
    path.unlink()
    error = refused(path, "vanished")
    assert "no longer there" in str(error)


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "private.txt"
    path.write_text("top secret", encoding="utf-8")
    real_open = Path.open

    def denied(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    error = refused(path, "unreadable")
    assert "permission denied" in str(error)


def test_directory_is_unreadable(tmp_path):
    path = tmp_path / "folder.txt"
    path.mkdir()
    error = refused(path, "unreadable")
    assert "folder" in str(error)


def test_too_large_file(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x" * 3000, encoding="utf-8")
    error = refused(path, "too_large", Limits(max_file_bytes=1024))
    assert "1 KB" in str(error)
    assert "enclave settings set max_document_mb N" in str(error)


def test_empty_file(tmp_path):
    path = tmp_path / "blank.md"
    path.write_bytes(b"")
    refused(path, "empty")
    path.write_text("  \n\n \t\n", encoding="utf-8")
    refused(path, "empty")


def test_unsupported_type(tmp_path):
    path = tmp_path / "movie.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    error = refused(path, "unsupported")
    assert "PDF" in str(error)


def test_extraction_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(ExtractionError("x.pdf is password-protected.", reason="encrypted")))
    assert isinstance(error, ExtractionError)
    assert error.reason == "encrypted" and str(error) == "x.pdf is password-protected."
    with pytest.raises(ValueError):
        ExtractionError("bad", reason="no_such_reason")


def test_text_cap(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("abcdefghij" * 100, encoding="utf-8")
    result = extract(path, Limits(max_text_chars=25))
    assert result.text == "abcdefghij" * 2 + "abcde"
    assert any("cut" in w for w in result.warnings)


def test_nothing_but_extraction_errors_from_damaged_files(tmp_path):
    """Every sample cut short or overwritten with noise gives text or an ExtractionError, nothing else."""
    sources = {
        "a.pdf": samples.write_pdf(tmp_path / "src.pdf").read_bytes(),
        "a.docx": samples.write_docx(tmp_path / "src.docx").read_bytes(),
        "a.pptx": samples.write_pptx(tmp_path / "src.pptx").read_bytes(),
        "a.xlsx": samples.write_xlsx(tmp_path / "src.xlsx").read_bytes(),
        "a.eml": samples.write_eml_html_with_attachment(tmp_path / "src.eml").read_bytes(),
        "a.html": b"<html><body><p>" * 50,
        "a.json": b'{"a": [' * 2000,
        "a.csv": b'"unterminated,\x00quote\n' * 10,
    }
    rng = random.Random(42)
    for name, data in sources.items():
        variants = [data[: len(data) * k // 5] for k in range(1, 5)]
        variants.append(bytes(b if rng.random() > 0.02 else rng.randrange(256) for b in data))
        for variant in variants:
            path = tmp_path / "damaged" / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(variant)
            try:
                result = extract(path)
            except ExtractionError as error:
                assert str(error) and error.reason
            else:
                assert isinstance(result, Extracted) and result.text.strip()


# ---------------------------------------------------------------- kinds


def test_kind_of_by_extension_and_sniff(tmp_path):
    assert kind_of(Path("a.PDF")) == "pdf"
    assert kind_of(Path("notes.markdown")) == "markdown"
    assert kind_of(Path("main.rs")) == "code"
    assert kind_of(Path("mail.eml")) == "email"
    assert kind_of(Path("data.tsv")) == "tsv"
    assert kind_of(Path("Makefile")) == "code"
    assert kind_of(Path("song.mp3")) is None
    plain = tmp_path / "NOTES"
    plain.write_text("just some words\n", encoding="utf-8")
    assert kind_of(plain) == "text"
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 4)
    assert kind_of(blob) is None
    video = tmp_path / "clip.ts"
    video.write_bytes((b"\x47" + bytes(187)) * 4)
    assert kind_of(video) is None
    script = tmp_path / "app.ts"
    script.write_text("export const x: number = 1;\n", encoding="utf-8")
    assert kind_of(script) == "code"


def _text_sample(path: Path) -> str:
    path.write_text("A marmot whistles at dawn.\n", encoding="utf-8")
    return "marmot whistles"


def _html_sample(path: Path) -> str:
    path.write_text("<html><body><p>A marmot whistles at dawn.</p></body></html>", encoding="utf-8")
    return "marmot whistles"


def _table_sample(separator: str) -> Callable[[Path], str]:
    def write(path: Path) -> str:
        path.write_text(f"animal{separator}sound\nmarmot{separator}whistle\n", encoding="utf-8")
        return "marmot"
    return write


def _json_sample(path: Path) -> str:
    path.write_text('{"animal": "marmot"}', encoding="utf-8")
    return "marmot"


def _built(builder: Callable[[Path], Path], phrase: str) -> Callable[[Path], str]:
    return lambda path: (builder(path), phrase)[1]


# extension -> (the kind it is read as, a writer of a sample that returns a phrase of its text);
# every other supported extension is a text, Markdown or source file.
RICH_SAMPLES: dict[str, tuple[str, Callable[[Path], str]]] = {
    ".pdf": ("pdf", _built(samples.write_pdf, "alpha apples")),
    ".docx": ("docx", _built(samples.write_docx, "Project Orion")),
    ".pptx": ("pptx", _built(samples.write_pptx, "Rockets need fuel")),
    ".xlsx": ("xlsx", _built(samples.write_xlsx, "Grace")),
    ".xlsm": ("xlsx", _built(samples.write_xlsx, "Grace")),
    ".eml": ("email", _built(samples.write_eml_plain, "meet at the café")),
    **{ext: ("html", _html_sample) for ext in (".html", ".htm", ".xhtml")},
    ".csv": ("csv", _table_sample(",")),
    **{ext: ("tsv", _table_sample("\t")) for ext in (".tsv", ".tab")},
    **{ext: ("json", _json_sample) for ext in (".json", ".geojson")},
}


@pytest.mark.parametrize("ext", sorted(SUPPORTED_EXTENSIONS))
def test_every_supported_extension_is_read(tmp_path, ext):
    path = tmp_path / f"sample{ext}"
    kind, write = RICH_SAMPLES.get(ext, (None, _text_sample))
    phrase = write(path)
    result = extract(path)
    assert result.kind in ({kind} if kind else {"text", "markdown", "code"}) and phrase in result.text


def test_the_documented_formats_are_supported():
    for ext in (".txt", ".md", ".py", ".html", ".pdf", ".docx", ".pptx", ".xlsx", ".csv", ".tsv", ".json", ".eml",
                ".yaml", ".tex", ".sql"):
        assert kind_of(Path(f"file{ext.upper()}")) is not None, ext
    assert kind_of(Path("song.mp3")) is None and ".mp3" not in SUPPORTED_EXTENSIONS


def test_is_probably_binary():
    assert not is_probably_binary(b"")
    assert not is_probably_binary("plain text, with accents: é\n".encode())
    assert not is_probably_binary("x".encode("utf-16"))
    assert is_probably_binary(b"abc\x00def")
    assert is_probably_binary(bytes(range(1, 32)) * 10)
    assert is_probably_binary(os.urandom(8192))
