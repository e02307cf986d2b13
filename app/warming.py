"""Warm libraries: a library's KV prefix computed before the first question, and whether
it is there. The bodies of ``Services.warm_library`` and ``Services.library_warmth``,
which ``enclave library warm``/``show`` and the libraries page call.

Warming loads the model as a new conversation with the library would (its profile, the
context the library needs) and makes the worker hold the library prefix that question will
start with (``ChatService.warm`` → ``LibraryChat.warm``), saved with ``PromptCache``: the
question then restores it and evaluates only itself. With an encrypted database nothing is
saved to disk, so a warm state lasts only while the process that made it runs.

A library is *ready* for a model when a saved prefix of its scope (the model's weights, the
profile's KV cache types and flash attention, the system prompt) was made from the library
as it is now (``LibraryRepository.version``): told from the table, nothing loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from app.kv_cache import PromptCache
from app.libraries import document_version
from app.library_chat import ReadingStopped, WarmedPrefix
from app.profiles import load_request
from inference.errors import EnclaveError
from inference.fingerprint import model_fingerprint
from inference.protocol import ModelSettings, Progress

if TYPE_CHECKING:
    from app.services import Services

OnProgress = Callable[[int, int], None]
NOT_SAVED = ("The database is encrypted, so a warm library is not saved to disk (it is the documents' text): "
             "it stays warm while Enclave runs.")


@dataclass(frozen=True)
class Warmth:
    """Whether a library's next question with a model evaluates only itself."""

    library_id: int
    state: Literal["cold", "ready"]
    model_name: str | None  # None: no model given and no default model
    tokens: int | None = None  # the saved prefix's, when ready and on disk
    saved: bool = True  # False: the database is encrypted, a warm state lives in the worker only

    def describe(self) -> str:
        if self.model_name is None:
            return "Warm: no default model to warm the library for."
        if self.state == "cold":
            return (f"Cold for {self.model_name}: the first question reads the whole library "
                    "('enclave library warm' reads it ahead).")
        size = f" ({self.tokens:,} tokens saved)" if self.tokens is not None else " (while Enclave runs)"
        return f"Ready for {self.model_name}{size}: a question evaluates only itself."


@dataclass(frozen=True)
class WarmReport:
    library: str
    model_name: str
    tokens: int  # the library prefix's
    evaluated: int  # tokens evaluated now (0: it was saved or held already)
    seconds: float
    saved: bool  # on disk for later processes (False: the database is encrypted)
    cancelled: bool = False
    blocks: int = 0  # kept as this many per-document KV blocks (0: one prefix); when cancelled, 1: some kept

    def describe(self) -> str:
        if self.cancelled:
            kept = "the documents read so far are kept" if self.blocks else "nothing was saved"
            return f"Stopped: {self.library} stays cold for {self.model_name}; {kept}."
        if not self.evaluated:
            done = f"{self.library} was warm already for {self.model_name} ({self.tokens:,} tokens)."
        else:
            rate = self.evaluated / self.seconds if self.seconds > 0 else 0.0
            kept = f" as {self.blocks} document blocks" if self.blocks else ""
            done = (f"Warmed {self.library} for {self.model_name}{kept}: {self.tokens:,} tokens in "
                    f"{self.seconds:.1f} s ({rate:,.0f} tokens/s).")
        return f"{done} {'The next question evaluates only itself.' if self.saved else NOT_SAVED}"


def _model(services: Services, model: str | None) -> str | None:
    return model or services.current_settings().default_model


def _model_name(services: Services, ref: str) -> str:
    """As its user knows it: the registered model's name, else the file's."""
    found = services.models.find(ref)
    return found.name if found is not None else Path(ref).name


def cache_settings(services: Services, model: str) -> ModelSettings:
    """The KV cache types and flash attention a load of ``model`` by its profile gets (the
    planner keeps the ones asked for): what a saved prefix's scope is made of."""
    request = load_request(services.profile(model), services.current_settings())
    if request.planned is None:  # placed by hand: the settings go to llama.cpp as they are
        return request.settings
    return replace(request.settings, type_k=request.planned.type_k, type_v=request.planned.type_v,
                   flash_attn=request.planned.flash_attn)


def warmth(services: Services, library_id: int, model: str | None) -> Warmth:
    """``Services.library_warmth``: from the prompt cache's table, nothing loaded."""
    ref = _model(services, model)
    saved = services.prompt_cache.persistent
    if not ref:
        return Warmth(library_id, "cold", None, saved=saved)
    gguf = services.runtime.inspect(ref)  # reads the file's header
    scope = PromptCache.scope(library_id, model_fingerprint(gguf.path), cache_settings(services, ref),
                              services.chat.default_system_prompt(ref))
    state = services.prompt_cache.current(scope, services.libraries.version(library_id))
    ready = state is not None and (state.tokens is not None or services.runtime.holds_prefix(state.key))
    tokens = state.tokens if state else None
    if not ready:  # kept document by document (library_attention = isolated)?
        documents = [document_version(d) for d in services.libraries.documents(library_id, readable_only=True)]
        tokens = services.prompt_cache.current_blocks(scope, documents)
        ready = tokens is not None
    return Warmth(library_id, "ready" if ready else "cold", _model_name(services, ref), tokens, saved)


def warm(services: Services, library_id: int, model: str | None, on_progress: OnProgress,
         cancelled: Callable[[], bool]) -> WarmReport:
    """``Services.warm_library``: ``cancelled`` is asked at every progress step (and before
    starting); a stop leaves the library cold."""
    ref = _model(services, model)
    if not ref:
        raise EnclaveError("No model to warm the library for. Pass --model MODEL, or set a default with "
                           "'enclave settings set default_model MODEL'.")
    library = services.libraries.get(library_id)
    name = _model_name(services, ref)
    started = time.monotonic()
    first: Progress | None = None
    last: Progress | None = None

    def report(prefix: WarmedPrefix | None, kept: int = 0) -> WarmReport:
        evaluated = last.done - first.done if first is not None and last is not None else 0
        return WarmReport(library.name, name, prefix.tokens if prefix else 0, evaluated,
                          time.monotonic() - started, services.prompt_cache.persistent, cancelled=prefix is None,
                          blocks=prefix.blocks if prefix else kept)

    if cancelled():
        return report(None)
    warming = services.chat.warm(library_id, ref)
    try:
        while True:
            event = next(warming)
            if isinstance(event, Progress):
                first, last = first or event, event
                on_progress(event.done, event.total)
            if cancelled():
                services.chat.cancel()
    except StopIteration as finished:
        return report(finished.value)
    except ReadingStopped as stop:
        return report(None, kept=1 if stop.kept else 0)
