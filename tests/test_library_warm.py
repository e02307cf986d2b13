"""Warm libraries: the library's KV prefix computed before the first question, so that
question (also in another process, after a restart) evaluates only itself; cancellable;
the libraries page warms a library by itself after documents are added."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytestqt.qtbot import QtBot

from app.chat import ReplyFinished
from app.cli import cli
from app.cli.common import ProgressLine, pace
from app.conversations import Message
from app.encryption import encrypt_database
from app.ingest import ingest
from app.libraries import Library
from app.services import Services
from tests.cli import enclave
from ui.libraries_page import LibrariesPage
from ui.main_window import MainWindow
from ui.tasks import TaskRunner

QUESTION = "Which document is about orchards?"
SETTINGS = (("max_tokens", 6), ("temperature", 0.0), ("context_length", 4096), ("threads", 2))


@pytest.fixture
def library_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, topic in enumerate(["apples and orchards", "the memory planner", "secure offline work", "pears"]):
        (folder / f"{i}.txt").write_text(f"Document {i} is about {topic}. " * 15)
    return folder


def configure(services: Services, model: Path) -> None:
    for key, value in (*SETTINGS, ("default_model", str(model))):
        services.settings.set(key, value)


def docs_library(services: Services, model: Path, folder: Path) -> Library:
    """The settings, the default model and a library 'docs' of ``folder``, not warmed yet."""
    configure(services, model)
    library = services.libraries.create("docs")
    ingest(services.libraries, library, [folder])
    return library


def ask(services: Services, library_id: int, question: str = QUESTION) -> Message:
    conversation = services.chat.start(library_id=library_id)
    final = list(services.chat.send(conversation.id, question))[-1]
    assert isinstance(final, ReplyFinished) and final.message.status == "complete", final
    return final.message


def saved_tokens(services: Services, documents: int = 4) -> int:
    """The library's saved KV: one block per document (library_attention = isolated)."""
    entries = services.prompt_cache.entries()
    assert len(entries) == documents and {e.kind for e in entries} == {"block"}, entries
    return sum(e.tokens for e in entries)


def question_tokens(services: Services, question: str = QUESTION) -> int:
    """The question and the chat template's frame around it (the tiny model's ChatML), with
    the end of the system turn that follows the documents."""
    tokenize = services.runtime.worker.tokenize
    frame = "<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"
    return len(tokenize(question, add_special=False)) + len(tokenize(frame, add_special=False)) + 1


def test_warm_then_ask_in_another_process_evaluates_only_the_question(enclave_home: Path, moe_model: Path,
                                                                      library_folder: Path) -> None:
    with Services.open() as services:
        configure(services, moe_model)
    assert enclave("library", "add", "docs", str(library_folder), "--create", home=enclave_home).returncode == 0
    cold = enclave("library", "show", "docs", home=enclave_home)
    assert "Cold for tiny-moe.gguf" in cold.stdout, cold.stdout + cold.stderr

    warmed = enclave("library", "warm", "docs", home=enclave_home)
    assert warmed.returncode == 0, warmed.stderr
    assert "Warmed docs for tiny-moe.gguf" in warmed.stdout and "evaluates only itself" in warmed.stdout
    shown = json.loads(enclave("library", "show", "docs", "--json", home=enclave_home).stdout)
    assert shown["warmth"]["state"] == "ready" and shown["warmth"]["tokens"] > 1000
    again = enclave("library", "warm", "docs", home=enclave_home)
    assert "was warm already" in again.stdout  # restored from disk: nothing evaluated

    answer = enclave("ask", "--library", "docs", QUESTION, home=enclave_home)
    assert answer.returncode == 0, answer.stderr
    with Services.open() as services:
        assert saved_tokens(services) == shown["warmth"]["tokens"]  # the question used the warm blocks, made no other
        reply = services.conversations.messages(1)[-1]
        assert reply.cached_tokens >= shown["warmth"]["tokens"]
        services.runtime.load(str(moe_model))  # for its tokenizer
        assert reply.prompt_tokens - reply.cached_tokens <= question_tokens(services)


def test_a_cancelled_warm_stays_cold_and_the_next_question_reads_the_library(enclave_home: Path, moe_model: Path,
                                                                             library_folder: Path) -> None:
    with Services.open() as services:
        lib = docs_library(services, moe_model, library_folder)
        seen: list[tuple[int, int]] = []
        report = services.warm_library(lib.id, on_progress=lambda done, total: seen.append((done, total)),
                                       cancelled=lambda: bool(seen))
        assert report.cancelled and seen[-1][0] < seen[-1][1]  # stopped before the end
        assert services.library_warmth(lib.id).state == "cold" and services.prompt_cache.entries() == []
        assert services.warm_library(lib.id, cancelled=lambda: True).cancelled  # asked before anything is loaded

        reply = ask(services, lib.id)
        library = saved_tokens(services)
        assert reply.prompt_tokens > library and services.library_warmth(lib.id).state == "ready"

        warmed = services.warm_library(lib.id)
        assert warmed.evaluated == 0 and warmed.tokens > library  # the question's blocks are the warm ones


def test_warming_reports_progress_and_the_question_restores_it(enclave_home: Path, moe_model: Path,
                                                               library_folder: Path) -> None:
    with Services.open() as services:
        lib = docs_library(services, moe_model, library_folder)
        seen: list[tuple[int, int]] = []
        report = services.warm_library(lib.id, on_progress=lambda done, total: seen.append((done, total)))
        library = saved_tokens(services)
        assert seen[0][0] == 0 and seen[-1] == (library, library) and report.evaluated == library
        assert [d for d, _ in seen] == sorted(d for d, _ in seen) and services.library_warmth(lib.id).state == "ready"
        services.runtime.unload()  # the worker forgets it: the question composes the saved blocks
        reply = ask(services, lib.id)
        assert reply.cached_tokens >= library
        assert reply.prompt_tokens - reply.cached_tokens <= question_tokens(services)

        (library_folder / "4.txt").write_text("Document 4 is about plums. " * 30)
        ingest(services.libraries, lib, [library_folder])
        assert services.library_warmth(lib.id).state == "cold"  # a new document: not current any more


def test_the_progress_line_says_the_rate_and_time_left() -> None:
    assert pace(0, 5.0, 1000) == "" and pace(100, 0.5, 1000) == ""
    assert pace(400, 4.0, 6000) == ", 100 tokens/s, 1 min 00 s left"


def test_the_page_warms_a_library_after_an_add(qtbot: QtBot, services: Services, moe_model: Path,
                                               library_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(services, moe_model)
    page = LibrariesPage(services, TaskRunner(synchronous=True))
    page.default_name = "Documents"
    qtbot.addWidget(page)
    page.new_library()
    assert page.warmth_line.text().startswith("Cold for tiny-moe.gguf")
    texts: list[str] = []
    show = page.warmth_line.setText
    monkeypatch.setattr(page.warmth_line, "setText", lambda text: (texts.append(text), show(text)))

    page.add_paths([library_folder])
    assert page.warmth_line.text().startswith("Ready for tiny-moe.gguf")
    percents = [int(t.removeprefix("Warming for tiny-moe.gguf: ").removesuffix(" %")) for t in texts
                if t.startswith("Warming")]
    assert percents[0] == 0 and percents[-1] == 100 and percents == sorted(percents)
    library_id = page.selected_library_id()
    assert library_id is not None and services.library_warmth(library_id).state == "ready"
    saved_tokens(services)
    assert {e.library_id for e in services.prompt_cache.entries()} == {library_id}


def test_with_an_encrypted_database_a_warm_library_lives_in_the_worker_only(enclave_home: Path, moe_model: Path,
                                                                          library_folder: Path) -> None:
    with Services.open() as services:
        lib = docs_library(services, moe_model, library_folder)
        database = services.paths.database
    encrypt_database(database)
    refused = CliRunner().invoke(cli, ["library", "warm", "docs"])  # in this process: its keyring has the key
    assert refused.exit_code == 2 and "it stays warm while Enclave runs" in refused.output
    with Services.open() as services:
        report = services.warm_library(lib.id)
        assert report.evaluated == report.tokens > 1000 and not report.saved
        warmth = services.library_warmth(lib.id)
        assert warmth.state == "ready" and not warmth.saved and services.prompt_cache.entries() == []
        assert not services.paths.kv_cache.exists() or not any(services.paths.kv_cache.iterdir())
        reply = ask(services, lib.id)  # the worker still holds it
        assert reply.prompt_tokens - reply.cached_tokens <= question_tokens(services)
    with Services.open() as services:  # a restart: nothing was kept
        assert services.library_warmth(lib.id).state == "cold"


def test_ctrl_c_stops_enclave_library_warm(enclave_home: Path, moe_model: Path, library_folder: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with Services.open() as services:
        lib = docs_library(services, moe_model, library_folder)
    steps: list[tuple[int, int]] = []

    class InterruptedAtFirstStep(ProgressLine):
        def show(self, done: int, total: int) -> None:
            steps.append((done, total))
            if len(steps) == 1:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the terminal

    monkeypatch.setattr("app.cli.library.ProgressLine", InterruptedAtFirstStep)
    stopped = CliRunner().invoke(cli, ["library", "warm", "docs"])
    assert stopped.exit_code == 2 and "Stopped: docs stays cold for tiny-moe.gguf" in stopped.output
    assert steps[-1][0] < steps[-1][1]  # before the end
    with Services.open() as services:
        assert services.library_warmth(lib.id).state == "cold" and services.prompt_cache.entries() == []


def test_a_question_waiting_behind_a_warm_up_shows_its_progress(qtbot: QtBot, services: Services, moe_model: Path,
                                                                library_folder: Path) -> None:
    lib = docs_library(services, moe_model, library_folder)
    window = MainWindow(services, TaskRunner(synchronous=True))
    qtbot.addWidget(window)
    chat = window.chat
    chat.open_conversation(services.chat.start(library_id=lib.id).id)
    chat._busy = True  # a question sent, queued on the serial thread behind the warm-up
    window.libraries.warmProgress.emit(lib.id, 400, 1000)
    assert chat.progress.isVisibleTo(chat)
    assert chat.progress.label.text().startswith("Reading the library before your question: 400 / 1,000 tokens")
    window.libraries.warmProgress.emit(lib.id + 1, 10, 1000)  # another library's: not this question's
    assert chat.progress.label.text().startswith("Reading the library before your question: 400")
    window.libraries.warmProgress.emit(lib.id, 1000, 1000)
    assert not chat.progress.isVisibleTo(chat)


def test_removing_a_document_on_the_page_warms_the_library_again(qtbot: QtBot, services: Services, moe_model: Path,
                                                                  library_folder: Path) -> None:
    configure(services, moe_model)
    page = LibrariesPage(services, TaskRunner(synchronous=True))
    page.default_name = "Documents"
    qtbot.addWidget(page)
    page.new_library()
    page.add_paths([library_folder])
    library_id = page.selected_library_id()
    assert library_id is not None and services.library_warmth(library_id).state == "ready"
    before = services.runtime.evaluated_tokens
    page.table.selectRow(1)
    page.remove_selected_documents()
    assert len(services.libraries.documents(library_id)) == 3
    assert page.warmth_line.text().startswith("Ready for tiny-moe.gguf")  # the three blocks were there
    assert services.runtime.evaluated_tokens == before
