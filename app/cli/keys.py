"""``enclave keys``: the API keys ``enclave serve`` accepts. A key's secret is printed once, when
it is made; lists show its name and prefix, never the secret. Making and revoking are audited."""

from __future__ import annotations

import json

import click

from app.api_keys import ApiKey, ApiKeyRepository
from app.cli.common import cli, user_errors
from app.services import Services


@cli.group()
def keys() -> None:
    """API keys for 'enclave serve' (stored hashed; a secret is shown only once)."""


@keys.command("create")
@click.argument("name")
@user_errors
def create_key(name: str) -> None:
    """Make a key called NAME and print its secret, once.

    The secret goes to standard output alone on its line; the note about it to standard error."""
    with Services.open() as services:
        key, secret = ApiKeyRepository(services.store).create(name)
        services.enforcer.record("key.create", name=key.name, prefix=key.prefix)
    click.echo(f"Created key {key.name} ({key.prefix}…). Its secret follows — store it now: it is not shown again.",
               err=True)
    click.echo(secret)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def list_keys(as_json: bool) -> None:
    """List the keys (never their secrets).

    Name, prefix, when made, last used (to the minute) and when revoked."""
    with Services.open(readonly=True) as services:
        found = ApiKeyRepository(services.store).list()
    if as_json:
        click.echo(json.dumps([_as_dict(key) for key in found], indent=2))
        return
    if not found:
        click.echo("No keys. Make one with 'enclave keys create NAME'.")
        return
    rows = [("NAME", "PREFIX", "CREATED", "LAST USED", "REVOKED")]
    rows += [(k.name, k.prefix, k.created_at, k.last_used_at or "never", k.revoked_at or "-") for k in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _as_dict(key: ApiKey) -> dict[str, object]:
    return {"name": key.name, "prefix": key.prefix, "created_at": key.created_at, "last_used_at": key.last_used_at,
            "revoked_at": key.revoked_at}


@keys.command("revoke")
@click.argument("name")
@user_errors
def revoke_key(name: str) -> None:
    """Revoke the key NAME: requests with it are refused from now on."""
    with Services.open() as services:
        key = ApiKeyRepository(services.store).revoke(name)
        services.enforcer.record("key.revoke", name=key.name, prefix=key.prefix)
    click.echo(f"Revoked key {key.name} ({key.prefix}…) at {key.revoked_at}: requests with it are refused from now on.")
