"""``enclave host``: serve this machine's devices to other Enclaves until Ctrl-C."""

from __future__ import annotations

import signal

import click

from app.cli.common import cli, user_errors
from app.enforcement import Enforcer
from app.hosting import (
    LOOPBACK,
    HostRequest,
    HostSession,
    check_bind_address,
    check_request,
    exposure_warning,
    serving_lines,
    start_host,
)
from app.paths import app_paths
from inference.rpc import DEFAULT_PORT

HOST_LOG = "host.log"  # llama.cpp's RPC server's output, in the logs folder


@cli.command()
@click.option("--bind", default=LOOPBACK, show_default=True, metavar="ADDR",
              help="The IPv4 address to listen on; 0.0.0.0 for every interface. Anything but 127.0.0.1 lets "
                   "other machines in: the protocol has no authentication and no encryption.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--device", "devices", multiple=True, metavar="ID",
              help="A device to serve, by its id in 'enclave doctor' (CPU, CUDA0, ...); repeat for more. "
                   "Default: the GPUs, else the CPU.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the CPU device (default: half the logical CPUs).")
@user_errors
def host(bind: str, port: int, devices: tuple[str, ...], threads: int | None) -> None:
    """Serve this machine's devices to other Enclaves through llama.cpp's RPC server, until Ctrl-C.

    Another Enclave adds it with 'enclave hosts add ADDR:PORT' and places model layers on it.
    Listens on 127.0.0.1 (this machine only) unless --bind says otherwise."""
    _stop_on_sigterm()
    request = HostRequest(check_bind_address(bind), port, devices, threads)
    paths = app_paths()
    enforcer = Enforcer.in_force(paths)
    check_request(request, enforcer)
    warning = exposure_warning(request.bind, request.port)
    if warning:
        click.echo(warning, err=True)
    session: HostSession | None = None
    try:
        session = start_host(request, enforcer, paths.logs / HOST_LOG)
        for line in serving_lines(session):
            click.echo(line)
        session.wait()  # returns only by raising: serving goes on until stopped
    except KeyboardInterrupt:
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, signal.SIG_IGN)  # a second Ctrl-C does not cut the stop short
        if session is not None:
            session.stop()
        click.echo("Stopped.")


def _stop_on_sigterm() -> None:
    """A service manager stops a host with SIGTERM: end as on Ctrl-C (the server stopped, audited)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
