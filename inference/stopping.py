"""Streaming text release with stop strings.

Text that could be the start of a stop string is held back until the next piece shows
whether it is one; the caller never sees a half-written stop string.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add streamed text; return what can be shown now. Sets ``stopped`` on a match."""
        if not self._stops:
            return text
        self._pending += text
        cut = min((i for i in (self._pending.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            released, self._pending = self._pending[:cut], ""
            return released
        hold = self._held_back_length()
        released = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(self._pending) - hold :]
        return released

    def flush(self) -> str:
        """At the end of generation: whatever is still held back is plain text."""
        released, self._pending = self._pending, ""
        return released

    def _held_back_length(self) -> int:
        """Length of the longest suffix of pending text that begins some stop string."""
        longest = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest
