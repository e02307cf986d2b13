"""Prompts for conversations bound to a library, with the library's KV cache reused.

The prompt is [system: the user's system prompt + the library] + the conversation. The
conversation gets up to a quarter of the context (oldest turns dropped first), the reply
its reserve, the library the rest. When the whole library fits, its prefix is the same for
every question, so its KV state is kept: in the worker between questions, and on disk
(``PromptCache``) across restarts unless the database is encrypted. The first question
evaluates the library once (with progress); the next ones evaluate only themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

from app.kv_cache import PromptCache
from app.libraries import LibraryRepository
from app.library_sizing import library_tokens, needed_context
from app.prompting import LibraryPromptBuilder, fit_history
from app.runtime import Runtime
from inference.errors import EnclaveError
from inference.fingerprint import model_fingerprint
from inference.planner import PlanRequest, plan
from inference.protocol import ChatMessage, Done, Failed, Progress

HISTORY_SHARE = 4  # the conversation may take up to 1/4 of the context


@dataclass(frozen=True)
class LibraryTurn:
    messages: list[ChatMessage]
    tokens: tuple[int, ...]  # the whole prompt, tokenized
    text: str  # the whole prompt
    prefix_key: str | None  # the saved prefix it starts with (None: the library did not fit whole)
    note: str  # what was included and left out
    dropped_turns: int


class LibraryContext(NamedTuple):
    n_ctx: int  # the context to load with
    whole: bool  # it holds the whole library (else: the largest this machine and model allow)


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class LibraryChat:
    def __init__(self, libraries: LibraryRepository, cache: PromptCache, runtime: Runtime) -> None:
        self.libraries = libraries
        self.cache = cache
        self.runtime = runtime

    def context_for(self, library_id: int, model: str, minimum: int, reserve: int,
                    request: PlanRequest | None = None) -> LibraryContext:
        """The context to load ``model`` with for this library: enough for all of it
        (and a conversation of up to a quarter of it) when the model and this machine
        allow, else the largest that fits, never less than ``minimum``. ``request``: the
        KV cache types and placement the model's profile plans with."""
        gguf = self.runtime.inspect(model)
        tokens = library_tokens(self.libraries, library_id, model_fingerprint(gguf.path)).tokens
        want = max(minimum, needed_context(tokens, minimum // HISTORY_SHARE, reserve))
        while (grown := needed_context(tokens, want // HISTORY_SHARE, reserve)) > want:
            want = grown  # the conversation's quarter grows with the context: asking again gives the same
        whole = want <= gguf.context_length  # past its trained context, no load holds all of it
        want = min(want, gguf.context_length)
        base = request or PlanRequest()
        machine = self.runtime.machine()  # probed again by the load that follows
        if plan(gguf.shape, machine, replace(base, n_ctx=want)).fits:
            return LibraryContext(want, whole)
        largest = plan(gguf.shape, machine, replace(base, n_ctx=None))
        return LibraryContext(max(minimum, largest.n_ctx) if largest.fits else minimum, whole=False)

    def prepare(self, library_id: int, system_prompt: str, history: list[ChatMessage], n_ctx: int,
                reserve: int) -> Iterator[Progress]:
        """Yields prompt progress while a library prefix is evaluated the first time;
        returns the ``LibraryTurn`` (``result = yield from prepare(...)``)."""
        library = self.libraries.get(library_id)
        loaded = self.runtime.last_load
        assert loaded is not None, "load the model first"
        turns, dropped, history_tokens = fit_history(
            history, lambda ms: len(self.runtime.render_chat(ms).ids), n_ctx // HISTORY_SHARE)
        builder = LibraryPromptBuilder(self.libraries, self.runtime.count_tokens, loaded.info.fingerprint)
        question = next((m.content for m in reversed(turns) if m.role == "user"), "")
        built = builder.build(library, n_ctx - history_tokens - reserve, question)
        system = ChatMessage("system", (system_prompt.strip() + "\n\n" if system_prompt.strip() else "")
                             + built.system_text)
        messages = [system, *turns]
        rendered = self.runtime.render_chat(messages)
        full = tuple(rendered.ids)
        if len(full) + min(reserve, 64) > n_ctx:
            raise EnclaveError(f"The prompt is {len(full):,} tokens; the context holds {n_ctx:,}. Ask a shorter "
                               "question or load the model with a longer context.")
        note = built.note(n_ctx, needed_context(built.library_tokens, history_tokens, reserve))
        key = None
        if built.complete and built.units:
            key = yield from self._ensure_prefix(library_id, system, full, system_prompt)
        return LibraryTurn(messages, full, rendered.text, key, note, dropped)

    def _ensure_prefix(self, library_id: int, system: ChatMessage, full: tuple[int, ...],
                       system_prompt: str) -> Iterator[Progress]:
        """Make the worker hold the library prefix: already there, restored from disk, or
        evaluated now and saved. Returns the prefix's cache key."""
        loaded = self.runtime.last_load
        assert loaded is not None
        prefix_only = tuple(self.runtime.render_chat([system], add_generation_prompt=False).ids)
        prefix = full[: common_prefix(prefix_only, full)]
        settings = self.runtime.worker.settings
        assert settings is not None
        key = PromptCache.key(loaded.info.fingerprint, settings, prefix)
        if self.runtime.holds_prefix(key):
            return key
        saved = self.cache.lookup(key)
        if saved is not None:
            try:
                self.runtime.restore_state(saved, key)
                return key
            except EnclaveError:  # made by another build, damaged: evaluate it again
                self.cache.forget(key)
        for event in self.runtime.prefill(prefix, key):
            if isinstance(event, Progress):
                yield event
            elif isinstance(event, Failed):
                raise EnclaveError(event.message)
            elif isinstance(event, Done) and event.stats.stop_reason == "cancelled":
                raise EnclaveError("Stopped while reading the library; nothing was answered.")
        if self.cache.persistent:  # not with an encrypted database: the state is the library's text
            self.cache.folder.mkdir(parents=True, exist_ok=True)
            self.runtime.save_state(self.cache.path_for(key))
            scope = PromptCache.scope(library_id, loaded.info.fingerprint, settings, system_prompt)
            self.cache.record(key, scope=scope, library_id=library_id, model=loaded.gguf.path.name,
                              tokens=len(prefix))
        return key
