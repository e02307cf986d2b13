"""How many tokens a library is, and the context it needs — computed off the GUI thread.

Nothing here touches a widget: the page runs these functions through
``TaskRunner.run(..., serial=True)`` (they may talk to the model worker) and shows the
returned records. Exact counts need the default model's tokenizer; the model is loaded
vocabulary-only for that, but only when asked (``load=True``) or when no other model is
in the worker: counting must not silently push out the model a chat is using.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.library_sizing import DEFAULT_RESERVE, LibrarySizing, library_tokens, needed_context, size_library
from app.services import Services
from inference.devices import detect_machine
from inference.errors import EnclaveError
from inference.fingerprint import model_fingerprint
from inference.gguf_info import GGUFInfo
from inference.planner import PlanRequest
from inference.protocol import ModelSettings

NO_TOKENIZER = ""  # a tokenizer key no count is ever saved under: every figure is an estimate
Count = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class LibraryTokens:
    """The whole-library token figure for the default model, against the current context."""

    library_id: int
    tokens: int
    exact: bool
    context_length: int  # the ``context_length`` setting
    needed_ctx: int
    model_name: str | None  # None: no default model
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
    key = model_fingerprint(gguf.path)
    loaded = services.runtime.model
    if loaded is not None and loaded.fingerprint == key:
        return _Tokenizer(name, gguf, key, services.runtime.count_tokens, "")
    if loaded is None or load:
        services.runtime.load(ref, ModelSettings(path=str(gguf.path), vocab_only=True))
        return _Tokenizer(name, gguf, key, services.runtime.count_tokens, "")
    return _Tokenizer(name, gguf, key, None, f"another model is loaded; 'Count exactly' uses {name}'s tokenizer")


def measure(services: Services, library_id: int, *, load: bool = False) -> LibraryTokens:
    """The library's tokens with the default model's tokenizer (exact when it can be used)."""
    settings = services.current_settings()
    ref = settings.default_model
    if not ref:
        tokens, exact, _ = library_tokens(services.libraries, library_id, NO_TOKENIZER)
        return LibraryTokens(library_id, tokens, exact, settings.context_length,
                             needed_context(tokens, 0, DEFAULT_RESERVE), None,
                             why_estimate="no default model chosen")
    tok = _tokenizer(services, ref, load=load)
    tokens, exact, per_document = library_tokens(services.libraries, library_id, tok.key, tok.count)
    return LibraryTokens(library_id, tokens, exact, settings.context_length,
                         needed_context(tokens, 0, DEFAULT_RESERVE), tok.model_name, per_document, tok.why_not)


@dataclass(frozen=True)
class SizingResult:
    library_id: int
    model_name: str
    sizing: LibrarySizing


def size_context(services: Services, library_id: int) -> SizingResult:
    """The planner's verdict on a context that holds the whole library (exact counts:
    the user asked, so the tokenizer may be loaded)."""
    ref = services.current_settings().default_model
    if not ref:
        raise EnclaveError("Choose a default model first (Settings or Models): the context a library needs "
                           "depends on the model.")
    tok = _tokenizer(services, ref, load=True)
    sizing = size_library(services.libraries, library_id, tok.gguf, tok.key, detect_machine(), PlanRequest(),
                          count=tok.count)
    return SizingResult(library_id, tok.model_name, sizing)
