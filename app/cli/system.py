"""``enclave doctor``."""

from __future__ import annotations

import json

import click

from app.cli.common import cli, user_errors
from app.paths import app_paths
from inference.devices import format_size


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def doctor(as_json: bool) -> None:
    """What llama.cpp was built with, the devices it sees, and where Enclave keeps data."""
    from app.diagnostics import collect

    report = collect(app_paths())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"Enclave {report['version']}  (llama-cpp-python {report['llama_cpp_python']})")
    click.echo(f"llama.cpp backends: {', '.join(report['backends'])}  (GPU offload: "
               f"{'yes' if report['gpu_offload'] else 'no'})")
    click.echo(f"CPU features: {report['system_info']}")
    click.echo("Devices:")
    for dev in report["devices"]:
        click.echo(f"  {dev['name']:<10} {dev['type']:<5} {dev['description']}: "
                   f"{format_size(dev['free_bytes'])} free of {format_size(dev['total_bytes'])}")
    click.echo("Data:")
    for name, path in report["paths"].items():
        click.echo(f"  {name:<9} {path}")
