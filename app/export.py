"""Conversations out of and back into the database: Markdown to read, JSON to keep.

The JSON form is complete (every stored field of the conversation and its messages,
every alternative reply with the one shown), so ``import_json(export_json(c))`` gives back
the same messages. Both take the messages as ``messages(..., alternatives=True)`` gives
them; with only the shown ones, Markdown says how many alternatives each reply has.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from app.conversations import Conversation, ConversationRepository, Message
from inference.errors import EnclaveError

FORMAT = "enclave-conversation"
FORMAT_VERSION = 2  # 2: alternatives ("shown"; "alternative_of": the position of the group's first reply)
_MESSAGE_KEEP = ("role", "content", "reasoning", "status", "error", "stop_reason", "prompt_tokens",
                 "completion_tokens", "cached_tokens", "prompt_seconds", "generation_seconds", "reasoning_seconds",
                 "drafted_tokens", "accepted_tokens", "model", "created_at", "updated_at", "context_note")
_COUNTS = ("drafted_tokens", "accepted_tokens")  # whole numbers, 0 when absent (exports made before drafting)


def export_json(conversation: Conversation, messages: list[Message]) -> str:
    position: dict[int, int] = {}
    data = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "conversation": {k: v for k, v in asdict(conversation).items() if k not in ("id", "message_count")},
        "messages": [_exported(m, position) for m in messages],
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def _exported(message: Message, position: dict[int, int]) -> dict[str, Any]:
    """One message as JSON; ``position``: message id → its place in the export, filled as it goes."""
    position[message.id] = len(position)
    row: dict[str, Any] = {k: getattr(message, k) for k in _MESSAGE_KEEP}
    if not message.shown:
        row["shown"] = False
    if message.alternative_of is not None and message.alternative_of in position:
        row["alternative_of"] = position[message.alternative_of]
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


def _body(m: Message) -> list[str]:
    lines: list[str] = []
    if m.context_note:
        lines += [f"> {m.context_note}", ""]
    if m.reasoning:
        lines += ["<details><summary>Reasoning</summary>", "", m.reasoning.strip(), "", "</details>", ""]
    lines += [m.content, ""]
    if m.status != "complete":
        lines += [f"*({m.status}{': ' + m.error if m.error else ''})*", ""]
    return lines


def export_markdown(conversation: Conversation, messages: list[Message]) -> str:
    lines = [f"# {conversation.title or 'Untitled chat'}", ""]
    meta = [f"Model: `{conversation.model}`" if conversation.model else "", f"Started: {conversation.created_at}"]
    lines += [" · ".join(m for m in meta if m), ""]
    if conversation.system_prompt:
        lines += ["## System", "", conversation.system_prompt, ""]
    hidden = _set_aside(messages)
    for m in messages:
        if not m.shown:
            continue
        lines += [_heading(m), "", *_body(m)]
        for other in hidden.get(m.group, []):
            lines += [f"<details><summary>Alternative {other.alternative} of {other.alternatives}</summary>", "",
                      *_body(other), "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def import_json(repo: ConversationRepository, text: str) -> Conversation:
    """Add an exported conversation as a new conversation; returns it."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not an Enclave conversation export")
        if data.get("version", 0) > FORMAT_VERSION:
            raise ValueError("made by a newer Enclave")
        conv: dict[str, Any] = data["conversation"]
        messages: list[dict[str, Any]] = data["messages"]
        _check(conv, messages)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EnclaveError(f"This file cannot be imported: {exc}.") from exc
    rows = [{k: m[k] for k in (*_MESSAGE_KEEP, "shown", "alternative_of") if k in m} for m in messages]
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
