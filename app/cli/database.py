"""``enclave database``: encryption at rest, on and off."""

from __future__ import annotations

import click

from app.cli.common import cli, user_errors
from app.db_key import SERVICE, entry_name
from app.encryption import check_can_encrypt, decrypt_database, encrypt_database
from app.enforcement import Enforcer
from app.paths import app_paths
from app.services import Services

KEY_WARNING = ("The key is made now and kept only in this machine's keyring (system password store). If that "
               "keyring entry is lost, the database cannot be opened; 'enclave database decrypt' turns it back. "
               "Encrypt now?")


@cli.group()
def database() -> None:
    """The app database: encryption at rest (SQLCipher, key in the system keyring)."""


@database.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@user_errors
def encrypt(yes: bool) -> None:
    """Encrypt the database, keeping every row. Close Enclave first.

    Saved library prompt caches are deleted (they hold document text); with encryption on
    they are kept in memory only."""
    path = app_paths().ensure().database
    check_can_encrypt(path)
    if not yes:
        click.confirm(KEY_WARNING, abort=True)
    with Services.open() as services:  # creates the database if there is none yet
        caches, _ = services.prompt_cache.clear_disk()
    done = encrypt_database(path)
    Enforcer.in_force().record("database.encrypt", database=str(path), tables=done.tables, rows=done.rows)
    click.echo(f"Encrypted {path}: {done.tables} tables, {done.rows:,} rows, all checked. The key is in the "
               f"keyring as '{SERVICE}' / '{entry_name(path)}'.")
    if caches:
        click.echo(f"Deleted {caches} saved prompt caches; they are kept in memory only while encrypted.")


@database.command()
@user_errors
def decrypt() -> None:
    """Write the database back unencrypted, keeping every row, and forget its key. Close Enclave first."""
    path = app_paths().database
    done = decrypt_database(path)
    Enforcer.in_force().record("database.decrypt", database=str(path), tables=done.tables, rows=done.rows)
    click.echo(f"Decrypted {path}: {done.tables} tables, {done.rows:,} rows, all checked."
               + ("" if done.warning else " Its key is removed from the keyring."))
    if done.warning:
        click.echo(f"enclave: warning: {done.warning}", err=True)
