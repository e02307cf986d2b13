"""Scanned documents in libraries: a library's vision model transcribes scanned PDF pages and
image files page by page while they are added; without one they are recorded as unread, and
choosing one later reads them again."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image
from pytestqt.qtbot import QtBot

from app.images import SanitizedImage
from app.ingest import ingest
from app.ingest_reasons import status_text
from app.libraries import LibraryRepository
from app.prompting import document_block, page_at
from app.services import Services
from app.store import open_store
from app.transcription import TranscriptionCancelled
from inference.errors import EnclaveError
from tests.cli import enclave


def picture(colour: tuple[int, int, int], size: tuple[int, int] = (60, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def scanned_pdf(path: Path, *colours: tuple[int, int, int]) -> Path:
    """A PDF whose pages are each one picture and no text (what a scanner makes)."""
    pdf = FPDF()
    for colour in colours:
        pdf.add_page()
        pdf.image(io.BytesIO(picture(colour)), x=10, y=10, w=120)
    pdf.output(str(path))
    return path


def mixed_pdf(path: Path) -> Path:
    """Page 1 typed text, page 2 a scan."""
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(0, 10, "Typed page about apples")
    pdf.add_page()
    pdf.image(io.BytesIO(picture((0, 0, 200))), x=10, y=10, w=120)
    pdf.output(str(path))
    return path


class ByColour:
    """A vision model that reads a page's colour as its text: each page's transcription is known."""

    model_name = "fake-vision"

    def __init__(self, cancel_after: int | None = None, fail_on: tuple[int, int, int] | None = None) -> None:
        self.read: list[str] = []
        self.cancel_after = cancel_after
        self.fail_on = fail_on

    def transcribe(self, image: SanitizedImage, cancelled: object) -> str:
        r, g, b = Image.open(io.BytesIO(image.png)).convert("RGB").getpixel((image.width // 2, image.height // 2))
        colour = "red" if r > 150 else "green" if g > 150 else "blue"
        if self.fail_on is not None and (r, g, b) == self.fail_on:
            raise EnclaveError("the worker stopped (test)")
        if self.cancel_after is not None and len(self.read) >= self.cancel_after:
            raise TranscriptionCancelled
        self.read.append(colour)
        return f"The {colour} page says hello."


@pytest.fixture
def repo(tmp_path: Path) -> LibraryRepository:
    return LibraryRepository(open_store(tmp_path / "enclave.db"))


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    scanned_pdf(folder / "a-scan.pdf", (220, 20, 20), (20, 220, 20))
    (folder / "b-photo.png").write_bytes(picture((20, 20, 220)))
    return folder


def test_each_page_is_transcribed_at_its_place_with_progress_and_a_note(repo: LibraryRepository,
                                                                         scans: Path) -> None:
    lib = repo.create("scans")
    said: list[str] = []
    report = ingest(repo, lib, [scans], transcriber=ByColour(),
                    on_progress=lambda p: said.append(p.detail) if p.detail else None)
    assert not report.failed and len(report.added) == 2
    assert said == ["Transcribing a-scan.pdf, page 1 of 2", "Transcribing a-scan.pdf, page 2 of 2",
                    "Transcribing b-photo.png, page 1 of 1"]
    pdf, photo = repo.documents(lib.id)
    content = repo.content(pdf.sha256 or "")
    assert content.text == "The red page says hello.\n\nThe green page says hello."
    assert content.pages == (0, len("The red page says hello.\n\n"))
    assert page_at(content, content.text.index("green")) == 2
    block, _ = document_block(pdf, content)
    assert "[page 2]\nThe green page says hello." in block  # what a citation "[doc N, p. 2]" points at
    assert pdf.transcription_note == "transcribed by fake-vision (pages 1, 2)"
    assert photo.kind == "image" and repo.content(photo.sha256 or "").text == "The blue page says hello."
    assert photo.transcription_note == "transcribed by fake-vision"


def test_a_mixed_pdf_keeps_its_text_page_and_gets_the_scan_transcribed(repo: LibraryRepository,
                                                                       tmp_path: Path) -> None:
    lib = repo.create("mixed")
    ingest(repo, lib, [mixed_pdf(tmp_path / "mixed.pdf")], transcriber=ByColour())
    (doc,) = repo.documents(lib.id)
    content = repo.content(doc.sha256 or "")
    assert content.text.startswith("Typed page about apples") and content.text.endswith("The blue page says hello.")
    assert page_at(content, content.text.index("blue")) == 2
    assert doc.transcription_note == "transcribed by fake-vision (page 2)"


def test_a_page_that_fails_is_a_warning_and_the_rest_goes_in(repo: LibraryRepository, scans: Path) -> None:
    lib = repo.create("scans")
    report = ingest(repo, lib, [scans], transcriber=ByColour(fail_on=(220, 20, 20)))
    assert not report.failed
    pdf = repo.documents(lib.id)[0]
    content = repo.content(pdf.sha256 or "")
    assert content.text == "\n\nThe green page says hello." and pdf.transcribed_pages == (2,)
    warnings = repo.store.read().execute("SELECT warnings FROM contents WHERE sha256 = ?", [pdf.sha256]).fetchone()[0]
    assert "page 1 was not transcribed: the worker stopped (test)" in warnings


def test_cancel_in_the_middle_keeps_the_finished_documents(repo: LibraryRepository, tmp_path: Path) -> None:
    folder = tmp_path / "three"
    folder.mkdir()
    (folder / "1.png").write_bytes(picture((220, 20, 20)))
    (folder / "2.png").write_bytes(picture((20, 220, 20)))
    (folder / "3.png").write_bytes(picture((20, 20, 220)))
    lib = repo.create("three")
    report = ingest(repo, lib, [folder], transcriber=ByColour(cancel_after=1))
    assert report.cancelled and report.added == [str(folder / "1.png")]
    assert [Path(d.path).name for d in repo.documents(lib.id)] == ["1.png"]


def test_without_a_vision_model_scans_are_unread_with_how_to_choose_one(repo: LibraryRepository,
                                                                        scans: Path) -> None:
    lib = repo.create("scans")
    report = ingest(repo, lib, [scans])
    assert {Path(p).name: r for p, r, _ in report.failed} == {"a-scan.pdf": "no_text", "b-photo.png": "no_text"}
    assert [Path(d.path).name for d in repo.unread_scans(lib.id)] == ["a-scan.pdf", "b-photo.png"]
    doc = repo.unread_scans(lib.id)[0]
    assert status_text(doc.error, doc.error_reason) == "Not read: scanned or an image: needs a vision model"
    assert "enclave library vision LIB MODEL" in (doc.error or "")


# With the real tiny vision model ----------------------------------------------------------


def small_settings(services: Services) -> None:
    for key, value in (("max_tokens", 8), ("temperature", 0.0), ("context_length", 2048), ("threads", 2),
                       ("library_attention", "joint")):
        services.settings.set(key, value)


def test_a_text_only_model_is_refused_as_a_vision_model(services: Services, moe_model: Path) -> None:
    model = services.import_model(moe_model).imported[0]
    lib = services.libraries.create("scans")
    with pytest.raises(EnclaveError, match=rf"{model.name} reads text only: import it with its projector"):
        services.set_library_vision(lib.id, model.id)
    assert services.libraries.get(lib.id).vision_model is None


def test_the_real_vision_model_transcribes_and_a_later_choice_rereads(services: Services, dense_model: Path,
                                                                      projector: Path, scans: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.transcription.MAX_TOKENS", 6)  # the tiny model's words: a few are enough
    small_settings(services)
    model = services.import_model(dense_model, mmproj=projector).imported[0]
    lib = services.libraries.create("scans")
    first = services.add_to_library(lib.id, [scans])
    assert len(first.failed) == 2 and len(services.libraries.unread_scans(lib.id)) == 2

    assert services.set_library_vision(lib.id, model.id).vision_model == model.id
    details: list[str] = []
    again = services.reread_scans(lib.id, on_progress=lambda p: details.append(p.detail) if p.detail else None)
    assert "Transcribing a-scan.pdf, page 2 of 2" in details
    read = {Path(d.path).name: d for d in services.libraries.documents(lib.id)}
    assert not services.libraries.unread_scans(lib.id), again.failed
    pdf = read["a-scan.pdf"]
    assert pdf.ok and pdf.transcribed_by == model.name and pdf.transcribed_pages == (1, 2)
    content = services.libraries.content(pdf.sha256 or "")
    assert len(content.pages) == 2 and content.text[content.pages[1]:].strip()  # page 2 holds the model's text

    conversation = services.chat.start(model=model.id, library_id=lib.id)
    reply = list(services.chat.send(conversation.id, "What does page 2 of the scan say?"))[-1]
    sources = {s.document_id for s in reply.message.sources}
    assert pdf.id in sources and read["b-photo.png"].id in sources


def test_the_cli_chooses_a_vision_model_and_says_so(enclave_home: Path, dense_model: Path, moe_model: Path,
                                                    projector: Path, tmp_path: Path) -> None:
    with Services.open() as services:
        vision = services.import_model(dense_model, mmproj=projector).imported[0]
        text_only = services.import_model(moe_model).imported[0]
        services.libraries.create("scans")
    refused = enclave("library", "vision", "scans", text_only.id, home=enclave_home)
    assert refused.returncode == 2 and "reads text only: import it with its projector" in refused.stderr
    chosen = enclave("library", "vision", "scans", vision.id, home=enclave_home)
    assert chosen.returncode == 0, chosen.stderr
    assert f"transcribed by {vision.name}" in chosen.stdout
    shown = enclave("library", "show", "scans", home=enclave_home)
    assert f"Transcribes scans with {vision.name}" in shown.stdout
    listed = enclave("library", "list", home=enclave_home)
    assert f"scans transcribed by {vision.name}" in listed.stdout
    cleared = enclave("library", "vision", "scans", "--none", home=enclave_home)
    assert cleared.returncode == 0 and "recorded as unread" in cleared.stdout
    assert "Transcribes scans with" not in enclave("library", "show", "scans", home=enclave_home).stdout



def test_the_libraries_page_combo_chooses_the_vision_model_and_offers_to_read_the_scans(
        qtbot: object, services: Services, dense_model: Path, moe_model: Path, projector: Path, scans: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from PySide6.QtWidgets import QApplication, QMessageBox

    from tests.shown import shown
    from ui import theme
    from ui.libraries_page import NOBODY, LibrariesPage
    from ui.tasks import TaskRunner

    vision = services.import_model(dense_model, mmproj=projector).imported[0]
    services.import_model(moe_model)  # reads text only: not offered
    lib = services.libraries.create("Scans")
    services.add_to_library(lib.id, [scans])
    page = LibrariesPage(services, TaskRunner(synchronous=True))
    shown(qtbot, page, (1024, 700))
    combo = page.vision_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [NOBODY, vision.name]
    assert combo.currentText() == NOBODY and page.vision_note.text() == "2 scanned documents unread"

    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda parent, title, text: asked.append(text) or QMessageBox.StandardButton.No)
    combo.setCurrentIndex(1)
    combo.activated.emit(1)
    assert services.libraries.get(lib.id).vision_model == vision.id
    assert asked and asked[0].startswith("Transcribe the 2 scanned documents now?")
    assert not page.ingesting  # "No": nothing read yet

    app = QApplication.instance()
    for dark in (False, True):
        app.setPalette(theme.palette_for(dark))
        for size in ((1024, 700), (1920, 1080)):
            page.resize(*size)
            qtbot.wait(20)
            assert combo.geometry().right() <= page.width() and combo.width() >= combo.sizeHint().width() - 2
            page.grab().save(f"/tmp/hlib-libraries-{size[0]}-{'dark' if dark else 'light'}.png")
    combo.setCurrentIndex(0)
    combo.activated.emit(0)
    assert services.libraries.get(lib.id).vision_model is None


def test_the_ingest_panel_says_which_page_is_being_transcribed(qtbot: QtBot) -> None:
    from app.ingest import IngestProgress
    from ui.library_ingest import IngestPanel

    panel = IngestPanel()
    qtbot.addWidget(panel)
    panel._job = object()  # type: ignore[assignment]  # a running job, as start() sets it
    panel.on_progress(IngestProgress(0, 2, 0, 2048, "/docs/a-scan.pdf"), ["/docs/a-scan.pdf"])
    assert panel.status.text().endswith("reading a-scan.pdf")
    panel.on_progress(IngestProgress(0, 2, 0, 2048, "", "Transcribing a-scan.pdf, page 2 of 3"), [])
    assert panel.status.text() == "0 of 2 files (0 B of 2 KiB) — Transcribing a-scan.pdf, page 2 of 3"
    assert panel.files.count() == 1  # the page's progress adds no line to the files read
