"""The system keyring (password store), for the secrets Enclave keeps: the Hugging Face
token and the database key. Never a file here; a server without a keyring may keep the
database key in a key file instead (``app.key_file``), which is not this module's business."""

from __future__ import annotations

from typing import Any


def usable_keyring() -> Any | None:
    """The keyring backend in use, or None when there is none that stores anything
    (keyring's ``fail`` and ``null`` backends)."""
    import keyring
    from keyring.backends import fail, null

    backend = keyring.get_keyring()
    return None if isinstance(backend, (fail.Keyring, null.Keyring)) else backend


def keyring_name() -> str:
    """What doctor shows: the backend's name, or that there is none."""
    backend = usable_keyring()
    if backend is None:
        return "none usable"
    return getattr(backend, "name", None) or type(backend).__name__
