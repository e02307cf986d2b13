"""Asking a library with the real tiny model: the library's KV cache is reused in the
worker, restored from disk after a restart, and replaced when the library changes. Here
with ``library_attention = joint`` (one prefix, read in one pass); the per-document blocks
of ``isolated`` are tests/test_library_blocks.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.chat import LibraryNote, PromptProgress, ReplyDelta, ReplyFinished
from app.ingest import ingest
from app.services import Services


def ask(services: Services, library_id: int, model: Path, question: str) -> tuple[list, object]:
    conversation = services.chat.start(model=str(model), library_id=library_id)
    events = list(services.chat.send(conversation.id, question))
    final = events[-1]
    assert isinstance(final, ReplyFinished) and final.message.status == "complete", final
    return events, final.message


@pytest.fixture
def library_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, topic in enumerate(["apples and orchards", "the memory planner", "secure offline work"]):
        (folder / f"{i}.txt").write_text(f"Document {i} is about {topic}. " * 20)
    return folder


def open_services(home: Path) -> Services:
    services = Services.open()
    for key, value in (("max_tokens", 8), ("temperature", 0.0), ("context_length", 4096), ("threads", 2),
                       ("library_attention", "joint")):
        services.settings.set(key, value)
    return services


def test_the_second_question_evaluates_only_itself(enclave_home: Path, moe_model: Path,
                                                   library_folder: Path) -> None:
    with open_services(enclave_home) as services:
        lib = services.libraries.create("docs")
        ingest(services.libraries, lib, [library_folder])
        first_events, first = ask(services, lib.id, moe_model, "What is document 1 about?")
        note = next(e for e in first_events if isinstance(e, LibraryNote))
        assert note.text.startswith("Read the whole library: 3 documents")
        assert first.context_note == note.text
        progress = [e for e in first_events if isinstance(e, PromptProgress)]
        (entry,) = services.prompt_cache.entries()
        assert progress[0].done == 0 and any(p.done == entry.tokens for p in progress)  # the library, read once
        assert Path(entry.path).exists()

        _, second = ask(services, lib.id, moe_model, "And document 2?")
        assert second.cached_tokens >= entry.tokens  # the whole library came from the KV cache
        evaluated = second.prompt_tokens - second.cached_tokens
        tokenize = services.runtime.worker.tokenize
        question_tokens = len(tokenize("And document 2?", add_special=False))
        # the template's: the end of the system turn, the user turn's frame, the answer's start
        frame = len(tokenize("<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n",
                             add_special=False))
        assert question_tokens <= evaluated <= question_tokens + frame + 1
        answer_here = second.content

    with open_services(enclave_home) as services:  # a restart: a new process, the state from disk
        events, third = ask(services, lib.id, moe_model, "And document 2?")
        assert third.cached_tokens >= entry.tokens
        assert not any(isinstance(e, PromptProgress) and 0 < e.done < entry.tokens for e in events)
        assert third.content == answer_here  # restored state, same greedy answer


def test_changing_a_document_replaces_the_cache_and_appending_reuses_it(enclave_home: Path, moe_model: Path,
                                                                        library_folder: Path) -> None:
    with open_services(enclave_home) as services:
        lib = services.libraries.create("docs")
        ingest(services.libraries, lib, [library_folder])
        ask(services, lib.id, moe_model, "Summarise.")
        (old,) = services.prompt_cache.entries()

        (library_folder / "3.txt").write_text("Document 3, added last, is about pears. " * 10)
        ingest(services.libraries, lib, [library_folder])
        events, reply = ask(services, lib.id, moe_model, "Summarise.")
        (new,) = services.prompt_cache.entries()
        assert new.key != old.key and not Path(old.path).exists()  # the stale state is gone
        assert new.tokens > old.tokens
        first_progress = next(e for e in events if isinstance(e, PromptProgress))
        assert first_progress.done >= old.tokens - 16  # only the new document was read
        assert reply.cached_tokens >= new.tokens

        (library_folder / "0.txt").write_text("Document 0 now talks about plums. " * 20)
        ingest(services.libraries, lib, [library_folder])
        events, _ = ask(services, lib.id, moe_model, "Summarise.")
        first_progress = next(e for e in events if isinstance(e, PromptProgress))
        latest = services.prompt_cache.entries()[0]
        assert first_progress.done < latest.tokens // 5  # the first document changed: nearly all is read again
        assert latest.key not in (old.key, new.key)


def test_answers_stream_and_are_stored(enclave_home: Path, moe_model: Path, library_folder: Path) -> None:
    with open_services(enclave_home) as services:
        lib = services.libraries.create("docs")
        ingest(services.libraries, lib, [library_folder])
        events, reply = ask(services, lib.id, moe_model, "Which document is about apples?")
        streamed = "".join(e.answer + e.reasoning for e in events if isinstance(e, ReplyDelta))
        assert streamed == reply.content + reply.reasoning and reply.completion_tokens == 8
        conversation = services.conversations.get(reply.conversation_id)
        assert conversation.library_id == lib.id


def test_a_library_answer_keeps_what_it_was_given_and_what_was_left_out(
        enclave_home: Path, moe_model: Path, library_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.prompting.SECTION_CHARS", 600)  # sections small enough for the tiny context
    with open_services(enclave_home) as services:
        lib = services.libraries.create("docs")
        ingest(services.libraries, lib, [library_folder])
        _, whole = ask(services, lib.id, moe_model, "What is document 1 about?")
        documents = services.libraries.documents(lib.id)
        assert [s.document_id for s in whole.sources] == [d.id for d in documents]
        assert not any(s.left_out or s.section is not None for s in whole.sources)

        # more than the tiny model's trained context: the passages most relevant to the question
        (library_folder / "3.txt").write_text("".join(f"Line {i} of the long report on orchards and apples.\n"
                                                      for i in range(400)))
        ingest(services.libraries, lib, [library_folder])
        _, partial = ask(services, lib.id, moe_model, "What does the long report say?")
        long_report = services.libraries.documents(lib.id)[-1]
        passages = [s for s in partial.sources if s.document_id == long_report.id and not s.left_out]
        text = services.libraries.content(long_report.sha256 or "").text
        assert passages
        assert all(s.section is not None and s.start is not None and s.end is not None
                   and text[s.start:s.end].startswith("Line ") for s in passages)
        assert "does not fit" in (partial.context_note or "")


def test_a_library_has_one_token_count_everywhere(enclave_home: Path, moe_model: Path,
                                                  library_folder: Path) -> None:
    """The library page, `enclave library show` and the answer's note show the same figure."""
    with open_services(enclave_home) as services:
        lib = services.libraries.create("docs")
        ingest(services.libraries, lib, [library_folder])
        _, reply = ask(services, lib.id, moe_model, "What is document 1 about?")
        shown = services.library_tokens(lib.id, str(moe_model))
        assert shown.exact and shown.tokens > sum(shown.per_document.values())  # the delimiters too
        assert f"3 documents, {shown.tokens:,} tokens" in (reply.context_note or "")
        assert f"{shown.tokens:,} tokens" in shown.describe()
