"""Running code as a user who cannot read what was made unreadable.

Tests run as root here and in CI, and root reads a file or lists a folder whatever its mode,
so ``chmod 000`` proves nothing. ``as_unprivileged`` runs a function in a forked child that has
dropped to the ``nobody`` user (when the tests run as root; otherwise the caller's own rights
already apply) and returns its result. The child can only use modules already imported, as
the interpreter's own files may be out of nobody's reach: run the function once beforehand.
"""

from __future__ import annotations

import os
import pickle
import pwd
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def shared_folder() -> Path:
    """A new folder the unprivileged user can reach and write (tmp_path's parents are root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="enclave-unprivileged-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    return folder


def as_unprivileged(function: Callable[[], T]) -> T:
    if os.geteuid() != 0:
        return function()
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            outcome: tuple[str, object] = ("ok", function())
        except BaseException:  # everything goes back to the test
            outcome = ("error", traceback.format_exc())
        with os.fdopen(write_end, "wb") as out:
            pickle.dump(outcome, out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as received:
        status, value = pickle.load(received)
    os.waitpid(pid, 0)
    if status == "error":
        raise AssertionError(f"as the user nobody:\n{value}")
    return value  # type: ignore[return-value]
