"""Stopping the API server without cutting anyone off mid-sentence.

uvicorn's own shutdown waits ``grace`` seconds for responses in flight, then cancels their
tasks: a streamed reply ends without its final event, and the cancellation is logged as a
traceback. Here, the generations still running half-way through the grace are asked to stop
(``Runner.stop_all``: each job's own stop, so the worker ends the reply with a
``finish_reason`` and ``[DONE]``), which lets their responses complete before uvicorn would
cancel them. What uvicorn logs goes to the app's log file, never the terminal.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

from app.server.config import ServeConfig

GRACE_SECONDS = 5  # for replies in flight when the server is stopped, before they are stopped
STOP_AT = 0.5  # of the grace: then generations are stopped, the rest lets each reply end properly (a
# stopped generation ends at its next token, which on a busy machine can take a second)
log = logging.getLogger(__name__)
STOP_EVERY = 0.2  # requests that were still waiting for the worker are stopped as they start


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` whose shutdown stops generations in time for their replies to end properly."""

    def __init__(self, config: uvicorn.Config, stop_generations: Callable[[], int]) -> None:
        super().__init__(config)
        self._stop_generations = stop_generations

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stopper = asyncio.ensure_future(self._stop_late())
        try:
            await super().shutdown(sockets)
        finally:
            stopper.cancel()

    async def _stop_late(self) -> None:
        await asyncio.sleep((self.config.timeout_graceful_shutdown or 0) * STOP_AT)
        while True:
            stopped = self._stop_generations()
            if stopped:
                log.info("stopping: the grace is half over, %s generation(s) asked to stop", stopped)
            await asyncio.sleep(STOP_EVERY)


def uvicorn_config(app: Starlette, config: ServeConfig, grace: int = GRACE_SECONDS) -> uvicorn.Config:
    """How uvicorn serves ``app``: the address and TLS of ``config``; no access log (the server
    logs each request itself); uvicorn's own records go to Python logging (the app's log file)."""
    ssl: dict[str, str] = {"ssl_certfile": str(config.cert), "ssl_keyfile": str(config.key)} if config.tls else {}
    return uvicorn.Config(app, host=config.host.strip("[]"), port=config.port, log_config=None,
                          log_level="warning", access_log=False, lifespan="off",
                          timeout_graceful_shutdown=grace, **ssl)  # type: ignore[arg-type]
