"""Who runs next: first come, first served, several at once where they can share a batch.

A request runs in a *lane*: the model it is decoded by (requests of one model are decoded
together in the worker's continuous batch, up to ``slots`` at once), or ``ALONE`` (a
library answer, which uses the worker by itself). The line is strict: the first in line
starts as soon as it fits beside what runs, and nobody behind it overtakes it — a library
question waits for the batch to drain, and the batch does not starve it.

Each key may have at most ``per_key`` requests waiting or running: one client cannot fill
the line and starve the others (its next request gets a 429 instead).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque

ALONE = ""  # the lane of work that needs the worker to itself


class QueueFull(Exception):
    """The key already has as many requests in flight as it may."""


class FairQueue:
    def __init__(self, per_key: int, slots: int = 1) -> None:
        self.per_key = per_key
        self.slots = max(1, slots)
        self._running: Counter[str] = Counter()  # by lane
        self._waiting: deque[tuple[str, asyncio.Future[None]]] = deque()
        self._in_flight: Counter[str] = Counter()  # by key

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return sum(self._running.values())

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

    def _fits(self, lane: str) -> bool:
        if not self._running:
            return True
        if lane == ALONE or set(self._running) != {lane}:
            return False
        return self._running[lane] < self.slots

    async def acquire(self, lane: str = ALONE) -> None:
        """Wait for a place in ``lane``, behind everyone who came first. Cancelled while
        waiting: gone from the line (and a place just handed over is passed on)."""
        if not self._waiting and self._fits(lane):
            self._running[lane] += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((lane, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(lane)  # it was ours already: hand it on
            else:
                self._waiting.remove((lane, turn))
                self._grant()  # whoever stood behind may fit now
            raise

    def release(self, lane: str = ALONE) -> None:
        """A place in ``lane`` is free: those first in line get places while they fit."""
        self._running[lane] -= 1
        if self._running[lane] <= 0:
            del self._running[lane]
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            lane, turn = self._waiting[0]
            if turn.done():
                self._waiting.popleft()
                continue
            if not self._fits(lane):
                return
            self._waiting.popleft()
            self._running[lane] += 1
            turn.set_result(None)
