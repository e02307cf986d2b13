"""Request bodies of the OpenAI API, checked and turned into one ``ApiRequest``.

Only what Enclave honours is read: ``temperature``, ``top_p``, ``max_tokens`` /
``max_completion_tokens``, ``stop``, ``seed``, ``response_format`` and ``stream``. A field
of the wrong type is a 400 naming it; unknown fields are ignored, as OpenAI's clients send many.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.server.errors import bad_request
from inference.protocol import ChatMessage

ROLES = ("system", "user", "assistant", "developer", "tool")


@dataclass(frozen=True)
class SamplingAsked:
    """The sampling fields a request set (None: the model's profile decides)."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    json_schema: str | None = None  # a JSON Schema as JSON text, enforced by llama.cpp's grammar

    def overrides(self) -> dict[str, Any]:
        """What replaces the profile's sampling: only the fields the request set."""
        return {name: value for name, value in vars(self).items() if value is not None}


@dataclass(frozen=True)
class ApiRequest:
    model: str
    stream: bool
    sampling: SamplingAsked
    messages: tuple[ChatMessage, ...] = ()  # a chat completion
    prompt: str | None = None  # a plain completion
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the counts

    @property
    def chat(self) -> bool:
        return self.prompt is None


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def chat_request(body: dict[str, Any], default_model: str | None) -> ApiRequest:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty list of {role, content} objects.", "messages")
    messages = tuple(_message(item, i) for i, item in enumerate(raw))
    return ApiRequest(_model(body, default_model), _flag(body, "stream"), _sampling(body), messages=messages,
                      include_usage=_include_usage(body))


def completion_request(body: dict[str, Any], default_model: str | None) -> ApiRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("'prompt' must be a non-empty string (one prompt per request).", "prompt")
    return ApiRequest(_model(body, default_model), _flag(body, "stream"), _sampling(body), prompt=prompt,
                      include_usage=_include_usage(body))


def _model(body: dict[str, Any], default_model: str | None) -> str:
    model = body.get("model") or default_model
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is missing: name a model from GET /v1/models.", "model")
    return model


def _message(item: object, index: int) -> ChatMessage:
    param = f"messages[{index}]"
    if not isinstance(item, dict) or item.get("role") not in ROLES:
        raise bad_request(f"{param} must be an object with a role ({', '.join(ROLES)}) and content.", param)
    role = "system" if item["role"] == "developer" else item["role"]
    return ChatMessage(role, _content(item.get("content"), param))


IMAGE_PARTS = ("image_url", "input_image", "image")  # OpenAI's image content parts (chat, responses, others)


def _content(content: object, param: str) -> str:
    """A message's text: a string, or a list of text parts. Images are refused in words: the
    server's replies go through the batch, which evaluates tokens only (a chat in Enclave
    itself, ``enclave run --image`` and ``enclave chat --image`` take them)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        if any(isinstance(part, dict) and part.get("type") in IMAGE_PARTS for part in content):
            raise bad_request(f"{param}.content has an image: images are not accepted by enclave serve yet; send "
                              "text only, or ask about the image in Enclave's window or with 'enclave run MODEL "
                              "PROMPT --image FILE'.", param)
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return "".join(texts)  # type: ignore[arg-type]
    raise bad_request(f"{param}.content must be text or a list of text parts; only text is supported.", param)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false.", name)
    return value


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request(f"'{name}' must be a number from {low:g} to {high:g}.", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad_request(f"'{name}' must be a whole number of at least {low}.", name)
    return value


def _stop(body: dict[str, Any]) -> tuple[str, ...] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a string or a list of up to 4 non-empty strings.", "stop")
    return tuple(stops)


def _json_schema(body: dict[str, Any]) -> str | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return json.dumps({"type": "object"})
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return json.dumps(schema)
        raise bad_request("response_format.json_schema.schema must be a JSON Schema object.", "response_format")
    raise bad_request("response_format.type must be 'text', 'json_object' or 'json_schema'.", "response_format")


def _sampling(body: dict[str, Any]) -> SamplingAsked:
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    return SamplingAsked(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=_stop(body),
                         seed=_integer(body, "seed", 0), json_schema=_json_schema(body))
