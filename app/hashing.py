"""SHA-256 of files, streamed, with progress: the one way Enclave proves a file's bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

CHUNK = 4 << 20


def running_total(total: int, on_progress: Callable[[int, int], None]) -> Callable[[int], None]:
    """An ``on_bytes`` for several files in a row: reports (bytes so far, ``total``)."""
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        on_progress(done, total)

    return advance


def sha256_file(path: Path, on_bytes: Callable[[int], None] = lambda n: None,
                cancelled: Callable[[], bool] = lambda: False) -> str:
    """The file's SHA-256 (hex). ``on_bytes`` gets each chunk's size as it is read."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            if cancelled():
                raise InterruptedError("cancelled")
            digest.update(chunk)
            on_bytes(len(chunk))
    return digest.hexdigest()


def copy_hashed(source: Path, target: Path, on_bytes: Callable[[int], None] = lambda n: None,
                cancelled: Callable[[], bool] = lambda: False) -> str:
    """Copy ``source`` to ``target`` and return the SHA-256 of the bytes written, reading
    the source once. A cancel or an error leaves no partial ``target`` behind."""
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".partial")
    try:
        with source.open("rb") as src, partial.open("wb") as dst:
            while chunk := src.read(CHUNK):
                if cancelled():
                    raise InterruptedError("cancelled")
                digest.update(chunk)
                dst.write(chunk)
                on_bytes(len(chunk))
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest()
