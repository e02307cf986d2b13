"""A library's tokens with a model and the context it needs: the bodies of
``Services.library_tokens`` and ``Services.size_library``, which the window and
``enclave library show --model`` both call.

Exact counts need the model's tokenizer. The model is loaded vocabulary-only for that, but
only when asked (``load=True``) or when no other model is in the worker: counting must not
silently push out the model a chat is using.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from app.library_sizing import DEFAULT_RESERVE, LibrarySizing, library_tokens, needed_context, size_library
from inference.errors import EnclaveError
from inference.fingerprint import model_fingerprint
from inference.gguf_info import GGUFInfo
from inference.planner import PlanRequest
from inference.protocol import KvCacheType

if TYPE_CHECKING:
    from app.services import Services

NO_TOKENIZER = ""  # a tokenizer key no count is ever saved under: every figure is an estimate
Count = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class LibraryTokens:
    """The whole-library token figure for a model, against the current context."""

    library_id: int
    tokens: int
    exact: bool
    context_length: int  # the context the model's profile loads it with (the setting, without a model)
    needed_ctx: int
    model_name: str | None  # None: no model (no default model chosen)
    per_document: dict[str, int] = field(default_factory=dict)  # sha256 -> tokens (exact counts only)
    why_estimate: str = ""

    @property
    def fits(self) -> bool:
        return self.needed_ctx <= self.context_length

    def describe(self) -> str:
        about = "" if self.exact else "about "
        estimate = f" (estimated: {self.why_estimate})" if not self.exact and self.why_estimate else ""
        if self.fits:
            verdict = f"fits in the current context ({self.context_length:,} tokens)"
        else:
            verdict = (f"does not fit in the current context ({self.context_length:,} tokens; "
                       f"it needs {self.needed_ctx:,})")
        return f"Whole library: {about}{self.tokens:,} tokens{estimate} — {verdict}"


@dataclass(frozen=True)
class SizingResult:
    """The planner's verdict on a context that holds the whole library, with the counts it used."""

    library_id: int
    model: str  # the model it was sized for, as its user named it (whose profile to change)
    model_name: str
    sizing: LibrarySizing
    per_document: dict[str, int]  # sha256 -> tokens, the documents counted exactly


@dataclass(frozen=True)
class _Tokenizer:
    model_name: str
    gguf: GGUFInfo
    key: str
    count: Count | None
    why_not: str


def _model_name(services: Services, ref: str) -> str:
    found = services.models.find(ref)
    return found.name if found is not None else Path(ref).name


def _tokenizer(services: Services, ref: str, *, load: bool) -> _Tokenizer:
    name = _model_name(services, ref)
    gguf = services.runtime.inspect(ref)
    library_chat = services.chat.library_chat
    assert library_chat is not None  # Services always gives its chat service one
    count = library_chat.tokenizer(ref, load=load)
    why_not = "" if count else f"another model is loaded; 'Count exactly' uses {name}'s tokenizer"
    return _Tokenizer(name, gguf, model_fingerprint(gguf.path), count, why_not)


def measure(services: Services, library_id: int, model: str | None, *, load: bool) -> LibraryTokens:
    settings = services.current_settings()
    ref = model or settings.default_model
    if not ref:
        tokens, exact, _ = library_tokens(services.libraries, library_id, NO_TOKENIZER)
        return LibraryTokens(library_id, tokens, exact, settings.context_length,
                             needed_context(tokens, 0, DEFAULT_RESERVE), None,
                             why_estimate="no default model chosen")
    tok = _tokenizer(services, ref, load=load)
    tokens, exact, per_document = library_tokens(services.libraries, library_id, tok.key, tok.count)
    return LibraryTokens(library_id, tokens, exact, services.profile_context(ref, tok.gguf),
                         needed_context(tokens, 0, DEFAULT_RESERVE), tok.model_name, per_document, tok.why_not)


def size(services: Services, library_id: int, model: str | None, kv_type: KvCacheType | None) -> SizingResult:
    ref = model or services.current_settings().default_model
    if not ref:
        raise EnclaveError("Choose a default model first (Settings or Models): the context a library needs "
                           "depends on the model.")
    tok = _tokenizer(services, ref, load=True)
    request = services.profile_request(ref, tok.gguf) or PlanRequest()  # the profile's KV cache and placement
    if kv_type is not None:
        request = replace(request, type_k=kv_type, type_v=kv_type)
    sizing = size_library(services.libraries, library_id, tok.gguf, tok.key, services.machine(), request,
                          count=tok.count)
    counted = library_tokens(services.libraries, library_id, tok.key).per_document  # cached now: a read
    return SizingResult(library_id, ref, tok.model_name, sizing, counted)
