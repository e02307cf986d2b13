"""The libraries page: drops ingest, per-library drops, cancel, token line, sizing, chat."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from app.library_sizing import DEFAULT_RESERVE, library_tokens, needed_context
from app.services import Services
from inference.fingerprint import model_fingerprint
from tests.shown import shown
from ui.libraries_page import LibrariesPage
from ui.library_documents import STATUS, TITLE, TOKENS
from ui.tasks import TaskRunner
from ui.theme import error_color

BINARY = bytes(range(256)) * 8  # NUL bytes and control characters: not text, whatever the name says




def make_page(qtbot: QtBot, services: Services, tasks: TaskRunner | None = None) -> LibrariesPage:
    page = LibrariesPage(services, tasks or TaskRunner(synchronous=True))
    page.default_name = "Documents"
    page.progress_interval = 0  # every file's progress, so a test can act on it
    shown(qtbot, page, (1000, 700))
    return page


@pytest.fixture
def page(qtbot: QtBot, services: Services) -> LibrariesPage:
    return make_page(qtbot, services)


def mime_for(paths: list[Path]) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def drop(page: LibrariesPage, paths: list[Path], pos: QPoint) -> QDropEvent:
    mime = mime_for(paths)
    event = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    page.dropEvent(event)
    assert event.isAccepted()
    return event


def on_table(page: LibrariesPage) -> QPoint:
    return page.table.mapTo(page, page.table.rect().center())


def on_library(page: LibrariesPage, library_id: int) -> QPoint:
    item = page._item(library_id)
    assert item is not None
    center = page.library_list.visualItemRect(item).center()
    return page.library_list.viewport().mapTo(page, center)


def table_rows(page: LibrariesPage) -> dict[str, dict[int, object]]:
    """Title -> {column: display text} as the table shows it."""
    model = page.documents
    rows: dict[str, dict[int, object]] = {}
    for row in range(model.rowCount()):
        title = model.index(row, TITLE).data()
        rows[title] = {c: model.index(row, c).data() for c in range(model.columnCount())}
    return rows


def folder_with_a_binary(root: Path) -> Path:
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "memo.txt").write_text("The planner keeps attention in VRAM.\n")
    (root / "notes" / "plan.md").write_text("# Plan\n\nExperts go to RAM first.\n")
    (root / "broken.txt").write_bytes(BINARY)
    return root


def many_files(root: Path, n: int, words: int = 400) -> list[Path]:
    root.mkdir(parents=True)
    files = []
    for i in range(n):
        path = root / f"doc{i:03d}.txt"
        path.write_text(f"Document {i}. " + " ".join(f"word{i}-{k}" for k in range(words)) + "\n")
        files.append(path)
    return files


def test_dropping_files_and_a_folder_ingests_them(qtbot: QtBot, page: LibrariesPage, services: Services,
                                                  tmp_path: Path) -> None:
    single = tmp_path / "single.md"
    single.write_text("# Single\n\nA lone file.\n")
    folder = folder_with_a_binary(tmp_path / "folder")
    mime = mime_for([single])  # kept alive: the event does not own it
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    page.dragEnterEvent(enter)
    assert enter.isAccepted()
    assert page.library_list.count() == 0

    with qtbot.waitSignal(page.librariesChanged):
        drop(page, [single, folder], on_table(page))

    [library] = services.libraries.all()
    assert library.name == "Documents"  # no library yet: one was made (default_name, no dialog)
    assert (library.documents, library.failed) == (3, 1)
    assert page.selected_library_id() == library.id
    rows = table_rows(page)
    assert set(rows) == {"Single — single.md", "Plan — plan.md", "memo.txt", "broken.txt"}
    statuses = {title: cols[STATUS] for title, cols in rows.items()}
    assert sorted(statuses.values()) == ["Not read: not text (binary data)",
                                         "Read", "Read", "Read"]
    broken_row = next(r for r in range(page.documents.rowCount())
                      if page.documents.document(r).path.endswith("broken.txt"))
    status = page.documents.index(broken_row, STATUS)
    assert status.data(Qt.ItemDataRole.ForegroundRole) == QColor(error_color())
    assert "broken.txt" in status.data(Qt.ItemDataRole.ToolTipRole)
    assert page.documents.index(broken_row, TOKENS).data() == "—"
    assert "3 added" in page.ingest_panel.summary.text()
    assert "1 could not be read" in page.ingest_panel.summary.text()
    assert page.ingest_panel.failures.count() == 1
    assert "binary" in page.ingest_panel.failures.item(0).text()
    assert page.library_list.currentItem().text() == "Documents\n3 documents, 1 not readable"


def test_a_drop_on_a_library_goes_to_that_library(page: LibrariesPage, services: Services, tmp_path: Path) -> None:
    first = services.libraries.create("First")
    second = services.libraries.create("Second")
    page.refresh()
    page.open_library(first.id)
    note = tmp_path / "note.txt"
    note.write_text("For the second library.\n")

    drop(page, [note], on_library(page, second.id))

    assert [d.path for d in services.libraries.documents(second.id)] == [str(note)]
    assert services.libraries.documents(first.id) == []
    other = tmp_path / "other.txt"
    other.write_text("For the selected library.\n")
    drop(page, [other], on_table(page))  # not on a library: the selected one
    assert [d.path for d in services.libraries.documents(first.id)] == [str(other)]


def test_include_and_exclude_globs_apply(page: LibrariesPage, services: Services, tmp_path: Path) -> None:
    folder = folder_with_a_binary(tmp_path / "folder")
    page.include_edit.setText("*.md, *.txt")
    page.exclude_edit.setText("broken.*")
    page.add_paths([folder])
    [library] = services.libraries.all()
    assert sorted(Path(d.path).name for d in services.libraries.documents(library.id)) == ["memo.txt", "plan.md"]


def test_cancel_stops_between_files_and_keeps_whole_documents(page: LibrariesPage, services: Services,
                                                              tmp_path: Path) -> None:
    files = many_files(tmp_path / "many", 40)
    library = services.libraries.create("Big")
    page.refresh()

    def click_cancel_at(value: int) -> None:
        if value == 3:
            page.ingest_panel.cancel_button.click()

    page.ingest_panel.bar.valueChanged.connect(click_cancel_at)
    page.add_paths([tmp_path / "many"])

    documents = services.libraries.documents(library.id)
    assert len(documents) == 4  # files 0-2, and file 3 that was being read when Cancel was clicked
    for doc in documents:
        source = Path(doc.path).read_text()
        assert doc.ok and services.libraries.content(doc.sha256 or "").text.strip() == source.strip()
    assert [d.path for d in documents] == [str(f) for f in files[:4]]
    assert "(cancelled)" in page.ingest_panel.summary.text()
    assert page.ingest_panel.status.text().startswith("Cancelled")
    assert not page.ingesting
    assert page.documents.rowCount() == 4


def test_token_line_estimates_without_a_model(page: LibrariesPage, services: Services, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("A short note about experts and attention.\n")
    page.add_paths([small])
    [library] = services.libraries.all()
    tokens, exact, _ = library_tokens(services.libraries, library.id, "")
    assert not exact
    line = page.token_line.text()
    assert line.startswith(f"Whole library: about {tokens:,} tokens (estimated: no default model chosen)")
    assert line.endswith("fits in the current context (8,192 tokens)")
    assert page.table.model().index(0, TOKENS).data().endswith(" chars")
    assert page.count_button.isHidden()

    big = tmp_path / "big.txt"
    big.write_text("lorem ipsum dolor sit amet " * 4000)  # ~108,000 characters: ~34,000 tokens
    page.add_paths([big])
    assert "does not fit in the current context (8,192 tokens; it needs" in page.token_line.text()
    assert page.tokens is not None and not page.tokens.fits


def test_exact_tokens_and_sizing_with_the_default_model(page: LibrariesPage, services: Services, tmp_path: Path,
                                                        moe_model: Path) -> None:
    model = services.models.import_files([moe_model], "in_place")
    services.settings.set("default_model", model.id)
    notes = tmp_path / "notes.txt"
    notes.write_text("The planner puts attention and the KV cache in VRAM, experts in RAM.\n" * 20)
    page.add_paths([notes])
    [library] = services.libraries.all()

    tokenizer = model_fingerprint(moe_model)
    assert library_tokens(services.libraries, library.id, tokenizer).exact  # counted by the page, and cached
    counted_now = services.library_tokens(library.id)  # the one figure: what a prompt holds, delimiters too
    tokens = counted_now.tokens
    assert counted_now.exact
    line = page.token_line.text()
    # the settings ask for 8,192 tokens; the tiny model is loaded with at most its trained 4,096
    assert line.startswith(f"Whole library: {tokens:,} tokens — fits in the current context (4,096 tokens)")
    [doc] = services.libraries.documents(library.id)
    counted = services.libraries.token_counts([doc.sha256 or ""], tokenizer)[doc.sha256]
    assert page.documents.index(0, TOKENS).data() == f"{counted:,}"
    assert counted > 0 and counted != int(doc.chars / 3.2)  # a real count, not the length estimate

    page.size_button.click()
    need = needed_context(tokens, 0, DEFAULT_RESERVE)
    assert need <= 4096  # the tiny model's trained context
    verdict = page.sizing_line.text()
    assert verdict.startswith(f"{model.name}: Library: {tokens:,} tokens; needs a context of {need:,}; KV cache")
    assert "Fits" in verdict and verdict.endswith(f"now loads with a context of {need:,} tokens.")
    assert services.profile(model.id).n_ctx == need
    assert f"fits in the current context ({need:,} tokens)" in page.token_line.text()


def test_chat_with_this_library_emits_its_id(qtbot: QtBot, page: LibrariesPage, services: Services) -> None:
    services.libraries.create("Alpha")
    beta = services.libraries.create("Beta")
    page.refresh()
    page.open_library(beta.id)
    with qtbot.waitSignal(page.chatWithLibrary) as blocker:
        page.chat_button.click()
    assert blocker.args == [beta.id]


def test_remove_document_and_delete_library(qtbot: QtBot, page: LibrariesPage, services: Services, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = folder_with_a_binary(tmp_path / "folder")
    page.add_paths([folder])
    [library] = services.libraries.all()
    page.table.selectRow(0)
    removed = page.documents.document(0)
    page.remove_button.click()
    assert removed.id not in {d.id for d in services.libraries.documents(library.id)}
    assert page.documents.rowCount() == 2

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    page.delete_button.click()
    assert services.libraries.find(library.id) is not None
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(page.librariesChanged):
        page.delete_button.click()
    assert services.libraries.all() == []
    assert page.library_list.count() == 0 and page.documents.rowCount() == 0


def test_the_gui_stays_responsive_while_a_folder_is_added(qtbot: QtBot, services: Services, tmp_path: Path) -> None:
    tasks = TaskRunner()
    page = make_page(qtbot, services, tasks)
    page.progress_interval = 0.05
    many_files(tmp_path / "many", 150, words=1500)
    library = services.libraries.create("Big")
    page.refresh()
    ticks: list[float] = []
    progress_seen: list[str] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()) if page.ingesting else None)
    page.ingest_panel.bar.valueChanged.connect(lambda v: progress_seen.append(page.ingest_panel.status.text()))
    timer.start()
    try:
        page.add_paths([tmp_path / "many"])
        assert page.ingesting  # returned at once; the files are read on a pool thread
        qtbot.waitUntil(lambda: not page.ingesting, timeout=60_000)
    finally:
        timer.stop()
        assert tasks.wait()
    qtbot.waitUntil(lambda: "counting" not in page.token_line.text(), timeout=10_000)
    assert len(ticks) >= 5  # the event loop kept running while files were read
    longest = max(b - a for a, b in pairwise(ticks))
    assert longest < 0.5  # measured: under 10 ms
    assert len(progress_seen) >= 2 and any(" of 150 files" in text for text in progress_seen)
    assert services.libraries.get(library.id).documents == 150
    assert page.documents.rowCount() == 150
    assert page.ingest_panel.summary.text().startswith("150 added")
