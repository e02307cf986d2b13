"""Prompts for conversations bound to a library, with the library's KV cache reused.

The prompt is [system: the user's system prompt + the library] + the conversation. The
conversation gets up to a quarter of the context (oldest turns dropped first), the reply
its reserve, the library the rest. When the whole library fits, its prefix is the same for
every question, so its KV state is kept: in the worker between questions, and on disk
(``PromptCache``) across restarts unless the database is encrypted. The first question
evaluates the library once (with progress); the next ones evaluate only themselves.
With ``library_attention = isolated`` (the default where the model allows it) the library
is kept as one KV block per document instead, composed for each question
(``app/library_blocks.py``): a document added or removed costs only itself.

The context is sized from exact token counts: the first time a model meets a library its
documents are counted with that model's tokenizer (``count``, with progress) before the
context is chosen, so the first question loads the context the later ones use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from app.conversations import Source
from app.kv_cache import PromptCache
from app.libraries import Library, LibraryRepository
from app.library_blocks import SLOT, BlockComposer, ReadingStopped
from app.library_sizing import library_tokens, needed_context
from app.prompting import LibraryPrompt, LibraryPromptBuilder, fit_history
from app.runtime import Runtime
from inference.errors import EnclaveError
from inference.fingerprint import model_fingerprint
from inference.planner import PlanRequest, plan
from inference.protocol import ChatMessage, Done, Failed, ModelSettings, Progress, Segments

HISTORY_SHARE = 4  # the conversation may take up to 1/4 of the context
QUESTION_ALLOWANCE = 256  # tokens a warmed library leaves for the first question, beyond the reply's reserve
WARM_QUESTION = "?"  # a stand-in question: warming needs only the prompt's start, which no question changes
COUNTING_STEPS = 100  # at most this many progress events while a library's tokens are counted
Count = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class LibraryCounting:
    """The library's documents counted with a model's tokenizer so far, the first time the
    model meets the library: said before the context is chosen."""

    done: int  # documents counted
    total: int  # documents to count

    def describe(self) -> str:
        return f"Counting the library's tokens {self.done} / {self.total} documents"


class WarmedPrefix(NamedTuple):
    key: str  # the saved prefix's cache key
    tokens: int
    blocks: int = 0  # the documents' KV blocks it is composed of (0: one prefix, read in one pass)


@dataclass(frozen=True)
class LibraryTurn:
    messages: list[ChatMessage]
    tokens: tuple[int, ...]  # the whole prompt, tokenized
    text: str  # the whole prompt
    prefix_key: str | None  # the saved prefix it starts with (None: the library did not fit whole)
    note: str  # what was included and left out
    dropped_turns: int
    sources: tuple[Source, ...] = ()  # what the model is given, then what was left out


class LibraryContext(NamedTuple):
    n_ctx: int  # the context to load with
    whole: bool  # it holds the whole library (else: the largest this machine and model allow)


def _system(system_prompt: str, library_text: str) -> ChatMessage:
    """The system message: the user's system prompt, then the library."""
    return ChatMessage("system", (system_prompt.strip() + "\n\n" if system_prompt.strip() else "") + library_text)


def _prefix(segments: Segments) -> tuple[int, ...]:
    """What every question on the library starts with: the head and the documents."""
    return segments.head + tuple(t for part in segments.parts for t in part)


class LibraryChat:
    def __init__(self, libraries: LibraryRepository, cache: PromptCache, runtime: Runtime,
                 attention: Callable[[], str] = lambda: "isolated") -> None:
        """``attention``: the ``library_attention`` setting."""
        self.libraries = libraries
        self.cache = cache
        self.runtime = runtime
        self.blocks = BlockComposer(cache, runtime, attention)

    def tokenizer(self, model: str, *, load: bool) -> Count | None:
        """``model``'s tokenizer: the loaded model's when it has the same weights, else the
        model loaded vocabulary-only — when ``load`` or when the worker holds no model
        (counting must not silently push out the model a chat is using). None: neither."""
        gguf = self.runtime.inspect(model)
        loaded = self.runtime.model
        if loaded is not None and loaded.fingerprint == model_fingerprint(gguf.path):
            return self.runtime.count_tokens
        if loaded is None or load:
            self.runtime.load(model, ModelSettings(path=str(gguf.path), vocab_only=True))
            return self.runtime.count_tokens
        return None

    def count(self, library_id: int, model: str, *, load: bool = True) -> Iterator[LibraryCounting]:
        """Count, with ``model``'s tokenizer (see ``tokenizer``), the library's readable
        documents it has not counted yet, yielding progress; nothing when all are counted."""
        key = model_fingerprint(self.runtime.inspect(model).path)
        shas = list(dict.fromkeys(d.sha256 for d in self.libraries.documents(library_id, readable_only=True)
                                  if d.sha256))
        counted = self.libraries.token_counts(shas, key)
        missing = [sha for sha in shas if sha not in counted]
        count = self.tokenizer(model, load=load) if missing else None
        if count is None:
            return
        step = -(-len(missing) // COUNTING_STEPS)
        yield LibraryCounting(0, len(missing))
        for start in range(0, len(missing), step):
            self.libraries.count_tokens(missing[start:start + step], key, count)
            yield LibraryCounting(min(start + step, len(missing)), len(missing))

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
        turns, dropped, history_tokens = fit_history(
            history, lambda ms: len(self.runtime.render_chat(ms).ids), n_ctx // HISTORY_SHARE)
        question = next((m.content for m in reversed(turns) if m.role == "user"), "")
        built = self._build(library, n_ctx - history_tokens - reserve, question)
        whole = built.complete and bool(built.units)
        if whole:
            segments = self._segments(system_prompt, built, turns)
            full, text = segments.ids, segments.text
        else:  # a selection for this question: no common prefix to keep
            rendered = self.runtime.render_chat([_system(system_prompt, built.system_text), *turns])
            full, text = tuple(rendered.ids), rendered.text
        if len(full) + min(reserve, 64) > n_ctx:
            raise EnclaveError(f"The prompt is {len(full):,} tokens; the context holds {n_ctx:,}. Ask a shorter "
                               "question or load the model with a longer context.")
        note = built.note(n_ctx, needed_context(built.library_tokens, history_tokens, reserve))
        key = None
        if whole:
            key, said = yield from self._hold(library_id, system_prompt, built, segments)
            note = f"{note} {said}".strip()
        messages = [_system(system_prompt, built.system_text), *turns]
        return LibraryTurn(messages, full, text, key, note, dropped, built.sources())

    def warm(self, library_id: int, system_prompt: str, n_ctx: int, reserve: int) -> Iterator[Progress]:
        """Make the worker hold (and save) the library prefix that the next question on the
        library starts with, as ``prepare`` would for that question, yielding progress while
        it is evaluated; returns the ``WarmedPrefix``. Raises when the library does not fit
        whole in ``n_ctx``: each question then reads its own selection, with no common prefix.
        With isolated attention only the missing documents' blocks are encoded and saved."""
        library = self.libraries.get(library_id)
        built = self._build(library, n_ctx - reserve - QUESTION_ALLOWANCE, "")
        if not built.units:
            raise EnclaveError(f"Library {library.name!r} has no readable documents, so there is nothing to warm. "
                               f"Add files with 'enclave library add {library.name} PATH...'.")
        if not built.complete:
            raise EnclaveError(f"Library {library.name!r} does not fit whole in the {n_ctx:,}-token context this "
                               "model gets here, so each question reads the parts most relevant to it and there is "
                               f"no common start to warm. 'enclave library show {library.name} --model MODEL' says "
                               "what it needs.")
        segments = self._segments(system_prompt, built, [ChatMessage("user", WARM_QUESTION)])
        prefix = _prefix(segments)
        if self.blocks.attention(len(built.units)).mode == "isolated":
            yield from self.blocks.encode_missing(self._scope(library_id, system_prompt), library_id,
                                                  [u.document for u in built.units], segments)
            return WarmedPrefix(self.blocks.prefix_key(segments), len(prefix), blocks=len(built.units))
        key = yield from self._ensure_prefix(library_id, prefix, system_prompt)
        return WarmedPrefix(key, len(prefix))

    def _build(self, library: Library, budget: int, question: str) -> LibraryPrompt:
        """The library's part of the prompt within ``budget`` tokens."""
        loaded = self.runtime.last_load
        assert loaded is not None, "load the model first"
        builder = LibraryPromptBuilder(self.libraries, self.runtime.count_tokens, loaded.info.fingerprint)
        return builder.build(library, budget, question)

    def _segments(self, system_prompt: str, built: LibraryPrompt, turns: Sequence[ChatMessage]) -> Segments:
        """The prompt with every document tokenized alone: the same document is the same
        tokens (and KV block) whatever its neighbours."""
        system = _system(system_prompt, built.header + SLOT)
        return self.runtime.render_segments([system, *turns], SLOT, [u.text for u in built.units])

    def _hold(self, library_id: int, system_prompt: str, built: LibraryPrompt, segments: Segments
              ) -> Iterator[Progress]:
        """Make the worker hold the library prefix, document by document or in one pass
        (``BlockComposer.attention``). Returns (its key, what to say about how it was read)."""
        choice = self.blocks.attention(len(built.units))
        if choice.mode == "isolated":
            key = yield from self.blocks.hold(self._scope(library_id, system_prompt), library_id,
                                              [u.document for u in built.units], segments)
        else:
            key = yield from self._ensure_prefix(library_id, _prefix(segments), system_prompt)
        return key, choice.note

    def _scope(self, library_id: int, system_prompt: str) -> str:
        loaded, settings = self.runtime.model, self.runtime.worker.settings
        assert loaded is not None and settings is not None
        return PromptCache.scope(library_id, loaded.fingerprint, settings, system_prompt)

    def _ensure_prefix(self, library_id: int, prefix: tuple[int, ...], system_prompt: str) -> Iterator[Progress]:
        """Make the worker hold the library prefix: already there, restored from disk, or
        evaluated now and saved. Returns the prefix's cache key."""
        loaded = self.runtime.last_load
        assert loaded is not None
        version = self.libraries.version(library_id)  # the library this prefix was made from
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
                raise ReadingStopped("Stopped while reading the library; nothing was answered.")
        scope = self._scope(library_id, system_prompt)
        if self.cache.persistent:  # not with an encrypted database: the state is the library's text
            self.cache.folder.mkdir(parents=True, exist_ok=True)
            self.runtime.save_state(self.cache.path_for(key))
            self.cache.record(key, scope=scope, library_id=library_id, model=loaded.gguf.path.name,
                              tokens=len(prefix), version=version)
        else:
            self.cache.remember(key, scope=scope, version=version)
        return key
