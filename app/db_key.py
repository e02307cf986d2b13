"""The database key: 256 random bits, made once, kept in the system keyring per data folder —
or, on a server with no desktop keyring, in a key file (``app.key_file``).

The key is SQLCipher's raw form (``x'<64 hex digits>'``), so no passphrase derivation runs
on each connection. Enclave keeps no other copy: losing the keyring entry (or the key file)
loses the database, which is why ``enclave database decrypt`` exists and the key is never logged.

When a key file is named (``--key-file``, ``ENCLAVE_DB_KEY_FILE``, or systemd's credential
``enclave-db-key``) it is the key's only source and the keyring is not asked; otherwise the
keyring is, exactly as before key files existed.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from app.key_file import KEY_FILE_ENV, KeyFile, configured_key_file, read_key
from app.keyring_access import usable_keyring
from inference.errors import EnclaveError

SERVICE = "enclave"

NO_KEYRING = (
    "This machine has no usable keyring (system password store) for the database key. Install or unlock one "
    "(GNOME Keyring or KWallet on Linux; macOS Keychain and Windows Credential Manager work out of the box) and "
    "try again. On a server, keep the key in a file instead ('enclave database encrypt --key-file PATH'); a "
    f"database encrypted that way opens with {KEY_FILE_ENV}=PATH (or systemd's credential enclave-db-key).")


class DatabaseKeyError(EnclaveError):
    """The keyring cannot give, keep or forget the database key."""


def entry_name(database: Path) -> str:
    """The keyring entry's user name: one key per data folder."""
    return f"database-key {database.resolve().parent}"


def new_key() -> str:
    return secrets.token_hex(32)


def key_file_for(explicit: KeyFile | None = None) -> KeyFile | None:
    """The key file in use: ``explicit`` (``--key-file``), else the one the environment names, else None."""
    return explicit if explicit is not None else configured_key_file()


def load_key(database: Path, key_file: KeyFile | None = None) -> str | None:
    """The key for ``database``'s folder: from the key file in use (``KeyFileError`` when it cannot
    be used), else the keyring's, or None when the keyring holds none."""
    from keyring.errors import KeyringError

    source = key_file_for(key_file)
    if source is not None:
        return read_key(source)
    backend = _backend()
    try:
        return backend.get_password(SERVICE, entry_name(database)) or None
    except KeyringError as exc:
        raise DatabaseKeyError(f"Could not read the database key from the keyring ({exc}). Unlock the keyring "
                               "and try again.") from exc


def save_key(database: Path, key: str) -> None:
    from keyring.errors import KeyringError

    backend = _backend()
    try:
        backend.set_password(SERVICE, entry_name(database), key)
    except KeyringError as exc:
        raise DatabaseKeyError(f"The keyring refused to keep the database key ({exc}). Unlock the keyring and "
                               "try again; nothing was changed.") from exc


def delete_key(database: Path) -> None:
    """Forget the key; forgetting a key that is not there is not an error."""
    from keyring.errors import KeyringError, PasswordDeleteError

    backend = _backend()
    try:
        backend.delete_password(SERVICE, entry_name(database))
    except PasswordDeleteError:
        pass
    except KeyringError as exc:
        raise DatabaseKeyError(f"The keyring refused to delete the database key ({exc}).") from exc


def key_location(database: Path) -> str:
    """Where the key for ``database`` is looked for, in words: the key file, or the keyring entry."""
    source = key_file_for()
    if source is not None:
        return f"the key file {source}"
    return f"the keyring ('{SERVICE}' / '{entry_name(database)}')"


def check_keyring() -> None:
    """DatabaseKeyError when there is no usable keyring to keep a key in."""
    _backend()


def _backend() -> Any:
    backend = usable_keyring()
    if backend is None:
        raise DatabaseKeyError(NO_KEYRING)
    return backend
