"""``enclave serve``: the OpenAI-compatible API over this machine's models and libraries, until Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from app.cli.common import cli, user_errors
from app.server.config import DEFAULT_HOST, DEFAULT_PARALLEL, DEFAULT_PER_KEY, DEFAULT_PORT, ServeConfig, start_lines
from app.server.graceful import GRACE_SECONDS, GracefulServer, uvicorn_config
from app.server.launch import Launch, finish, prepare
from app.server.routes import build_app
from app.services import Services
from inference.protocol import PARALLEL_SEQUENCES


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
@click.option("--parallel", type=click.IntRange(1, PARALLEL_SEQUENCES), default=DEFAULT_PARALLEL,
              show_default=True, help="Requests to one model decoded together, sharing its context; more wait "
                                      "in line. More gives more tokens/s in all, each a little slower.")
@click.option("--grace", type=click.IntRange(1, 600), default=GRACE_SECONDS, show_default=True,
              help="Seconds replies in flight get to finish when the server is stopped (Ctrl-C, SIGTERM); "
                   "then they are stopped, each ending properly.")
@user_errors
def serve(host: str, port: int, model: str | None, cert: Path | None, key_file: Path | None, insecure: bool,
          max_per_key: int, parallel: int, grace: int) -> None:
    """Serve an OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/completions) until Ctrl-C.

    Models answer as their saved profiles say; "library/NAME" answers from a whole library, with
    its sources. Requests need an API key ('enclave keys create') unless the server listens on
    loopback and the organisation's policy allows keyless use."""
    with Services.open() as services:
        launch = prepare(services, ServeConfig(host, port, model, cert, key_file, insecure, max_per_key,
                                                    parallel), click.echo)
        if launch.warning:
            click.echo(launch.warning, err=True)
        for line in start_lines(launch.config, model):
            click.echo(line)
        try:
            _run(launch, grace)
        finally:
            finish(services, launch)
    click.echo("Stopped.")


def _run(launch: Launch, grace: int) -> None:
    """uvicorn until Ctrl-C or SIGTERM: requests in flight get ``grace`` seconds, then their
    generations are stopped so each reply still ends properly (``GracefulServer``)."""
    # uvicorn handles both signals while it runs, then restores the handlers it found and raises the
    # signal again: with the default ones the process would die there (SIGTERM) or raise
    # KeyboardInterrupt (SIGINT), before the clean-up, the audit record and "Stopped."
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    server = GracefulServer(uvicorn_config(build_app(launch.server), launch.config, grace),
                            launch.server.runner.stop_all)
    server.run()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean-up short
