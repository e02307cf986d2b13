"""The extractors against truncated and mutated documents of every rich format (PDF, DOCX,
PPTX, XLSX, HTML, e-mail), built from the samples in ``docs_samples``: ``extract`` returns
text or raises ``ExtractionError`` with a known reason, never anything else and never hangs;
and a library ingest of a folder full of them records each failure and takes in the rest."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.extract import Extracted, ExtractionError, extract
from app.extract.base import REASONS
from app.ingest import ingest
from app.libraries import LibraryRepository
from app.store import open_store
from tests import docs_samples as samples
from tests.fuzzing import case, fuzz_settings

HTML = (b"<!DOCTYPE html><html><head><title>Field notes</title><style>p{color:red}</style></head><body>"
        b"<h1>Notes</h1><p>The <b>heron</b> waited by the river.</p><table><tr><td>1</td><td>2</td></tr></table>"
        b"<script>alert(1)</script><ul><li>one</li><li>two</li></ul></body></html>")
EDGE_NUMBERS = [b"0", b"-1", b"1", b"7", b"99999", b"2147483647", b"4294967296", b"9223372036854775807",
                b"99999999999999999999999", b"1e308", b"-0", b"3.5"]
ZIP_KINDS = ("docx", "pptx", "xlsx")


def _writer(build: Callable[[Path], Path]) -> Callable[[Path], bytes]:
    return lambda folder: build(folder / "sample").read_bytes()


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fuzz-docs")
    return {
        "pdf": samples.pdf_bytes(),
        "pdf-plain": samples.pdf_bytes(compress=False),  # its objects, numbers and xref in the clear
        "docx": samples.write_docx(folder / "s.docx").read_bytes(),
        "pptx": samples.write_pptx(folder / "s.pptx").read_bytes(),
        "xlsx": samples.write_xlsx(folder / "s.xlsx").read_bytes(),
        "html": HTML,
        "eml": samples.write_eml_plain(folder / "s.eml").read_bytes(),
        "eml-html": samples.write_eml_html_with_attachment(folder / "a.eml").read_bytes(),
    }


def extension(kind: str) -> str:
    return "." + kind.split("-")[0]


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` cut short, with bytes changed, a stretch removed or repeated, or numbers replaced."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["cut", "flip", "delete", "repeat", "number"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if what == "cut":
            del out[at:]
        elif what == "flip" and out:
            out[at] = draw(st.integers(0, 255))
        elif what == "delete":
            del out[at:at + draw(st.integers(1, 64))]
        elif what == "repeat":
            out[at:at] = out[at:at + draw(st.integers(1, 64))] * draw(st.integers(2, 200))
        else:
            numbers = list(re.finditer(rb"\d+", bytes(out)))
            if numbers:
                number = numbers[draw(st.integers(0, len(numbers) - 1))]
                out[number.start():number.end()] = draw(st.sampled_from(EDGE_NUMBERS))
    return bytes(out)


@st.composite
def mutated_zip(draw: st.DrawFn, data: bytes) -> bytes:
    """An Office file whose ZIP is intact but one part inside is changed (or gone)."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    name = draw(st.sampled_from(sorted(members)))
    if draw(st.integers(0, 9)) == 0:
        del members[name]
    else:
        members[name] = draw(mutated_bytes(members[name]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for member, content in members.items():
            target.writestr(member, content)
    return buffer.getvalue()


@st.composite
def mutated_document(draw: st.DrawFn, originals: dict[str, bytes]) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(originals)))
    if kind in ZIP_KINDS and draw(st.booleans()):
        return kind, draw(mutated_zip(originals[kind]))
    return kind, draw(mutated_bytes(originals[kind]))


def outcome_of(path: Path, kind: str) -> Extracted | ExtractionError:
    with case(f"documents {kind.split('-')[0]}"):
        try:
            return extract(path)
        except ExtractionError as error:
            return error


@fuzz_settings(default=120)
@given(data=st.data())
def test_a_damaged_document_gives_text_or_a_reason(originals: dict[str, bytes], tmp_path: Path,
                                                    data: st.DataObject) -> None:
    kind, content = data.draw(mutated_document(originals))
    path = tmp_path / f"damaged{extension(kind)}"
    path.write_bytes(content)
    outcome = outcome_of(path, kind)
    if isinstance(outcome, ExtractionError):
        assert outcome.reason in REASONS
        assert path.name in str(outcome) and "Traceback" not in str(outcome)
    else:
        assert outcome.text.strip() and outcome.title


def test_every_format_is_fuzzed(originals: dict[str, bytes], tmp_path: Path) -> None:
    """The originals themselves read (so the mutations start from real documents)."""
    for kind, content in originals.items():
        path = tmp_path / f"original{extension(kind)}"
        path.write_bytes(content)
        assert isinstance(outcome_of(path, kind), Extracted), kind


def test_an_ingest_of_damaged_documents_records_each_and_takes_the_rest(
    originals: dict[str, bytes], tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for kind, content in originals.items():
        (folder / f"good-{kind}{extension(kind)}").write_bytes(content)
        (folder / f"cut-{kind}{extension(kind)}").write_bytes(content[: len(content) // 3])
        (folder / f"garbage-{kind}{extension(kind)}").write_bytes(bytes(range(256)) * 4)
    (folder / "deep.html").write_bytes(b"<div>" * 20_000 + b"deep text" + b"</div>" * 20_000)
    (folder / "deep.docx").write_bytes(_docx_with_body(b"<w:p>" * 100_000))
    with open_store(tmp_path / "db" / "enclave.db") as store:
        repo = LibraryRepository(store)
        report = ingest(repo, repo.create("fuzzed"), [folder])
    added = {Path(p).name for p in report.added}
    failed = {Path(p).name: reason for p, reason, _ in report.failed}
    assert {f"good-{kind}{extension(kind)}" for kind in originals} <= added
    assert {f"garbage-{kind}{extension(kind)}" for kind in originals if kind != "eml"} <= set(failed)
    assert set(failed.values()) <= REASONS
    assert len(added) + len(failed) == len(list(folder.iterdir()))  # every file has an outcome


def _docx_with_body(body: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b'<w:document xmlns:w="x"><w:body>' + body + b"</w:body></w:document>")
    return buffer.getvalue()
