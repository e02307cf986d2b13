"""One reply's sampled tokens turned into streamed text, and when the reply ends.

The single-sequence ``Engine.generate`` and the continuous batch (``inference.batch``)
decode differently but end a reply by the same rules: an end-of-generation (or foreign
control) token, a stop string, the token limit.
"""

from __future__ import annotations

import codecs
import time
from typing import Literal, Protocol

from inference.protocol import Sampling, Token
from inference.stopping import StopMatcher

StopReason = Literal["eog", "length", "stop", "cancelled", "context"]


class Vocabulary(Protocol):
    reply_stops: tuple[str, ...]

    def ends_reply(self, token: int) -> bool: ...

    def piece(self, token: int) -> bytes: ...


class ReplyText:
    """Feed it each sampled token (``take``); it says what text to show and whether the
    reply is over (``ended``, with ``reason``)."""

    def __init__(self, vocabulary: Vocabulary, sampling: Sampling, limit: int) -> None:
        self._vocabulary = vocabulary
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopMatcher(sampling.stop + vocabulary.reply_stops)
        self.limit = sampling.max_tokens if sampling.max_tokens is not None else limit
        self.generated = 0
        self.reason: StopReason = "length"
        self.ended = self.limit <= 0

    def take(self, token: int) -> Token | None:
        """The text ``token`` adds; None when it ends the reply without showing anything."""
        if self._vocabulary.ends_reply(token):
            self.end("eog")
            return None
        self.generated += 1
        event = Token(token, self._stops.push(self._decoder.decode(self._vocabulary.piece(token))), time.monotonic())
        if self._stops.stopped:
            self.end("stop")
        elif self.generated >= self.limit:
            self.end("length")
        return event

    def end(self, reason: StopReason) -> None:
        self.reason, self.ended = reason, True

    def tail(self) -> Token | None:
        """Text held back (an incomplete character, a possible stop string's start) and
        now due, once the reply is over; None when there is none."""
        if self._stops.stopped:
            return None
        text = self._stops.push(self._decoder.decode(b"", final=True)) + self._stops.flush()
        return Token(None, text) if text else None
