"""Empty states that say what to do, and the About dialog's licence table (offscreen Qt)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PySide6.QtWidgets import QHeaderView
from pytestqt.qtbot import QtBot

from app.licenses import third_party_licenses
from app.services import Services
from tests.shown import shown
from ui.about import COLUMNS, AboutDialog, license_rows
from ui.first_run import FirstRunPage
from ui.libraries_page import LibrariesPage
from ui.models_page import ModelsPage
from ui.tasks import TaskRunner


@pytest.fixture
def services() -> Iterator[Services]:
    with Services.open() as opened:
        yield opened


def test_the_start_screen_mentions_dropping_a_model(qtbot: QtBot, services: Services) -> None:
    page = FirstRunPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    assert page.drop_hint.text.text().startswith("Drop a .gguf model file anywhere on this window")
    assert page.drop_hint.heading.text() == "Start with a model"
    assert not page.import_button.icon().isNull()


def test_libraries_say_to_drop_files_with_no_library_and_with_no_documents(qtbot: QtBot, services: Services) -> None:
    page = LibrariesPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    assert page.table_or_empty.currentWidget() is page.empty
    assert page.empty.heading.text() == "No library yet"
    assert page.empty.text.text().startswith("Drop files or folders here, or press Add files…")
    assert page.add_files_button.isEnabled()  # a library is made for the files
    library = services.libraries.create("Notes")
    page.refresh()
    page.open_library(library.id)
    assert page.empty.heading.text() == "This library has no documents yet"
    assert "Drop files or folders here" in page.empty.text.text() and "PDF" in page.empty.text.text()


def test_the_models_page_says_how_to_get_a_model(qtbot: QtBot, services: Services) -> None:
    page = ModelsPage(services, TaskRunner(synchronous=True))
    shown(qtbot, page, (1024, 700))
    assert page.empty_note.isVisible() and not page.table.isVisible()
    assert page.empty_note.heading.text() == "No models yet"
    assert page.empty_note.text.text().startswith("Drop a .gguf model file here, or press Import file…")
    assert "Catalog" in page.empty_note.text.text()


def test_the_about_licences_are_a_table_with_fitting_columns(qtbot: QtBot, services: Services) -> None:
    dialog = AboutDialog(services.paths)
    shown(qtbot, dialog, (1024, 700))
    table = dialog.table
    rows = license_rows(third_party_licenses())
    assert table.columnCount() == len(COLUMNS) == 3 and table.rowCount() == len(rows) > 20
    assert [table.horizontalHeaderItem(c).text() for c in range(3)] == ["Package", "Version", "Licence"]
    names = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert "PySide6" in names and "llama.cpp / ggml" in names
    row = names.index("PySide6")
    assert table.item(row, 1).text() == rows[row][1] and "LGPL-3.0-only" in table.item(row, 2).text()
    header = table.horizontalHeader()
    assert header.sectionResizeMode(0) == QHeaderView.ResizeMode.ResizeToContents
    for r in range(table.rowCount()):  # every name and version fits its column: nothing elided
        for c in (0, 1):
            assert table.fontMetrics().horizontalAdvance(table.item(r, c).text()) < table.columnWidth(c)
    table.setCurrentCell(row, 0)
    assert dialog.licenses.textCursor().selectedText().startswith(f"PySide6 {rows[row][1]} — ")


def test_license_rows_read_the_summary() -> None:
    text = "Title\n\nSummary\n-------\nfoo     1.0      MIT\nbar baz   (in x)   Apache-2.0 OR MIT\n\nrest\n"
    assert license_rows(text) == [("foo", "1.0", "MIT"), ("bar baz", "(in x)", "Apache-2.0 OR MIT")]
    assert license_rows("no summary") == []
