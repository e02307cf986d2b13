"""Conversations out of and back into the database: Markdown to read, JSON to keep.

The JSON form is complete (every stored field of the conversation and its messages,
every alternative reply with the one shown, every image), so ``import_json(export_json(c))``
gives back the same messages. Both take the messages as ``messages(..., alternatives=True)``
gives them; with only the shown ones, Markdown says how many alternatives each reply has.

Images: the JSON holds each image once ("images": SHA-256 → base64 PNG), and each message
names its own in order ({"sha256", "name"}); an import checks every image's bytes against its
SHA-256 and reads it again through the isolated reader, like any image from outside. Markdown
is one text (what ``Services.export_conversation`` returns and ``enclave history export``
writes, to a file or stdout), so its images are data URIs inside it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from app.conversations import Conversation, ConversationRepository, ImageRef, Message
from app.extract.isolated import IsolatedExtractor
from app.image_store import ImageStore
from app.images import SanitizedImage
from inference.errors import EnclaveError

FORMAT = "enclave-conversation"
# 2: alternatives ("shown"; "alternative_of": the position of the group's first reply). 3: images
FORMAT_VERSION = 3
PngOf = Callable[[str], bytes]  # a stored image's PNG, by SHA-256
ReadImages = Callable[[Iterable[tuple[bytes, str]]], list[SanitizedImage]]  # PNGs read again, one image each
_MESSAGE_KEEP = ("role", "content", "reasoning", "status", "error", "stop_reason", "prompt_tokens",
                 "completion_tokens", "cached_tokens", "prompt_seconds", "generation_seconds", "reasoning_seconds",
                 "drafted_tokens", "accepted_tokens", "model", "created_at", "updated_at", "context_note")
_COUNTS = ("drafted_tokens", "accepted_tokens")  # whole numbers, 0 when absent (exports made before drafting)


def export_json(conversation: Conversation, messages: list[Message], png: PngOf | None = None) -> str:
    """``png``: the images' bytes (``ImageStore.png``); without it images are named, not included."""
    position: dict[int, int] = {}
    data: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "conversation": {k: v for k, v in asdict(conversation).items() if k not in ("id", "message_count")},
        "messages": [_exported(m, position) for m in messages],
    }
    shas = dict.fromkeys(image.sha256 for m in messages for image in m.images)
    if shas and png is not None:
        data["images"] = {sha: base64.b64encode(png(sha)).decode("ascii") for sha in shas}
    return json.dumps(data, indent=2, ensure_ascii=False)


def _exported(message: Message, position: dict[int, int]) -> dict[str, Any]:
    """One message as JSON; ``position``: message id → its place in the export, filled as it goes."""
    position[message.id] = len(position)
    row: dict[str, Any] = {k: getattr(message, k) for k in _MESSAGE_KEEP}
    if not message.shown:
        row["shown"] = False
    if message.alternative_of is not None and message.alternative_of in position:
        row["alternative_of"] = position[message.alternative_of]
    if message.images:
        row["images"] = [{"sha256": image.sha256, "name": image.name} for image in message.images]
    return row


def _set_aside(messages: list[Message]) -> dict[int, list[Message]]:
    """The hidden alternatives in ``messages``, by group."""
    hidden: dict[int, list[Message]] = {}
    for m in messages:
        if not m.shown:
            hidden.setdefault(m.group, []).append(m)
    return hidden


def _heading(m: Message) -> str:
    role = m.role.capitalize()
    return f"## {role} ({m.alternatives} alternatives, this is {m.alternative})" if m.alternatives > 1 else f"## {role}"


def _images(m: Message, png: PngOf | None) -> list[str]:
    """A message's images: inline as data URIs, or (``png`` None: a terminal) by name."""
    lines = []
    for image in m.images:
        name = (image.name or "image").replace("]", ")").replace("[", "(")
        if png is None:
            lines.append(f"*[image: {name}, {image.width}×{image.height}]*")
        else:
            lines.append(f"![{name}](data:image/png;base64,{base64.b64encode(png(image.sha256)).decode('ascii')})")
    return [*lines, ""] if lines else []


def _body(m: Message, png: PngOf | None = None) -> list[str]:
    lines: list[str] = _images(m, png)
    if m.context_note:
        lines += [f"> {m.context_note}", ""]
    if m.reasoning:
        lines += ["<details><summary>Reasoning</summary>", "", m.reasoning.strip(), "", "</details>", ""]
    lines += [m.content, ""]
    if m.status != "complete":
        lines += [f"*({m.status}{': ' + m.error if m.error else ''})*", ""]
    return lines


def export_markdown(conversation: Conversation, messages: list[Message], png: PngOf | None = None) -> str:
    """``png``: the images' bytes, written inline as data URIs (without it, images are named)."""
    lines = [f"# {conversation.title or 'Untitled chat'}", ""]
    meta = [f"Model: `{conversation.model}`" if conversation.model else "", f"Started: {conversation.created_at}"]
    lines += [" · ".join(m for m in meta if m), ""]
    if conversation.system_prompt:
        lines += ["## System", "", conversation.system_prompt, ""]
    hidden = _set_aside(messages)
    for m in messages:
        if not m.shown:
            continue
        lines += [_heading(m), "", *_body(m, png)]
        for other in hidden.get(m.group, []):
            lines += [f"<details><summary>Alternative {other.alternative} of {other.alternatives}</summary>", "",
                      *_body(other, png), "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def import_json(repo: ConversationRepository, text: str, read_images: ReadImages | None = None) -> Conversation:
    """Add an exported conversation as a new conversation; returns it. ``read_images``: how
    the file's images are decoded and re-encoded (default: the isolated reader); an image
    whose bytes are not what its SHA-256 says is refused, and nothing is imported."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not an Enclave conversation export")
        if data.get("version", 0) > FORMAT_VERSION:
            raise ValueError("made by a newer Enclave")
        conv: dict[str, Any] = data["conversation"]
        messages: list[dict[str, Any]] = data["messages"]
        _check(conv, messages)
        pngs = _image_bytes(data.get("images", {}))
        _check_image_refs(messages, pngs, ImageStore(repo.store))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EnclaveError(f"This file cannot be imported: {exc}.") from exc
    stored = _store_images(repo, pngs, read_images or _read_isolated)
    rows = [{k: m[k] for k in (*_MESSAGE_KEEP, "shown", "alternative_of") if k in m} for m in messages]
    for row, m in zip(rows, messages, strict=True):
        row["images"] = [ImageRef(stored.get(i["sha256"], i["sha256"]), str(i.get("name", "")))
                         for i in m.get("images", [])]
    return repo.insert_whole(title=str(conv.get("title", "")), model=conv.get("model"),
                             system_prompt=str(conv.get("system_prompt", "")), sampling=conv.get("sampling") or {},
                             messages=rows)


def _check(conv: object, messages: object) -> None:
    if not isinstance(conv, dict):
        raise ValueError("'conversation' is not an object")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' is not a list of objects")
    for number, m in enumerate(messages, start=1):
        if m.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"message {number} has role {m.get('role')!r}; Enclave keeps system, user and assistant")
        if m.get("status", "complete") not in ("complete", "partial", "error"):
            raise ValueError(f"message {number} has status {m.get('status')!r}")
        for key in _COUNTS:
            if not isinstance(m.get(key, 0), int) or m.get(key, 0) < 0:
                raise ValueError(f"message {number} has {key} {m.get(key)!r}, not a count")
        first = m.get("alternative_of")
        if first is not None and not (isinstance(first, int) and 0 <= first < number - 1):
            raise ValueError(f"message {number} is an alternative of {first!r}, not of an earlier message")


def _image_bytes(images: object) -> dict[str, bytes]:
    """The file's images (SHA-256 → PNG bytes), each checked against its SHA-256."""
    if not isinstance(images, dict):
        raise ValueError("'images' is not an object of SHA-256 → base64 PNG")
    pngs: dict[str, bytes] = {}
    for sha, encoded in images.items():
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, TypeError):
            raise ValueError(f"the image {str(sha)[:12]}… is not base64") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise ValueError(f"the image {str(sha)[:12]}… is not what its SHA-256 says (the file was changed after "
                             "it was exported, or damaged)")
        pngs[sha] = data
    return pngs


def _check_image_refs(messages: list[dict[str, Any]], pngs: dict[str, bytes], store: ImageStore) -> None:
    for number, m in enumerate(messages, start=1):
        refs = m.get("images", [])
        if not isinstance(refs, list) or not all(isinstance(r, dict) and isinstance(r.get("sha256"), str)
                                                 and isinstance(r.get("name", ""), str) for r in refs):
            raise ValueError(f"message {number} has images that are not a list of {{sha256, name}}")
        for ref in refs:
            if ref["sha256"] not in pngs and store.get(ref["sha256"]) is None:
                raise ValueError(f"message {number} shows the image {ref.get('name') or ref['sha256'][:12]}, which "
                                 "the file does not hold (it was exported without its images)")


def _store_images(repo: ConversationRepository, pngs: dict[str, bytes], read_images: ReadImages) -> dict[str, str]:
    """Read the file's images again (never stored as given) and keep them; their SHA-256 in the
    file → in the database (the same, unless this Pillow re-encodes them differently)."""
    if not pngs:
        return {}
    images = read_images((data, f"{sha}.png") for sha, data in pngs.items())
    store = ImageStore(repo.store)
    return {sha: store.add(image).sha256 for sha, image in zip(pngs, images, strict=True)}


def _read_isolated(items: Iterable[tuple[bytes, str]]) -> list[SanitizedImage]:
    with IsolatedExtractor() as reader:
        return [reader.read_image_bytes(data, name)[0] for data, name in items]
