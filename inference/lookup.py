"""Prompt lookup: guess the next tokens of a reply from the text it has already seen.

Answers about documents quote them: names, figures, whole sentences. When the reply's
last few tokens also occur earlier (in the prompt or in the reply itself), the tokens
that followed them there are a good guess for what comes next, and guessing costs no
model evaluation at all. The engine checks the guess in one batch (``inference.speculate``).

The search is a scan of a NumPy array (about 0.1 ms per 100K tokens), so it needs no
index to build when a 200K-token library prompt is restored from the KV cache.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_NGRAM = 2
MAX_NGRAM = 4
LONGEST_MATCH = 32  # how far back a match is measured, for the acceptance estimate


@dataclass(frozen=True)
class Proposal:
    tokens: tuple[int, ...]
    match: int  # how many of the text's last tokens the source repeats (>= MIN_NGRAM)


class TokenText:
    """Tokens in a growable NumPy array: appending is amortised O(1), comparing two
    200K-token texts a vector operation rather than a Python loop."""

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self._buffer = np.zeros(max(1024, 2 * len(tokens)), dtype=np.int32)
        self._length = 0
        self.extend(tokens)

    def __len__(self) -> int:
        return self._length

    @property
    def array(self) -> np.ndarray:
        """The tokens (a view: valid until the next change)."""
        return self._buffer[: self._length]

    def extend(self, tokens: Sequence[int] | np.ndarray) -> None:
        end = self._length + len(tokens)
        if end > len(self._buffer):
            grown = np.zeros(max(end, 2 * len(self._buffer)), dtype=np.int32)
            grown[: self._length] = self._buffer[: self._length]
            self._buffer = grown
        self._buffer[self._length : end] = tokens
        self._length = end

    def truncate(self, length: int) -> None:
        self._length = min(self._length, length)

    def common_prefix(self, other: np.ndarray) -> int:
        """How many leading tokens this text shares with ``other``."""
        n = min(self._length, len(other))
        differ = np.flatnonzero(self._buffer[:n] != other[:n])
        return int(differ[0]) if len(differ) else n


class PromptLookup:
    """The text so far (prompt, then the reply as it grows) and the guesses it allows."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.text = TokenText(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        self.text.extend(tokens)

    def propose(self, limit: int) -> Proposal | None:
        """Up to ``limit`` tokens that followed an earlier occurrence of the text's last
        n tokens, for the largest n from ``MAX_NGRAM`` down to ``MIN_NGRAM`` that occurs.
        Of several occurrences, one whose next token most of them agree on; None when
        nothing repeats."""
        text = self.text.array
        for n in range(min(MAX_NGRAM, len(text) - 1), MIN_NGRAM - 1, -1):
            starts = self._occurrences(text, n)
            if len(starts) == 0:
                continue
            following = text[starts + n]
            votes = Counter(following.tolist())
            best = max(votes, key=lambda token: votes[token])
            agreeing = starts[following == best]
            # the most recent with ``limit`` tokens after it, else the earliest (the most after
            # it): in a reply repeating itself the latest occurrence has one token after it
            long_enough = agreeing[agreeing + n + limit <= len(text)]
            start = int(long_enough[-1] if len(long_enough) else agreeing[0])
            source = start + n
            tokens = text[source : min(source + limit, len(text))]
            return Proposal(tuple(tokens.tolist()), self._match_length(text, start + n))
        return None

    @staticmethod
    def _occurrences(text: np.ndarray, n: int) -> np.ndarray:
        """Where the last ``n`` tokens occur earlier with at least one token after them."""
        suffix = text[-n:]
        starts = np.flatnonzero(text[: len(text) - n] == suffix[0])
        for offset in range(1, n):
            starts = starts[text[starts + offset] == suffix[offset]]
        return starts

    @staticmethod
    def _match_length(text: np.ndarray, source: int) -> int:
        """How many tokens before ``source`` equal the text's last tokens (up to
        ``LONGEST_MATCH``): a long match is a quote in progress, a short one a phrase."""
        length = 0
        end = len(text)
        while length < LONGEST_MATCH and length < source and text[source - 1 - length] == text[end - 1 - length]:
            length += 1
        return length
