"""The server's runner against a fake worker batch: every request ends, whatever the worker does."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

from app.server.errors import ApiError
from app.server.jobs import Item, Job, Runner
from app.server.queue import FairQueue
from inference.errors import EnclaveError
from inference.protocol import Failed, Generate, Sampling


class DyingSession:
    """A batch whose worker dies once ``crash`` is set (as the OOM killer does)."""

    slots = 8

    def __init__(self) -> None:
        self.crash = threading.Event()
        self.submitted: list[int] = []

    def submit(self, rid: int, request: Generate) -> None:
        self.submitted.append(rid)

    def withdraw(self, rid: int) -> None:
        pass

    def close(self) -> None:
        self.crash.set()

    def events(self) -> Iterator[tuple[int | None, Failed]]:
        self.crash.wait()
        yield None, Failed("llama.cpp crashed", kind="crash")


class Owner:
    def __init__(self, session: DyingSession | None = None, refuse: str | None = None) -> None:
        self.session, self.refuse = session, refuse
        self.turn_lock = threading.RLock()
        self.opened = self.ended = 0

    def turn(self) -> contextlib.AbstractContextManager[None]:
        return self.turn_lock

    def open_batch(self) -> DyingSession:
        if self.refuse:
            raise EnclaveError(self.refuse)
        self.turn_lock.acquire()
        self.opened += 1
        assert self.session is not None
        return self.session

    def end_batch(self) -> None:
        self.ended += 1
        self.turn_lock.release()


def request(load: bool) -> Generate:
    return Generate(prompt="a", sampling=Sampling())


async def drained(job: Job) -> list[Item]:
    return [item async for item in job.items()]


def test_a_request_joining_while_the_worker_dies_ends_and_frees_its_place() -> None:
    async def scenario() -> tuple[list[Item], list[Item], Runner, Owner]:
        owner = Owner(DyingSession())
        runner = Runner(FairQueue(per_key=10, slots=4), owner)
        first = await runner.start_batched("m", request)
        await asyncio.sleep(0.1)

        def slow(load: bool) -> Generate:
            time.sleep(0.3)  # the request is being built (database reads, the template) while ...
            return request(load)

        second = await runner.start_batched("m", slow)
        await asyncio.sleep(0.1)
        assert owner.session is not None
        owner.session.crash.set()  # ... the worker dies
        ends = await asyncio.wait_for(asyncio.gather(drained(first), drained(second)), 10)
        await asyncio.sleep(0.1)  # the places handed back on the loop, the dead batch closed
        runner.shutdown()
        return ends[0], ends[1], runner, owner

    first, second, runner, owner = asyncio.run(scenario())
    assert [type(i) for i in first] == [ApiError] and first[0].status == 503  # type: ignore[union-attr]
    assert [type(i) for i in second] == [ApiError] and second[0].status == 503  # type: ignore[union-attr]
    assert runner.queue.running == 0 and runner.queue.in_flight == 0
    assert owner.opened == owner.ended  # the worker's turn given back


def test_no_model_to_batch_is_a_503_saying_why_not_a_500() -> None:
    async def scenario() -> list[Item]:
        runner = Runner(FairQueue(per_key=10, slots=4), Owner(refuse="No model is loaded. Load a model first."))
        items = await asyncio.wait_for(drained(await runner.start_batched("m", request)), 10)
        runner.shutdown()
        return items

    items = asyncio.run(scenario())
    assert len(items) == 1 and isinstance(items[0], ApiError)
    assert items[0].status == 503 and items[0].message == "No model is loaded. Load a model first."


def test_a_store_that_cannot_be_read_is_a_503_saying_so_not_a_bare_500() -> None:
    from starlette.testclient import TestClient

    from app.enforcement import Enforcer
    from app.policy import Policy
    from app.server.config import ServeConfig
    from app.server.routes import Server, build_app

    class BrokenKeys:
        def verify(self, secret: str) -> None:
            raise EnclaveError("The database is locked by another program; try again.")

    server = Server(backend=None, config=ServeConfig(keys_required=True),  # type: ignore[arg-type]
                    enforcer=Enforcer(Policy()), keys=BrokenKeys())  # type: ignore[arg-type]
    try:
        answer = TestClient(build_app(server)).post(
            "/v1/chat/completions", headers={"Authorization": "Bearer enc-x"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        server.runner.shutdown()
    assert answer.status_code == 503
    assert answer.json()["error"]["message"] == "The database is locked by another program; try again."
