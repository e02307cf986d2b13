"""Plain text, Markdown and source code, and the decoding every text-like format shares.

Decoding order: a byte order mark (UTF-8, UTF-32, UTF-16) wins; then a binary sniff; then strict
UTF-8; then an encoding the document declares (HTML's ``<meta charset>``); then charset-normalizer.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import charset_normalizer

from app.extract.base import Extracted, ExtractionError, normalise_newlines, title_or_name
from app.extract.kinds import SNIFF_BYTES, is_probably_binary

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# When charset-normalizer finds several encodings equally plausible (common for short Western
# European texts), the one most files in the wild actually use is preferred.
_PREFERRED_ON_TIE = ("utf_8", "cp1252", "latin_1", "iso8859_15", "cp1250", "cp1251", "shift_jis", "gb18030",
                     "big5", "euc_kr")
_REPLACED = "Some bytes could not be decoded and were replaced with �."


def binary_error(path: Path) -> ExtractionError:
    return ExtractionError(
        f"{path.name} looks like a binary file, not text, although its name ends in {path.suffix or 'nothing'}; "
        "rename it if it has the wrong extension, or leave it out of the library.", reason="binary")


def _looks_binary_text(text: str) -> bool:
    """The binary sniff applied to already-decoded text (after a byte order mark)."""
    head = text[:SNIFF_BYTES]
    return "\x00" in head or is_probably_binary(head.encode("utf-8", errors="replace"))


def _nearly_utf8(data: bytes) -> str | None:
    """UTF-8 with a few broken bytes (a file cut mid-character, one stray byte) is still UTF-8."""
    text = data.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd")
    bad = replaced - data.count(b"\xef\xbf\xbd")
    if bad > 3:
        return None
    good = len(text) - len(text.encode("ascii", errors="ignore")) - replaced  # valid non-ASCII characters
    return text if good >= 10 * bad else None


def _detect(data: bytes) -> tuple[str, str] | None:
    results = charset_normalizer.from_bytes(data)
    best = results.best()
    if best is None:
        return None
    ties = {r.encoding: r for r in results if r.chaos == best.chaos and r.coherence == best.coherence}
    chosen = next((ties[e] for e in _PREFERRED_ON_TIE if e in ties), best)
    return str(chosen), chosen.encoding


def decode(data: bytes, path: Path, declared: str | None = None) -> tuple[str, str, list[str]]:
    """Bytes to text: returns (text with ``\\n`` newlines, encoding name, warnings).

    Raises ExtractionError("binary") when the bytes do not look like text.
    """
    warnings: list[str] = []
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = data.decode(encoding, errors="replace")
            if _looks_binary_text(text):
                raise binary_error(path)
            if "\ufffd" in text and b"\xef\xbf\xbd" not in data:
                warnings.append(_REPLACED)
            return normalise_newlines(text), encoding, warnings
    if is_probably_binary(data[:SNIFF_BYTES]):
        raise binary_error(path)
    try:
        return normalise_newlines(data.decode("utf-8")), "utf-8", warnings
    except UnicodeDecodeError:
        pass
    nearly = _nearly_utf8(data)
    if nearly is not None:
        return normalise_newlines(nearly), "utf-8", [_REPLACED]
    if declared:
        try:
            name = codecs.lookup(declared).name
        except LookupError:
            name = None
        if name and name not in ("utf-8", "utf-16", "utf-32"):
            text = data.decode(name, errors="replace")
            return normalise_newlines(text), name, [_REPLACED] if "\ufffd" in text else []
    detected = _detect(data)
    if detected is None:
        return normalise_newlines(data.decode("utf-8", errors="replace")), "utf-8", [
            "The text encoding could not be recognised; it was read as UTF-8 and some characters may be wrong."]
    text, encoding = detected
    return normalise_newlines(text), encoding, warnings


_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n(?:---|\.\.\.)\n", re.DOTALL)
_FRONT_TITLE = re.compile(r"^title:\s*(.+?)\s*$", re.MULTILINE)
_ATX = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_SETEXT = re.compile(r"^ {0,3}(\S[^\n]*)\n {0,3}(?:=+|-+)[ \t]*$", re.MULTILINE)
_RST = re.compile(r"^(\S[^\n]*)\n([=\-~^\"'`#*+:.])\2{2,}[ \t]*$", re.MULTILINE)


def markdown_title(text: str) -> str:
    """The front-matter ``title:``, else the first heading (``# Title`` or underlined)."""
    front = _FRONT_MATTER.match(text)
    if front:
        title = _FRONT_TITLE.search(front.group(1))
        if title:
            return title.group(1).strip("\"'")
        text = text[front.end():]
    found = [m for m in (_ATX.search(text), _SETEXT.search(text)) if m]
    return min(found, key=lambda m: m.start()).group(1).strip() if found else ""


def rst_title(text: str) -> str:
    """The first reStructuredText section title: a line underlined with punctuation."""
    for m in _RST.finditer(text):
        if len(m.group(0).split("\n")[1].rstrip()) >= len(m.group(1).rstrip()):
            return m.group(1).strip()
    return ""


def extract_text(data: bytes, path: Path, kind: str) -> Extracted:
    """Text, Markdown and code are kept as written (only newlines change): layout matters in code."""
    text, encoding, warnings = decode(data, path)
    if text.startswith("\ufeff"):
        text = text[1:]
    title = ""
    if kind == "markdown":
        title = markdown_title(text)
    elif path.suffix.lower() == ".rst":
        title = rst_title(text)
    return Extracted(text=text.strip("\n"), title=title_or_name(path, title), kind=kind, encoding=encoding,
                     warnings=tuple(warnings))
