"""``enclave policy`` (the organisation's policy in force, or a file being written) and
``enclave audit verify`` (the audit log's chain of records)."""

from __future__ import annotations

from pathlib import Path

import click

from app.audit import verify
from app.cli.common import EXIT_USER_ERROR, cli, user_errors
from app.paths import app_paths
from app.policy import POLICY_ENV, Policy, load_policy, policy_in_force, system_policy_path
from inference.errors import EnclaveError


def policy_lines(policy: Policy) -> list[str]:
    """The policy as ``doctor`` and ``policy show`` print it."""
    if not policy.in_force:
        return [f"no policy ({system_policy_path()} does not exist and {POLICY_ENV} is not set)"]
    return [f"from {policy.source}"] + [f"  {key:<15} {meaning}" for key, meaning in policy.rules()]


@cli.group(invoke_without_command=True)
@click.pass_context
@user_errors
def policy(ctx: click.Context) -> None:
    """The organisation's policy in force; 'policy check FILE' validates one."""
    if ctx.invoked_subcommand is None:
        for line in policy_lines(policy_in_force()):
            click.echo(line)


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@user_errors
def check(file: Path) -> None:
    """Check FILE as Enclave would read it, and print its rules."""
    for line in policy_lines(load_policy(file)):
        click.echo(line)


@cli.group()
def audit() -> None:
    """The audit log the organisation's policy can turn on."""


@audit.command("verify")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--noted", metavar="HASH", default=None,
              help="A last hash printed by an earlier verify: the log must still contain it.")
@user_errors
def verify_command(file: Path | None, noted: str | None) -> None:
    """Check that no record of the audit log (FILE, or the one in force) was changed,
    inserted or removed. Keep the last hash it prints where users cannot change it: with
    --noted HASH, a log cut short or rewritten since then shows."""
    if file is None:
        file = policy_in_force().audit_path(app_paths().logs)
        if file is None:
            raise EnclaveError("No audit log is in force (the policy's audit_log); name the file to check.")
    result = verify(file, noted=noted)
    for problem in result.problems[:20]:
        click.echo(f"{file}: {problem}", err=True)
    if not result.ok:
        click.echo(f"{file}: {len(result.problems)} problems in {result.records} records.", err=True)
        raise SystemExit(EXIT_USER_ERROR)
    click.echo(f"{file}: ok, {result.records} records, last hash {result.last_hash}.")
