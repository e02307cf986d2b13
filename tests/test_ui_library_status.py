"""The libraries page in words: why a document was not read (in the table and in full under
it), a title beside its file name, what "skipped" means, and double-click to read a document."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableView
from pytestqt.qtbot import QtBot

from app.cli import cli
from app.extract.base import REASONS
from app.ingest import IngestReport, ingest
from app.ingest_reasons import REASON_PHRASES, report_summary, status_text
from app.services import Services
from tests.docs_samples import write_pdf
from tests.shown import shown
from tests.test_library_transcription import picture
from ui.libraries_page import LibrariesPage
from ui.library_documents import STATUS, TITLE
from ui.tasks import TaskRunner

BINARY = bytes(range(256)) * 8
PAGE_HTML = "<html><head><title>T</title></head><body><p>Ships leave at noon.</p></body></html>"


def a_library(root: Path) -> Path:
    """page.html (titled "T"), a binary named .txt, a PDF of two pages, a hidden file and a picture."""
    root.mkdir()
    (root / "page.html").write_text(PAGE_HTML)
    (root / "broken.txt").write_bytes(BINARY)
    write_pdf(root / "report.pdf")
    (root / ".secret.txt").write_text("hidden")
    (root / "photo.png").write_bytes(picture((230, 230, 230)))  # needs a vision model: recorded as unread
    (root / "tool.exe").write_bytes(b"MZ")
    return root


@pytest.fixture
def page(qtbot: QtBot, services: Services, tmp_path: Path) -> LibrariesPage:
    page = LibrariesPage(services, TaskRunner(synchronous=True))
    page.default_name = "Documents"
    page.progress_interval = 0
    shown(qtbot, page, (1000, 700))
    with qtbot.waitSignal(page.librariesChanged):
        page.add_paths([a_library(tmp_path / "docs")])
    return page


def row_of(page: LibrariesPage, name: str) -> int:
    return next(r for r in range(page.documents.rowCount()) if page.documents.document(r).path.endswith(name))


def select(page: LibrariesPage, row: int) -> None:
    page.table.selectRow(row)


def double_click(qtbot: QtBot, page: LibrariesPage, row: int) -> None:
    """As a user does: the press before the double-click is what the view checks it against."""
    table: QTableView = page.table
    point = table.visualRect(page.documents.index(row, TITLE)).center()
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=point)
    qtbot.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=point)


def test_every_reason_code_has_plain_words() -> None:
    assert set(REASON_PHRASES) == REASONS
    assert len(set(REASON_PHRASES.values())) == len(REASONS)  # each code its own words
    for reason in REASONS:
        assert status_text("the extractor's message", reason) == f"Not read: {REASON_PHRASES[reason]}"
        assert REASON_PHRASES[reason] != reason.replace("_", " ")
    assert status_text("zip.docx was refused …", "zip_bomb") == \
        "Not read: unpacks to far more than its size (a possible zip bomb)"
    assert status_text("scan.pdf has no text layer", "no_text") == \
        "Not read: scanned or an image: needs a vision model"
    assert status_text("an old row's message", None) == "Not read: an old row's message"  # no code: the message
    assert status_text(None, None) == "Read"


def test_summary_says_what_skipped_and_unchanged_mean(services: Services, tmp_path: Path) -> None:
    folder = a_library(tmp_path / "docs")
    library = services.libraries.create("L")
    first = report_summary(ingest(services.libraries, library, [folder]))
    assert first == ("2 added, 2 could not be read, "
                     "2 skipped (1 hidden; 1 of a type Enclave does not read: .exe)")
    again = report_summary(ingest(services.libraries, library, [folder]))
    assert again.startswith("2 unchanged (already in the library), 2 could not be read, 2 skipped (")
    assert report_summary(IngestReport(cancelled=True)) == "No files were found to add (cancelled)"


def test_the_table_shows_title_and_file_name_and_why_in_words(page: LibrariesPage) -> None:
    names = {page.documents.index(r, TITLE).data() for r in range(page.documents.rowCount())}
    assert names == {"T — page.html", "Quarterly Fruit Report — report.pdf", "broken.txt", "photo.png"}
    photo = page.documents.index(row_of(page, "photo.png"), STATUS)
    assert photo.data() == "Not read: scanned or an image: needs a vision model"
    broken = row_of(page, "broken.txt")
    status = page.documents.index(broken, STATUS)
    assert status.data() == "Not read: not text (binary data)"
    assert "broken.txt" in status.data(Qt.ItemDataRole.ToolTipRole)  # the extractor's whole message on hover
    header = page.table.horizontalHeader()
    assert header.sectionResizeMode(STATUS) == header.ResizeMode.Stretch  # the why is not clipped to a code


def test_the_selected_document_is_described_in_full_under_the_table(page: LibrariesPage) -> None:
    broken = page.documents.document(row_of(page, "broken.txt"))
    assert "Select a document" in page.details.text()
    select(page, row_of(page, "broken.txt"))
    details = page.details.text()
    assert "Not read: not text (binary data)." in details
    assert broken.error is not None and broken.error.split(";")[0] in details  # and what to do about it
    assert broken.path in details
    assert not page.open_button.isEnabled()
    select(page, row_of(page, "page.html"))
    assert "T — page.html" in page.details.text() and "Read:" in page.details.text()
    assert page.open_button.isEnabled()


def test_the_ingest_panel_lists_why_files_were_skipped(page: LibrariesPage) -> None:
    panel = page.ingest_panel
    assert "2 skipped (1 hidden; 1 of a type Enclave does not read: .exe)" in panel.summary.text()
    items = [panel.failures.item(i).text() for i in range(panel.failures.count())]
    assert any(i.startswith("broken.txt") and "not text" in i for i in items)
    assert any(i.startswith("photo.png") and "vision model" in i for i in items)
    assert "tool.exe — skipped: not a supported type (.exe)" in items
    assert ".secret.txt — skipped: hidden" in items


def test_double_click_opens_the_document_with_its_text_and_pages(qtbot: QtBot, page: LibrariesPage) -> None:
    double_click(qtbot, page, row_of(page, "report.pdf"))
    viewer = page.viewer
    assert viewer is not None and viewer.isVisible()
    assert viewer.document is not None and viewer.document.path.endswith("report.pdf")
    assert "Quarterly Fruit Report — report.pdf" in viewer.heading.text()
    assert "3 pages" in viewer.heading.text()
    assert viewer.text.toPlainText().strip()
    viewer.close()

    select(page, row_of(page, "page.html"))
    page.open_button.click()
    assert page.viewer is not viewer and "Ships leave at noon." in page.viewer.text.toPlainText()
    page.viewer.close()


def test_double_click_on_a_document_not_read_says_why_instead(qtbot: QtBot, page: LibrariesPage) -> None:
    double_click(qtbot, page, row_of(page, "broken.txt"))
    assert page.viewer is None
    assert "There is no text to show." in page.message.text()
    assert "broken.txt" in page.message.text()


def test_cli_show_uses_the_same_words(services: Services, tmp_path: Path) -> None:
    library = services.libraries.create("docs")
    ingest(services.libraries, library, [a_library(tmp_path / "docs")])
    shown = CliRunner().invoke(cli, ["library", "show", "docs"])
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.output.splitlines() if "broken.txt" in x)
    assert "Not read: not text (binary data)." in line
    assert "NOT READ (binary)" not in shown.output
