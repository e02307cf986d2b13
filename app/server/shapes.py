"""OpenAI's response JSON: models, whole completions, stream chunks, usage, sources."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from typing import Any

from app.server.backend import Finished


class Reply:
    """One request's answer in OpenAI's shapes: ``chat.completion`` (``chunk`` while
    streaming) for chat, ``text_completion`` for plain completions."""

    def __init__(self, model: str, chat: bool) -> None:
        self.model = model
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _choice(self, text: str | None, finish: str | None, *, whole: bool, first: bool = False) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if not self.chat:
            return {**choice, "text": text or "", "logprobs": None}
        if whole:
            return {**choice, "message": {"role": "assistant", "content": text}, "logprobs": None}
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        return {**choice, "delta": delta, "logprobs": None}

    def whole(self, text: str, finished: Finished) -> dict[str, Any]:
        body = self._head("chat.completion" if self.chat else "text_completion")
        body["choices"] = [self._choice(text, finished.finish_reason, whole=True)]
        body["usage"] = usage(finished)
        return with_sources(body, finished)

    def chunk(self, text: str | None, *, first: bool = False, finished: Finished | None = None) -> str:
        body = self._head("chat.completion.chunk" if self.chat else "text_completion")
        finish = finished.finish_reason if finished else None
        body["choices"] = [self._choice(text, finish, whole=False, first=first)]
        if finished is not None:
            body = with_sources(body, finished)
        return event(body)

    def usage_chunk(self, finished: Finished) -> str:
        body = self._head("chat.completion.chunk" if self.chat else "text_completion")
        return event({**body, "choices": [], "usage": usage(finished)})


def usage(finished: Finished) -> dict[str, int]:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


def with_sources(body: dict[str, Any], finished: Finished) -> dict[str, Any]:
    """A library's answer names what it was given (and what it left out): ``sources``."""
    if finished.sources:
        body["sources"] = [asdict(source) for source in finished.sources]
    return body


def event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"


def model_list(names: list[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "enclave"}
                                       for name in names]}
