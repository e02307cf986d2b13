"""Model text → Markdown ready for Qt's renderer (``QTextDocument`` / ``insertMarkdown``).

Two things are added before Qt parses the text, both outside code:

- citations ``[doc N]`` / ``[doc N, p. M]`` become links ``cite:N`` / ``cite:N:M``;
- every fenced code block is followed by a "Copy code" link ``enclave:copy:K``; the block's
  text is returned alongside, so the view can copy exactly what the model wrote.

Raw HTML in a reply is never interpreted (``MarkdownNoHTML``): a model's output is data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from PySide6.QtGui import QTextDocument

from app.conversations import Source

FEATURES = QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML
CITATION = re.compile(r"\[doc\s+(\d+)(?:\s*,\s*pp?\.\s*(\d+)(?:\s*[-–]\s*\d+)?)?\]", re.IGNORECASE)
FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]{0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.DOTALL)
COPY_PREFIX = "enclave:copy:"
CITE_SCHEME = "cite"


@dataclass
class Prepared:
    markdown: str
    code_blocks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Citation:
    document_id: int
    page: int | None
    span: tuple[int, int] | None = None  # a passage's characters in the document's text


def citation_href(document_id: int, page: int | None) -> str:
    return f"{CITE_SCHEME}:{document_id}" + (f":{page}" if page is not None else "")


def source_href(source: Source) -> str:
    """A source under an answer: its passage (``cite:N:p:start-end``), page or document."""
    href = citation_href(source.document_id, source.page)
    if source.start is not None and source.end is not None:
        href += ("" if source.page is not None else ":") + f":{source.start}-{source.end}"
    return href


def parse_citation(href: str) -> Citation | None:
    parts = href.split(":")
    if parts[0] != CITE_SCHEME or not 2 <= len(parts) <= 4:
        return None
    span = None
    if len(parts) == 4:
        start, _, end = parts.pop().partition("-")
        if not (start.isdigit() and end.isdigit()):
            return None
        span = (int(start), int(end))
    if not parts[1].isdigit() or (len(parts) == 3 and parts[2] and not parts[2].isdigit()):
        return None
    page = int(parts[2]) if len(parts) == 3 and parts[2] else None
    return Citation(int(parts[1]), page, span)


def _link_citations(text: str) -> str:
    """Citations in prose become links; inline code spans are left alone."""
    def link(match: re.Match[str]) -> str:
        label = match.group(0).replace("[", "\\[").replace("]", "\\]")
        page = int(match.group(2)) if match.group(2) else None
        return f"[{label}]({citation_href(int(match.group(1)), page)})"

    out, pos = [], 0
    for code in INLINE_CODE.finditer(text):
        out.append(CITATION.sub(link, text[pos:code.start()]))
        out.append(code.group(0))
        pos = code.end()
    out.append(CITATION.sub(link, text[pos:]))
    return "".join(out)


def prepare(text: str) -> Prepared:
    """``text`` with citation links and a copy link under each closed code block."""
    prepared = Prepared("")
    out, pos = [], 0
    for fence in FENCE.finditer(text):
        out.append(_link_citations(text[pos:fence.start()]))
        out.append(fence.group(0))
        out.append(f"\n\n[Copy code]({COPY_PREFIX}{len(prepared.code_blocks)})\n")
        prepared.code_blocks.append(fence.group(2).rstrip("\n"))
        pos = fence.end()
    out.append(_link_citations(text[pos:]))
    prepared.markdown = "".join(out)
    return prepared
