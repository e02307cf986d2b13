"""The database key: 256 random bits, made once, kept in the system keyring per data folder.

The key is SQLCipher's raw form (``x'<64 hex digits>'``), so no passphrase derivation runs
on each connection. Enclave keeps no other copy: losing the keyring entry loses the
database, which is why ``enclave database decrypt`` exists and the key is never logged.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from app.keyring_access import usable_keyring
from inference.errors import EnclaveError

SERVICE = "enclave"

NO_KEYRING = (
    "This machine has no usable keyring (system password store), and the database key is kept only there. "
    "Install or unlock one (GNOME Keyring or KWallet on Linux; macOS Keychain and Windows Credential Manager "
    "work out of the box) and try again.")


class DatabaseKeyError(EnclaveError):
    """The keyring cannot give, keep or forget the database key."""


def entry_name(database: Path) -> str:
    """The keyring entry's user name: one key per data folder."""
    return f"database-key {database.resolve().parent}"


def new_key() -> str:
    return secrets.token_hex(32)


def load_key(database: Path) -> str | None:
    """The key for ``database``'s folder, or None when the keyring holds none."""
    from keyring.errors import KeyringError

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


def check_keyring() -> None:
    """DatabaseKeyError when there is no usable keyring to keep a key in."""
    _backend()


def _backend() -> Any:
    backend = usable_keyring()
    if backend is None:
        raise DatabaseKeyError(NO_KEYRING)
    return backend
