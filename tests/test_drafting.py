"""Speculative decoding (prompt lookup and a draft model) on real tiny GGUF files.

The reply must be the reply: with and without proposals, greedy replies are the same
token for token, and so are sampled ones with the same seed (every kept token is the
sampler's own choice). Rejected proposals must leave the KV cache as plain decoding
leaves it, which a later turn that reuses the cache shows.

The tiny random models' replies seldom repeat anything, so most tests propose through an
``Oracle``: the plain reply's own next tokens with one of them wrong, at a place that
moves with each proposal, so that proposals are accepted in part, in full and not at all,
and every proposed token is checked (``always_check``). Prompt lookup itself runs on a
model whose reply repeats one word, and on a real model in bench/lookup.py.

One caveat is arithmetic, not logic: llama.cpp's matrix products over a batch round
differently from those over one token (by about 1e-4 of a logit here), so where the
model's two best tokens tie to that precision either may come out. The tiny random
models' logits run to ±30 and their KV cache is f16, which turns that into up to 0.1 of a
logit and makes ties occur about once in a few hundred tokens. ``assert_same_reply``
therefore demands identical replies up to the first such tie, and at a tie that both
choices are the model's top one within ``NOISE``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from inference.draft_length import MAX_DRAFT, DraftLength
from inference.engine import Engine
from inference.errors import EnclaveError
from inference.llama_log import LlamaLog
from inference.lookup import PromptLookup, Proposal
from inference.protocol import ChatMessage, Sampling, Stats, Token
from tests.conftest import settings_for
from tests.tiny_models import DENSE, MOE, SLIDING, TinySpec, write_tiny_model

GREEDY = Sampling(temperature=0, max_tokens=60)
NOISE = 0.2  # logits this close are a tie rounding may break either way (as in tests/test_batch.py)
QUOTED = ("the model says hello to the world and the world says hello to the model; "
          "tell me what the world says")
PROMPTS = (QUOTED, "hello", "what is the model", "world world model hello tell me more")


@pytest.fixture(scope="module")
def log() -> LlamaLog:
    log = LlamaLog()
    log.install()
    return log


def open_engine(path: Path, log: LlamaLog, **settings: object) -> Engine:
    return Engine(settings_for(path, n_ctx=1024, **settings), log)


@pytest.fixture(scope="module", params=[MOE, DENSE, SLIDING], ids=lambda spec: spec.name)
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec: TinySpec = request.param
    return write_tiny_model(tmp_path_factory.mktemp("drafting") / f"{spec.name}.gguf", spec)


def reply(engine: Engine, prompt: list[int], sampling: Sampling, cancel_after: int | None = None,
          ) -> tuple[list[int], Stats]:
    """The reply's token ids and its stats; ``cancel_after``: Stop once that many are out."""
    tokens: list[int] = []
    stats = None
    for event in engine.generate(prompt, sampling, cancelled=lambda: cancel_after is not None
                                 and len(tokens) >= cancel_after):
        if isinstance(event, Token) and event.id is not None:
            tokens.append(event.id)
        elif isinstance(event, Stats):
            stats = event
    assert stats is not None
    return tokens, stats


def assert_same_reply(engine: Engine, prompt: list[int], plain: list[int], fast: list[int]) -> None:
    """``fast`` is ``plain``, or the same up to a tie that rounding broke the other way."""
    differ = next((i for i, (a, b) in enumerate(zip(plain, fast, strict=False)) if a != b), None)
    if differ is None:
        assert len(fast) == len(plain)
        return
    engine.forget_prompt_cache()
    for _ in engine.ingest(prompt):
        pass
    for token in plain[:differ]:  # one at a time, as plain decoding evaluated them
        engine._decode([token])
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(engine.context, -1), shape=(engine.info.n_vocab,))
    gap = float(logits[plain[differ]] - logits[fast[differ]])
    assert 0 <= gap < NOISE, f"token {differ}: {fast[differ]} is not a tie for {plain[differ]} (gap {gap:.4f})"


def fresh_reply(engine: Engine, prompt: list[int], sampling: Sampling) -> tuple[list[int], Stats]:
    engine.forget_prompt_cache()
    return reply(engine, prompt, sampling)


@pytest.fixture
def always_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check every proposal at full length, however unlikely: the most roll-backs."""
    monkeypatch.setattr(DraftLength, "choose", lambda self, match, available, guess_seconds=None: available)


class Oracle:
    """Proposes what the plain reply says next, with the ``(n % 6)``-th token of the n-th
    proposal wrong (6 and up: none wrong)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.prompt: list[int] = []
        self.reply: list[int] = []
        self.proposals = 0
        oracle = self

        def propose(lookup: PromptLookup, limit: int) -> Proposal | None:
            done = len(lookup.text) - len(oracle.prompt)
            truth = oracle.reply[done : done + min(limit, 8)]
            if not truth:
                return None
            wrong = oracle.proposals % 6
            oracle.proposals += 1
            tokens = [t if i != wrong else (t + 1) % 300 + 10 for i, t in enumerate(truth)]
            return Proposal(tuple(tokens), match=16)

        monkeypatch.setattr(PromptLookup, "propose", propose)

    def expect(self, prompt: list[int], reply: list[int]) -> None:
        self.prompt, self.reply, self.proposals = prompt, reply, 0


@pytest.fixture
def oracle(monkeypatch: pytest.MonkeyPatch, always_check: None) -> Oracle:
    return Oracle(monkeypatch)


def test_greedy_replies_are_the_same_with_and_without_drafting(model: Path, log: LlamaLog, oracle: Oracle) -> None:
    with open_engine(model, log) as engine:
        for text in PROMPTS:
            prompt = engine.chat_tokens([ChatMessage("user", text)])
            plain, plain_stats = fresh_reply(engine, prompt, replace(GREEDY, draft=False))
            oracle.expect(prompt, plain)
            fast, stats = fresh_reply(engine, prompt, GREEDY)
            assert_same_reply(engine, prompt, plain, fast)
            assert stats.stop_reason == plain_stats.stop_reason
            assert plain_stats.drafted_tokens == 0
            # accepted in part, in full and not at all: each rejection rolled back
            assert 0 < stats.accepted_tokens < stats.drafted_tokens


def test_prompt_lookup_drafts_a_reply_that_repeats_itself(log: LlamaLog, tmp_path: Path, always_check: None) -> None:
    """A model that answers one word over and over: after two words, prompt lookup
    proposes the rest, and the model accepts nearly all of it."""
    path = write_tiny_model(tmp_path / "parrot.gguf", replace(DENSE, name="parrot", fixed_logits=(("▁hello", 5.0),)))
    with open_engine(path, log) as engine:
        prompt = engine.chat_tokens([ChatMessage("user", "say hello")])
        plain, _ = fresh_reply(engine, prompt, replace(GREEDY, draft=False))
        fast, stats = fresh_reply(engine, prompt, GREEDY)
    assert fast == plain and len(set(plain)) == 1
    assert stats.drafted_tokens >= 50 and stats.accepted_tokens == stats.drafted_tokens


def test_sampled_replies_with_one_seed_are_the_same(log: LlamaLog, tmp_path: Path, oracle: Oracle) -> None:
    """On a model whose next-token odds hardly depend on the text (three words at about
    even odds): rounding cannot move a random draw across a boundary, so one seed must
    give one reply, while the proposals are often wrong."""
    chorus = replace(DENSE, name="chorus", fixed_logits=(("▁hello", 8.0), ("▁world", 7.8), ("▁model", 7.6)))
    path = write_tiny_model(tmp_path / "chorus.gguf", chorus)
    sampled = Sampling(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0, seed=7, max_tokens=60)
    with open_engine(path, log) as engine:
        prompt = engine.chat_tokens([ChatMessage("user", QUOTED)])
        plain, _ = fresh_reply(engine, prompt, replace(sampled, draft=False))
        oracle.expect(prompt, plain)
        fast, stats = fresh_reply(engine, prompt, sampled)
    assert fast == plain and len(set(plain)) == 3
    assert 0 < stats.accepted_tokens < stats.drafted_tokens


def test_rejected_proposals_leave_the_cache_as_plain_decoding_does(model: Path, log: LlamaLog,
                                                                   oracle: Oracle) -> None:
    """A second turn reuses the first turn's cells; anything a rejected proposal left
    behind (or took away) would change its reply."""
    turns: dict[bool, tuple[list[int], list[int]]] = {}
    for draft in (False, True):
        with open_engine(model, log) as engine:
            prompt = engine.chat_tokens([ChatMessage("user", QUOTED)])
            first, stats = reply(engine, prompt, replace(GREEDY, draft=draft))
            if not draft:
                oracle.expect(prompt, first)
                continue_plain = first
            follow_up = prompt + first + engine.tokenize(" tell me more", add_special=False)
            held = len(prompt) + len(first) - 1  # the reply's last token was never evaluated
            assert engine.cached_tokens == tuple(follow_up[:held])
            second, second_stats = reply(engine, follow_up, replace(GREEDY, draft=False))
            assert second_stats.cached_tokens == held  # the first turn's cells were reused
            turns[draft] = (first, second)
            if draft:
                assert first == continue_plain
                assert 0 < stats.accepted_tokens < stats.drafted_tokens
    assert turns[True] == turns[False]


@pytest.mark.parametrize("stop_at", [3, 8, 17])
def test_stop_in_the_middle_of_a_checked_batch(model: Path, log: LlamaLog, oracle: Oracle, stop_at: int) -> None:
    with open_engine(model, log) as engine:
        prompt = engine.chat_tokens([ChatMessage("user", QUOTED)])
        runs = {}
        for draft in (False, True):
            engine.forget_prompt_cache()
            tokens, stats = reply(engine, prompt, replace(GREEDY, draft=draft), cancel_after=stop_at)
            runs[draft] = (tokens, stats.stop_reason, engine.cached_tokens)
            if not draft:
                oracle.expect(prompt, fresh_reply(engine, prompt, replace(GREEDY, draft=False))[0])
    assert runs[True] == runs[False]
    tokens, reason, cached = runs[True]
    assert reason == "cancelled" and len(tokens) == stop_at
    assert cached == tuple(prompt + tokens)  # every token shown is in the cache, nothing after it


def test_a_stop_string_inside_a_checked_batch_ends_the_reply_as_plain_decoding(
        model: Path, log: LlamaLog, oracle: Oracle) -> None:
    """The stop string ends a reply on a token the batch accepted with more after it."""
    with open_engine(model, log) as engine:
        prompt = engine.chat_tokens([ChatMessage("user", QUOTED)])
        whole, _ = fresh_reply(engine, prompt, replace(GREEDY, draft=False))
        oracle.expect(prompt, whole)  # proposals run on past the stop
        stop = engine.detokenize(whole[9:12])
        runs = {}
        for draft in (False, True):
            engine.forget_prompt_cache()
            tokens, stats = reply(engine, prompt, replace(GREEDY, stop=(stop,), draft=draft))
            runs[draft] = (tokens, stats.stop_reason, engine.cached_tokens)
    assert runs[True] == runs[False]
    tokens, reason, cached = runs[True]
    assert reason == "stop" and 9 < len(tokens) <= 14  # the stop text may need its next token to be sure
    assert cached == tuple(prompt + tokens[:-1])  # as plain decoding: the last token is not evaluated


def test_drafting_can_be_turned_off(log: LlamaLog, tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "dense.gguf", DENSE)
    with open_engine(path, log) as engine:
        prompt = engine.chat_tokens([ChatMessage("user", QUOTED)])
        _, stats = fresh_reply(engine, prompt, replace(GREEDY, draft=False))
    assert (stats.drafted_tokens, stats.accepted_tokens) == (0, 0)


# A draft model ------------------------------------------------------------------------


def test_a_draft_model_of_the_same_vocabulary_drafts_and_changes_nothing(log: LlamaLog, tmp_path: Path) -> None:
    target = write_tiny_model(tmp_path / "moe.gguf", MOE)
    draft = write_tiny_model(tmp_path / "dense.gguf", replace(DENSE, seed=MOE.seed))
    prompts = ("hello", "what is the model")
    with open_engine(target, log) as engine:
        plain = [fresh_reply(engine, engine.chat_tokens([ChatMessage("user", p)]), replace(GREEDY, draft=False))[0]
                 for p in prompts]
    with open_engine(target, log, draft_path=str(draft)) as engine:
        assert engine._draft_model is not None
        guesses = engine._draft_model.propose(np.array(engine.tokenize("hello world")), 4)
        assert guesses  # the draft model itself guesses
        fast = [fresh_reply(engine, engine.chat_tokens([ChatMessage("user", p)]), GREEDY) for p in prompts]
        for text, (tokens, _), plain_tokens in zip(prompts, fast, plain, strict=True):
            assert_same_reply(engine, engine.chat_tokens([ChatMessage("user", text)]), plain_tokens, tokens)
    assert sum(stats.drafted_tokens for _, stats in fast) > 0


def test_a_draft_model_with_another_vocabulary_is_refused(log: LlamaLog, tmp_path: Path) -> None:
    target = write_tiny_model(tmp_path / "moe.gguf", MOE)
    other = write_tiny_model(tmp_path / "other.gguf",
                             replace(DENSE, name="other-vocab", control_tokens=("<unk>", "<s>", "<|im_start|>",
                                                                               "<|im_end|>", "<|other|>", "</s>")))
    with pytest.raises(EnclaveError, match=r"other\.gguf cannot draft for moe\.gguf: their vocabularies differ"):
        open_engine(target, log, draft_path=str(other))


def test_a_draft_model_that_is_not_a_model_is_refused(log: LlamaLog, tmp_path: Path) -> None:
    target = write_tiny_model(tmp_path / "moe.gguf", MOE)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(EnclaveError):
        open_engine(target, log, draft_path=str(junk))


# The parts ----------------------------------------------------------------------------


def test_prompt_lookup_proposes_what_followed_the_longest_repeat() -> None:
    lookup = PromptLookup([5, 1, 2, 3, 4, 9, 9, 1, 2, 7, 1, 2, 3])
    found = lookup.propose(limit=3)
    assert found is not None
    assert found.tokens == (4, 9, 9)  # "1 2 3" occurred before, followed by 4 9 9
    assert found.match == 3
    lookup.extend([8])
    assert lookup.propose(limit=3) is None  # "3 8" and "8" never occurred before


def test_prompt_lookup_takes_the_continuation_most_occurrences_agree_on() -> None:
    lookup = PromptLookup([1, 2, 5, 1, 2, 6, 1, 2, 5, 9, 1, 2])
    found = lookup.propose(limit=2)  # only "1 2" repeats: followed by 5, 6 and 5
    assert found is not None and found.tokens == (5, 9) and found.match == 2


def test_draft_length_checks_long_proposals_only_when_they_pay() -> None:
    length = DraftLength()
    length.record_decode(1, 0.020)
    length.record_decode(9, 0.020 + 8 * 0.012)  # a CPU-bound small model: each extra token 60% of one
    assert 0 < length.choose(match=20, available=MAX_DRAFT) <= 4  # a quote may be starting
    for _ in range(10):
        length.record_check(match=20, drafted=8, accepted=8)
    assert length.choose(match=20, available=MAX_DRAFT) > 8  # a quote in progress
    for _ in range(30):
        length.record_check(match=2, drafted=4, accepted=0)
    assert length.choose(match=2, available=MAX_DRAFT) == 0  # common phrases keep failing: decode plainly
    cheap = DraftLength()
    cheap.record_decode(1, 0.020)
    cheap.record_decode(9, 0.021)  # a GPU reading expert weights: a batch costs about one token
    cheap.record_decode(17, 0.022)
    assert cheap.choose(match=16, available=MAX_DRAFT) == MAX_DRAFT
    assert 0 < cheap.choose(match=2, available=MAX_DRAFT) < MAX_DRAFT  # past a few, a phrase's odds are too low
