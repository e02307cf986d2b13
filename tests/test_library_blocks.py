"""Libraries kept as per-document KV blocks (``library_attention = isolated``): each
document is encoded once, alone after the library's head, and composed into any library
by moving its cells; a document added costs only itself, one removed costs nothing, a stop
keeps every finished block, and a model whose cache cannot move reads the library jointly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from app.ingest import ingest
from app.libraries import Library
from app.services import Services
from inference.engine import Engine
from inference.llama_log import LlamaLog
from inference.protocol import ModelSettings
from tests.cli import enclave
from tests.test_library_warm import ask, docs_library, question_tokens
from tests.tiny_models import ALIBI, DENSE, SLIDING, write_tiny_model


@pytest.fixture
def library_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, topic in enumerate(["apples and orchards", "the memory planner", "secure offline work", "pears"]):
        (folder / f"{i}.txt").write_text(f"Document {i} is about {topic}. " * 15)
    return folder


def blocks(services: Services) -> dict[str, int]:
    """The saved blocks: key -> tokens (and nothing saved but blocks)."""
    entries = services.prompt_cache.entries()
    assert {e.kind for e in entries} <= {"block"}, entries
    return {e.key: e.tokens for e in entries}


def evaluated_while(services: Services, question: str) -> tuple[int, int]:
    """(tokens the worker evaluated while asking ``question``, the reply's prompt tokens not cached)."""
    before = services.runtime.evaluated_tokens
    reply = ask(services, services.libraries.get("docs").id, question)
    return services.runtime.evaluated_tokens - before, reply.prompt_tokens - reply.cached_tokens


def test_a_document_added_to_a_warm_library_costs_only_itself(enclave_home: Path, moe_model: Path,
                                                                library_folder: Path) -> None:
    with Services.open() as services:
        lib = docs_library(services, moe_model, library_folder)
        warmed = services.warm_library(lib.id)
        assert warmed.evaluated == sum(blocks(services).values()) and len(blocks(services)) == 4
        evaluated, tail = evaluated_while(services, "Which document is about pears?")
        assert evaluated == tail <= question_tokens(services, "Which document is about pears?")

        before = blocks(services)
        (library_folder / "4.txt").write_text("Document 4 is about plums and nothing else. " * 12)
        ingest(services.libraries, lib, [library_folder])
        assert services.library_warmth(lib.id).state == "cold"
        evaluated, tail = evaluated_while(services, "Which document is about plums?")
        (new_key,) = set(blocks(services)) - set(before)
        assert tail <= question_tokens(services, "Which document is about plums?")
        assert evaluated == blocks(services)[new_key] + tail  # the new document and the question, nothing else
        assert services.library_warmth(lib.id).state == "ready"


def test_removing_a_middle_document_evaluates_only_the_question(enclave_home: Path, moe_model: Path,
                                                                 library_folder: Path) -> None:
    with Services.open() as services:
        lib = docs_library(services, moe_model, library_folder)
        services.warm_library(lib.id)
        middle = services.libraries.documents(lib.id)[1]
        services.libraries.remove_document(middle.id)
        kept = blocks(services)
        evaluated, tail = evaluated_while(services, QUESTION_PEARS)
        assert evaluated == tail <= question_tokens(services, QUESTION_PEARS)
        assert blocks(services) == kept  # composed from three of the four blocks, none made
        reply = services.conversations.messages(1)[-1]
        assert "3 documents" in (reply.context_note or "")


QUESTION_PEARS = "Which document is about pears?"


def test_another_process_composes_the_saved_blocks(enclave_home: Path, moe_model: Path,
                                                   library_folder: Path) -> None:
    with Services.open() as services:
        lib = docs_library(services, moe_model, library_folder)
        services.warm_library(lib.id)
        made = blocks(services)
    # another process: the blocks come from disk, the question is all that is evaluated
    answer = enclave("ask", "--library", "docs", QUESTION_PEARS, home=enclave_home)
    assert answer.returncode == 0, answer.stderr
    with Services.open() as services:
        reply = services.conversations.messages(1)[-1]
        assert blocks(services) == made and reply.cached_tokens >= sum(made.values())


def test_cancelling_a_warm_up_keeps_every_finished_block(enclave_home: Path, moe_model: Path,
                                                          library_folder: Path) -> None:
    with Services.open() as services:
        lib: Library = docs_library(services, moe_model, library_folder)
        seen: list[tuple[int, int]] = []
        report = services.warm_library(lib.id, on_progress=lambda done, total: seen.append((done, total)),
                                       cancelled=lambda: bool(seen) and seen[-1][0] > seen[-1][1] // 2)
        assert report.cancelled and services.library_warmth(lib.id).state == "cold"
        assert "the documents read so far are kept" in report.describe()
        kept = blocks(services)
        assert 1 <= len(kept) < 4
        total = seen[-1][1]
        again = services.warm_library(lib.id)
        assert not again.cancelled and again.evaluated == total - sum(kept.values())  # only what was missing
        assert set(kept) < set(blocks(services)) and services.library_warmth(lib.id).state == "ready"


def test_a_model_whose_cache_cannot_move_reads_the_library_jointly_and_says_so_once(
        enclave_home: Path, tmp_path: Path, library_folder: Path) -> None:
    alibi = write_tiny_model(tmp_path / "tiny-alibi.gguf", ALIBI)
    with Services.open() as services:
        lib = docs_library(services, alibi, library_folder)
        first = ask(services, lib.id)
        assert "Read the library in one pass" in (first.context_note or "")
        assert "does not use RoPE positions" in (first.context_note or "")
        second = ask(services, lib.id, "And the memory planner?")
        assert "one pass" not in (second.context_note or "")  # said once
        (entry,) = services.prompt_cache.entries()
        assert entry.kind == "prefix" and second.cached_tokens >= entry.tokens


def test_library_attention_is_a_setting_with_two_values(enclave_home: Path) -> None:
    wrong = enclave("settings", "set", "library_attention", "sideways", home=enclave_home)
    assert wrong.returncode == 2 and "library_attention is one of isolated, joint" in wrong.stderr
    assert enclave("settings", "set", "library_attention", "joint", home=enclave_home).returncode == 0
    with Services.open() as services:
        assert services.current_settings().library_attention == "joint"


# The engine: a block's KV is the same whichever library it is composed into ------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    log = LlamaLog()
    log.install()
    model = write_tiny_model(tmp_path / "dense.gguf", DENSE)
    with Engine(ModelSettings(path=str(model), n_ctx=2048, n_threads=2), log) as engine:
        yield engine


def last_logits(engine: Engine) -> np.ndarray:
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(engine._ctx, -1),
                                 shape=(engine.info.n_vocab,)).copy()


def continuation_logits(engine: Engine, drop: tuple[int, int], continuation: list[int]) -> np.ndarray:
    """Logits after ``continuation``, with the KV cells of positions ``drop`` removed first:
    what is left is the head and the block, so only the block's own cells decide them."""
    memory = llama_cpp.llama_get_memory(engine._ctx)
    llama_cpp.llama_memory_seq_rm(memory, 0, *drop)
    for _ in engine.ingest([*engine.cached_tokens, *continuation], composed=True):
        pass
    return last_logits(engine)


def test_a_block_is_the_same_whichever_library_it_is_composed_into(engine: Engine, tmp_path: Path) -> None:
    head = engine.tokenize("hello world the library", add_special=True)
    a = engine.tokenize(" document memory token context", add_special=False)
    b = a[::-1]  # another document of the same length
    x = engine.tokenize(" expert question model local enclave " * 12, add_special=False)
    assert len(a) == len(b)
    for name, tokens in (("a", a), ("b", b), ("x", x)):
        assert list(engine.encode_block(head, tokens, tmp_path / f"{name}.kv"))[-1].done == len(tokens)
    drop = (len(head), len(head) + len(a))
    follow = engine.tokenize(" answer", add_special=False)

    engine.compose(head, [(tmp_path / "a.kv", a), (tmp_path / "x.kv", x)])
    after_a = continuation_logits(engine, drop, follow)
    engine.compose(head, [(tmp_path / "b.kv", b), (tmp_path / "x.kv", x)])
    after_b = continuation_logits(engine, drop, follow)
    assert np.array_equal(after_a, after_b)  # x's cells do not depend on the document before it

    # the same library read in one pass: x attended to its neighbour, so its cells differ
    for _ in engine.ingest([*head, *a, *x]):
        pass
    joint_a = continuation_logits(engine, drop, follow)
    for _ in engine.ingest([*head, *b, *x]):
        pass
    joint_b = continuation_logits(engine, drop, follow)
    assert np.abs(joint_a - joint_b).max() > 1e-3


def test_composing_moves_a_block_like_rope_does(engine: Engine, tmp_path: Path) -> None:
    """A block composed after another, then the head moved up to it, gives what the head and
    the block side by side give: RoPE depends only on distances, so the keys were rotated."""
    head = engine.tokenize("hello world the library", add_special=True)
    a = engine.tokenize(" document one about memory token context " * 5, add_special=False)
    x = engine.tokenize(" expert question model local enclave " * 8, add_special=False)
    for name, tokens in (("a", a), ("x", x)):
        list(engine.encode_block(head, tokens, tmp_path / f"{name}.kv"))
    follow = engine.tokenize(" answer", add_special=False)
    engine.compose(head, [(tmp_path / "x.kv", x)])
    beside = continuation_logits(engine, (0, 0), follow)

    engine.compose(head, [(tmp_path / "a.kv", a), (tmp_path / "x.kv", x)])
    memory = llama_cpp.llama_get_memory(engine._ctx)
    llama_cpp.llama_memory_seq_rm(memory, 0, len(head), len(head) + len(a))
    llama_cpp.llama_memory_seq_add(memory, 0, 0, len(head), len(a))  # the head, next to x again
    moved = continuation_logits(engine, (0, 0), follow)
    assert np.abs(moved - beside).max() < 0.01 * np.abs(beside).max()  # f16 keys, rotated twice


def test_sliding_window_layers_keep_what_the_next_block_and_question_need(tmp_path: Path) -> None:
    """Sliding-window layers may overwrite a sequence's cells that fell out of its window;
    after composing, encoding another block and reading jointly must not lean on them."""
    log = LlamaLog()
    log.install()
    model = write_tiny_model(tmp_path / "sliding.gguf", SLIDING)
    settings = ModelSettings(path=str(model), n_ctx=1024, n_threads=2, n_batch=16, n_ubatch=16)

    def fresh_logits(run: Callable[[Engine], None]) -> np.ndarray:
        with Engine(settings, log) as fresh:
            run(fresh)
            return last_logits(fresh)

    with Engine(settings, log) as engine:
        head = engine.tokenize("hello world the library", add_special=True)
        a = engine.tokenize(" document memory token context secure offline" * 6, add_special=False)
        x = engine.tokenize(" expert question model local enclave" * 6, add_special=False)
        question = engine.tokenize(" answer the question", add_special=False)
        list(engine.encode_block(head, a, tmp_path / "a.kv"))
        engine.compose(head, [(tmp_path / "a.kv", a)])
        # a block encoded after a composition is the block encoded on a fresh context
        list(engine.encode_block(head, x, tmp_path / "x.kv"))
        list(engine.encode_block(head, x, tmp_path / "x-fresh.kv"))  # the same engine, head cached
        engine.compose(head, [(tmp_path / "a.kv", a), (tmp_path / "x.kv", x)])
        for _ in engine.ingest([*engine.cached_tokens, *question], composed=True):
            pass
        composed = last_logits(engine)

        def compose_fresh(fresh: Engine) -> None:
            list(fresh.encode_block(head, a, tmp_path / "a2.kv"))
            list(fresh.encode_block(head, x, tmp_path / "x2.kv"))
            fresh.compose(head, [(tmp_path / "a2.kv", a), (tmp_path / "x2.kv", x)])
            for _ in fresh.ingest([*fresh.cached_tokens, *question], composed=True):
                pass

        assert np.allclose(composed, fresh_logits(compose_fresh), atol=1e-3)

        # the same library read jointly, after the composition, is read as on a fresh context
        joint = [*head, *a, *x, *question]
        for _ in engine.ingest(joint):
            pass
        assert np.allclose(last_logits(engine), fresh_logits(lambda fresh: list(fresh.ingest(joint)) and None),
                           atol=1e-3)
