"""Continuous batching in the worker: several replies decoded together, on real tiny GGUF files.

A reply decoded alone in the batch is the reply decoded by itself, token for token. Replies
decoded side by side are checked against the model itself: every token a greedy reply
chose is the top choice of plain llama-cpp-python given the same text, up to float noise —
their attention sums run over cells interleaved with other replies' cells, so where two
tokens tie to the last bits the choice may differ (as in llama-server and vLLM). A prefix
one sequence holds is shared, not evaluated again; a reply withdrawn stops at once
and frees its slot; a full cache gives idle cells back first; a dead worker fails every
reply of the batch and comes back for the next request.
"""

from __future__ import annotations

import json
import os
import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from inference.protocol import ChatMessage, Done, Event, Failed, Generate, Progress, Sampling, Token
from inference.worker import BatchSession, Worker, WorkerState
from tests.conftest import settings_for

GREEDY = Sampling(temperature=0, max_tokens=20)
# Logits apart by less are a tie that rounding may break either way. The tiny random models
# amplify rounding (their logits run to ±30, the KV cache is f16): a reply's tokens placed in
# other cells moved a logit by 0.05; a wrong mask or position moves them by whole units.
NOISE = 0.2
QUESTIONS = ("hello world, tell me about the model", "what is the model", "tell me hello",
             "hello world, tell me more", "model model hello", "the world is here")


def plain_llama(path: Path) -> llama_cpp.Llama:
    return llama_cpp.Llama(str(path), n_ctx=1024, n_threads=2, flash_attn=False, logits_all=True, verbose=False)


def assert_greedy_choices(llm: llama_cpp.Llama, prompt: list[int], reply: list[int]) -> None:
    """Each token of ``reply`` is the model's top choice after ``prompt`` and the reply so far,
    up to float noise (the logits of llama.cpp evaluating the whole text at once)."""
    llm.reset()
    llm.eval(prompt + reply[:-1])
    for j, token in enumerate(reply):
        logits = llm.scores[len(prompt) - 1 + j]
        assert logits[token] >= logits.max() - NOISE, (j, token, int(logits.argmax()), logits.max() - logits[token])


def ask(question: str, sampling: Sampling = GREEDY) -> Generate:
    return Generate(messages=(ChatMessage("user", question),), sampling=sampling)


def alone(worker: Worker, request: Generate) -> list[int]:
    return [e.id for e in worker.generate(request) if isinstance(e, Token) and e.id is not None]


class Collected:
    def __init__(self) -> None:
        self.tokens: dict[int, list[int]] = defaultdict(list)
        self.text: dict[int, str] = defaultdict(str)
        self.ends: dict[int, Done | Failed] = {}
        self.progress: dict[int, list[Progress]] = defaultdict(list)
        self.order: list[tuple[int, str]] = []  # which reply each event belonged to, in arrival order

    def take(self, rid: int, event: Event) -> None:
        self.order.append((rid, type(event).__name__))
        if isinstance(event, Token):
            if event.id is not None:
                self.tokens[rid].append(event.id)
            self.text[rid] += event.text
        elif isinstance(event, Progress):
            self.progress[rid].append(event)
        elif isinstance(event, Done | Failed):
            self.ends[rid] = event


def run_batch(worker: Worker, requests: dict[int, Generate], *, until: int | None = None,
              on_event: object = None) -> Collected:
    """Submit ``requests`` at once and read until each has ended (``until``: that many), then close."""
    session = worker.open_batch()
    for rid, request in requests.items():
        session.submit(rid, request)
    collected = Collected()
    wanted = len(requests) if until is None else until
    for rid, event in session.events():
        assert rid is not None, event
        collected.take(rid, event)
        if callable(on_event):
            on_event(session, rid, event, collected)
        if len(collected.ends) == wanted:
            session.close()
    assert worker.state == WorkerState.LOADED
    return collected


@pytest.fixture(scope="module")
def batch_worker(tmp_path_factory: pytest.TempPathFactory, moe_model: Path) -> Iterator[Worker]:
    w = Worker(tmp_path_factory.mktemp("logs") / "llama.log")
    w.load(settings_for(moe_model, n_ctx=1024))
    yield w
    w.close()


@pytest.mark.parametrize("kind", ["moe", "dense"])
def test_replies_decoded_together_are_the_models_greedy_choices(kind: str, worker: Worker,
                                                                request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(f"{kind}_model")
    worker.load(settings_for(path, n_ctx=1024))
    requests = {i: ask(QUESTIONS[i % len(QUESTIONS)] + f" {i}") for i in range(11)}  # 8 slots: 3 wait
    got = run_batch(worker, requests)
    assert all(isinstance(end, Done) and end.stats.generated_tokens == GREEDY.max_tokens for end in got.ends.values())
    llm = plain_llama(path)
    for rid, generate in requests.items():
        assert_greedy_choices(llm, list(worker.render_chat(generate.messages).ids), got.tokens[rid])
    # decoded together, not one after another: the first replies' tokens interleave
    first_done = min(got.order.index((rid, "Done")) for rid in requests)
    assert len({rid for rid, kind in got.order[:first_done] if kind == "Token"}) == 8


def test_a_reply_alone_in_the_batch_is_the_reply_decoded_by_itself(worker: Worker, moe_model: Path) -> None:
    worker.load(settings_for(moe_model, n_ctx=1024))
    for question in ("hello world, tell me about the model", "the world is here and there"):
        expected = alone(worker, ask(question))
        assert run_batch(worker, {1: ask(question)}).tokens[1] == expected
    # after a busy batch its cells are scattered: still the model's own choices
    run_batch(worker, {i: ask(q) for i, q in enumerate(QUESTIONS)})
    reply = run_batch(worker, {1: ask("tell me more about the world")}).tokens[1]
    assert_greedy_choices(plain_llama(moe_model), list(worker.render_chat(ask("tell me more about the world")
                                                                          .messages).ids), reply)


def test_a_shared_prefix_is_not_evaluated_again(batch_worker: Worker, moe_model: Path) -> None:
    system = ChatMessage("system", "You answer about the model and the world. " * 8)
    first = Generate(messages=(system, ChatMessage("user", "hello")), sampling=GREEDY)
    second = Generate(messages=(system, ChatMessage("user", "what is the world")), sampling=GREEDY)
    run_batch(batch_worker, {1: first})
    got = run_batch(batch_worker, {2: second})
    stats = got.ends[2].stats  # type: ignore[union-attr]
    prompt = batch_worker.render_chat(second.messages).ids
    shared = next(i for i, (a, b) in enumerate(zip(batch_worker.render_chat(first.messages).ids, prompt,
                                                      strict=False)) if a != b)
    assert stats.cached_tokens >= shared > 40  # the system prompt's cells were reused
    assert got.progress[2][0].done == stats.cached_tokens
    assert_greedy_choices(plain_llama(moe_model), list(prompt), got.tokens[2])


def test_a_withdrawn_reply_stops_and_the_others_go_on(batch_worker: Worker) -> None:
    long = Sampling(temperature=0, max_tokens=200)

    def leave_early(session: BatchSession, rid: int, event: Event, collected: Collected) -> None:
        if rid == 1 and isinstance(event, Token) and len(collected.tokens[1]) == 3:
            session.withdraw(1)

    got = run_batch(batch_worker, {1: ask("tell me hello", long), 2: ask("what is the model")},
                    on_event=leave_early)
    withdrawn, other = got.ends[1], got.ends[2]
    assert isinstance(withdrawn, Done) and withdrawn.stats.stop_reason == "cancelled"
    assert len(got.tokens[1]) < 100  # stopped soon after the word (the child reads it between steps), not at 200
    assert isinstance(other, Done) and other.stats.generated_tokens == GREEDY.max_tokens


def test_each_reply_keeps_its_own_sampling(batch_worker: Worker) -> None:
    schema = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    constrained = Sampling(temperature=0, max_tokens=40, json_schema=schema)
    got = run_batch(batch_worker, {1: ask("hello", constrained), 2: ask("hello", Sampling(temperature=0,
                                                                                           max_tokens=7))})
    assert isinstance(json.loads(got.text[1])["n"], int)
    assert got.ends[2].stats.generated_tokens == 7  # type: ignore[union-attr]


def test_a_prompt_the_context_cannot_hold_is_refused_alone(batch_worker: Worker) -> None:
    got = run_batch(batch_worker, {1: Generate(prompt="the " * 1500, sampling=GREEDY), 2: ask("hello")})
    refused = got.ends[1]
    assert isinstance(refused, Failed) and refused.kind == "too_long" and "context holds 1,024" in refused.message
    assert isinstance(got.ends[2], Done) and got.ends[2].stats.generated_tokens == GREEDY.max_tokens


def test_a_full_cache_gives_idle_cells_back_then_ends_the_newest(worker: Worker, moe_model: Path) -> None:
    worker.load(settings_for(moe_model, n_ctx=256))
    # fill idle slots with cells: each finished reply keeps its prompt and reply
    run_batch(worker, {i: ask(q) for i, q in enumerate(QUESTIONS[:4])})
    # these need more than the whole context together: idle cells go first, then a reply ends
    grow = Sampling(temperature=0, max_tokens=150)
    got = run_batch(worker, {10: ask("tell me hello", grow), 11: ask("what is the world", grow)})
    reasons = sorted(end.stats.stop_reason for end in got.ends.values() if isinstance(end, Done))
    assert reasons == ["context", "length"] or reasons == ["context", "context"], got.ends
    assert len(got.tokens[10]) + len(got.tokens[11]) > 150  # room was made: not refused at once
    after = alone(worker, ask("hello"))  # the worker is whole afterwards
    assert len(after) == GREEDY.max_tokens
    assert_greedy_choices(plain_llama(moe_model), list(worker.render_chat(ask("hello").messages).ids), after)


def test_a_dead_worker_fails_every_reply_of_the_batch_and_comes_back(worker: Worker, moe_model: Path) -> None:
    worker.load(settings_for(moe_model, n_ctx=1024))
    expected = alone(worker, ask("hello"))
    session = worker.open_batch()
    long = Sampling(temperature=0, max_tokens=400)
    for rid in (1, 2):
        session.submit(rid, ask("tell me hello", long))
    ends: list[Failed] = []
    for rid, event in session.events():
        if isinstance(event, Token) and worker.pid is not None:
            os.kill(worker.pid, signal.SIGKILL)  # what the OOM killer does
        if isinstance(event, Failed):
            assert rid is None  # every reply of the batch
            ends.append(event)
    assert len(ends) == 1 and ends[0].kind == "crash" and "answering a batch" in ends[0].message
    assert worker.state == WorkerState.CRASHED
    assert alone(worker, ask("hello")) == expected  # a new child, the model loaded again
