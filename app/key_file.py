"""The database key in a file, for a server with no desktop keyring.

Where a key file is named, in this order (the first found is used; the keyring is then not asked):

1. ``--key-file PATH`` on ``enclave database encrypt`` / ``decrypt``;
2. the environment variable ``ENCLAVE_DB_KEY_FILE=PATH``;
3. systemd's credential ``enclave-db-key`` (``$CREDENTIALS_DIRECTORY/enclave-db-key``, when that
   folder is set and holds it: ``LoadCredential=enclave-db-key:/etc/enclave/db.key`` or
   ``LoadCredentialEncrypted=`` in the unit).

The file holds the key as 64 hexadecimal digits (256 bits; a final newline is allowed), which
``encrypt --key-file`` writes when the file does not exist yet (mode 0600, created exclusively).
It must be a regular file owned by the user Enclave runs as, and neither readable nor writable
by group or others (0400 or 0600); anything else is refused with how to fix it, because a key
others can read protects nothing. systemd's credential files qualify as systemd makes them: it
may own them by root and grant the service's user read access through an ACL (which shows as
group read bits); for a file in ``$CREDENTIALS_DIRECTORY`` root ownership and group read are
therefore accepted, never access for others. On Windows, which has no such mode bits, only
"a regular file" is checked: keep it in a folder only the service account can read.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from inference.errors import EnclaveError

KEY_FILE_ENV = "ENCLAVE_DB_KEY_FILE"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
CREDENTIAL_NAME = "enclave-db-key"
FROM_OPTION = "--key-file"
FROM_CREDENTIAL = "systemd credential enclave-db-key"
_KEY = re.compile(r"[0-9a-fA-F]{64}")
_MAX_BYTES = 4096


class KeyFileError(EnclaveError):
    """The key file cannot be used: missing, not private, or not holding a key."""


@dataclass(frozen=True)
class KeyFile:
    path: Path
    named_by: str  # FROM_OPTION, KEY_FILE_ENV or FROM_CREDENTIAL: said in messages

    @property
    def is_credential(self) -> bool:
        return self.named_by == FROM_CREDENTIAL

    def __str__(self) -> str:
        return f"{self.path} ({self.named_by})"


def configured_key_file() -> KeyFile | None:
    """The key file the environment names (``ENCLAVE_DB_KEY_FILE``, else systemd's credential when
    there is one), or None: the keyring keeps the key."""
    named = os.environ.get(KEY_FILE_ENV, "").strip()
    if named:
        return KeyFile(Path(named).expanduser(), KEY_FILE_ENV)
    credentials = os.environ.get(CREDENTIALS_ENV, "").strip()
    if credentials and os.path.lexists(Path(credentials) / CREDENTIAL_NAME):
        return KeyFile(Path(credentials) / CREDENTIAL_NAME, FROM_CREDENTIAL)
    return None


def read_key(key_file: KeyFile) -> str:
    """The key in ``key_file`` (64 lower-case hex digits), after checking the file is private."""
    path = key_file.path
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyFileError(f"The database key file {path} does not exist (named by {key_file.named_by}). Put it "
                           "back, or name the right one.") from None
    except OSError as exc:
        raise KeyFileError(f"The database key file {path} cannot be read ({exc.strerror or exc}).") from None
    try:
        check_private(key_file, os.fstat(fd))  # the file opened, not whatever the path names later
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_BYTES + 1)
    text = data.decode("ascii", errors="replace").strip()
    if len(data) > _MAX_BYTES or not _KEY.fullmatch(text):
        raise KeyFileError(f"The database key file {path} does not hold a database key: 64 hexadecimal digits "
                           "expected, as 'enclave database encrypt --key-file' writes.")
    return text.lower()


def check_private(key_file: KeyFile, info: os.stat_result) -> None:
    """KeyFileError, saying how to fix it, unless the file is a regular file only its owner (this
    user) can read."""
    path = key_file.path
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"The database key file {path} is not a regular file; give the path of the file itself.")
    if os.name != "posix":
        return
    me = os.geteuid()
    owners = (me, 0) if key_file.is_credential else (me,)
    if info.st_uid not in owners:
        raise KeyFileError(f"The database key file {path} belongs to user id {info.st_uid}, not to the user Enclave "
                           f"runs as (id {me}); a key must be readable by that user alone. Fix it with "
                           f"'chown {me} {path}' and 'chmod 600 {path}'.")
    shared = info.st_mode & (0o027 if key_file.is_credential else 0o077)
    if shared:
        raise KeyFileError(f"The database key file {path} is open to group or others (mode "
                           f"{stat.S_IMODE(info.st_mode):04o}); a key must be readable by its owner alone. Fix it "
                           f"with 'chmod 600 {path}'.")


def check_can_create(key_file: KeyFile) -> None:
    """KeyFileError unless a new key file can be written at ``key_file`` (its folder exists)."""
    folder = key_file.path.parent
    if not folder.is_dir():
        raise KeyFileError(f"The folder {folder} does not exist; make it (readable by this user only) and try again.")
    if not os.access(folder, os.W_OK):
        raise KeyFileError(f"The key file {key_file.path} cannot be made: {folder} is not writable by this user.")


def create_key_file(key_file: KeyFile, key: str) -> None:
    """Write ``key`` to a new file (never over an existing one), mode 0600, synced to disk."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(key_file.path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"The key file {key_file.path} appeared meanwhile; nothing was changed. "
                           "Try again.") from None
    except OSError as exc:
        raise KeyFileError(f"The key file {key_file.path} cannot be made ({exc.strerror or exc}); nothing was "
                           "changed.") from None
    with os.fdopen(fd, "wb") as f:
        if os.name == "posix":
            os.fchmod(f.fileno(), 0o600)  # whatever the umask
        f.write(key.encode("ascii") + b"\n")
        f.flush()
        os.fsync(f.fileno())
    if os.name == "posix":
        folder = os.open(key_file.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
