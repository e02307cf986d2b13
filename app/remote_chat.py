"""A remote model as the chat service's ``TurnSource``: the prompt is sent as messages to
its server (``RemoteClient``), never tokens, and nothing is loaded or planned here.

A library question sends the whole-library prompt (or, when the library is more than the
server's context, the BM25 selection ``LibraryPromptBuilder`` makes) as the system message;
the server keeps its own prompt cache, so there are no KV blocks. Sizes are counted with the
server's tokenizer when it has a tokenize endpoint, else estimated (about four characters a
token) — and the note stored with the answer says they are estimates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator, Sequence

from app.chat import ChatEvent, ContextTrimmed, LibraryContextNeed, Turn, reply_reserve
from app.conversations import Conversation
from app.libraries import LibraryRepository
from app.library_chat import HISTORY_SHARE, LibraryCounting
from app.library_sizing import needed_context
from app.prompting import LibraryPromptBuilder, fit_history
from app.remote_backend import ESTIMATE_CHARS_PER_TOKEN, RemoteClient
from app.remote_models import RemoteModel
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Event, Sampling

MESSAGE_OVERHEAD = 8  # tokens a chat template adds around each message (roughly: its role markup)
# What an image is counted as before sending: a server's tokenizer counts text only, and vision
# models spend from 256 (Gemma 3) to over a thousand (Qwen2.5-VL, a large picture) tokens an image
IMAGE_TOKENS_ESTIMATE = 1024


def estimate_tokens(texts: Sequence[str]) -> list[int]:
    return [math.ceil(len(text) / ESTIMATE_CHARS_PER_TOKEN) for text in texts]


class RemoteTurns:
    def __init__(self, model: RemoteModel, client: RemoteClient, libraries: LibraryRepository,
                 history: Callable[[Conversation], list[ChatMessage]]) -> None:
        self.model = model
        self.client = client
        self.libraries = libraries
        self._history = history
        self._estimated: bool | None = None  # None: not asked yet whether the server counts

    # Counting -----------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """The server's counts when it has a tokenize endpoint, else estimates (``estimated``)."""
        if not texts:
            return []
        counts = None if self._estimated else self.client.count_tokens(texts)
        self._estimated = counts is None
        return counts if counts is not None else estimate_tokens(texts)

    @property
    def tokenizer_key(self) -> str:
        """What token counts are cached under: this server's model, or the estimate."""
        if self._estimated is None:
            self.count_tokens(["?"])  # one small request tells which
        return "estimate:chars/4" if self._estimated else f"remote:{self.model.where}/{self.model.model_id}"

    def _count_messages(self, messages: Sequence[ChatMessage]) -> int:
        images = sum(len(m.images) for m in messages)
        return (sum(self.count_tokens([m.content for m in messages])) + MESSAGE_OVERHEAD * len(messages)
                + IMAGE_TOKENS_ESTIMATE * images)

    # TurnSource ---------------------------------------------------------------------------

    def count_library(self, conversation: Conversation, model: str) -> Iterator[LibraryCounting]:
        return iter(())  # counted as the prompt is built (the server's tokenizer, or estimates)

    def context_need(self, conversation: Conversation, model: str) -> LibraryContextNeed | None:
        return None  # the server's context is what it is: nothing to choose here

    def prepare(self, conversation: Conversation, model: str, sampling: Sampling
                ) -> Generator[ChatEvent, None, Turn]:
        n_ctx = self.model.context_length
        reserve = reply_reserve(sampling, n_ctx)
        history = self._history(conversation)
        if conversation.library_id is not None:
            return self._library_turn(conversation, history, n_ctx, reserve)
        if conversation.system_prompt:
            history.insert(0, ChatMessage("system", conversation.system_prompt))
        kept, dropped, tokens = fit_history(history, self._count_messages, n_ctx - reserve)
        if tokens >= n_ctx:
            raise EnclaveError(f"Your message is about {tokens:,} tokens, more than the {n_ctx:,}-token context of "
                               f"{self.model.name} on {self.model.where}. Shorten it.")
        trimmed = ContextTrimmed(dropped, tokens, n_ctx) if dropped else None
        return Turn((), "", None, trimmed, None, (), tuple(kept), prompt_tokens=tokens)
        yield  # a generator, as ``TurnSource.prepare`` is: nothing to say before the reply

    def _library_turn(self, conversation: Conversation, history: list[ChatMessage], n_ctx: int,
                      reserve: int) -> Turn:
        library = self.libraries.get(conversation.library_id or 0)
        turns, dropped, history_tokens = fit_history(history, self._count_messages, n_ctx // HISTORY_SHARE)
        question = next((m.content for m in reversed(turns) if m.role == "user"), "")
        builder = LibraryPromptBuilder(self.libraries, self.count_tokens, self.tokenizer_key)
        built = builder.build(library, n_ctx - history_tokens - reserve, question)
        system = conversation.system_prompt.strip()
        messages = (ChatMessage("system", (system + "\n\n" if system else "") + built.system_text), *turns)
        note = built.note(n_ctx, needed_context(built.library_tokens, history_tokens, reserve))
        if self._estimated:
            note += (f" Token counts are estimates (about {ESTIMATE_CHARS_PER_TOKEN} characters a token): the server "
                     f"at {self.model.where} cannot count them.")
        tokens = self._count_messages(messages)
        trimmed = ContextTrimmed(dropped, tokens, n_ctx) if dropped else None
        return Turn((), "", None, trimmed, note, built.sources(), messages, prompt_tokens=tokens)

    def stream(self, turn: Turn, sampling: Sampling) -> Iterator[Event]:
        return self.client.chat(turn.messages, sampling, prompt_tokens=turn.prompt_tokens)

    def cancel(self) -> None:
        self.client.cancel()
