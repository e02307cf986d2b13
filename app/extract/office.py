"""Word (.docx), PowerPoint (.pptx) and Excel (.xlsx) documents.

These are ZIP archives, so the ZIP directory is checked before any library decompresses a
byte: a small file that declares hundreds of megabytes (a "zip bomb") is refused up front.
Python's zipfile never inflates a member past its declared size (it fails the CRC check
instead), so checking the declared sizes is enough.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.extract.base import Extracted, ExtractionError, Limits, human_size, tidy, title_or_name
from app.extract.data import rows_to_lines

_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE compound file: old .doc/.ppt/.xls, or encrypted OOXML
_CFB_ENCRYPTED = "EncryptionInfo".encode("utf-16-le")
_MAX_ZIP_MEMBERS = 50_000
_RATIO_FLOOR = 2**20  # members smaller than this are too small for their ratio to matter
_LABELS = {"docx": ("Word document", "Word 97-2003 (.doc)", "Word"),
           "pptx": ("PowerPoint presentation", "PowerPoint 97-2003 (.ppt)", "PowerPoint"),
           "xlsx": ("Excel workbook", "Excel 97-2003 (.xls)", "Excel")}


def _corrupt(path: Path, kind: str) -> ExtractionError:
    label, _, app = _LABELS[kind]
    return ExtractionError(f"{path.name} is damaged or is not really a {label}; open it in {app} or LibreOffice, "
                           "save it again, and add the new copy.", reason="corrupt")


def _zip_bomb(path: Path, detail: str) -> ExtractionError:
    return ExtractionError(f"{path.name} was refused because {detail}, which is how a 'zip bomb' looks; if you "
                           "trust the file, open it and save it again, then add the new copy.", reason="zip_bomb")


def check_zip(data: bytes, path: Path, kind: str, limits: Limits) -> None:
    """Refuse what is not a ZIP (explaining old and encrypted Office files) or would inflate too far."""
    if data.startswith(_CFB_MAGIC):
        if _CFB_ENCRYPTED in data:
            raise ExtractionError(f"{path.name} is password-protected; open it with its password, save a copy "
                                  "without one, and add that copy instead.", reason="encrypted")
        _, old, app = _LABELS[kind]
        raise ExtractionError(f"{path.name} is in the old {old} format despite its name; open it in {app} or "
                              f"LibreOffice and save it as .{kind}, then add the new copy.", reason="unsupported")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except Exception as exc:  # BadZipFile, but also struct and value errors from mangled directories
        raise _corrupt(path, kind) from exc
    if len(members) > _MAX_ZIP_MEMBERS:
        raise _zip_bomb(path, f"it holds {len(members)} files")
    total = sum(m.file_size for m in members)
    if total > limits.max_uncompressed_bytes:
        raise _zip_bomb(path, f"it would unpack to {human_size(total)}, over the "
                              f"{human_size(limits.max_uncompressed_bytes)} limit")
    for m in members:
        if m.file_size >= _RATIO_FLOOR and m.file_size > limits.max_compression_ratio * max(m.compress_size, 1):
            raise _zip_bomb(path, f"one part is compressed {m.file_size / max(m.compress_size, 1):.0f} times, "
                                  f"more than the {limits.max_compression_ratio:.0f}× a real document needs")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- Word


def _heading_level(style_name: str) -> int:
    if style_name == "Title":
        return 1
    if style_name.startswith("Heading "):
        level = style_name.removeprefix("Heading ").strip()
        return min(int(level), 6) if level.isdigit() and int(level) > 0 else 0
    return 0


def _docx_table_rows(table: Any) -> Iterator[str]:
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell is returned once per grid column it spans
                continue
            seen.add(id(cell._tc))
            cells.append(_one_line(cell.text))
        if any(cells):
            yield " | ".join(cells)


def extract_docx(data: bytes, path: Path, limits: Limits) -> Extracted:
    check_zip(data, path, "docx", limits)
    import docx  # imported late: only needed for Word files, and slow to import
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        first_heading = ""
        length = 0
        warnings: list[str] = []
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph):
                text = block.text.strip()
                if not text:
                    continue
                try:
                    style = block.style.name if block.style is not None else ""
                except Exception:
                    style = ""
                level = _heading_level(style or "")
                if level:
                    first_heading = first_heading or text
                    text = "#" * level + " " + _one_line(text)
                elif (style or "").startswith("List"):
                    text = "- " + text
                blocks.append(text)
            elif isinstance(block, Table):
                rows = list(_docx_table_rows(block))
                if not rows:
                    continue
                blocks.append("\n".join(rows))
            else:
                continue
            length += len(blocks[-1]) + 2
            if length > limits.max_text_chars:
                warnings.append("reading stopped early: the text reached the size limit")
                break
        meta_title = document.core_properties.title
    except ExtractionError:
        raise
    except Exception as exc:
        raise _corrupt(path, "docx") from exc
    return Extracted(text=tidy("\n\n".join(blocks)), title=title_or_name(path, meta_title, first_heading),
                     kind="docx", warnings=tuple(warnings))


# ---------------------------------------------------------------- PowerPoint


def _shape_texts(shapes: Any, skip: Any) -> Iterator[str]:
    """Text of every shape in z-order, descending into groups (iteratively), except ``skip``."""
    from pptx.shapes.group import GroupShape

    pending = list(shapes)[::-1]
    while pending:
        shape = pending.pop()
        if isinstance(shape, GroupShape):
            pending.extend(list(shape.shapes)[::-1])
            continue
        if skip is not None and shape.shape_id == skip.shape_id:
            continue
        if shape.has_text_frame:
            text = tidy(shape.text_frame.text.replace("\v", "\n"))
            if text:
                yield text
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = [" | ".join(_one_line(c.text) for c in row.cells).rstrip() for row in shape.table.rows]
            rows = [r for r in rows if r.strip(" |")]
            if rows:
                yield "\n".join(rows)


def extract_pptx(data: bytes, path: Path, limits: Limits) -> Extracted:
    check_zip(data, path, "pptx", limits)
    from pptx import Presentation

    try:
        presentation = Presentation(io.BytesIO(data))
        parts: list[str] = []
        pages: list[int] = []
        length = 0
        first_title = ""
        has_text = False
        warnings: list[str] = []
        for number, slide in enumerate(presentation.slides, 1):
            title_shape = slide.shapes.title
            title = _one_line(title_shape.text_frame.text) if title_shape is not None else ""
            first_title = first_title or title
            block = [f"## Slide {number}" + (f": {title}" if title else "")]
            block += list(_shape_texts(slide.shapes, title_shape))
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = tidy(slide.notes_slide.notes_text_frame.text)
                if notes:
                    block.append("Notes: " + notes)
            has_text = has_text or bool(title) or len(block) > 1
            if parts:
                parts.append("\n\n")
                length += 2
            pages.append(length)
            text = "\n\n".join(block)
            parts.append(text)
            length += len(text)
            if length > limits.max_text_chars:
                warnings.append(f"reading stopped at slide {number}: the text reached the size limit")
                break
        meta_title = presentation.core_properties.title
    except ExtractionError:
        raise
    except Exception as exc:
        raise _corrupt(path, "pptx") from exc
    if not has_text:
        raise ExtractionError(f"{path.name} has no text on its slides, so there is nothing to add.", reason="empty")
    return Extracted(text="".join(parts), title=title_or_name(path, meta_title, first_title), kind="pptx",
                     pages=tuple(pages), warnings=tuple(warnings))


# ---------------------------------------------------------------- Excel


def extract_xlsx(data: bytes, path: Path, limits: Limits) -> Extracted:
    check_zip(data, path, "xlsx", limits)
    import openpyxl

    warnings: list[str] = []
    blocks: list[str] = []
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True, keep_links=False)
        try:
            budget = limits.max_sheet_cells
            for sheet in workbook.worksheets:
                lines, used, stopped = rows_to_lines(sheet.iter_rows(values_only=True), budget)
                budget -= used
                if lines:
                    blocks.append(f"## Sheet: {sheet.title}\n" + "\n".join(lines))
                if stopped:
                    warnings.append(f"reading stopped in sheet '{sheet.title}': the workbook has more than "
                                    f"{limits.max_sheet_cells:,} cells")
                    break
            meta_title = workbook.properties.title
        finally:
            workbook.close()
    except ExtractionError:
        raise
    except Exception as exc:
        raise _corrupt(path, "xlsx") from exc
    return Extracted(text="\n\n".join(blocks), title=title_or_name(path, meta_title), kind="xlsx",
                     warnings=tuple(warnings))
