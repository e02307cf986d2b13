"""Blocking answers run from asyncio: one worker thread, behind the fair queue.

A ``Job`` holds the queue's slot from the moment its turn comes until its thread is done,
not until its client is: a client that goes away only asks the job to stop
(``Job.stop``: the worker's cancel, honoured before the next token), and the slot passes
on as soon as the worker is free.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from app.server.backend import Emit, Finished, Piece
from app.server.errors import ApiError
from app.server.queue import FairQueue

Item = Piece | Finished | ApiError
Work = Callable[[Emit, Callable[[], bool]], None]


class Job:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: asyncio.Queue[Item | None] = asyncio.Queue()  # None: the thread is done
        self._stop = threading.Event()

    def emit(self, item: Item) -> None:
        """From the worker thread."""
        self._loop.call_soon_threadsafe(self._items.put_nowait, item)

    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def ended(self) -> None:
        self._loop.call_soon_threadsafe(self._items.put_nowait, None)

    async def items(self) -> AsyncIterator[Item]:
        while (item := await self._items.get()) is not None:
            yield item


class Runner:
    """Runs ``Work`` in the one thread that uses the services, in queue order."""

    def __init__(self, queue: FairQueue) -> None:
        self.queue = queue
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enclave-serve")

    async def start(self, work: Work) -> Job:
        """Wait for the slot (cancellable), then start ``work`` in the thread."""
        await self.queue.acquire()
        loop = asyncio.get_running_loop()
        job = Job(loop)

        def run() -> None:
            try:
                work(job.emit, job.stopped)
            except Exception as exc:  # a request's failure must not take the server down
                job.emit(ApiError(500, f"The server failed on this request: {exc}", code="server_error"))
            finally:
                job.ended()
                loop.call_soon_threadsafe(self.queue.release)

        try:
            self._thread.submit(run)
        except BaseException:
            self.queue.release()
            raise
        return job

    async def call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` in the services' thread, outside the queue (startup work)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
