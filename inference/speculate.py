"""One reply's proposals for speculative decoding: prompt lookup first, then the draft model.

The engine decodes the reply's next token together with the proposed ones in one batch,
samples each position with the reply's own sampler and keeps proposals while they equal
what was sampled (``Engine.generate``). Because every kept token is the sampler's own
choice, in order, with the sampler's state advanced exactly as plain decoding advances it,
the reply is the same with or without proposals: greedy replies token for token, sampled
ones in distribution (and, with a fixed seed, token for token as well). Proposals here are
deterministic (prompt lookup, a draft model's greedy guesses), for which this "sample and
compare" check is the standard speculative acceptance rule (accept with probability p(x)).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from inference.draft import DraftModel
from inference.draft_length import MAX_DRAFT, DraftLength
from inference.errors import EnclaveError
from inference.lookup import PromptLookup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draft:
    tokens: tuple[int, ...]
    match: int  # how many of the text's last tokens the lookup's source repeats; 0: the draft model's


class Proposer:
    """Proposals for one reply, and how many were made and kept."""

    def __init__(self, text: Sequence[int], length: DraftLength, model: DraftModel | None) -> None:
        self._lookup = PromptLookup(text)
        self._length = length
        length.new_reply()
        # a draft model that has not read most of this prompt would first spend minutes on it
        self._model = model if model is not None and model.can_read(self._lookup.text.array) else None
        self.drafted = 0
        self.accepted = 0

    def add(self, token: int) -> None:
        """A token of the reply (taken, whether or not it was proposed)."""
        self._lookup.extend((token,))

    def propose(self, room: int) -> Draft | None:
        """Tokens worth checking after the text so far, at most ``room``; None: decode one."""
        if room <= 0:
            return None
        found = self._lookup.propose(min(room, MAX_DRAFT))
        if found is not None:
            k = self._length.choose(found.match, len(found.tokens))
            if k:
                return Draft(found.tokens[:k], found.match)
        if self._model is not None:
            k = self._length.choose(0, min(room, MAX_DRAFT), self._model.token_seconds)
            try:
                guesses = self._model.propose(self._lookup.text.array, k) if k else []
            except EnclaveError as exc:  # drafting only saves time: the reply goes on without it
                log.warning("The draft model stopped drafting for this reply: %s", exc)
                self._model, guesses = None, []
            if guesses:
                return Draft(tuple(guesses), 0)
        return None

    def checked(self, draft: Draft, accepted: int) -> None:
        self.drafted += len(draft.tokens)
        self.accepted += accepted
        self._length.record_check(draft.match, len(draft.tokens), accepted)
