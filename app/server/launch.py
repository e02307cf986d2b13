"""What every front end does to start and stop the API server, in one place: ``enclave serve``
and the window's "Serve on this network" both start with ``prepare`` and end with ``finish``.

``prepare`` checks everything a user can get wrong before anything listens (the policy, TLS,
the port: ``config.checked``), loads the model asked for, builds the ``Server`` and writes the
``serve.start`` audit record; ``finish`` stops what still runs and writes ``serve.stop``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.api_keys import ApiKeyRepository
from app.server.backend import Backend
from app.server.config import ServeConfig, checked, insecure_warning
from app.server.errors import ApiError
from app.server.routes import Server
from app.services import Services
from inference.errors import EnclaveError


@dataclass(frozen=True)
class Launch:
    """A server ready to listen, and the ``config`` as checked."""

    server: Server
    config: ServeConfig

    @property
    def warning(self) -> str | None:
        """Said on every start of a server other machines reach without TLS."""
        return insecure_warning(self.config)


def prepare(services: Services, asked: ServeConfig, log: Callable[[str], None]) -> Launch:
    """A ``Launch`` for ``asked``, or an ``EnclaveError`` saying why it cannot serve (before anything
    listens). ``log`` gets one line per finished request."""
    config = checked(asked, services.enforcer)
    backend = Backend(services, config.model)
    if config.model is not None:
        try:
            backend.load(backend.target(config.model).ref)
        except ApiError as error:
            raise EnclaveError(error.message) from None
    server = Server(backend, config, services.enforcer, ApiKeyRepository(services.store), log=log)
    services.enforcer.record("serve.start", host=config.host, port=config.port, tls=config.tls,
                             keys_required=config.keys_required, model=config.model)
    return Launch(server, config)


def finish(services: Services, launch: Launch) -> None:
    """After the server stopped listening: replies still running (the grace ran out) are stopped,
    the server's worker thread ends, and the stop is audited."""
    launch.server.runner.stop_all()
    launch.server.runner.shutdown()
    services.enforcer.record("serve.stop", host=launch.config.host, port=launch.config.port)
