"""A whole library in one prompt: every document, delimited, in a stable order.

The library goes into the system message, so that from one question to the next the
prompt starts with the same tokens and the KV cache of that prefix is reused. Documents
keep the order they were added in (a document added later goes at the end, after the
cached prefix). When the library does not fit the budget, the documents, and sections of
very long ones, most relevant to the question by BM25 (SQLite FTS5's ranking) fill it, and
the answer is preceded by an exact account of what was left out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from app.conversations import Source
from app.libraries import Content, Document, Library, LibraryRepository
from inference.protocol import ChatMessage

INSTRUCTION = (
    "You answer questions about the documents below, which come from the user's library. "
    "Use only what they say. After each statement, cite its source as [doc N] or, "
    "for documents with pages, [doc N, p. M], where N is the document's id. If the documents do "
    "not contain the answer, say so plainly."
)
SECTION_CHARS = 8000  # very long documents are ranked and included by sections of about this size
SAFETY = 0.03  # token counts of the parts are summed; leave room for tokens merging at the seams
CountTokens = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Unit:
    """A document, or one section of a long one, as it appears in the prompt."""

    document: Document
    section: int | None  # None: the whole document
    text: str  # the delimited block
    tokens: int
    span: tuple[int, int] | None = None  # a section's characters in the document's text
    page: int | None = None  # the page a section starts on


@dataclass(frozen=True)
class LibraryPrompt:
    header: str  # the citation instructions, before the documents
    units: tuple[Unit, ...]
    left_out: tuple[Document, ...]  # documents with nothing included
    partial: tuple[Document, ...]  # long documents of which only some sections are included
    library_tokens: int  # the whole library, delimited
    included_tokens: int
    documents: int

    @property
    def system_text(self) -> str:
        return self.header + "".join(u.text for u in self.units)

    def sources(self) -> tuple[Source, ...]:
        """What the model was given, in prompt order, then what was left out."""
        given = tuple(Source(u.document.id, u.document.title, u.document.path, u.section,
                             u.span[0] if u.span else None, u.span[1] if u.span else None, u.page)
                      for u in self.units)
        return given + tuple(Source(d.id, d.title, d.path, left_out=True) for d in self.left_out)

    @property
    def complete(self) -> bool:
        return not self.left_out and not self.partial

    def note(self, n_ctx: int, needed_ctx: int) -> str:
        """The account shown before the answer and stored with it."""
        if self.complete:
            return (f"Read the whole library: {self.documents} documents, {self.library_tokens:,} tokens "
                    f"(context {n_ctx:,}).")
        included = len({u.document.id for u in self.units})
        text = (f"The library ({self.library_tokens:,} tokens) does not fit the {n_ctx:,}-token context: included "
                f"{included} of {self.documents} documents ({self.included_tokens:,} tokens), those most relevant "
                f"to the question.")
        if self.partial:
            text += " Only parts of: " + ", ".join(f"[doc {d.id}] {d.title}" for d in self.partial[:10]) + "."
        if self.left_out:
            names = ", ".join(f"[doc {d.id}] {d.title}" for d in self.left_out[:10])
            more = f" and {len(self.left_out) - 10} more" if len(self.left_out) > 10 else ""
            text += f" Left out: {names}{more}."
        return text + f" The whole library needs a context of about {needed_ctx:,} tokens."


def document_block(document: Document, content: Content, section: int | None = None,
                   span: tuple[int, int] | None = None) -> tuple[str, str]:
    """One document (or a section of it), delimited, with page markers; returned as
    (block, frame): ``frame`` is every character the block adds to the document's text."""
    start, end = span or (0, len(content.text))
    attrs = f'id="{document.id}" title="{escape(document.title or content.title)}" path="{escape(document.path)}"'
    if section is not None:
        attrs += f' section="{section + 1}"'
    head, tail = f"<document {attrs}>\n", "\n</document>\n"
    pieces, markers, pos = [], [], start
    if content.pages:
        first = max((n for n, offset in enumerate(content.pages, start=1) if offset <= start), default=1)
        markers.append(f"[page {first}]\n")
        for number, offset in enumerate(content.pages, start=1):
            if start < offset < end:
                pieces.append(content.text[pos:offset])
                markers.append(f"\n[page {number}]\n")
                pos = offset
        pieces.append(content.text[pos:end])
        body = markers[0] + "".join(p + m for p, m in zip(pieces, [*markers[1:], ""], strict=True))
    else:
        body = content.text[start:end]
    return head + body + tail, head + "".join(markers) + tail


def page_at(content: Content, offset: int) -> int | None:
    """The page (from 1) that the character at ``offset`` is on; None without pages."""
    if not content.pages:
        return None
    return max((n for n, start in enumerate(content.pages, start=1) if start <= offset), default=1)


def sections(content: Content) -> list[tuple[int, int]]:
    """Spans of about ``SECTION_CHARS``, cut at page starts or line ends where possible."""
    text, spans, start = content.text, [], 0
    while start < len(text):
        end = min(start + SECTION_CHARS, len(text))
        if end < len(text):
            cuts = [p for p in content.pages if start < p <= end] or []
            newline = text.rfind("\n", start + SECTION_CHARS // 2, end)
            end = cuts[-1] if cuts and cuts[-1] > start + SECTION_CHARS // 4 else (newline + 1 if newline > 0 else end)
        spans.append((start, end))
        start = end
    return spans


class LibraryPromptBuilder:
    """Builds library prompts for one tokenizer, caching token counts per content."""

    def __init__(self, repo: LibraryRepository, count: CountTokens, tokenizer: str) -> None:
        self.repo = repo
        self.count = count
        self.tokenizer = tokenizer

    def build(self, library: Library, budget: int, question: str) -> LibraryPrompt:
        documents = self.repo.documents(library.id, readable_only=True)
        header = INSTRUCTION + "\n\n"
        units, contents, texts = self._whole_units(documents)
        library_tokens = sum(u.tokens for u in units)
        available = int((budget - self._tokens([header])[0]) * (1 - SAFETY))
        if library_tokens <= available:
            chosen, left_out, partial = units, (), ()
        else:
            chosen, left_out, partial = self._select(units, contents, texts, available, question)
        return LibraryPrompt(
            header=header,
            units=tuple(chosen), left_out=tuple(left_out), partial=tuple(partial),
            library_tokens=library_tokens, included_tokens=sum(u.tokens for u in chosen), documents=len(units),
        )

    def whole_library(self, library_id: int) -> tuple[int, dict[str, int]]:
        """The library's tokens as a prompt holds them (each document once, with its
        delimiters), and each text's own count by sha256: the one figure every page,
        command and note shows once the library is counted with this tokenizer."""
        units, _, texts = self._whole_units(self.repo.documents(library_id, readable_only=True))
        return sum(u.tokens for u in units), texts

    # Counting ------------------------------------------------------------------------

    def _tokens(self, texts: Sequence[str]) -> list[int]:
        return self.count(list(texts)) if texts else []

    def _whole_units(self, documents: list[Document]
                     ) -> tuple[list[Unit], dict[str, Content], dict[str, int]]:
        """Every readable document once (identical files once, at the first path), with
        token counts from the cache or counted now and cached; their stored texts; and each
        text's own count (without its delimiters) by sha256."""
        seen: set[str] = set()
        unique = [d for d in documents if d.sha256 and not (d.sha256 in seen or seen.add(d.sha256))]
        contents = {d.sha256: self.repo.content(d.sha256) for d in unique if d.sha256}
        blocks = [document_block(d, contents[d.sha256]) for d in unique if d.sha256]  # (block, frame)
        cached = self.repo.count_tokens(list(contents), self.tokenizer, self._tokens,
                                        {sha: c.text for sha, c in contents.items()})
        # the delimiters and page markers are short: count them all at once, rather than caching them
        frames = self._tokens([frame for _, frame in blocks])
        units = [Unit(d, None, block, cached[d.sha256 or ""] + frame_tokens)
                 for d, (block, _), frame_tokens in zip(unique, blocks, frames, strict=True)]
        return units, contents, cached

    # Choosing ------------------------------------------------------------------------

    def _select(self, units: list[Unit], contents: dict[str, Content], texts: dict[str, int], available: int,
                question: str) -> tuple[list[Unit], list[Document], list[Document]]:
        """The most relevant units that fit, back in library order. A document longer
        than a quarter of the budget competes section by section."""
        candidates: list[Unit] = []
        for unit in units:
            if unit.tokens <= available // 4:
                candidates.append(unit)
                continue
            content = contents[unit.document.sha256 or ""]
            blocks = [(span, *document_block(unit.document, content, index, span))
                      for index, span in enumerate(sections(content))]
            # a section's text is its share of the document's count; its delimiters are counted
            frames = self._tokens([frame for _, _, frame in blocks])
            text_tokens = texts[unit.document.sha256 or ""]
            for index, ((span, block, _), frame_tokens) in enumerate(zip(blocks, frames, strict=True)):
                share = (span[1] - span[0]) / max(1, len(content.text))
                candidates.append(Unit(unit.document, index, block, frame_tokens + max(1, round(text_tokens * share)),
                                       span, page_at(content, span[0])))
        order = rank(question, [c.text for c in candidates])
        chosen: list[int] = []
        used = 0
        for i in order:
            if used + candidates[i].tokens <= available:
                chosen.append(i)
                used += candidates[i].tokens
        picked = [candidates[i] for i in sorted(chosen)]
        ids = {u.document.id for u in picked}
        whole = {u.document.id for u in picked if u.section is None}
        left_out = [u.document for u in units if u.document.id not in ids]
        partial = [u.document for u in units if u.document.id in ids and u.document.id not in whole]
        return picked, left_out, partial


def fit_history(messages: Sequence[ChatMessage], count: Callable[[Sequence[ChatMessage]], int],
                budget: int) -> tuple[list[ChatMessage], int, int]:
    """The most recent messages that fit ``budget`` tokens: the system prompt is always
    kept, then the oldest turns are dropped first, whole (a dropped question takes its
    answer along); the newest message always stays. Returns (messages, dropped, tokens).
    A binary search over the cut, so a long history costs a few renders, not one per turn."""
    system = [m for m in messages[:1] if m.role == "system"]
    turns = list(messages[len(system):])
    tokens = count(system + turns)
    if tokens <= budget or len(turns) <= 1:
        return system + turns, 0, tokens
    lo, hi = 1, len(turns) - 1  # the smallest cut that fits lies in (0, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if count(system + turns[mid:]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    cut = lo
    while cut < len(turns) - 1 and turns[cut].role == "assistant":  # never start with an answer
        cut += 1
    kept = system + turns[cut:]
    return kept, cut, count(kept)


def rank(question: str, texts: Sequence[str]) -> list[int]:
    """Indices of ``texts``, most relevant to ``question`` first (BM25, via an in-memory
    FTS5 index); texts that share no word with the question follow in their own order."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in question.lower()).split() if len(w) > 1]
    if not words or not texts:
        return list(range(len(texts)))
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE units USING fts5(text, tokenize='porter unicode61')")
        db.executemany("INSERT INTO units (rowid, text) VALUES (?, ?)", ((i, t) for i, t in enumerate(texts)))
        query = " OR ".join(f'"{w}"' for w in dict.fromkeys(words))
        ranked = [row[0] for row in db.execute("SELECT rowid FROM units WHERE units MATCH ? ORDER BY bm25(units)",
                                               [query])]
    finally:
        db.close()
    seen = set(ranked)
    return ranked + [i for i in range(len(texts)) if i not in seen]
