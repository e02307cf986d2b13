"""``enclave hosts``: the RPC hosts (``enclave host`` on other machines) whose devices take
layers of a model."""

from __future__ import annotations

import json

import click

from app.cli.common import SIZE, cli, user_errors
from app.hosts import HostStatus, describe_host
from app.services import Services


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (sizes in bytes, speeds in bytes/s and seconds).")
@click.pass_context
@user_errors
def hosts(ctx: click.Context, as_json: bool) -> None:
    """The RPC hosts whose devices plans may use: each host's devices, free memory and link."""
    if ctx.invoked_subcommand is not None:
        return
    with Services.open(readonly=True) as services:
        statuses = services.host_statuses(refresh=True)
    if as_json:
        click.echo(json.dumps([_as_dict(s) for s in statuses], indent=2))
        return
    if not statuses:
        click.echo("No hosts. Run 'enclave host' on another machine, then 'enclave hosts add ADDRESS:PORT' here.")
        return
    for status in statuses:
        click.echo("\n".join(describe_host(status)))


def _as_dict(status: HostStatus) -> dict[str, object]:
    report = status.report
    return {
        "host": status.host.endpoint, "memory_limit": status.host.memory_limit, "reachable": report is not None,
        "error": status.error,
        "devices": [{"id": d.id, "name": d.name, "free": d.free_bytes, "total": d.total_bytes}
                    for d in (report.devices if report else ())],
        "link": {"bytes_per_s": report.link.bytes_per_s, "latency_s": report.link.latency_s} if report else None,
    }


@hosts.command("add")
@click.argument("address")
@click.option("--memory", type=SIZE, default=None,
              help="Use at most this much of each of its devices, e.g. 16GiB (default: all that is free; a host "
                   "added again keeps its limit).")
@user_errors
def add_host(address: str, memory: int | None) -> None:
    """Add the host at ADDRESS[:PORT] (port 50052 unless given), where 'enclave host' runs."""
    with Services.open() as services:
        host = services.hosts.add(address, memory)
        status = next(s for s in services.host_statuses(refresh=True) if s.host.endpoint == host.endpoint)
    click.echo(f"Added {host.endpoint}.")
    click.echo("\n".join(describe_host(status)))
    if status.report is None:
        click.echo("It is kept: plans use it once it answers.")


@hosts.command("remove")
@click.argument("address")
@user_errors
def remove_host(address: str) -> None:
    """Stop using the host at ADDRESS[:PORT]."""
    with Services.open() as services:
        host = services.hosts.remove(address)
    click.echo(f"Removed {host.endpoint}.")
