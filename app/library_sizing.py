"""How much context a library needs with a model, and whether this machine holds it.

"Library: 182,340 tokens; needs 196,608 context; KV cache 9.0 GiB at q8_0; fits: ..."
Token counts come from the per-tokenizer cache; documents not yet counted are counted
with the model's tokenizer when one is given, else estimated from their length (and the
figure says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from app.libraries import LibraryRepository
from app.prompting import SAFETY, LibraryPromptBuilder
from inference.devices import Machine, format_size
from inference.gguf_info import GGUFInfo
from inference.planner import Plan, PlanError, PlanRequest, plan

CONTEXT_ROUNDING = 1024
INSTRUCTION_TOKENS = 160  # an upper bound for the citation instruction in any tokenizer
CHARS_PER_TOKEN = 3.2  # a cautious estimate for prose and code alike
DEFAULT_RESERVE = 2048
FRAME_TOKENS = 40  # a document's delimiters and page markers, when not counted


def needed_context(library_tokens: int, history_tokens: int, reserve: int) -> int:
    """A context length (rounded up to 1,024) that holds the library (with the margin
    the prompt builder keeps, and its instruction), the conversation and the reply."""
    need = math.ceil(library_tokens / (1 - SAFETY)) + INSTRUCTION_TOKENS + history_tokens + reserve + 256
    return -(-need // CONTEXT_ROUNDING) * CONTEXT_ROUNDING


@dataclass(frozen=True)
class LibrarySizing:
    library_tokens: int
    exact: bool  # False: some documents' tokens were estimated
    needed_ctx: int
    trained_ctx: int
    plan: Plan | None  # None: the planner refused the request itself

    @property
    def fits(self) -> bool:
        return self.plan is not None and self.plan.fits and self.needed_ctx <= self.trained_ctx

    def describe(self) -> str:
        about = "" if self.exact else "about "
        text = f"Library: {about}{self.library_tokens:,} tokens; needs a context of {self.needed_ctx:,}"
        if self.plan is not None:
            text += f"; KV cache {format_size(self.plan.kv_bytes)} at {self.plan.type_k}"
        if self.needed_ctx > self.trained_ctx:
            return text + (f"; more than the model's trained context ({self.trained_ctx:,}): the most relevant "
                           "documents are used for each question.")
        if self.plan is not None:
            return f"{text}. {self.plan.verdict}"
        return text + "."


class LibraryTokenCount(NamedTuple):
    tokens: int  # every readable document, with its delimiters
    exact: bool  # every document counted with the tokenizer (else estimated from characters)
    per_document: dict[str, int]  # sha256 -> tokens, the documents counted exactly


def library_tokens(repo: LibraryRepository, library_id: int, tokenizer: str,
                   count: Callable[[Sequence[str]], list[int]] | None = None) -> LibraryTokenCount:
    """The library's tokens. With ``count`` (the model's tokenizer), exactly as the prompt
    builder counts them — what is not cached yet counted now — so the pages, the CLI and the
    answer's note show one figure; without it, from the cache, the rest (and the
    delimiters) estimated from characters."""
    if count is not None:
        tokens, per_document = LibraryPromptBuilder(repo, count, tokenizer).whole_library(library_id)
        return LibraryTokenCount(tokens, True, per_document)
    chars = {d.sha256: d.chars for d in repo.documents(library_id, readable_only=True) if d.sha256}
    shas = list(chars)
    counts = repo.token_counts(shas, tokenizer)
    missing = [sha for sha in shas if sha not in counts]
    estimated = sum(int(chars[sha] / CHARS_PER_TOKEN) for sha in missing)
    frames = FRAME_TOKENS * len(shas)
    return LibraryTokenCount(sum(counts.values()) + estimated + frames, not missing, counts)


def size_library(repo: LibraryRepository, library_id: int, gguf: GGUFInfo, tokenizer: str, machine: Machine,
                 request: PlanRequest, *, count: Callable[[Sequence[str]], list[int]] | None = None,
                 reserve: int = DEFAULT_RESERVE) -> LibrarySizing:
    tokens, exact, _ = library_tokens(repo, library_id, tokenizer, count)
    need = needed_context(tokens, 0, reserve)
    try:
        chosen: Plan | None = plan(gguf.shape, machine, PlanRequest(
            n_ctx=min(need, gguf.context_length), type_k=request.type_k, type_v=request.type_v,
            flash_attn=request.flash_attn, margin_bytes=request.margin_bytes))
    except PlanError:
        chosen = None
    return LibrarySizing(tokens, exact, need, gguf.context_length, chosen)
