"""The Hugging Face token, kept in the system keyring and nowhere else.

Enclave never writes a token to a file (not even huggingface_hub's ``~/.cache/huggingface/token``),
and never sends one it did not get from here or from its caller.
"""

from __future__ import annotations

import logging
from typing import Any

from app.hub.errors import TOKENS_PAGE, HubError
from app.keyring_access import usable_keyring

log = logging.getLogger("enclave.hub")

SERVICE = "enclave"
USERNAME = "huggingface"

NO_KEYRING = (
    "This machine has no usable keyring (system password store), so Enclave cannot keep a Hugging Face token. "
    "Enclave never writes tokens to a file. Install or unlock one (GNOME Keyring or KWallet on Linux; macOS "
    "Keychain and Windows Credential Manager work out of the box) and try again.")


def _backend() -> Any:
    """The keyring backend in use, or HubError when there is none that stores anything."""
    backend = usable_keyring()
    if backend is None:
        raise HubError(NO_KEYRING)
    return backend


def get_token(*, quiet: bool = False) -> str | None:
    """The saved token, or None. Without a usable keyring (or with a locked one): HubError, or
    None when ``quiet`` (a public download needs no token: it should not fail for want of one)."""
    from keyring.errors import KeyringError, NoKeyringError

    try:
        return _backend().get_password(SERVICE, USERNAME) or None
    except (HubError, NoKeyringError) as e:
        if quiet:
            return None
        raise HubError(NO_KEYRING) from e
    except KeyringError as e:
        if quiet:
            log.warning("could not read the Hugging Face token from the keyring: %s", e)
            return None
        raise HubError(f"Could not read the Hugging Face token from the keyring ({e}). Unlock the keyring and "
                       "try again.") from e


def save_token(token: str) -> None:
    """Save ``token`` in the keyring, replacing any saved before."""
    from keyring.errors import KeyringError, NoKeyringError

    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise HubError(f"That is not a Hugging Face token. Copy a read token from {TOKENS_PAGE} and try again.")
    try:
        _backend().set_password(SERVICE, USERNAME, token)
    except NoKeyringError as e:
        raise HubError(NO_KEYRING) from e
    except KeyringError as e:
        raise HubError(f"The keyring refused to save the token ({e}). Unlock the keyring and try again; "
                       "Enclave never writes tokens to a file.") from e


def delete_token() -> None:
    """Forget the saved token. Deleting a token that is not there is not an error."""
    from keyring.errors import KeyringError, NoKeyringError, PasswordDeleteError

    try:
        _backend().delete_password(SERVICE, USERNAME)
    except PasswordDeleteError:
        pass
    except NoKeyringError as e:
        raise HubError(NO_KEYRING) from e
    except KeyringError as e:
        raise HubError(f"The keyring refused to delete the token ({e}). Unlock the keyring and try again.") from e


def resolve(token: str | None) -> str | bool:
    """What to hand huggingface_hub as ``token``: the caller's, else the saved one, else False.
    False (not None) stops huggingface_hub from sending a token of its own (HF_TOKEN, its token file)."""
    return token or get_token(quiet=True) or False
