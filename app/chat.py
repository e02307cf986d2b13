"""The chat service: conversations stored as they happen, replies streamed from the worker.

Crash safety is the order of writes: the user's message is committed before generation
starts; the reply row exists from the first moment with status ``partial`` and its text
is written every few tokens; it becomes ``complete`` at the end. A stop by the user keeps
the partial text (status ``partial``, stop reason ``cancelled``); a worker crash marks it
``error`` with the reason. Killing the process at any point leaves a consistent history.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from app.conversations import Conversation, ConversationRepository, ImageRef, Message, Source
from app.image_store import ImageStore
from app.library_chat import LibraryChat, LibraryContext, LibraryCounting, ReadingStopped
from app.profiles import ModelProfile, load_request
from app.prompting import fit_history
from app.reasoning import ReasoningSplitter, Split, detect_style, prompt_opens_reasoning
from app.runtime import Runtime
from app.settings import Settings
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Done, Event, Failed, ImageInput, Progress, Sampling, Token, Tokens

FLUSH_SECONDS = 0.25  # how often a streaming reply is written to the database
TITLE_LENGTH = 60
HISTORY_LIMIT = 2000  # the most recent messages considered for a prompt; older ones never fit anyway


@dataclass(frozen=True)
class UserMessageSaved:
    message: Message


@dataclass(frozen=True)
class ContextTrimmed:
    dropped: int  # earlier messages left out of the prompt
    prompt_tokens: int
    n_ctx: int


@dataclass(frozen=True)
class ContextRaised:
    """A library conversation loaded a longer context than the model's profile asks for:
    enough for the whole library (``whole``), or the largest the machine holds. Said before
    the answer."""

    n_ctx: int
    profile_ctx: int
    model: str
    whole: bool = True

    def describe(self) -> str:
        why = (f"This library needs a context of {self.n_ctx:,} tokens" if self.whole else
               f"This library is more than this machine holds; the largest context that fits is {self.n_ctx:,} "
               "tokens")
        return f"{why}; the profile of {self.model} asks for {self.profile_ctx:,}, so {self.n_ctx:,} is used for it."


@dataclass(frozen=True)
class LibraryContextNeed:
    """A library that needs more context than the model's profile sets, on a machine that
    holds it: the window asks the user before the question is sent."""

    model: str
    needed: int
    profile_ctx: int
    whole: bool = True  # ``needed`` holds the whole library (else: the largest context that fits)


@dataclass(frozen=True)
class LibraryNote:
    """What of the library the prompt holds: shown before the answer, stored with it."""

    text: str


@dataclass(frozen=True)
class ModelLoading:
    """The model is being loaded into the worker (it was not, or not as this turn needs it)."""

    model: str  # as the conversation names it


@dataclass(frozen=True)
class WorkerBusy:
    """Another front end has the model worker now (the API server's requests, served from the
    window): this turn waits for it, then goes on."""


@dataclass(frozen=True)
class ModelLoaded:
    model: str
    seconds: float


@dataclass(frozen=True)
class PromptProgress:
    done: int
    total: int
    images: int = 0  # images the prompt holds (0: none)
    images_done: int = 0  # of those, encoded and in the KV cache

    def describe(self) -> str:
        """"Encoding image 1 of 2" while images are encoded, else "" (the tokens' progress says the rest)."""
        if self.images and self.images_done < self.images:
            return f"Encoding image {self.images_done + 1} of {self.images}"
        return ""


@dataclass(frozen=True)
class ReplyDelta:
    message_id: int
    answer: str
    reasoning: str


@dataclass(frozen=True)
class ReplyFinished:
    message: Message


ChatEvent = (UserMessageSaved | LibraryCounting | WorkerBusy | ModelLoading | ModelLoaded | ContextTrimmed
             | ContextRaised | LibraryNote | PromptProgress | ReplyDelta | ReplyFinished)


def reply_reserve(sampling: Sampling, n_ctx: int) -> int:
    """The tokens a reply may take, which the prompt leaves free."""
    return min(sampling.max_tokens or n_ctx // 4, n_ctx // 2)


class TurnSource(Protocol):
    """Where a model's replies come from: the local worker (``LocalTurns``) or a server
    elsewhere (``app.remote_chat.RemoteTurns``). The chat service stores, splits reasoning
    and streams the same way whichever it is; only these steps differ."""

    def count_library(self, conversation: Conversation, model: str) -> Iterator[LibraryCounting]:
        """Count what sizing the library needs with this model, with progress (nothing when counted)."""
        ...

    def context_need(self, conversation: Conversation, model: str) -> LibraryContextNeed | None:
        """A longer context the window should offer before sending (None: nothing to ask)."""
        ...

    def prepare(self, conversation: Conversation, model: str, sampling: Sampling
                ) -> Generator[ChatEvent, None, Turn]:
        """Get the model ready and build the prompt, saying what happens; returns the ``Turn``."""
        ...

    def stream(self, turn: Turn, sampling: Sampling) -> Iterator[Event]:
        """The reply: ``Progress``, ``Token``s, then ``Done`` or ``Failed``."""
        ...

    def cancel(self) -> None:
        """Stop the reply being streamed (from any thread)."""
        ...


def title_from(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "New chat")
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


def reads_text_only(model: str) -> EnclaveError:
    """The refusal of a turn with images for a model loaded without a projector."""
    return EnclaveError(f"{model} reads text only: import it with its projector (enclave models import … --mmproj "
                        "FILE) or choose a vision model.")


class ChatService:
    def __init__(self, conversations: ConversationRepository, runtime: Runtime,
                 settings: Callable[[], Settings], library_chat: LibraryChat | None = None,
                 profiles: Callable[[str], ModelProfile] = lambda model: ModelProfile(),
                 remote: Callable[[str], TurnSource | None] = lambda model: None) -> None:
        """``profiles``: the saved profile of a model, by what a conversation calls it.
        ``remote``: the ``TurnSource`` of a model served elsewhere (None: a local model)."""
        self._local = LocalTurns(self)
        self._remote = remote
        self._active: TurnSource | None = None  # the source of the reply streaming now
        self._in_worker = False  # this service's turn holds the worker (another front end's may)
        self.conversations = conversations
        self.runtime = runtime
        self._settings = settings
        self._profiles = profiles
        self.library_chat = library_chat
        self._stop_requested = False
        self.images = ImageStore(conversations.store)
        # Library conversations whose user chose the profile's context over a longer one
        # (the window asks); the others get what their library needs when it fits.
        self.keep_profile_context: set[int] = set()

    # Conversations --------------------------------------------------------------------

    def start(self, *, model: str | None = None, system_prompt: str | None = None,
              sampling: dict | None = None, library_id: int | None = None) -> Conversation:
        model = model or self._settings().default_model
        if system_prompt is None:
            system_prompt = self.default_system_prompt(model)
        return self.conversations.create(
            model=model,
            system_prompt=system_prompt,
            sampling=sampling or {},
            library_id=library_id,
        )

    def default_system_prompt(self, model: str | None) -> str:
        """The system prompt a new conversation with ``model`` starts with: its profile's, else the settings'."""
        saved = self._profiles(model).system_prompt if model else None
        return self._settings().system_prompt if saved is None else saved

    def warm(self, library_id: int, model: str | None = None) -> Iterator[LibraryCounting | Progress]:
        """Get ready for the first question on a library: ``model`` (default: the default
        model) loaded as a new conversation with the library loads it (the context it needs),
        and the library's prefix held and saved as that question will start, with progress.
        Returns the ``WarmedPrefix``; a stop (``cancel``) raises ``ReadingStopped``."""
        if self.library_chat is None:
            raise EnclaveError("Libraries are not available here.")
        self._stop_requested = False
        draft = self._unsaved_conversation(model, library_id)
        model = self._model_of(draft)
        if self._source(model) is not self._local:
            raise EnclaveError(f"{model} runs on another server, which keeps its own prompt cache: there is nothing "
                               "to warm here.")
        with self._worker_turn():
            yield from self._local_count(draft, model)
            n_ctx, _raised = self._load(model, draft)
            if self._stop_requested:
                raise ReadingStopped("Stopped before the library was read.")
            reserve = reply_reserve(self._sampling(draft), n_ctx)
            return (yield from self.library_chat.warm(library_id, draft.system_prompt, n_ctx, reserve))

    @contextlib.contextmanager
    def _worker_turn(self) -> Iterator[None]:
        with self.runtime.turn():
            self._in_worker = True
            try:
                yield
            finally:
                self._in_worker = False

    def _unsaved_conversation(self, model: str | None, library_id: int) -> Conversation:
        """The conversation ``start`` would make for a library, not saved: what a warm-up prepares for."""
        model = model or self._settings().default_model
        return Conversation(id=0, title="", model=model, library_id=library_id,
                            system_prompt=self.default_system_prompt(model), sampling={}, created_at="", updated_at="")

    def cancel(self) -> None:
        """Stop the reply being generated (from any thread); its text so far is kept. A
        stop while the model loads or the library is read is honoured too. While this turn
        still waits for the worker (another front end holds it: the API server), only this
        turn stops — the worker's generation is someone else's."""
        self._stop_requested = True
        active = self._active or self._local
        if active is not self._local or self._in_worker:
            active.cancel()

    # Turns ---------------------------------------------------------------------------

    def send(self, conversation_id: int, text: str, images: Sequence[ImageRef] = ()) -> Iterator[ChatEvent]:
        """Save the user's message, then stream the reply. ``images``: already stored
        (``Services.add_images``), shown to the model before the text; a model that reads
        text only refuses them before anything is saved."""
        conversation = self.conversations.get(conversation_id)
        model = self._model_of(conversation)
        if images:
            yield from self._check_reads_images(conversation, model)
        user = self.conversations.add_message(conversation_id, "user", text, images=images)
        yield UserMessageSaved(user)
        if not conversation.title:
            self.conversations.rename(conversation_id, title_from(text))
        yield from self._reply(conversation, model)

    def regenerate(self, conversation_id: int) -> Iterator[ChatEvent]:
        """Answer the last message again. The last reply is kept as an alternative (set
        aside: neither listed nor in the prompt); the new one joins its group. A reply with
        nothing in it is replaced instead."""
        conversation = self.conversations.get(conversation_id)
        model = self._model_of(conversation)
        history = self.conversations.messages(conversation_id, limit=1)
        if not history:
            raise EnclaveError("This conversation has no messages to answer yet.")
        last, group = history[-1], None
        if last.role == "assistant" and (last.content or last.reasoning):
            group = self.conversations.set_aside(last.id)
        elif last.role == "assistant":
            group = last.alternative_of
            self.conversations.delete_message(last.id)
        try:
            yield from self._reply(conversation, model, alternative_of=group)
        finally:
            if group is not None:  # a regenerate that failed before its reply began hides nothing
                self.conversations.ensure_shown(group)

    def edit_and_resend(self, conversation_id: int, text: str) -> Iterator[ChatEvent]:
        """Replace the last user message (and the reply to it) with ``text``, and answer it."""
        conversation = self.conversations.get(conversation_id)
        model = self._model_of(conversation)
        last_user = next((m for m in reversed(self.conversations.messages(conversation_id)) if m.role == "user"), None)
        if last_user is None:
            raise EnclaveError("This conversation has no message of yours to edit.")
        kept = [ImageRef(image.sha256, image.name) for image in last_user.images]  # the edit keeps its images
        user = self.conversations.replace_from(conversation_id, last_user.id, text, kept)
        yield UserMessageSaved(user)
        yield from self._reply(conversation, model)

    # Images --------------------------------------------------------------------------

    def _check_reads_images(self, conversation: Conversation, model: str) -> Iterator[ChatEvent]:
        """Before a message with images is saved: a local model is loaded as the turn will
        load it and must have its projector (a remote server answers for itself)."""
        if conversation.library_id is not None:
            raise EnclaveError("Images cannot be asked about in a library conversation yet: start a chat without "
                               "the library to ask about them.")
        if self._source(model) is not self._local:
            return
        if self.runtime.turn_taken():
            yield WorkerBusy()
        with self._worker_turn():
            yield from self._load_with_status(model, conversation)
            info = self.runtime.model
            if info is None or not info.reads_images:
                raise reads_text_only(model)

    def _image_inputs(self, message: Message) -> tuple[ImageInput, ...]:
        return tuple(ImageInput(self.images.png(image.sha256), image.sha256) for image in message.images)

    # The reply -------------------------------------------------------------------------

    def _source(self, model: str) -> TurnSource:
        return self._remote(model) or self._local

    def _model_of(self, conversation: Conversation) -> str:
        model = conversation.model or self._settings().default_model
        if not model:
            raise EnclaveError("No model chosen for this chat. Pass --model PATH, or set a default with "
                               "'enclave settings set default_model PATH'.")
        return model

    def _sampling(self, conversation: Conversation) -> Sampling:
        settings = self._settings()
        known = {k: tuple(v) if isinstance(v, list) else v  # JSON keeps stop strings as a list
                 for k, v in conversation.sampling.items() if k in Sampling.__dataclass_fields__}
        return settings.sampling(**{**self._profiles(self._model_of(conversation)).sampling_overrides(), **known})

    def library_context_need(self, conversation_id: int) -> LibraryContextNeed | None:
        """For a library conversation whose model's profile sets a context too short for
        the whole library on a machine that would hold it: what it needs (the window asks
        before sending). None when there is nothing to ask."""
        conversation = self.conversations.get(conversation_id)
        if conversation.library_id is None or self.library_chat is None:
            return None
        model = self._model_of(conversation)
        return self._source(model).context_need(conversation, model)

    def _local_context_need(self, conversation: Conversation, model: str) -> LibraryContextNeed | None:
        profile = self._profiles(model)
        if profile.n_ctx is None or profile.n_ctx == 0 or conversation.id in self.keep_profile_context:
            return None  # no context chosen: the library gets what it needs without asking
        for _ in self._local_count(conversation, model):
            pass  # exact counts first (the window has counted them with progress: a read then)
        needed, whole = self._library_context(conversation, model, profile.n_ctx)
        return LibraryContextNeed(model, needed, profile.n_ctx, whole) if needed > profile.n_ctx else None

    def count_library(self, conversation_id: int) -> Iterator[LibraryCounting]:
        """For a library conversation: count the library's documents its model has not
        counted yet (the first time the model meets the library), with progress, so the
        context is sized exactly. A question does it too; the window does it first, before
        it asks about the context. Nothing for other conversations or counted libraries."""
        conversation = self.conversations.get(conversation_id)
        if conversation.library_id is not None:
            model = self._model_of(conversation)
            yield from self._source(model).count_library(conversation, model)

    def _local_count(self, conversation: Conversation, model: str) -> Iterator[LibraryCounting]:
        if conversation.library_id is not None and self.library_chat is not None:
            yield from self.library_chat.count(conversation.library_id, model)

    def _library_context(self, conversation: Conversation, model: str, minimum: int) -> LibraryContext:
        assert self.library_chat is not None and conversation.library_id is not None
        reserve = self._sampling(conversation).max_tokens or 2048
        profile, settings = self._profiles(model), self._settings()
        planned = load_request(profile, settings, draft=self.runtime.draft_for(profile, settings),
                               projector=self.runtime.projector_for(model, profile)).planned
        return self.library_chat.context_for(conversation.library_id, model, minimum, reserve, planned)

    def _context_wanted(self, model: str, conversation: Conversation) -> tuple[int | None, ContextRaised | None]:
        """The context to load ``model`` with for ``conversation`` (None: its profile's). A
        library conversation gets the longer context its library needs when the machine
        holds it, unless its user chose to keep the profile's."""
        wanted = self._profiles(model).context(self._settings())
        if (conversation.library_id is not None and self.library_chat is not None and wanted
                and conversation.id not in self.keep_profile_context):
            needed, whole = self._library_context(conversation, model, wanted)
            if needed > wanted:
                return needed, ContextRaised(needed, wanted, model, whole)
        return None, None

    def _load(self, model: str, conversation: Conversation) -> tuple[int, ContextRaised | None]:
        """Load ``model`` as its profile says (nothing happens when it is loaded so already)."""
        n_ctx, raised = self._context_wanted(model, conversation)
        outcome = self.runtime.load_profile(model, self._profiles(model), self._settings(), n_ctx=n_ctx)
        return outcome.info.n_ctx, raised

    def _load_with_status(self, model: str, conversation: Conversation) -> Iterator[ChatEvent]:
        """``_load``, said: ``ModelLoading`` before a load that really happens (not when the
        model is in the worker as this turn needs it), ``ModelLoaded`` after. Returns
        (context, ``ContextRaised`` or None)."""
        n_ctx, raised = self._context_wanted(model, conversation)
        profile, settings = self._profiles(model), self._settings()
        loads = self.runtime.loads_anew(model, profile, settings, n_ctx=n_ctx)
        if loads:
            yield ModelLoading(model)
        started = time.monotonic()
        outcome = self.runtime.load_profile(model, profile, settings, n_ctx=n_ctx)
        if loads:
            yield ModelLoaded(model, time.monotonic() - started)
        return outcome.info.n_ctx, raised

    def history(self, conversation: Conversation) -> list[ChatMessage]:
        """The conversation as the model sees it: finished text, reasoning attached."""
        return self._history(conversation)

    def _history(self, conversation: Conversation) -> list[ChatMessage]:
        """With each message's images (their PNGs read from the database)."""
        recent = self.conversations.messages(conversation.id, limit=HISTORY_LIMIT)
        return [ChatMessage(m.role, m.content, m.reasoning, self._image_inputs(m)) for m in recent
                if m.role in ("user", "assistant") and (m.content or m.role == "user")]

    def _plain_turn(self, conversation: Conversation, n_ctx: int, reserve: int) -> Turn:
        history = self._history(conversation)
        if any(m.images for m in history) and not self._reads_images():
            if history[-1].images:  # a regenerate, after the conversation's model was changed
                raise reads_text_only(self._model_of(conversation))
            history = [replace(m, images=()) for m in history]  # earlier images, for a vision model: text now
        if conversation.system_prompt:
            history.insert(0, ChatMessage("system", conversation.system_prompt))
        rendered: list[Tokens] = []

        def count(candidate: Sequence[ChatMessage]) -> int:
            rendered.append(self.runtime.render_chat(candidate))
            return len(rendered[-1].ids)

        kept, dropped, tokens = fit_history(history, count, n_ctx - reserve)
        if tokens >= n_ctx:
            raise EnclaveError(f"Your message is about {tokens:,} tokens, more than this model's context of "
                               f"{n_ctx:,}. Shorten it, or raise the context length in the settings.")
        note = ContextTrimmed(dropped, tokens, n_ctx) if dropped else None
        with_images = tuple(kept) if any(m.images for m in kept) else ()  # sent as messages: tokens hold no images
        return Turn(rendered[-1].ids, rendered[-1].text, None, note, None, (), with_images)

    def _reads_images(self) -> bool:
        info = self.runtime.model
        return info is not None and info.reads_images

    def _library_turn(self, conversation: Conversation, n_ctx: int, reserve: int) -> Iterator[ChatEvent]:
        if self.library_chat is None:
            raise EnclaveError("Libraries are not available here.")
        history = [replace(m, images=()) for m in self._history(conversation)]  # text only (``_check_reads_images``)
        preparing = self.library_chat.prepare(conversation.library_id or 0, conversation.system_prompt,
                                              history, n_ctx, reserve)
        try:
            while True:
                progress = next(preparing)
                yield PromptProgress(progress.done, progress.total)
        except StopIteration as finished:
            turn = finished.value
        trimmed = ContextTrimmed(turn.dropped_turns, len(turn.tokens), n_ctx) if turn.dropped_turns else None
        return Turn(turn.tokens, turn.text, turn.prefix_key, trimmed, turn.note, turn.sources)

    def _reply(self, conversation: Conversation, model: str, alternative_of: int | None = None
               ) -> Iterator[ChatEvent]:
        """``alternative_of``: the group of alternatives the reply joins (a regenerate)."""
        self._stop_requested = False
        sampling = self._sampling(conversation)
        source = self._source(model)
        self._active = source
        try:
            if source is self._local and self.runtime.turn_taken():
                yield WorkerBusy()
            with self._worker_turn() if source is self._local else contextlib.nullcontext():
                turn = yield from source.prepare(conversation, model, sampling)
                yield from self._stream_reply(source, conversation, model, turn, sampling, alternative_of)
        finally:
            self._active = None

    def _prepare_local(self, conversation: Conversation, model: str, sampling: Sampling
                       ) -> Generator[ChatEvent, None, Turn]:
        """The local worker's turn: count, then size, then load the context once; the prompt as tokens."""
        yield from self._local_count(conversation, model)
        n_ctx, raised = yield from self._load_with_status(model, conversation)
        if raised is not None:
            yield raised
        reserve = reply_reserve(sampling, n_ctx)
        if conversation.library_id is not None:
            turn = yield from self._library_turn(conversation, n_ctx, reserve)
        else:
            turn = self._plain_turn(conversation, n_ctx, reserve)
        template = self.runtime.last_load.gguf.chat_template if self.runtime.last_load else None
        return replace(turn, template=template)

    def _stream_reply(self, source: TurnSource, conversation: Conversation, model: str, turn: Turn,
                      sampling: Sampling, alternative_of: int | None) -> Iterator[ChatEvent]:
        if turn.trimmed:
            yield turn.trimmed
        if turn.library_note:
            yield LibraryNote(turn.library_note)
        reply = self.conversations.add_message(conversation.id, "assistant", "", status="partial", model=model,
                                               context_note=turn.library_note, sources=turn.sources,
                                               alternative_of=alternative_of)
        opens = prompt_opens_reasoning(turn.text)
        splitter = ReasoningSplitter(detect_style(turn.template, opens), starts_in_reasoning=opens)
        writer = _ReplyWriter(self.conversations, reply.id, splitter)
        if self._stop_requested:  # stopped while loading or reading the library: nothing to generate
            writer.fail(None)
            yield ReplyFinished(self.conversations.message(reply.id))
            return
        finished = False
        try:
            for event in source.stream(turn, sampling):
                if isinstance(event, Progress):
                    yield PromptProgress(event.done, event.total, event.images, event.images_done)
                elif isinstance(event, Token):
                    delta = writer.add(event.text)
                    if delta.answer or delta.reasoning:
                        yield ReplyDelta(reply.id, delta.answer, delta.reasoning)
                elif isinstance(event, Done):
                    writer.finish(event)
                    finished = True
                elif isinstance(event, Failed):
                    writer.fail(event.message)
                    finished = True
        finally:
            if not finished:  # the caller stopped listening, or something raised: keep what we have
                writer.fail(None)
        yield ReplyFinished(self.conversations.message(reply.id))


@dataclass(frozen=True)
class Turn:
    """A reply's prompt, as its ``TurnSource`` sends it."""

    tokens: tuple[int, ...]  # the whole prompt (local); empty for a remote server, which is sent ``messages``
    text: str  # its text, where known (to see whether it opens a reasoning block)
    prefix_key: str | None
    trimmed: ContextTrimmed | None
    library_note: str | None
    sources: tuple[Source, ...]  # of a library answer: given, then left out
    # the prompt as messages: a remote server's, or the local worker's when they hold images
    messages: tuple[ChatMessage, ...] = ()
    template: str | None = None  # the chat template, for how its reasoning is marked
    prompt_tokens: int | None = None  # counted before sending (a remote server's usage may not say)


class LocalTurns:
    """The local worker as a ``TurnSource``: the model loaded by its profile, the prompt
    rendered and trimmed to its context, the library's KV state reused."""

    def __init__(self, chat: ChatService) -> None:
        self._chat = chat

    def count_library(self, conversation: Conversation, model: str) -> Iterator[LibraryCounting]:
        return self._chat._local_count(conversation, model)

    def context_need(self, conversation: Conversation, model: str) -> LibraryContextNeed | None:
        return self._chat._local_context_need(conversation, model)

    def prepare(self, conversation: Conversation, model: str, sampling: Sampling
                ) -> Generator[ChatEvent, None, Turn]:
        return self._chat._prepare_local(conversation, model, sampling)

    def stream(self, turn: Turn, sampling: Sampling) -> Iterator[Event]:
        if turn.messages:  # images: the worker renders the messages and encodes the images itself
            return self._chat.runtime.chat(turn.messages, sampling)
        return self._chat.runtime.continue_tokens(turn.tokens, sampling, turn.prefix_key)

    def cancel(self) -> None:
        self._chat.runtime.cancel()


class _ReplyWriter:
    """Accumulates a streaming reply and writes it to its row every ``FLUSH_SECONDS``."""

    def __init__(self, conversations: ConversationRepository, message_id: int, splitter: ReasoningSplitter) -> None:
        self._conversations = conversations
        self._id = message_id
        self._splitter = splitter
        self._answer: list[str] = []
        self._reasoning: list[str] = []
        self._started = time.monotonic()
        self._reasoning_ended: float | None = None
        self._last_flush = self._started

    def add(self, text: str):
        split = self._splitter.push(text)
        self._collect(split)
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self._flush(status="partial")
        return split

    def _collect(self, split: Split) -> None:
        if split.reasoning:
            self._reasoning.append(split.reasoning)
        if split.answer:
            if self._reasoning and self._reasoning_ended is None:
                self._reasoning_ended = time.monotonic()
            self._answer.append(split.answer)

    def _flush(self, **fields: object) -> None:
        answer, reasoning = "".join(self._answer), "".join(self._reasoning)
        misfiled = self._splitter.misfiled_reasoning  # thinking that streamed before we knew it was
        if misfiled and answer.startswith(misfiled):
            answer, reasoning = answer[len(misfiled):].lstrip(), misfiled + reasoning
        self._conversations.update_message(self._id, content=answer, reasoning=reasoning, **fields)
        self._last_flush = time.monotonic()

    def _reasoning_seconds(self) -> float | None:
        if not self._reasoning:
            return None
        return (self._reasoning_ended or time.monotonic()) - self._started

    def finish(self, done: Done) -> None:
        self._collect(self._splitter.finish())
        s = done.stats
        self._flush(
            status="partial" if s.stop_reason == "cancelled" else "complete",
            stop_reason=s.stop_reason, prompt_tokens=s.prompt_tokens, completion_tokens=s.generated_tokens,
            cached_tokens=s.cached_tokens, prompt_seconds=s.prompt_seconds,
            generation_seconds=s.generation_seconds, reasoning_seconds=self._reasoning_seconds(),
            drafted_tokens=s.drafted_tokens, accepted_tokens=s.accepted_tokens,
        )

    def fail(self, reason: str | None) -> None:
        self._collect(self._splitter.finish())
        if reason is None:
            self._flush(status="partial", stop_reason="cancelled", reasoning_seconds=self._reasoning_seconds())
        else:
            self._flush(status="error", error=reason, reasoning_seconds=self._reasoning_seconds())
