"""The client of a remote model: an OpenAI-compatible server (``/v1``) reached over HTTP(S)
with httpx2 — the only network use of a remote model, each connection admitted and audited.

Admission (``admit``): the offline setting refuses before any socket opens; the policy's
``remote_hosts`` allow-list decides which servers may be reached. Every request leaves one
audit record (``remote.request``: host, model, what was asked, tokens in and out, status —
never content). A reply streams as server-sent events and comes out as the worker's own
events (``Token``, ``Done`` with ``Stats``, ``Failed``), so the chat service and ``enclave run``
treat it as a local reply. Every failure a user can meet is one ``RemoteError`` sentence.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2

from app.enforcement import Enforcer
from app.remote_models import RemoteModel, netloc
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Done, Event, Failed, Sampling, Stats, Token

CONNECT_SECONDS = 5.0
READ_SECONDS = 120.0  # between two chunks of a reply (a long prompt is read before the first)
ESTIMATE_CHARS_PER_TOKEN = 4  # when the server cannot count: an estimate, said as one

_STOP_REASONS = {"stop": "eog", "length": "length"}
# httpcore's trace events whose return value is the connection's network stream (its socket: what cancel shuts)
_CONNECTED = ("connection.connect_tcp.complete", "connection.start_tls.complete")


class RemoteError(EnclaveError):
    """A remote server could not be used: refused, unreachable, slow, or said no."""


@dataclass(frozen=True)
class ServedModel:
    """A model a server lists at ``/v1/models``, with the context it says it has (None: not said)."""

    id: str
    context_length: int | None


def admit(url: str, *, offline: bool, enforcer: Enforcer, what: str) -> None:
    """Refuse before connecting when Enclave is offline or the policy's ``remote_hosts`` does
    not allow ``url``; ``what``: for the one-line reason."""
    if offline:
        raise RemoteError(f"Enclave is set to work offline, so {what} at {netloc(url)} is not reached; turn the "
                          "offline setting off (or unset ENCLAVE_OFFLINE) to use it.")
    refusal = enforcer.policy.remote_host_refusal(url)
    if refusal is not None:
        enforcer.refuse("remote_hosts", refusal, host=netloc(url))


def served_model(entry: dict[str, Any]) -> ServedModel:
    """One entry of ``/v1/models``: its id and context as llama-server (``meta.n_ctx_train``),
    vLLM (``max_model_len``) or Enclave (``context_length``) say it."""
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    for value in (entry.get("max_model_len"), entry.get("context_length"), meta.get("n_ctx_train")):
        if isinstance(value, int) and value > 0:
            return ServedModel(str(entry.get("id", "")), value)
    return ServedModel(str(entry.get("id", "")), None)


class RemoteClient:
    """One remote model's server. ``cancel`` (from any thread) shuts the reply's connection down at
    once — a read blocked waiting for the server wakes — and a cancel that came before the
    request began stops it before it is sent."""

    def __init__(self, model: RemoteModel, enforcer: Enforcer, *, offline: bool,
                 read_seconds: float = READ_SECONDS) -> None:
        self.model = model
        self.enforcer = enforcer
        self.offline = offline
        self._timeout = httpx2.Timeout(read_seconds, connect=CONNECT_SECONDS)
        self._cancelled = threading.Event()
        self._socket: socket.socket | None = None  # the reply's connection, once connected
        self._socket_lock = threading.Lock()
        self._tokenize_path: str | None = None  # which tokenize endpoint answered ("": none does)

    @property
    def what(self) -> str:
        return f"remote model {self.model.name!r}"

    # Requests -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        key = self.model.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _audit(self, action: str, status: str, **details: Any) -> None:
        self.enforcer.record("remote.request", host=self.model.where, model=self.model.model_id,
                             name=self.model.name, action=action, status=status, **details)

    def list_models(self) -> list[ServedModel]:
        """``GET /v1/models``, once."""
        admit(self.model.url, offline=self.offline, enforcer=self.enforcer, what=self.what)
        try:
            with httpx2.Client(timeout=self._timeout, headers=self._headers()) as http:
                response = http.get(f"{self.model.url}/models")
            self._raise_for(response)
            data = response.json().get("data", [])
            if not isinstance(data, list):
                raise ValueError("'data' is not a list")
        except (httpx2.HTTPError, ValueError, AttributeError) as exc:
            self._audit("models", "error")
            raise self._translated(exc) from exc
        except RemoteError:
            self._audit("models", "error")
            raise
        self._audit("models", "ok")
        return [served_model(entry) for entry in data if isinstance(entry, dict)]

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Each text's tokens as the server's tokenizer counts them (llama-server ``/tokenize``,
        llama-cpp-python ``/extras/tokenize``); None when it has neither. Each request is audited,
        a failed one too (it sent the texts): counts, never content."""
        if self._tokenize_path == "":
            return None
        admit(self.model.url, offline=self.offline, enforcer=self.enforcer, what=self.what)
        root = self.model.url.removesuffix("/v1")
        paths = [self._tokenize_path] if self._tokenize_path else ["/extras/tokenize", "/tokenize"]
        with httpx2.Client(timeout=self._timeout, headers=self._headers()) as http:
            for path in paths:
                try:
                    counts = [self._tokenize(http, root + path, text) for text in texts]
                except (httpx2.HTTPError, ValueError, KeyError, TypeError):
                    self._audit("tokenize", "error", texts=len(texts))
                    continue
                self._tokenize_path = path
                self._audit("tokenize", "ok", texts=len(texts), tokens_in=sum(counts))
                return counts
        self._tokenize_path = ""
        return None

    def _tokenize(self, http: httpx2.Client, url: str, text: str) -> int:
        body = {"input": text, "model": self.model.model_id} if url.endswith("/extras/tokenize") else {"content": text}
        response = http.post(url, json=body)
        response.raise_for_status()
        return len(response.json()["tokens"])

    def chat(self, messages: Sequence[ChatMessage], sampling: Sampling, *, prompt_tokens: int | None = None
             ) -> Iterator[Event]:
        """``POST /v1/chat/completions`` streamed: ``Token``s, then ``Done`` (tokens from the
        server's ``usage`` when it gives them; else ``prompt_tokens``, counted by the caller, and
        the chunks streamed) or ``Failed`` with the reason. A ``cancel`` closes the stream and
        ends it with ``Done(stop_reason="cancelled")``; a cancel that came before this call (a Stop
        while the prompt was prepared) ends it so before anything is sent."""
        admit(self.model.url, offline=self.offline, enforcer=self.enforcer, what=self.what)
        reply = _Reply(time.monotonic(), prompt_tokens or 0)
        try:
            if self._cancelled.is_set():
                yield Done(reply.stats(cancelled=True))  # nothing was sent: nothing to audit
                return
            yield from self._stream(reply, messages, sampling)
        finally:
            with self._socket_lock:
                self._socket = None
            self._cancelled.clear()  # the next request starts afresh

    def _stream(self, reply: _Reply, messages: Sequence[ChatMessage], sampling: Sampling) -> Iterator[Event]:
        try:
            with httpx2.Client(timeout=self._timeout, headers=self._headers()) as http, \
                    http.stream("POST", f"{self.model.url}/chat/completions", json=self._body(messages, sampling),
                                extensions={"trace": self._on_connection}) as response:
                self._raise_for(response)
                for data in _sse_data(response.iter_lines()):
                    if self._cancelled.is_set():
                        break
                    text = reply.take(data)
                    if text:
                        yield Token(None, text, time.monotonic())
        except (httpx2.HTTPError, RemoteError, ValueError) as exc:
            if not self._cancelled.is_set():
                error = exc if isinstance(exc, RemoteError) else self._translated(exc)
                self._audit("chat", "error", tokens_in=reply.prompt_tokens, tokens_out=reply.generated)
                yield Failed(str(error))
                return
        cancelled = self._cancelled.is_set()
        self._audit("chat", "cancelled" if cancelled else "ok", tokens_in=reply.prompt_tokens,
                    tokens_out=reply.generated)
        yield Done(reply.stats(cancelled=cancelled))

    def cancel(self) -> None:
        """Stop the reply (from any thread): its connection is shut down, so a read waiting for
        the server returns now; before the connection is made, it is shut as soon as it is."""
        self._cancelled.set()
        with self._socket_lock:
            sock = self._socket
        if sock is not None:
            _shut_down(sock)

    def _on_connection(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's ``trace`` extension: keeps the reply's socket for ``cancel`` (the TLS one
        replaces the TCP one); a cancel that came while connecting shuts it at once."""
        if event not in _CONNECTED:
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if hasattr(stream, "get_extra_info") else None
        if not isinstance(sock, socket.socket):
            return
        with self._socket_lock:
            self._socket = sock
        if self._cancelled.is_set():
            _shut_down(sock)

    def _body(self, messages: Sequence[ChatMessage], sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model.model_id, "stream": True, "stream_options": {"include_usage": True},
            "messages": [_message(m) for m in messages],
            "temperature": max(sampling.temperature, 0.0), "top_p": sampling.top_p,
            # llama.cpp-based servers also take these; others ignore what they do not know
            "top_k": sampling.top_k, "min_p": sampling.min_p, "repeat_penalty": sampling.repeat_penalty,
        }
        if sampling.max_tokens:
            body["max_tokens"] = sampling.max_tokens
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        return body

    # Errors -------------------------------------------------------------------------------

    def _raise_for(self, response: httpx2.Response) -> None:
        """A RemoteError for any answer but 2xx. A redirect is never followed: the model is
        added again with the address it names (its host said, never its query)."""
        code = response.status_code
        where = self.model.where
        if 300 <= code < 400:
            target = urljoin(str(response.url), response.headers.get("location", ""))
            shown = netloc(target) if netloc(target) != where else f"{where}{urlsplit(target).path}"
            raise RemoteError(f"The server at {where} redirects to {shown} (HTTP {code}); Enclave does not follow "
                              "redirects: add the model again with that address.")
        if code < 300:
            return
        response.read()  # a streamed answer's body: the reason
        said = _error_text(response)
        if code in (401, 403):
            how = (f"the key in ${self.model.key_env} was refused" if self.model.key_env
                   else "it needs an API key: add the model again with --key-env VAR")
            raise RemoteError(f"The server at {where} refused the request (HTTP {code}): {how}.")
        if code == 404 and "model" in said.lower():
            raise RemoteError(f"The server at {where} has no model {self.model.model_id!r} ({said}); "
                              "'enclave models add-remote' with --model names one it serves.")
        raise RemoteError(f"The server at {where} answered HTTP {code}: {said or response.reason_phrase}.")

    def _translated(self, exc: Exception) -> RemoteError:
        where = self.model.where
        if isinstance(exc, httpx2.TimeoutException):
            return RemoteError(f"The server at {where} did not answer in time ({type(exc).__name__}); "
                               "it may be busy or down.")
        if isinstance(exc, httpx2.ConnectError):
            return RemoteError(f"Cannot reach the server at {where} ({_reason(exc)}): is it running, and is the "
                               "address right?")
        if isinstance(exc, httpx2.HTTPError):
            return RemoteError(f"The connection to {where} failed: {_reason(exc)}.")
        return RemoteError(f"The server at {where} sent something that is not an OpenAI-compatible answer ({exc}).")


class _Reply:
    """What a streamed reply has said so far: its text's chunks, its usage, why it stopped."""

    def __init__(self, started: float, prompt_tokens: int = 0) -> None:
        self.started = started
        self.first: float | None = None
        self.chunks = 0
        self.prompt_tokens = prompt_tokens
        self.completion_tokens: int | None = None
        self.finish: str | None = None

    def take(self, data: object) -> str:
        """One chunk's text. A chunk not shaped as OpenAI's raises ValueError (the caller's
        "not an OpenAI-compatible answer")."""
        if not isinstance(data, dict):
            raise ValueError(f"a chunk is {_glimpse(data)}, not an object")
        if isinstance(data.get("error"), dict):
            raise RemoteError(f"The server stopped the reply: {data['error'].get('message', data['error'])}.")
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = _count(usage.get("prompt_tokens"))
            self.completion_tokens = _count(usage.get("completion_tokens"))
        choices = data.get("choices") or []
        if not isinstance(choices, list):
            raise ValueError(f"'choices' is {_glimpse(choices)}, not a list")
        text = ""
        for choice in choices:
            delta = (choice.get("delta") or {}) if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                raise ValueError(f"a choice is {_glimpse(choice)}, not an object with a 'delta'")
            content, finish = delta.get("content"), choice.get("finish_reason")
            if not isinstance(content, str | None) or not isinstance(finish, str | None):
                raise ValueError(f"a choice is {_glimpse(choice)}: its content and finish_reason are not text")
            # the opening chunk (the role) and the closing one (the finish reason) carry no token
            framing = not content and (finish is not None or "role" in delta)
            if "content" in delta and not framing:  # one token a chunk (even "": a partial character)
                self.chunks += 1
                self.first = self.first or time.monotonic()
            text += content or ""
            self.finish = finish or self.finish
        return text

    @property
    def generated(self) -> int:
        """Tokens generated: the server's ``usage`` when it gave one, else the chunks streamed."""
        return self.completion_tokens if self.completion_tokens is not None else self.chunks

    def stats(self, *, cancelled: bool) -> Stats:
        now = time.monotonic()
        first = self.first or now
        reason = "cancelled" if cancelled else _STOP_REASONS.get(self.finish or "stop", "eog")
        return Stats(self.prompt_tokens, 0, self.generated, first - self.started, now - first, reason)  # type: ignore[arg-type]


def _message(message: ChatMessage) -> dict[str, Any]:
    """A message as OpenAI's API takes it: its images as content parts (PNG data URIs, which
    llama-server and vLLM accept) before its text."""
    if not message.images:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(image.png).decode()}}
        for image in message.images]
    return {"role": message.role, "content": [*parts, {"type": "text", "text": message.content}]}


def _count(value: object) -> int:
    """A token count in ``usage`` (null: 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"a token count in 'usage' is {_glimpse(value)}")
    return value


def _glimpse(value: object) -> str:
    """A bit of what the server sent, to name it in an error (never long)."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _shut_down(sock: socket.socket) -> None:
    """Shut ``sock`` down for both directions: a read blocked on it in another thread returns at
    once (closing it would not wake that read). The plain socket's method, also for a TLS
    socket: its own would drop the TLS state under the reading thread."""
    with contextlib.suppress(OSError):  # already closed, or never connected
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _sse_data(lines: Iterator[str]) -> Iterator[object]:
    """The JSON of each ``data:`` line of a server-sent event stream, up to ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        if payload:
            yield json.loads(payload)


def _error_text(response: httpx2.Response) -> str:
    """The reason in an error body: OpenAI's ``error.message``, FastAPI's ``detail``, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("detail"):
            return str(body["detail"])[:200]
    return json.dumps(body)[:200]


def _reason(exc: Exception) -> str:
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    return str(getattr(cause, "strerror", None) or cause or exc) or type(exc).__name__
