"""One generation at a time, in arrival order, with a limit per key.

The worker runs one request at a time, so requests wait here for the one slot. Each key
may have at most ``per_key`` requests waiting or running: one client cannot fill the
queue and starve the others (its next request gets a 429 instead).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque


class QueueFull(Exception):
    """The key already has as many requests in flight as it may."""


class FairQueue:
    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._busy = False
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._in_flight: Counter[str] = Counter()

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, key: str) -> None:
        """Count a request of ``key`` in, or refuse it (``QueueFull``). ``leave`` counts it out."""
        if self._in_flight[key] >= self.per_key:
            raise QueueFull(f"This key already has {self.per_key} requests waiting or running; "
                            "wait for one to finish.")
        self._in_flight[key] += 1

    def leave(self, key: str) -> None:
        self._in_flight[key] -= 1
        if self._in_flight[key] <= 0:
            del self._in_flight[key]

    async def acquire(self) -> None:
        """Wait for the slot, behind everyone who came first. Cancelled while waiting: gone
        from the line (and a slot just handed over is passed on)."""
        if not self._busy and not self._waiting:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # it was ours already: hand it on
            else:
                self._waiting.remove(turn)
            raise

    def release(self) -> None:
        """The slot's holder is done: the next in line gets it."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False
