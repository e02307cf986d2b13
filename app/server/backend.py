"""The blocking side of the server: models and libraries answered through ``Services``.

The blocking calls here run in the server's services thread (``jobs``): a model's request is
turned into a ``Generate`` for the worker's continuous batch (its events become ``Piece``s,
then ``Finished``, or an ``ApiError``: ``item_of``); a library answers alone, through the chat
service, and reports through ``emit``. A model loads as its saved profile says; a request's sampling fields replace
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
from inference.protocol import ChatMessage, Done, Event, Failed, Generate, Sampling, Token

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
        self.chat = services.new_chat()  # the server's own turns: the window's Stop never ends them

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
        """A library's answer (a model's requests go to the batch: ``generate_request``)."""
        try:
            self._answer_from_library(request, target, emit, cancelled)
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
        system = self.chat.default_system_prompt(ref)
        return ([ChatMessage("system", system)] if system else []) + list(messages)

    def generate_request(self, request: ApiRequest, target: Target, *, load: bool = True) -> Generate:
        """What the worker decodes for a model's request (in the batch); ``load``: load the
        model by its profile first (not while a batch holds the worker)."""
        if load:
            self.load(target.ref)
        sampling = self._sampling(target.ref, request)
        if request.chat:
            return Generate(messages=tuple(self._messages(target.ref, request.messages)), sampling=sampling)
        assert request.prompt is not None
        return Generate(prompt=request.prompt, sampling=sampling)

    def _answer_from_library(self, request: ApiRequest, target: Target, emit: Emit, cancelled: Cancelled) -> None:
        """As ``enclave ask`` answers: the chat service's library path (warm cache included).
        It answers within a conversation, so one is made for the request and deleted after."""
        if not target.ref:
            raise ApiError(503, "No model answers from libraries: start 'enclave serve --model MODEL', or set "
                                "'enclave settings set default_model MODEL'.", code="model_not_loaded")
        if not request.chat:
            raise ApiError(400, "A library answers chat completions (POST /v1/chat/completions) only.",
                           code="invalid_request", param="model")
        chat, store = self.chat, self.services.conversations
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


def _passing_cancel(events: Iterable[T], cancelled: Cancelled, cancel: Callable[[], None]) -> Iterator[T]:
    """``events``; a cancel asked for is passed on to their producer, once, at the next event."""
    stopping = False
    for event in events:
        if cancelled() and not stopping:
            cancel()
            stopping = True
        yield event


def item_of(event: Event) -> Piece | Finished | ApiError | None:
    """A worker event of a model's reply as the server passes it on (None: nothing to pass)."""
    if isinstance(event, Token) and event.text:
        return Piece(event.text)
    if isinstance(event, Done):
        s = event.stats
        return Finished(s.prompt_tokens, s.generated_tokens, FINISH_REASONS[s.stop_reason])
    if isinstance(event, Failed):
        if event.kind == "too_long":
            return ApiError(400, f"{event.message.split('. ')[0]}. Shorten the prompt, or raise the model's "
                                 "context with 'enclave models config'.", code="context_length_exceeded",
                            param="messages")
        status = 503 if event.kind in ("crash", "busy") else 400
        return ApiError(status, event.message, code="generation_failed")
    return None


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
