"""HTML to readable text: what a browser would show, with block elements on their own lines.

Used for .html files and for e-mails that only have an HTML body. The tree is walked with an
explicit stack, so absurdly deep nesting cannot exhaust Python's recursion limit.
"""

from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup, Tag
from bs4.element import CData, Comment, Declaration, Doctype, NavigableString, ProcessingInstruction

from app.extract.base import Extracted, clean_title, tidy, title_or_name
from app.extract.text import decode

_DROP = frozenset({"script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed",
                   "title", "meta", "link", "select", "input"})
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "ul", "ol", "dl",
                        "figure", "hr", "section", "article", "header", "footer", "main", "aside", "nav", "form",
                        "fieldset", "details", "address"})
_LINE = frozenset({"div", "li", "tr", "dt", "dd", "figcaption", "caption", "summary", "legend", "body", "html",
                   "center"})
_SKIP_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction, CData)
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class _End:
    """Pushed on the stack after a tag's children: what to write once the tag is closed."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Writer:
    """Collects text, collapsing HTML whitespace except inside <pre>. Line breaks asked for in a
    row merge (the most wins), so nested blocks do not pile up blank lines."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending = 0  # newlines owed before the next text
        self.line_start = True

    def _flush(self) -> None:
        if self.pending and self.parts:
            self.parts[-1] = self.parts[-1].rstrip(" ")
            self.parts.append("\n" * self.pending)
        self.pending = 0

    def text(self, s: str) -> None:
        s = _SPACES.sub(" ", s)
        if self.line_start:
            s = s.lstrip(" ")
        if s:
            self._flush()
            self.parts.append(s)
            self.line_start = False

    def raw(self, s: str) -> None:
        if s:
            self._flush()
            self.parts.append(s)
            self.line_start = s.endswith("\n")

    def prefix(self, s: str) -> None:
        """A marker at the start of a line ("- ", "## "); text after it is still trimmed on the left."""
        self._flush()
        self.parts.append(s)
        self.line_start = True

    def breaks(self, count: int) -> None:
        """End the line (1) or the paragraph (2)."""
        self.pending = max(self.pending, count)
        self.line_start = True

    def result(self) -> str:
        return tidy("".join(self.parts))


def _heading_level(name: str) -> int:
    return int(name[1]) if len(name) == 2 and name[0] == "h" and name[1] in "123456" else 0


def html_to_text(html: str) -> tuple[str, str]:
    """Returns (visible text, title). The title is <title>, else the first <h1>, else ""."""
    soup = BeautifulSoup(html, "html.parser")
    title = ""
    if soup.title is not None:
        title = clean_title(soup.title.get_text())
    if not title:
        h1 = soup.find("h1")
        if h1 is not None:
            title = clean_title(h1.get_text())
    out = _Writer()
    stack: list[object] = [soup]
    while stack:
        node = stack.pop()
        if isinstance(node, _End):
            if node.text.startswith("\n"):
                out.breaks(len(node.text))
            else:
                out.raw(node.text)
        elif isinstance(node, NavigableString):
            if not isinstance(node, _SKIP_STRINGS):
                out.text(str(node))
        elif isinstance(node, Tag):
            name = (node.name or "").lower()
            if name in _DROP:
                continue
            if name == "br":
                out.raw("\n")
                continue
            if name == "pre":
                out.breaks(2)
                out.raw(node.get_text())
                out.breaks(2)
                continue
            level = _heading_level(name)
            if name in _PARAGRAPH:
                out.breaks(2)
                stack.append(_End("\n\n"))
            elif name in _LINE:
                out.breaks(1)
                stack.append(_End("\n"))
            elif name in ("td", "th"):
                stack.append(_End("\t"))
            if level:
                out.prefix("#" * level + " ")
            elif name == "li":
                out.prefix("- ")
            stack.extend(reversed(list(node.children)))
    return out.result(), title


def declared_charset(data: bytes) -> str | None:
    m = _META_CHARSET.search(data[:4096])
    return m.group(1).decode("ascii") if m else None


def extract_html(data: bytes, path: Path) -> Extracted:
    source, encoding, warnings = decode(data, path, declared=declared_charset(data))
    text, title = html_to_text(source)
    return Extracted(text=text, title=title_or_name(path, title), kind="html", encoding=encoding,
                     warnings=tuple(warnings))
