"""Exact from the first question: a library's tokens are counted with a model's tokenizer
the first time the model meets it (at ``library add`` for the default model, else before
the first question, with progress), so the first question is sized as the later ones are:
it reads the whole library when this machine holds it, and the context is not loaded again
for the second question."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.ingest import ingest
from app.library_sizing import library_tokens
from app.services import Services
from inference.fingerprint import model_fingerprint
from tests.cli import enclave
from tests.test_ui_libraries import make_page
from tests.tiny_models import DENSE, write_tiny_model
from ui.chat_view import ChatPage
from ui.tasks import TaskRunner

DOCUMENTS = 4
KV_CACHE_MADE = re.compile(r"llama_kv_cache: size = .*?(\d+) cells")


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 32,768 tokens: room for the library the profile's 1,024 lacks."""
    spec = replace(DENSE, name="tiny-long", context_length=32768)
    return write_tiny_model(tmp_path_factory.mktemp("long") / "tiny-long.gguf", spec)


@pytest.fixture
def library_folder(tmp_path: Path) -> Path:
    """Words outside the tiny vocabulary: about a token per character, three times the
    character estimate, so a context sized from the estimate would not hold the library."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, topic in enumerate(["quokkas", "zithers", "fjords", "yurts"]):
        (folder / f"{i}.txt").write_text(f"Document {i}: {topic} vex jumbo zephyrs. " * 40)
    (folder / "broken.txt").write_bytes(b"\x00\x01\x02\xff" * 64)  # a binary named .txt: not readable
    return folder


def configure(services: Services, model: str) -> None:
    for key, value in {"default_model": model, "threads": 2, "max_tokens": 4, "temperature": 0.0,
                       "context_length": 1024}.items():
        services.settings.set(key, value)


def estimated_context(services: Services, library_id: int, model: str) -> int:
    """The context a question loaded with before the library was counted: sized from the
    character estimate (the profile's 1,024 tokens at least, the settings' 4-token reply)."""
    assert counted_shas(services, library_id, services.resolve_model(model))[1] == set()
    return services.chat.library_chat.context_for(library_id, model, 1024, 4).n_ctx  # type: ignore[union-attr]


def contexts_made(log: Path, since: int) -> list[int]:
    """The KV caches llama.cpp made since ``since`` (a vocabulary-only load makes none)."""
    return [int(cells) for cells in KV_CACHE_MADE.findall(log.read_text(errors="replace")[since:])]


def counted_shas(services: Services, library_id: int, model: Path) -> tuple[set[str], set[str]]:
    readable = {d.sha256 for d in services.libraries.documents(library_id, readable_only=True) if d.sha256}
    return readable, set(services.libraries.token_counts(sorted(readable), model_fingerprint(model)))


def test_the_first_cli_question_reads_the_whole_library_with_the_later_context(
        enclave_home: Path, long_model: Path, library_folder: Path) -> None:
    with Services.open() as services:
        configure(services, str(long_model))
        library = services.libraries.create("notes")
        ingest(services.libraries, library, [library_folder])  # not through 'library add': nothing counted
        estimate = estimated_context(services, library.id, str(long_model))
    log = enclave_home / "logs" / "llama.log"
    before = log.stat().st_size if log.exists() else 0
    first = enclave("ask", "What is document 1 about?", "--library", "notes", home=enclave_home)
    assert first.returncode == 0, first.stderr
    assert f"(Counting the library's tokens {DOCUMENTS} / {DOCUMENTS} documents)" in first.stderr
    raised = re.search(r"This library needs a context of ([\d,]+) tokens", first.stderr)
    assert raised is not None, first.stderr
    n_ctx = int(raised.group(1).replace(",", ""))
    assert n_ctx > estimate  # the estimate would have loaded too little and read a BM25 subset
    assert contexts_made(log, before) == [n_ctx]  # counted vocabulary-only, then loaded once

    second = enclave("ask", "And document 2?", "--library", "notes", home=enclave_home)
    assert second.returncode == 0, second.stderr
    assert "Counting the library's tokens" not in second.stderr  # counted once per model
    assert f"This library needs a context of {n_ctx:,} tokens" in second.stderr  # the same context
    with Services.open(readonly=True) as services:
        replies = [m for c in services.conversations.recent() for m in services.conversations.messages(c.id)
                   if m.role == "assistant"]
        assert len(replies) == 2
        for reply in replies:
            assert (reply.context_note or "").startswith(f"Read the whole library: {DOCUMENTS} documents"), reply
        first_reply, second_reply = sorted(replies, key=lambda m: m.id)
        assert second_reply.cached_tokens > first_reply.prompt_tokens // 2  # the first question's KV state, kept


def test_the_first_question_in_the_window_reads_the_whole_library_without_a_reload(
        qtbot: QtBot, services: Services, enclave_home: Path, long_model: Path, library_folder: Path) -> None:
    model = services.models.import_files([long_model], "in_place")
    configure(services, model.id)
    library = services.libraries.create("notes")
    ingest(services.libraries, library, [library_folder])
    estimate = estimated_context(services, library.id, model.id)
    page = ChatPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    page.ask_library_context = lambda need: pytest.fail(f"asked about {need}")  # type: ignore[method-assign]
    shown: list[str] = []
    show_step = page.progress.show_step
    page.progress.show_step = lambda done, total, text: shown.append(text) or show_step(done, total, text)  # type: ignore[method-assign]
    page.new_conversation(library.id)
    log = enclave_home / "logs" / "llama.log"
    before = log.stat().st_size if log.exists() else 0

    page.composer.setPlainText("What is document 1 about?")
    page.submit()
    assert shown and shown[0] == f"Counting the library's tokens 0 / {DOCUMENTS} documents"
    first = services.conversations.messages(page.conversation_id)[-1]  # type: ignore[arg-type]
    assert first.status == "complete", first.error
    assert (first.context_note or "").startswith(f"Read the whole library: {DOCUMENTS} documents")
    settings, pid = services.runtime.worker.settings, services.runtime.worker.pid
    assert settings is not None and settings.n_ctx > estimate and not settings.vocab_only

    page.composer.setPlainText("And document 2?")
    page.submit()
    second = services.conversations.messages(page.conversation_id)[-1]  # type: ignore[arg-type]
    assert second.status == "complete" and (second.context_note or "").startswith("Read the whole library")
    assert services.runtime.worker.settings == settings and services.runtime.worker.pid == pid  # no reload
    assert contexts_made(log, before) == [settings.n_ctx]  # one context for both questions
    assert second.cached_tokens > first.prompt_tokens // 2  # the library came from the first question's KV


def test_library_add_counts_every_readable_document_for_the_default_model(
        enclave_home: Path, long_model: Path, library_folder: Path) -> None:
    with Services.open() as services:
        configure(services, str(long_model))
    added = enclave("library", "add", "notes", str(library_folder), "--create", home=enclave_home)
    assert added.returncode == 0, added.stderr
    assert "Counted with tiny-long.gguf. Whole library: " in added.stdout
    with Services.open(readonly=True) as services:
        library = services.libraries.get("notes")
        readable, counted = counted_shas(services, library.id, long_model)
        assert len(readable) == DOCUMENTS and counted == readable
        assert library.failed == 1  # the unreadable one is listed, not counted
        exact = library_tokens(services.libraries, library.id, model_fingerprint(long_model))
        assert exact.exact and exact.tokens > library_tokens(services.libraries, library.id, "").tokens


def test_a_drop_in_the_window_counts_the_library_it_went_to(
        qtbot: QtBot, services: Services, long_model: Path, library_folder: Path) -> None:
    model = services.models.import_files([long_model], "in_place")
    configure(services, model.id)
    shown = services.libraries.create("Alpha")
    target = services.libraries.create("Beta")
    page = make_page(qtbot, services)
    page.open_library(shown.id)  # the page shows another library than the one the files go to
    page.add_paths([library_folder], library_id=target.id)
    readable, counted = counted_shas(services, target.id, long_model)
    assert len(readable) == DOCUMENTS and counted == readable  # the warm-up after a drop counts before it sizes
