"""Answers run from asyncio: a model's requests in the worker's continuous batch, a
library's alone, all behind the fair queue.

One *services thread* does everything that touches ``Services`` and the worker's lifetime
(loading, opening and closing the batch, library answers), in order, so none of it races.
While requests of one model run, a ``_Batch`` holds the worker: its reader thread turns
the worker's ``BatchEvent``s into each request's items. The batch closes as soon as no
request of it runs, so the worker is free for a library answer, another model, or the
desktop window sharing it.

A ``Job`` holds its place in the queue until the worker is done with it, not until its
client is: a client that goes away only asks the job to stop (``Job.stop``: withdrawn from
the batch, or the worker's cancel honoured before the next token).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from app.server.backend import Emit, Finished, Piece, item_of
from app.server.errors import ApiError
from app.server.queue import ALONE, FairQueue
from inference.errors import EnclaveError
from inference.protocol import Done, Failed, Generate
from inference.worker import BatchSession

log = logging.getLogger(__name__)
Item = Piece | Finished | ApiError
Work = Callable[[Emit, Callable[[], bool]], None]
# The services thread's half of a model's request: the worker's request for it (``load``:
# the model may be loaded first: no batch holds the worker).
Prepare = Callable[[bool], Generate]


class Job:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: asyncio.Queue[Item | None] = asyncio.Queue()  # None: the worker is done with it
        self._stop = threading.Event()
        self.on_stop: Callable[[], None] | None = None

    def emit(self, item: Item) -> None:
        """From any thread."""
        _call_soon(self._loop, self._items.put_nowait, item)

    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            if self.on_stop is not None:
                self.on_stop()

    def ended(self) -> None:
        _call_soon(self._loop, self._items.put_nowait, None)

    async def items(self) -> AsyncIterator[Item]:
        while (item := await self._items.get()) is not None:
            yield item


class BatchOwner(Protocol):
    """Where batches come from (the app's ``Runtime``): ``open_batch`` holds the worker's turn,
    ``end_batch`` gives it back, both from the services thread."""

    def turn(self) -> contextlib.AbstractContextManager[None]: ...

    def open_batch(self) -> BatchSession: ...

    def end_batch(self) -> None: ...


class _Batch:
    """The worker's open batch for one model, and the jobs decoding in it."""

    def __init__(self, model: str, owner: BatchOwner, finished: Callable[[Job], None]) -> None:
        self.model = model
        self._owner = owner
        self.session = owner.open_batch()
        self._finished = finished
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.alive = True
        self.reader = threading.Thread(target=self._read, name="enclave-serve-batch", daemon=True)
        self.reader.start()

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._jobs

    def submit(self, job: Job, request: Generate) -> None:
        rid = next(self._ids)
        with self._lock:
            if not self.alive:  # the worker died since this batch was chosen: nobody would answer
                raise ApiError(503, "The model's worker stopped just now; send the request again.",
                               code="model_not_loaded")
            self._jobs[rid] = job
        job.on_stop = lambda: self.session.withdraw(rid)
        self.session.submit(rid, request)
        if job.stopped():  # its client left while it was being prepared
            self.session.withdraw(rid)

    def _read(self) -> None:
        for rid, event in self.session.events():
            if rid is None:  # the worker died: every request of the batch ends with it
                assert isinstance(event, Failed)
                self._end_all(ApiError(503, event.message, code="generation_failed"))
                continue
            with self._lock:
                job = self._jobs.get(rid)
            if job is None:
                continue
            item = item_of(event)
            if item is not None:
                job.emit(item)
            if isinstance(event, Done | Failed):
                with self._lock:
                    self._jobs.pop(rid, None)
                self._finished(job)
        self._end_all(ApiError(503, "The model's batch ended before this reply did; send the request again.",
                               code="generation_failed"))

    def _end_all(self, error: ApiError) -> None:
        """No more events will come: every job still waiting for one ends with ``error``."""
        with self._lock:
            self.alive = False
            jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            job.emit(error)
            self._finished(job)

    def close(self) -> None:
        try:
            self.session.close()
            self.reader.join()
        finally:
            self._owner.end_batch()


class Runner:
    """Runs requests in queue order: a model's in its batch (up to ``queue.slots`` at once),
    a library's alone."""

    def __init__(self, queue: FairQueue, batches: BatchOwner | None = None) -> None:
        self.queue = queue
        self.batches = batches
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enclave-serve")
        self._batch: _Batch | None = None  # used in the services thread only
        self._jobs: weakref.WeakSet[Job] = weakref.WeakSet()  # started and not yet forgotten

    def stop_all(self) -> int:
        """Ask every job still running to stop (the server is stopping); how many were asked."""
        jobs = [job for job in self._jobs if not job.stopped()]
        for job in jobs:
            job.stop()
        return len(jobs)

    async def start(self, work: Work) -> Job:
        """Wait for the worker to itself (cancellable), then run ``work`` in the services thread."""
        await self.queue.acquire(ALONE)
        loop = asyncio.get_running_loop()
        job = Job(loop)
        self._jobs.add(job)

        def run() -> None:
            try:
                self._close_batch()
                assert self.batches is not None, "the runner was made without a batch owner"
                with self.batches.turn():
                    work(job.emit, job.stopped)
            except Exception as exc:  # a request's failure must not take the server down
                log.exception("a request failed")
                job.emit(ApiError(500, f"The server failed on this request: {exc}", code="server_error"))
            finally:
                job.ended()
                _call_soon(loop, self.queue.release, ALONE)

        self._submit(run, ALONE)
        return job

    async def start_batched(self, model: str, prepare: Prepare) -> Job:
        """Wait for a place in ``model``'s batch (cancellable), then decode the request
        ``prepare`` gives in it, beside the others."""
        await self.queue.acquire(model)
        loop = asyncio.get_running_loop()
        job = Job(loop)
        self._jobs.add(job)

        def finished(done: Job) -> None:
            done.ended()
            _call_soon(loop, self.queue.release, model)
            with contextlib.suppress(RuntimeError):  # shutting down: shutdown closes the batch
                self._thread.submit(self._close_if_idle)

        def join() -> None:
            try:
                assert self.batches is not None, "the runner was made without a batch owner"
                if self._batch is not None and (not self._batch.alive or self._batch.model != model):
                    self._close_batch()
                with self.batches.turn():  # nothing loads another model between this load and the batch
                    request = prepare(self._batch is None)
                    if self._batch is None:
                        self._batch = _Batch(model, self.batches, finished)
                self._batch.submit(job, request)
            except ApiError as error:
                job.emit(error)
                finished(job)
            except EnclaveError as exc:  # no model, or its reload after a crash refused: said, not a 500
                job.emit(ApiError(503, str(exc), code="model_not_loaded"))
                finished(job)
            except Exception as exc:
                log.exception("a request failed")
                job.emit(ApiError(500, f"The server failed on this request: {exc}", code="server_error"))
                finished(job)

        self._submit(join, model)
        return job

    def _submit(self, fn: Callable[[], None], lane: str) -> None:
        try:
            self._thread.submit(fn)
        except BaseException:
            self.queue.release(lane)
            raise

    def _close_if_idle(self) -> None:
        if self._batch is not None and self._batch.idle:
            self._close_batch()

    def _close_batch(self) -> None:
        """Services thread: give the worker back (any request still in the batch is withdrawn)."""
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.close()

    async def call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` in the services thread, outside the queue (startup work)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def shutdown(self) -> None:
        try:
            self._thread.submit(self._close_batch).result(timeout=30)
        except Exception:  # already shut down, or the worker hangs: the process ends anyway
            log.warning("the batch did not close cleanly", exc_info=True)
        self._thread.shutdown(wait=True, cancel_futures=True)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: object) -> None:
    """``fn(*args)`` on the server's event loop, from any thread; nothing once the loop has
    closed (the server stopped: no one is left to tell)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)
