"""``enclave serve``: the OpenAI-compatible API over this machine's models and libraries, until Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path

import click
import uvicorn

from app.api_keys import ApiKeyRepository
from app.cli.common import cli, user_errors
from app.server.backend import Backend
from app.server.config import (
    DEFAULT_HOST,
    DEFAULT_PER_KEY,
    DEFAULT_PORT,
    ServeConfig,
    checked,
    insecure_warning,
    start_lines,
)
from app.server.errors import ApiError
from app.server.routes import Server, build_app
from app.services import Services
from inference.errors import EnclaveError

GRACE_SECONDS = 5  # for replies in flight when Ctrl-C comes, before they are cut


@cli.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="The address to listen on. Anything but loopback lets other machines in: it needs --cert and "
                   "--key (or --insecure).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--model", default=None,
              help="Load this model at start; requests that name no model get it, and libraries answer with it "
                   "(default: the default_model setting).")
@click.option("--cert", type=click.Path(path_type=Path), default=None, help="TLS certificate (PEM).")
@click.option("--key", "key_file", type=click.Path(path_type=Path), default=None, help="TLS private key (PEM).")
@click.option("--insecure", is_flag=True, help="Serve a non-loopback address without TLS (warned on every start).")
@click.option("--max-per-key", type=click.IntRange(min=1), default=DEFAULT_PER_KEY, show_default=True,
              help="Requests one key may have waiting or running at once; more get HTTP 429.")
@user_errors
def serve(host: str, port: int, model: str | None, cert: Path | None, key_file: Path | None, insecure: bool,
          max_per_key: int) -> None:
    """Serve an OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/completions) until Ctrl-C.

    Models answer as their saved profiles say; "library/NAME" answers from a whole library, with
    its sources. Requests need an API key ('enclave keys create') unless the server listens on
    loopback and the organisation's policy allows keyless use."""
    with Services.open() as services:
        config = checked(ServeConfig(host, port, model, cert, key_file, insecure, max_per_key), services.enforcer)
        warning = insecure_warning(config)
        if warning:
            click.echo(warning, err=True)
        backend = Backend(services, model)
        if model is not None:
            try:
                backend.load(backend.target(model).ref)
            except ApiError as error:
                raise EnclaveError(error.message) from None
        server = Server(backend, config, services.enforcer, ApiKeyRepository(services.store), log=click.echo)
        for line in start_lines(config, model):
            click.echo(line)
        services.enforcer.record("serve.start", host=config.host, port=config.port, tls=config.tls,
                                 keys_required=config.keys_required, model=model)
        try:
            _run(server, config)
        finally:
            services.runtime.cancel()  # a reply still running when the grace ran out
            server.runner.shutdown()
            services.enforcer.record("serve.stop", host=config.host, port=config.port)
    click.echo("Stopped.")


def _run(server: Server, config: ServeConfig) -> None:
    """uvicorn until Ctrl-C or SIGTERM (it handles both: requests in flight get ``GRACE_SECONDS``)."""
    ssl = {"ssl_certfile": str(config.cert), "ssl_keyfile": str(config.key)} if config.tls else {}
    # uvicorn restores the handlers it found and raises the signal again after its shutdown: with
    # SIGTERM's default one the process would die there, before the clean-up and the audit record
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(build_app(server), host=config.host, port=config.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=GRACE_SECONDS, lifespan="off", **ssl)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean-up short
