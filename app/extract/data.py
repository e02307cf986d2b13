"""Tabular and structured data: CSV, TSV and JSON (and the row formatting spreadsheets share)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from app.extract.base import Extracted, Limits, title_or_name
from app.extract.text import decode

_SNIFF_CHARS = 64 * 1024


def cell_text(value: object) -> str:
    """One table value as text that keeps its row on one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return " ".join(str(value).split())


def rows_to_lines(rows: Iterable[Sequence[object]], budget: int) -> tuple[list[str], int, bool]:
    """Tab-separated lines for the non-empty rows, stopping once more than ``budget`` cells were seen.

    Returns (lines, cells seen, whether it stopped early).
    """
    lines: list[str] = []
    used = 0
    for row in rows:
        used += len(row)
        if used > budget:
            return lines, used, True
        cells = [cell_text(v) for v in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            lines.append("\t".join(cells))
    return lines, used, False


def _csv_reader(text: str, kind: str) -> Iterable[list[str]]:
    if kind == "tsv":
        # TSV has no quoting convention: a quote character is just a character.
        return csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # whole lines only, or the sniffer sees a broken row
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    return csv.reader(io.StringIO(text), dialect)


def extract_table(data: bytes, path: Path, kind: str, limits: Limits) -> Extracted:
    """CSV and TSV as one tab-separated line per row; a file csv cannot parse is kept as written."""
    text, encoding, warnings = decode(data, path)
    text = text.removeprefix("\ufeff")
    try:
        lines, _, stopped = rows_to_lines(_csv_reader(text, kind), limits.max_sheet_cells)
    except csv.Error:
        return Extracted(text=text.strip("\n"), title=path.name, kind=kind, encoding=encoding,
                         warnings=(*warnings, f"the rows could not be parsed as {kind.upper()}; kept as written"))
    if stopped:
        warnings.append(f"reading stopped after {len(lines)} rows: the file has more than "
                        f"{limits.max_sheet_cells:,} cells")
    return Extracted(text="\n".join(lines), title=path.name, kind=kind, encoding=encoding, warnings=tuple(warnings))


def extract_json(data: bytes, path: Path) -> Extracted:
    """JSON pretty-printed with two-space indents; invalid JSON is kept as written, with a warning."""
    text, encoding, warnings = decode(data, path)
    text = text.removeprefix("\ufeff")
    try:
        value = json.loads(text)
        pretty = json.dumps(value, indent=2, ensure_ascii=False)
    except json.JSONDecodeError as exc:
        warnings.append(f"not valid JSON (line {exc.lineno}, column {exc.colno}); kept as written")
        return Extracted(text=text.strip(), title=path.name, kind="json", encoding=encoding,
                         warnings=tuple(warnings))
    except (ValueError, RecursionError):  # absurd nesting, or integers too long to convert
        warnings.append("too deeply nested or too large to reformat; kept as written")
        return Extracted(text=text.strip(), title=path.name, kind="json", encoding=encoding,
                         warnings=tuple(warnings))
    title = value.get("title") if isinstance(value, dict) else None
    return Extracted(text=pretty, title=title_or_name(path, title), kind="json", encoding=encoding,
                     warnings=tuple(warnings))
