"""The Starlette application: ``GET /v1/models``, ``POST /v1/chat/completions``,
``POST /v1/completions``. Each request is authorised, parsed, queued, answered (streamed as
server-sent events or whole) and audited — one record per request, never its content."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.api_keys import ApiKeyRepository
from app.enforcement import Enforcer
from app.serve_audit import record_request
from app.server import shapes
from app.server.backend import Backend, Finished, Piece, Target
from app.server.bodies import ApiRequest, chat_request, completion_request, parse_json
from app.server.config import ServeConfig
from app.server.errors import ApiError
from app.server.jobs import Item, Job, Runner
from app.server.queue import FairQueue, QueueFull
from inference.errors import EnclaveError

DISCONNECT_POLL_SECONDS = 0.5


@dataclass
class Server:
    backend: Backend
    config: ServeConfig
    enforcer: Enforcer
    keys: ApiKeyRepository
    log: Callable[[str], None] = lambda line: None
    runner: Runner = field(init=False)
    started: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.runner = Runner(FairQueue(self.config.per_key, self.config.parallel),
                             self.backend.services.runtime if self.backend is not None else None)

    def authorize(self, request: Request) -> str | None:
        """The key's name (None: a keyless request the policy allows), or a 401. Where keyless
        use is allowed a key that opens nothing counts as none: OpenAI's clients always send one."""
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if header:
            key = self.keys.verify(secret.strip()) if scheme.lower() == "bearer" else None
            if key is None and self.config.keys_required:
                raise ApiError(401, "The API key is not valid (or was revoked). Send 'Authorization: Bearer "
                                    "<key>' with a key from 'enclave keys create NAME'.", code="invalid_api_key")
            return key.name if key is not None else None
        if self.config.keys_required:
            raise ApiError(401, "This server needs an API key: send 'Authorization: Bearer <key>' (a key from "
                                "'enclave keys create NAME').", code="invalid_api_key")
        return None


@dataclass
class Exchange:
    """One request as the audit and the log see it."""

    request: Request
    started: float = field(default_factory=time.monotonic)
    key: str | None = None
    model: str = ""
    finished: Finished | None = None
    queue: FairQueue | None = None  # counted in for its key: ``leave`` counts it out, once

    def admit(self, queue: FairQueue) -> None:
        queue.admit(self.key or "")
        self.queue = queue

    def leave(self) -> None:
        if self.queue is not None:
            self.queue.leave(self.key or "")
            self.queue = None

    def close(self, server: Server, status: int) -> None:
        tokens_in = self.finished.prompt_tokens if self.finished else 0
        tokens_out = self.finished.completion_tokens if self.finished else 0
        seconds = time.monotonic() - self.started
        client = self.request.client.host if self.request.client else ""
        record_request(server.enforcer, key=self.key, model=self.model, tokens_in=tokens_in, tokens_out=tokens_out,
                       status=status, seconds=round(seconds, 3), client=client)
        server.log(f"{status} {self.request.method} {self.request.url.path} model={self.model or '-'} "
                   f"key={self.key or '-'} tokens={tokens_in}+{tokens_out} {seconds:.2f} s")


def build_app(server: Server) -> Starlette:
    async def models(request: Request) -> Response:
        exchange = Exchange(request)
        try:
            exchange.key = server.authorize(request)
        except ApiError as error:
            exchange.close(server, error.status)
            return error.response()
        exchange.close(server, 200)
        return JSONResponse(shapes.model_list(server.backend.listed(), server.started))

    async def chat_completions(request: Request) -> Response:
        return await answer(server, request, chat=True)

    async def completions(request: Request) -> Response:
        return await answer(server, request, chat=False)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return ApiError(status, f"{request.method} {request.url.path}: {_reason(status)}.").response()

    routes = [Route("/v1/models", models), Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def _reason(status: int) -> str:
    return {404: "there is no such endpoint (see /v1/models, /v1/chat/completions, /v1/completions)",
            405: "this method is not allowed here"}.get(status, "the request failed")


async def answer(server: Server, request: Request, *, chat: bool) -> Response:
    exchange = Exchange(request)
    try:
        exchange.key = server.authorize(request)
        body = parse_json(await request.body())
        default = server.config.model
        asked = chat_request(body, default) if chat else completion_request(body, default)
        exchange.model = asked.model
        target = server.backend.target(asked.model)
        exchange.admit(server.runner.queue)
    except ApiError as error:
        exchange.close(server, error.status)
        return error.response()
    except QueueFull as full:
        exchange.close(server, 429)
        return ApiError(429, str(full), code="rate_limit_exceeded").response()
    except EnclaveError as exc:  # the store could not be read (a key, a model's name): said, not a bare 500
        exchange.close(server, 503)
        return ApiError(503, str(exc), code="server_error").response()
    try:
        return await _answer_queued(server, request, exchange, asked, target)
    except BaseException as exc:
        exchange.leave()
        exchange.close(server, 499 if isinstance(exc, asyncio.CancelledError) else 500)  # 499: the client left
        raise


async def _answer_queued(server: Server, request: Request, exchange: Exchange, asked: ApiRequest,
                         target: Target) -> Response:
    if target.library_id is None:
        starting = server.runner.start_batched(
            target.ref, lambda load: server.backend.generate_request(asked, target, load=load))
    else:
        starting = server.runner.start(lambda emit, stopped: server.backend.answer(asked, target, emit, stopped))
    job = await _unless_gone(request, starting)
    if job is None:  # the client left while it waited in line: it leaves the line, nothing runs
        exchange.leave()
        exchange.close(server, 499)
        return Response(status_code=499)
    watch = asyncio.ensure_future(_watch(request, job))
    try:
        response = await _reply(server, exchange, job, asked, watch)
    except BaseException:
        watch.cancel()
        raise
    if not isinstance(response, StreamingResponse):
        watch.cancel()  # a stream's ends when the stream does
    return response


async def _reply(server: Server, exchange: Exchange, job: Job, asked: ApiRequest, watch: asyncio.Future[None]
                 ) -> Response:
    items = job.items()
    first = await anext(items, None)
    if first is None or isinstance(first, ApiError) or job.stopped():
        exchange.leave()
        error = first if isinstance(first, ApiError) else ApiError(499, "The client closed the connection.")
        exchange.close(server, error.status)
        return error.response()
    reply = shapes.Reply(asked.model, asked.chat)
    if asked.stream:
        return StreamingResponse(_stream(server, exchange, job, first, items, reply, asked.include_usage, watch),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await _whole(server, exchange, job, first, items, reply)


async def _gone(request: Request) -> None:
    """Returns when the client has gone away (polled: uvicorn says so only when asked)."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_SECONDS)


async def _watch(request: Request, job: Job) -> None:
    """Stop ``job`` when its client goes away."""
    await _gone(request)
    job.stop()


async def _unless_gone(request: Request, starting: Coroutine[object, object, Job]) -> Job | None:
    """The job ``starting`` gives once its turn comes, or None when the client went away first."""
    started = asyncio.ensure_future(starting)
    gone = asyncio.ensure_future(_gone(request))
    try:
        await asyncio.wait({started, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not started.done():
        started.cancel()  # out of the line (FairQueue.acquire hands on a place it was just given)
    try:
        job = await started
    except asyncio.CancelledError:
        if not gone.done() or gone.cancelled():
            raise  # this request itself was cancelled, not left by its client
        return None
    if gone.done() and not gone.cancelled():
        job.stop()  # its turn came just as the client left
        return None
    return job


async def _whole(server: Server, exchange: Exchange, job: Job, first: Item,
                 items: AsyncIterator[Item], reply: shapes.Reply) -> Response:
    text: list[str] = []
    item: Item | None = first
    try:
        while item is not None:
            if isinstance(item, ApiError):
                exchange.close(server, item.status)
                return item.response()
            if isinstance(item, Piece):
                text.append(item.text)
            else:
                exchange.finished = item
            item = await anext(items, None)
    finally:
        exchange.leave()
    if exchange.finished is None or job.stopped():  # the client went away: no one to answer
        exchange.close(server, 499)
        return Response(status_code=499)
    exchange.close(server, 200)
    return JSONResponse(reply.whole("".join(text), exchange.finished))


async def _stream(server: Server, exchange: Exchange, job: Job, first: Item, items: AsyncIterator[Item],
                  reply: shapes.Reply, include_usage: bool, watch: asyncio.Future[None]) -> AsyncIterator[str]:
    """Server-sent events; a client that goes away stops the generation (no await in ``finally``:
    this generator may be closed from a cancelled task)."""
    status = 499
    try:
        if reply.chat:
            yield reply.chunk("", first=True)
        item: Item | None = first
        while item is not None:
            if isinstance(item, Piece):
                yield reply.chunk(item.text)
            elif isinstance(item, Finished):
                exchange.finished = item
                yield reply.chunk(None, finished=item)
                if include_usage:
                    yield reply.usage_chunk(item)
            else:  # a failure after the reply began: said in the stream, as OpenAI does
                status = item.status
                yield shapes.event(item.body())
                break
            item = await anext(items, None)
        else:
            status = 200
        yield shapes.DONE
    finally:
        watch.cancel()
        if exchange.finished is None:
            job.stop()
        exchange.leave()
        exchange.close(server, status)
