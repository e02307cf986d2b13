"""E-mail messages (.eml): the main headers, the body as text, and the names of attachments."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage, Message
from pathlib import Path

from app.extract.base import Extracted, ExtractionError, tidy, title_or_name
from app.extract.kinds import SNIFF_BYTES, is_probably_binary
from app.extract.text import binary_error, decode
from app.extract.web import html_to_text

_HEADERS = ("From", "To", "Cc", "Date", "Subject")


def _part_text(part: Message) -> str:
    """A text part's content; falls back to our own decoding when the declared charset is bogus."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]  # every part is an EmailMessage here
        if isinstance(content, str):
            return content
    except Exception:  # LookupError for an unknown charset, or a mangled transfer encoding
        pass
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        return ""
    try:
        return decode(payload, Path("body.txt"))[0]
    except ExtractionError:
        return ""


def extract_email(data: bytes, path: Path) -> Extracted:
    if is_probably_binary(data[:SNIFF_BYTES]):
        raise binary_error(path)
    try:
        message = email.message_from_bytes(data, policy=policy.default)
        lines = []
        for name in _HEADERS:
            value = message.get(name)
            if value is not None and str(value).strip():
                lines.append(f"{name}: {' '.join(str(value).split())}")
        subject = " ".join(str(message.get("Subject") or "").split())
        body_part = message.get_body(preferencelist=("plain", "html")) if isinstance(message, EmailMessage) else None
        body = ""
        if body_part is not None:
            body = _part_text(body_part)
            if body_part.get_content_subtype() == "html":
                body = html_to_text(body)[0]
        attachments: list[str] = []
        for part in message.walk():
            if part is body_part or part.is_multipart():
                continue
            filename = part.get_filename()
            if filename:
                attachments.append(" ".join(filename.split()))
            elif part.get_content_disposition() == "attachment":
                attachments.append(f"unnamed {part.get_content_type()} attachment")
    except ExtractionError:
        raise
    except Exception as exc:
        raise ExtractionError(f"{path.name} is damaged or is not really an e-mail message; save the message "
                              "again from your mail program and add the new copy.", reason="corrupt") from exc
    text = "\n".join(lines)
    if body.strip():
        text += "\n\n" + tidy(body)
    if attachments:
        text += "\n\nAttachments: " + ", ".join(attachments)
    return Extracted(text=text.strip(), title=title_or_name(path, subject), kind="email")
