"""Rich documents are read in a child process with a time limit per document: a file made to
be slow is stopped and recorded, a reader that dies is recorded, and the next file gets a
fresh child. Plain text never leaves this process."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from app.extract import ExtractionError, Limits
from app.extract.isolated import IsolatedExtractor
from app.ingest import ingest
from app.libraries import LibraryRepository
from app.store import open_store
from tests import docs_samples as samples

QUICK = Limits(max_seconds=1)


def test_a_document_made_to_be_slow_is_stopped_and_the_next_one_is_read(tmp_path: Path) -> None:
    slow = samples.write_slow_pdf(tmp_path / "slow.pdf")
    good = samples.write_pdf(tmp_path / "good.pdf")
    with IsolatedExtractor() as extractor:
        with pytest.raises(ExtractionError) as error:
            extractor.extract(slow, QUICK)
        assert error.value.reason == "too_slow"
        assert "slow.pdf took longer than 1 second to read and was stopped" in str(error.value)
        assert extractor.pid is None  # killed
        assert "bravo bananas" in extractor.extract(good, QUICK).text
        first = extractor.pid
        assert first is not None and os.waitpid(first, os.WNOHANG) == (0, 0)  # alive, kept for the next one
        assert "charlie cherries" in extractor.extract(good, QUICK).text
        assert extractor.pid == first
    assert extractor.pid is None


def test_a_reader_that_dies_is_recorded_and_replaced(tmp_path: Path) -> None:
    slow = samples.write_slow_pdf(tmp_path / "slow.pdf")
    with IsolatedExtractor() as extractor:
        extractor.extract(samples.write_pdf(tmp_path / "good.pdf"), QUICK)  # the child is up
        pid = extractor.pid
        assert pid is not None
        killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))  # what the OOM killer would do
        killer.start()
        with pytest.raises(ExtractionError) as error:
            extractor.extract(slow, Limits(max_seconds=60))
        killer.join()
        assert error.value.reason == "corrupt" and "stop unexpectedly" in str(error.value)
        assert extractor.extract(tmp_path / "good.pdf", QUICK).kind == "pdf"
        assert extractor.pid != pid


def test_plain_text_is_read_in_this_process(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("plain words")
    with IsolatedExtractor() as extractor:
        assert extractor.extract(tmp_path / "notes.txt", QUICK).text == "plain words"
        assert extractor.pid is None


def test_an_ingest_records_the_slow_document_and_takes_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    samples.write_slow_pdf(folder / "slow.pdf")
    samples.write_pdf(folder / "report.pdf")
    samples.write_docx(folder / "charter.docx")
    (folder / "notes.txt").write_text("plain words")
    with open_store(tmp_path / "db" / "enclave.db") as store:
        repo = LibraryRepository(store)
        report = ingest(repo, repo.create("docs"), [folder], limits=QUICK)
        assert sorted(Path(p).name for p in report.added) == ["charter.docx", "notes.txt", "report.pdf"]
        assert [(Path(p).name, reason) for p, reason, _ in report.failed] == [("slow.pdf", "too_slow")]
        assert "was stopped" in report.failed[0][2]
