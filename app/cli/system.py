"""``enclave doctor``."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from app.cli.common import EXIT_USER_ERROR, cli, user_errors
from app.cli.policy import policy_lines
from app.paths import app_paths
from app.policy import policy_in_force
from app.services import Services
from app.settings import parse_value
from inference.devices import format_size
from inference.errors import EnclaveError


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--check-db", is_flag=True, help="Check the app database's integrity (read-only).")
@user_errors
def doctor(as_json: bool, check_db: bool) -> None:
    """What llama.cpp was built with, the devices it sees, and where Enclave keeps data."""
    from app.diagnostics import collect
    from app.encryption import describe as describe_encryption

    if check_db:
        _check_database()
        return
    report = collect(app_paths())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"Enclave {report['version']}  (llama-cpp-python {report['llama_cpp_python']})")
    click.echo(f"llama.cpp backends: {', '.join(report['backends'])}  (GPU offload: "
               f"{'yes' if report['gpu_offload'] else 'no'})")
    click.echo(f"CPU features: {report['system_info']}")
    for line in backend_library_lines(report["backend_libraries"]):
        click.echo(line)
    if "probe_error" in report:
        click.echo(report["probe_error"])
    click.echo("Devices:")
    for dev in report["devices"]:
        click.echo(f"  {dev['id'] or dev['name']:<10} {dev['type']:<5} {dev['description']}: "
                   f"{format_size(dev['free_bytes'])} free of {format_size(dev['total_bytes'])}")
    click.echo("Data:")
    for name, path in report["paths"].items():
        click.echo(f"  {name:<9} {path}")
    click.echo(f"Database encryption: {describe_encryption(report['encryption'])}")
    click.echo("Policy: " + "\n".join(policy_lines(policy_in_force())))
    sbom = report["sbom"]
    click.echo(f"SBOM: sha256 {sbom['sha256']}  ({sbom['path']})" if sbom["sha256"] else f"SBOM: {sbom['note']}")


def backend_library_lines(libraries: dict[str, Any] | None) -> list[str]:
    """The backend libraries beside libllama: how the build carries them, then each file,
    loaded or not and why."""
    if libraries is None:
        return []
    registered = ", ".join(libraries["registered"]) or "none"
    if libraries["loading"] == "static":
        head = f"Backend libraries: static build, backends linked in ({registered}) in {libraries['directory']}"
    else:
        variant = f"; CPU variant: {libraries['cpu_variant']}" if libraries["cpu_variant"] else ""
        head = f"Backend libraries: loaded at run time from {libraries['directory']}{variant}"
    lines = [head]
    width = max((len(f["file"]) for f in libraries["files"]), default=0)
    for f in libraries["files"]:
        state = ("linked in" if libraries["loading"] == "static" else "loaded") if f["loaded"] else "not loaded"
        lines.append(f"  {state:<10}  {f['file']:<{width}}  {f['reason']}".rstrip())
    return lines


@cli.group(invoke_without_command=True)
@click.pass_context
@user_errors
def settings(ctx: click.Context) -> None:
    """Show your settings; 'settings set KEY VALUE' changes one."""
    if ctx.invoked_subcommand is None:
        with Services.open(readonly=True) as services:
            for key, value in asdict(services.current_settings()).items():
                click.echo(f"{key:<16} {json.dumps(value)}")


@settings.command("set")
@click.argument("key")
@click.argument("value")
@user_errors
def set_setting(key: str, value: str) -> None:
    """Set KEY to VALUE (none clears an optional setting)."""
    with Services.open() as services:
        if key in services.policy.managed_settings():
            raise EnclaveError(f"{key} is set by your organisation's policy ({services.policy.source}); it cannot be "
                               "changed here.")
        updated = services.settings.set(key, parse_value(key, value))
    click.echo(f"{key} = {json.dumps(getattr(updated, key))}")


def _check_database() -> None:
    paths = app_paths()
    if not paths.database.exists():
        click.echo(f"No database yet at {paths.database}.")
        return
    with Services.open(readonly=True) as services:
        result = services.store.integrity_check()
        migrations = services.store.applied_migrations()
    if result == ["ok"]:
        click.echo(f"{paths.database}: ok ({len(migrations)} migrations applied, last {migrations[-1]}).")
        return
    click.echo(f"{paths.database}: damaged:", err=True)
    for line in result[:20]:
        click.echo(f"  {line}", err=True)
    click.echo("Enclave did not change it. Keep a copy, then restore a backup or move it away to start anew.",
               err=True)
    raise SystemExit(EXIT_USER_ERROR)
