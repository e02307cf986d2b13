"""Small documents of every supported format, built in the test's tmp_path so nothing binary is
checked in. Each builder returns the path it wrote."""

from __future__ import annotations

import io
import struct
import zipfile
from email.message import EmailMessage
from pathlib import Path

PDF_PAGES = (
    "Page one is about alpha apples and amber.",
    "Page two is about bravo bananas and blue.",
    "Page three is about charlie cherries and crimson.",
)


def pdf_bytes(pages: tuple[str, ...] = PDF_PAGES, title: str | None = "Quarterly Fruit Report",
              compress: bool = True) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_compression(compress)
    if title:
        pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def write_pdf(path: Path, pages: tuple[str, ...] = PDF_PAGES, title: str | None = "Quarterly Fruit Report") -> Path:
    path.write_bytes(pdf_bytes(pages, title))
    return path


def write_encrypted_pdf(path: Path, user_password: str) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(pdf_bytes())).pages:
        writer.add_page(page)
    writer.encrypt(user_password=user_password, owner_password="owner-secret")
    with path.open("wb") as f:
        writer.write(f)
    return path


def write_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = "Project Charter"
    document.add_heading("Project Orion", level=1)
    document.add_paragraph("The first paragraph explains the mission.")
    document.add_heading("Budget", level=2)
    table = document.add_table(rows=3, cols=2)
    for row, (item, cost) in zip(table.rows, [("Item", "Cost"), ("Telescope", "1200"), ("Tripod", "300")], strict=True):
        row.cells[0].text = item
        row.cells[1].text = cost
    document.add_paragraph("A closing paragraph after the table.")
    document.save(str(path))
    return path


def write_pptx(path: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    first = presentation.slides.add_slide(presentation.slide_layouts[1])  # title and content
    first.shapes.title.text = "Launch Plan"
    first.placeholders[1].text_frame.text = "Rockets need fuel"
    first.notes_slide.notes_text_frame.text = "Speaker note about the countdown"
    second = presentation.slides.add_slide(presentation.slide_layouts[5])  # title only
    second.shapes.title.text = "Landing"
    box = second.shapes.add_textbox(Inches(1), Inches(2), Inches(4), Inches(1))
    box.text_frame.text = "Parachutes open at altitude"
    presentation.save(str(path))
    return path


def write_xlsx(path: Path) -> Path:
    import openpyxl

    workbook = openpyxl.Workbook()
    people = workbook.active
    people.title = "People"
    people.append(["Name", "Age", "City"])
    people.append(["Ada", 36, "London"])
    people.append(["Grace", 85.0, "Arlington"])
    totals = workbook.create_sheet("Totals")
    totals.append(["Metric", "Value"])
    totals.append(["Sum", 121.5])
    workbook.save(str(path))
    return path


def write_eml_plain(path: Path) -> Path:
    message = EmailMessage()
    message["From"] = "Alice Example <alice@example.org>"
    message["To"] = "Bob Example <bob@example.org>"
    message["Date"] = "Tue, 04 Mar 2025 10:00:00 +0000"
    message["Subject"] = "Lunch on Friday"
    message.set_content("Hi Bob,\n\nShall we meet at the café at noon?\n\nAlice\n")
    path.write_bytes(bytes(message))
    return path


def write_eml_html_with_attachment(path: Path) -> Path:
    message = EmailMessage()
    message["From"] = "news@example.org"
    message["To"] = "reader@example.org"
    message["Subject"] = "Monthly newsletter"
    message.set_content("<html><head><style>p {color: red}</style></head><body><h1>News</h1>"
                        "<p>The garden <b>opened</b> today.</p><script>track()</script></body></html>",
                        subtype="html")
    message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="agenda.pdf")
    path.write_bytes(bytes(message))
    return path


def write_streamed_zip_bomb(path: Path, megabytes: int = 300) -> Path:
    """A .docx-named ZIP whose one member inflates to ``megabytes`` of zeros, written in chunks so
    neither memory nor disk ever holds the inflated data (the file itself is ~1 KB per MB)."""
    chunk = b"\0" * 2**20
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            for _ in range(megabytes):
                member.write(chunk)
    return path


def write_forged_zip(path: Path, declared: int) -> Path:
    """A tiny valid-looking .docx whose central directory claims ``declared`` bytes for a member."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    data = bytearray(buffer.getvalue())
    entry = data.rindex(b"PK\x01\x02")  # central directory entry of the last member
    struct.pack_into("<I", data, entry + 24, declared)  # its uncompressed size
    path.write_bytes(bytes(data))
    return path


def write_slow_pdf(path: Path, pages: int = 200, operators: int = 20_000) -> Path:
    """A PDF of a few KB that takes pypdf minutes to read: every page shows the same compressed
    content stream of ``operators`` text operators (so its text is read once per page)."""
    import zlib

    content = zlib.compress(b"BT /F1 12 Tf " + b"1 0 0 1 10 10 Tm (ab) Tj " * operators + b"ET", 9)
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Count {pages} /Kids [{kids}] >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream",
    ] + [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
         b"/Resources << /Font << /F1 3 0 R >> >> >>"] * pages
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path
