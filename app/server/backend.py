"""The blocking side of the server: models and libraries answered through ``Services``.

Everything here runs in the server's one worker thread (``jobs``), one request at a time,
and reports through ``emit``: ``Piece`` (text as it streams), then ``Finished``, or an
``ApiError``. A model loads as its saved profile says; a request's sampling fields replace
the profile's for that request only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

from app.chat import ReplyDelta, ReplyFinished
from app.conversations import Message, Source
from app.server.bodies import ApiRequest
from app.server.errors import ApiError
from app.services import Services
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Done, Event, Failed, Sampling, Token

LIBRARY_PREFIX = "library/"
FINISH_REASONS = {"eog": "stop", "stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` names: a registered model (``ref``: its id) or a library."""

    name: str  # as the request said it
    ref: str
    library_id: int | None = None


@dataclass(frozen=True)
class Piece:
    text: str


@dataclass(frozen=True)
class Finished:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    sources: tuple[Source, ...] = ()


Emit = Callable[[Piece | Finished | ApiError], None]
T = TypeVar("T")
Cancelled = Callable[[], bool]


class Backend:
    def __init__(self, services: Services, default_model: str | None = None) -> None:
        """``default_model``: the model of requests that name none, and the model libraries
        answer with (else the default_model setting)."""
        self.services = services
        self.default_model = default_model

    def listed(self) -> list[str]:
        """Every name a request may give: the registered models, then ``library/NAME``."""
        models = [m.name for m in self.services.models.all()]
        if self.default_model and self.services.models.find(self.default_model) is None:
            models.append(self.default_model)  # a file given with --model
        return models + [LIBRARY_PREFIX + lib.name for lib in self.services.libraries.all()]

    def target(self, name: str) -> Target:
        """What ``name`` is, or a 404 saying where the names are."""
        if name.startswith(LIBRARY_PREFIX):
            library = self.services.libraries.find(name.removeprefix(LIBRARY_PREFIX))
            if library is not None:
                return Target(name, self.library_model() or "", library.id)
        else:
            model = self.services.models.find(name)
            if model is not None:
                return Target(name, model.id)
            if self.default_model and name == self.default_model:
                return Target(name, name)  # a file given with --model
        raise ApiError(404, f"There is no model {name!r} here. GET /v1/models lists the models and libraries.",
                       code="model_not_found", param="model")

    def library_model(self) -> str | None:
        return self.default_model or self.services.current_settings().default_model or None

    # Blocking work: the server's worker thread only -------------------------------------------

    def load(self, ref: str) -> int:
        """Load ``ref`` by its profile (nothing when it is loaded so already); its context."""
        try:
            return self.services.load_model(ref).info.n_ctx
        except EnclaveError as exc:
            raise ApiError(503, f"The model {ref} cannot be loaded: {exc}", code="model_not_loaded") from None

    def answer(self, request: ApiRequest, target: Target, emit: Emit, cancelled: Cancelled) -> None:
        try:
            if target.library_id is not None:
                self._answer_from_library(request, target, emit, cancelled)
            else:
                self._answer_with_model(request, target, emit, cancelled)
        except ApiError as exc:
            emit(exc)
        except EnclaveError as exc:
            emit(ApiError(503, str(exc), code="server_error"))

    def _sampling(self, ref: str, request: ApiRequest) -> Sampling:
        profile = self.services.profile(ref)
        base = self.services.current_settings().sampling(**profile.sampling_overrides())
        return replace(base, **request.sampling.overrides())

    def _messages(self, ref: str, messages: tuple[ChatMessage, ...]) -> list[ChatMessage]:
        """The request's messages; without a system message, the one the profile (or the settings) gives."""
        if any(m.role == "system" for m in messages):
            return list(messages)
        system = self.services.chat.default_system_prompt(ref)
        return ([ChatMessage("system", system)] if system else []) + list(messages)

    def _answer_with_model(self, request: ApiRequest, target: Target, emit: Emit, cancelled: Cancelled) -> None:
        n_ctx = self.load(target.ref)
        sampling = self._sampling(target.ref, request)
        runtime = self.services.runtime
        if request.chat:
            messages = self._messages(target.ref, request.messages)
            prompt = runtime.render_chat(messages).ids
            _check_fits(len(prompt), n_ctx, target.name)
            events = runtime.continue_tokens(prompt, sampling)
        else:
            assert request.prompt is not None
            _check_fits(len(runtime.worker.tokenize(request.prompt)), n_ctx, target.name)
            events = runtime.complete(request.prompt, sampling)
        _relay(events, emit, cancelled, runtime.cancel)

    def _answer_from_library(self, request: ApiRequest, target: Target, emit: Emit, cancelled: Cancelled) -> None:
        """As ``enclave ask`` answers: the chat service's library path (warm cache included).
        It answers within a conversation, so one is made for the request and deleted after."""
        if not target.ref:
            raise ApiError(503, "No model answers from libraries: start 'enclave serve --model MODEL', or set "
                                "'enclave settings set default_model MODEL'.", code="model_not_loaded")
        if not request.chat:
            raise ApiError(400, "A library answers chat completions (POST /v1/chat/completions) only.",
                           code="invalid_request", param="model")
        chat, store = self.services.chat, self.services.conversations
        *history, last = request.messages
        if last.role != "user":
            raise ApiError(400, "The last message must be the user's question.", param="messages")
        system = next((m.content for m in history if m.role == "system"), None)
        conversation = chat.start(model=target.ref, library_id=target.library_id, system_prompt=system,
                                  sampling=request.sampling.overrides())
        try:
            for message in history:
                if message.role in ("user", "assistant"):
                    store.add_message(conversation.id, message.role, message.content)
            _relay_library(chat.send(conversation.id, last.content), emit, cancelled, chat.cancel)
        finally:
            store.delete(conversation.id)


def _check_fits(prompt_tokens: int, n_ctx: int, model: str) -> None:
    if prompt_tokens >= n_ctx:
        raise ApiError(400, f"The prompt is {prompt_tokens:,} tokens, but {model} is loaded with a context of "
                            f"{n_ctx:,} tokens. Shorten the prompt, or raise the model's context "
                            "with 'enclave models config'.", code="context_length_exceeded", param="messages")


def _passing_cancel(events: Iterable[T], cancelled: Cancelled, cancel: Callable[[], None]) -> Iterator[T]:
    """``events``; a cancel asked for is passed on to their producer, once, at the next event."""
    stopping = False
    for event in events:
        if cancelled() and not stopping:
            cancel()
            stopping = True
        yield event


def _relay(events: Iterable[Event], emit: Emit, cancelled: Cancelled, cancel: Callable[[], None]) -> None:
    """Worker events → ``emit``."""
    for event in _passing_cancel(events, cancelled, cancel):
        if isinstance(event, Token) and event.text:
            emit(Piece(event.text))
        elif isinstance(event, Done):
            s = event.stats
            emit(Finished(s.prompt_tokens, s.generated_tokens, FINISH_REASONS[s.stop_reason]))
        elif isinstance(event, Failed):
            status = 503 if event.kind == "crash" else 400
            emit(ApiError(status, event.message, code="generation_failed"))


def _relay_library(events: Iterable[object], emit: Emit, cancelled: Cancelled, cancel: Callable[[], None]) -> None:
    """The chat service's events for a library answer → ``emit``."""
    for event in _passing_cancel(events, cancelled, cancel):
        if isinstance(event, ReplyDelta) and event.answer:
            emit(Piece(event.answer))
        elif isinstance(event, ReplyFinished):
            emit(_library_finished(event.message))


def _library_finished(message: Message) -> Finished | ApiError:
    if message.status == "error":
        return ApiError(503, message.error or "The library answer failed.", code="generation_failed")
    reason = FINISH_REASONS.get(message.stop_reason or "eog", "stop")
    return Finished(message.prompt_tokens or 0, message.completion_tokens or 0, reason, message.sources)
