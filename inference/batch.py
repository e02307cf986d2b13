"""Continuous batching: several replies decoded together, one ``llama_decode`` per step.

Each reply gets a *slot*: a sequence of the engine's one unified KV cache (sequences from
``FIRST_SLOT_SEQUENCE``; 0 stays the app's prompt cache, 1 the KV blocks' scratch). A step
puts every generating slot's last token and as much of the waiting prompts as ``n_batch``
leaves into one batch, so a new request starts while the others keep streaming, and the
weights are read once per step for all of them — which is what makes several clients
faster than one on a memory-bound machine.

A prompt starts from the longest prefix any sequence already holds (an earlier request's
slot, a running one, the prompt cache): those cells are shared, not copied (unified
cache). A finished slot keeps its cells for the next request that starts the same way,
until the room is needed. When the cache is full the idle slots' cells go first, then the
prompt cache's; a reply that still does not fit ends (``context``) or is refused (``busy``).
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import llama_cpp

from inference.engine import FIRST_SLOT_SEQUENCE, Engine
from inference.errors import EnclaveError, PromptTooLong
from inference.protocol import PARALLEL_SEQUENCES, Done, Failed, Progress, Sampling, Stats, Token
from inference.reply import ReplyText

Emitted = list[tuple[int, Progress | Token | Done | Failed]]
NO_ROOM = 1  # llama_decode: no KV cells free for the batch


@dataclass
class _Reply:
    id: int
    prompt: list[int]
    sampling: Sampling
    started: float = field(default_factory=time.perf_counter)
    seq: int = -1
    cached: int = 0  # prompt tokens its sequence already held
    sampler: ctypes.c_void_p | None = None
    text: ReplyText | None = None
    pending: int | None = None  # the sampled token its sequence does not hold yet
    prompt_seconds: float = 0.0


class Batcher:
    """The batch over one engine. Not thread-safe: the worker's child loop drives it."""

    def __init__(self, engine: Engine, slots: int = PARALLEL_SEQUENCES) -> None:
        self.engine = engine
        self.slots = max(1, min(slots, PARALLEL_SEQUENCES))
        self._seqs = list(range(FIRST_SLOT_SEQUENCE, FIRST_SLOT_SEQUENCE + self.slots))
        self._held: dict[int, list[int]] = {seq: [] for seq in self._seqs}  # tokens each sequence's cells hold
        self._idle_since: dict[int, float] = dict.fromkeys(self._seqs, 0.0)
        self._running: dict[int, _Reply] = {}  # by sequence
        self._waiting: deque[_Reply] = deque()
        self._n_ctx = llama_cpp.llama_n_ctx(engine.context)

    @property
    def busy(self) -> bool:
        return bool(self._running or self._waiting)

    # Requests -----------------------------------------------------------------------------

    def add(self, rid: int, prompt: Sequence[int], sampling: Sampling) -> Emitted:
        """Queue a reply; refused at once (a ``Failed``) when the prompt cannot fit."""
        try:
            self.engine.check_prompt(prompt)
            sampler = self.engine.sampler(sampling, prompt)  # a grammar llama.cpp rejects: refused now
        except PromptTooLong as exc:
            return [(rid, Failed(str(exc), kind="too_long"))]
        except EnclaveError as exc:
            return [(rid, Failed(str(exc)))]
        self._waiting.append(_Reply(rid, list(prompt), sampling, sampler=sampler))
        return []

    def withdraw(self, rid: int) -> Emitted:
        for reply in self._waiting:
            if reply.id == rid:
                self._waiting.remove(reply)
                self._free_sampler(reply)
                return [(rid, Done(Stats(len(reply.prompt), 0, 0, 0.0, 0.0, "cancelled")))]
        for reply in list(self._running.values()):
            if reply.id == rid:
                if reply.text is None:
                    reply.text = ReplyText(self.engine, reply.sampling, 0)
                reply.text.end("cancelled")
                return self._finish(reply)
        return []

    def withdraw_all(self) -> Emitted:
        emitted: Emitted = []
        for rid in [r.id for r in self._waiting] + [r.id for r in self._running.values()]:
            emitted += self.withdraw(rid)
        return emitted

    def forget_cells(self) -> None:
        """Free every idle slot's cells (sequence 0 is about to be used alone)."""
        for seq in self._seqs:
            if seq not in self._running:
                self._drop(seq)

    # One step -----------------------------------------------------------------------------

    def step(self) -> Emitted:
        """Start waiting replies in free slots, decode one batch, sample each finished prompt
        and each generating reply once."""
        emitted: Emitted = []
        while self._waiting and len(self._running) < self.slots:
            emitted += self._start(self._waiting.popleft())
        if not self._running:
            return emitted
        for generating in (True, False):
            emitted += self._decode_part(generating)
        return emitted

    def _decode_part(self, generating: bool) -> Emitted:
        """Decode the generating replies' tokens, or the prompts' next chunks. Apart, not in
        one batch: a token decoded beside a long prompt chunk goes through other matrix
        kernels than alone, and a greedy reply could then differ from the same reply
        decoded by itself."""
        emitted: Emitted = []
        plan = self._plan_batch(generating)
        if not plan:
            return emitted
        rc = self._decode(plan)
        while rc == NO_ROOM:
            freed, ended = self._make_room()
            emitted += ended
            if not freed:
                return emitted
            plan = self._plan_batch(generating)
            if not plan:
                return emitted
            rc = self._decode(plan)
        if rc != 0:
            for reply in list(self._running.values()):
                emitted.append((reply.id, Failed(f"llama.cpp could not evaluate the batch (llama_decode returned "
                                                 f"{rc}).")))
                self._release(reply)
            return emitted
        return emitted + self._after_decode(plan)

    def _start(self, reply: _Reply) -> Emitted:
        seq = self._choose_sequence(reply.prompt)
        reply.seq = seq
        reply.cached = self._share_prefix(seq, reply.prompt)
        self._running[seq] = reply
        return [(reply.id, Progress(reply.cached, len(reply.prompt)))]

    def _choose_sequence(self, prompt: Sequence[int]) -> int:
        """The free slot whose own cells start like ``prompt`` the longest, else the one idle longest."""
        free = [seq for seq in self._seqs if seq not in self._running]
        return max(free, key=lambda seq: (_common(self._held[seq], prompt), -self._idle_since[seq]))

    def _share_prefix(self, seq: int, prompt: Sequence[int]) -> int:
        """Make ``seq`` hold the longest prefix of ``prompt`` any sequence holds (keeping at
        least the last prompt token to evaluate, for its logits). Returns its length."""
        memory = self.engine.memory
        limit = len(prompt) - 1
        own = min(_common(self._held[seq], prompt), limit)
        best, source = own, seq
        if self.engine.cells_shareable:
            others = [(s, held) for s, held in self._held.items() if s != seq]
            others.append((0, list(self.engine.joint_tokens)))
            for other, held in others:
                common = min(_common(held, prompt), limit)
                if common > best:
                    best, source = common, other
        if source == seq:
            if not llama_cpp.llama_memory_seq_rm(memory, seq, best, -1):
                self._drop(seq)
                return 0
            del self._held[seq][best:]
            return best
        self._drop(seq)
        llama_cpp.llama_memory_seq_cp(memory, source, seq, 0, best)
        self._held[seq] = list(prompt[:best])
        return best

    def _plan_batch(self, generating: bool) -> list[tuple[_Reply, list[int]]]:
        """This pass's tokens: each generating reply's last token, or the prompts' next
        chunks (oldest first) as far as ``n_batch`` goes."""
        if generating:
            return [(reply, [reply.pending]) for reply in self._running.values() if reply.pending is not None]
        plan: list[tuple[_Reply, list[int]]] = []
        room = self.engine.settings.n_batch
        for reply in sorted(self._running.values(), key=lambda r: r.started):
            if reply.pending is None and reply.text is None and room > 0:
                held = len(self._held[reply.seq])
                chunk = reply.prompt[held : held + room]
                plan.append((reply, chunk))
                room -= len(chunk)
        return plan

    def _decode(self, plan: list[tuple[_Reply, list[int]]]) -> int:
        total = sum(len(tokens) for _, tokens in plan)
        batch = llama_cpp.llama_batch_init(total, 0, 1)
        try:
            i = 0
            for reply, tokens in plan:
                first = len(self._held[reply.seq])
                last_prompt = reply.pending is None and first + len(tokens) == len(reply.prompt)
                for j, token in enumerate(tokens):
                    batch.token[i] = token
                    batch.pos[i] = first + j
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = reply.seq
                    batch.logits[i] = j == len(tokens) - 1 and (reply.pending is not None or last_prompt)
                    i += 1
            batch.n_tokens = total
            return llama_cpp.llama_decode(self.engine.context, batch)
        finally:
            llama_cpp.llama_batch_free(batch)

    def _after_decode(self, plan: list[tuple[_Reply, list[int]]]) -> Emitted:
        emitted: Emitted = []
        index = -1
        for reply, tokens in plan:
            index += len(tokens)
            self._held[reply.seq].extend(tokens)
            if reply.pending is None:
                emitted.append((reply.id, Progress(len(self._held[reply.seq]), len(reply.prompt))))
                if len(self._held[reply.seq]) < len(reply.prompt):
                    continue
                reply.prompt_seconds = time.perf_counter() - reply.started
                reply.text = ReplyText(self.engine, reply.sampling, self._n_ctx)
                if reply.text.ended:  # nothing to generate (max_tokens 0)
                    emitted += self._finish(reply)
                    continue
            reply.pending = None
            assert reply.text is not None and reply.sampler is not None
            token = llama_cpp.llama_sampler_sample(reply.sampler, self.engine.context, index)
            event = reply.text.take(token)
            if event is not None:
                emitted.append((reply.id, event))
            if not reply.text.ended and len(self._held[reply.seq]) + 1 >= self._n_ctx:
                reply.text.end("context")
            if reply.text.ended:
                emitted += self._finish(reply)
            else:
                reply.pending = token
        return emitted

    def _finish(self, reply: _Reply) -> Emitted:
        emitted: Emitted = []
        assert reply.text is not None
        if (tail := reply.text.tail()) is not None:
            emitted.append((reply.id, tail))
        generating = time.perf_counter() - reply.started - reply.prompt_seconds if reply.prompt_seconds else 0.0
        stats = Stats(len(reply.prompt), reply.cached, reply.text.generated, reply.prompt_seconds, generating,
                      reply.text.reason)
        emitted.append((reply.id, Done(stats)))
        self._release(reply)
        return emitted

    def _release(self, reply: _Reply) -> None:
        self._free_sampler(reply)
        self._running.pop(reply.seq, None)
        self._idle_since[reply.seq] = time.monotonic()

    # Room -----------------------------------------------------------------------------------

    def _make_room(self) -> tuple[bool, Emitted]:
        """The cache is full: free an idle slot's cells, else the prompt cache's, else end the
        newest reply. Returns whether anything was freed, and what ended."""
        idle = [seq for seq in self._seqs if seq not in self._running and self._held[seq]]
        if idle:
            self._drop(min(idle, key=lambda seq: self._idle_since[seq]))
            return True, []
        if self.engine.joint_tokens or self.engine.cached_tokens:
            self.engine.forget_prompt_cache()
            return True, []
        newest = max(self._running.values(), key=lambda r: r.started)
        if newest.text is None:  # still reading its prompt: refused, its cells freed
            self._drop(newest.seq)
            self._release(newest)
            return True, [(newest.id, Failed("The context is full with other replies; try again in a moment, or "
                                             "load the model with a longer context.", kind="busy"))]
        newest.text.end("context")
        ended = self._finish(newest)
        return bool(self._running), ended

    @staticmethod
    def _free_sampler(reply: _Reply) -> None:
        if reply.sampler is not None:
            llama_cpp.llama_sampler_free(reply.sampler)
            reply.sampler = None

    def _drop(self, seq: int) -> None:
        llama_cpp.llama_memory_seq_rm(self.engine.memory, seq, -1, -1)
        self._held[seq] = []


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
