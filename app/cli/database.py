"""``enclave database``: encryption at rest, on and off.

The key is kept in the system keyring, or — on a server with no desktop keyring — in a key
file: ``--key-file PATH`` here, then ``ENCLAVE_DB_KEY_FILE=PATH`` (or systemd's credential
``enclave-db-key``) wherever Enclave opens the database (``app.key_file``)."""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.common import cli, user_errors
from app.db_key import SERVICE, entry_name, key_file_for
from app.encryption import Rewritten, check_can_encrypt, decrypt_database, encrypt_database
from app.enforcement import Enforcer
from app.key_file import FROM_OPTION, KEY_FILE_ENV, KeyFile
from app.paths import app_paths
from app.services import Services

KEY_WARNING = ("The key is made now and kept only in this machine's keyring (system password store). If that "
               "keyring entry is lost, the database cannot be opened; 'enclave database decrypt' turns it back. "
               "Encrypt now?")
KEY_FILE_OPTION = click.option(
    "--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help=f"Keep the key in this file instead of the keyring (for servers; then set {KEY_FILE_ENV} to it). "
         "Encrypting makes the file (mode 0600) if it does not exist; it must be readable by you alone.")


def _key_file_warning(key_file: KeyFile) -> str:
    kept = "is made now and kept only in" if not key_file.path.exists() else "is the one already in"
    return (f"The key {kept} {key_file.path}. If that file is lost, the database cannot be opened; keep a copy "
            "somewhere safe. 'enclave database decrypt' turns it back. Encrypt now?")


@cli.group()
def database() -> None:
    """The app database: encryption at rest (SQLCipher; key in the system keyring, or in a key file)."""


@database.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@KEY_FILE_OPTION
@user_errors
def encrypt(yes: bool, key_file: Path | None) -> None:
    """Encrypt the database, keeping every row. Close Enclave first.

    Saved library prompt caches are deleted (they hold document text); with encryption on
    they are kept in memory only."""
    path = app_paths().ensure().database
    source = key_file_for(KeyFile(key_file, FROM_OPTION) if key_file is not None else None)
    check_can_encrypt(path, source)
    if not yes:
        click.confirm(KEY_WARNING if source is None else _key_file_warning(source), abort=True)
    with Services.open() as services:  # creates the database if there is none yet
        caches, _ = services.prompt_cache.clear_disk()
    done = encrypt_database(path, source)
    Enforcer.in_force().record("database.encrypt", database=str(path), tables=done.tables, rows=done.rows,
                               key="file" if source else "keyring")
    click.echo(f"Encrypted {path}: {done.tables} tables, {done.rows:,} rows, all checked. {_where(done, path)}")
    if caches:
        click.echo(f"Deleted {caches} saved prompt caches; they are kept in memory only while encrypted.")


def _where(done: Rewritten, path: Path) -> str:
    if done.key_file is None:
        return f"The key is in the keyring as '{SERVICE}' / '{entry_name(path)}'."
    made = "made now in" if done.key_file_made else "in"
    return (f"The key is {made} {done.key_file.path}; set {KEY_FILE_ENV}={done.key_file.path} (or give it to a "
            "systemd service as the credential enclave-db-key) wherever Enclave opens this database.")


@database.command()
@KEY_FILE_OPTION
@user_errors
def decrypt(key_file: Path | None) -> None:
    """Write the database back unencrypted, keeping every row, and forget its key. Close Enclave first."""
    path = app_paths().database
    done = decrypt_database(path, KeyFile(key_file, FROM_OPTION) if key_file is not None else None)
    Enforcer.in_force().record("database.decrypt", database=str(path), tables=done.tables, rows=done.rows)
    if done.key_file is not None:
        click.echo(f"Decrypted {path}: {done.tables} tables, {done.rows:,} rows, all checked. The key file "
                   f"{done.key_file.path} is no longer needed; delete it when you wish.")
        return
    click.echo(f"Decrypted {path}: {done.tables} tables, {done.rows:,} rows, all checked."
               + ("" if done.warning else " Its key is removed from the keyring."))
    if done.warning:
        click.echo(f"enclave: warning: {done.warning}", err=True)
