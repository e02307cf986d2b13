"""Conversations out of and back into the database: Markdown to read, JSON to keep.

The JSON form is complete (every stored field of the conversation and its messages),
so ``import_json(export_json(c))`` gives back the same messages.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from app.conversations import Conversation, ConversationRepository, Message
from inference.errors import EnclaveError

FORMAT = "enclave-conversation"
FORMAT_VERSION = 1
_MESSAGE_KEEP = ("role", "content", "reasoning", "status", "error", "stop_reason", "prompt_tokens",
                 "completion_tokens", "cached_tokens", "prompt_seconds", "generation_seconds", "reasoning_seconds",
                 "model", "created_at", "updated_at", "context_note")


def export_json(conversation: Conversation, messages: list[Message]) -> str:
    data = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "conversation": {k: v for k, v in asdict(conversation).items() if k not in ("id", "message_count")},
        "messages": [{k: getattr(m, k) for k in _MESSAGE_KEEP} for m in messages],
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def export_markdown(conversation: Conversation, messages: list[Message]) -> str:
    lines = [f"# {conversation.title or 'Untitled chat'}", ""]
    meta = [f"Model: `{conversation.model}`" if conversation.model else "", f"Started: {conversation.created_at}"]
    lines += [" · ".join(m for m in meta if m), ""]
    if conversation.system_prompt:
        lines += ["## System", "", conversation.system_prompt, ""]
    for m in messages:
        lines += [f"## {m.role.capitalize()}", ""]
        if m.context_note:
            lines += [f"> {m.context_note}", ""]
        if m.reasoning:
            lines += ["<details><summary>Reasoning</summary>", "", m.reasoning.strip(), "", "</details>", ""]
        lines += [m.content, ""]
        if m.status != "complete":
            lines += [f"*({m.status}{': ' + m.error if m.error else ''})*", ""]
    return "\n".join(lines).rstrip() + "\n"


def import_json(repo: ConversationRepository, text: str) -> Conversation:
    """Add an exported conversation as a new conversation; returns it."""
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError("not an Enclave conversation export")
        if data.get("version", 0) > FORMAT_VERSION:
            raise ValueError("made by a newer Enclave")
        conv: dict[str, Any] = data["conversation"]
        messages: list[dict[str, Any]] = data["messages"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EnclaveError(f"This file cannot be imported: {exc}.") from exc
    created = repo.create(title=conv.get("title", ""), model=conv.get("model"),
                          system_prompt=conv.get("system_prompt", ""), sampling=conv.get("sampling") or {})
    for m in messages:
        fields = {k: m[k] for k in _MESSAGE_KEEP if k in m and k not in ("role", "content")}
        repo.add_message(created.id, m["role"], m.get("content", ""), **fields)
    return repo.get(created.id)
