"""Downloading the files of one chosen model into a folder, verified, resumable, cancellable.

Metadata comes from huggingface_hub (``hf_hub_url``, ``get_hf_file_metadata``: the LFS
SHA-256 in ``X-Linked-Etag``); the bytes come through huggingface_hub's shared HTTP session
(``get_session``: its offline switch, proxies from the environment, TLS verified) with a
loop of our own rather than ``hf_hub_download``/``http_get``, because those can neither be
cancelled mid-file nor hash while they write, and they retry with their own delays.

A file is written to ``<dest>/.enclave-partial/<sha256>.part`` and moved to its place only
once its size and SHA-256 match the hub's. A partial named by its content's hash can only
ever be resumed with the bytes that belong to it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from app import __version__
from app.enforcement import Enforcer
from app.hub.api import endpoint, hf
from app.hub.errors import DownloadCancelled, HubError, refuse_if_offline, translated
from app.hub.repos import Choice, Downloaded, HubFile, HubRepo
from app.hub.tokens import resolve
from app.paths import free_bytes

PARTIAL_DIR = ".enclave-partial"
CHUNK_SIZE = 1 << 20
ATTEMPTS = 4  # failed tries in a row that bring no new byte before a download gives up (to be resumed later)
RETRY_DELAY = 1.0  # seconds, times the failed tries in a row
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0  # a stalled connection fails (and is retried) after this; cancel is seen when bytes arrive
PROGRESS_EVERY = 0.1  # seconds
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-")


class _Interrupted(Exception):
    """The connection failed mid-file; what arrived is kept and the next attempt resumes."""


def _no_progress(done: int, total: int) -> None:
    pass


def _never() -> bool:
    return False


def download(repo: HubRepo, choice: Choice, dest: Path, *, token: str | None = None, offline: bool = False,
             on_progress: Callable[[int, int], None] = _no_progress,
             cancelled: Callable[[], bool] = _never, enforcer: Enforcer | None = None) -> Downloaded:
    """Download ``choice`` from ``repo`` (at its pinned commit) into ``dest``, keeping the
    repository's relative paths, and return the files once every one is verified.

    ``on_progress(done, total)`` counts bytes over all files (bytes already on disk count
    as they are checked). ``cancelled()`` is polled between chunks; a cancel raises
    :class:`DownloadCancelled` and keeps partial files for the next call to resume."""
    enforcer = enforcer or Enforcer.in_force()
    refuse_if_offline(offline, "download", enforcer)
    if not choice.files:
        raise HubError("Nothing to download: the choice has no files.")
    # the hub's SHA-256 of each file is checked against an allow-list before a byte comes down
    # (the registry checks the files' own bytes again when they are registered)
    enforcer.check_model(f"{repo.repo_id} {choice.files[0].name}",
                                    [f.sha256 for f in choice.files if f.sha256], "download")
    dest = Path(dest)
    targets = [safe_target(dest, f.name) for f in choice.files]
    parts = dest / PARTIAL_DIR
    check_disk_space(dest, sum(_still_needed(f, t, parts) for f, t in zip(choice.files, targets, strict=True)))
    auth = resolve(token)
    progress = _Progress(sum(f.size for f in choice.files), on_progress)
    done: list[tuple[Path, HubFile]] = []
    for f, target in zip(choice.files, targets, strict=True):
        if cancelled():
            raise DownloadCancelled(_cancel_message(parts))
        _download_file(repo, f, target, parts, auth, progress, cancelled)
        done.append((target, f))
    with suppress(OSError):
        parts.rmdir()  # only when empty
    return Downloaded(repo_id=repo.repo_id, revision=repo.revision, files=tuple(done))


def safe_target(dest: Path, name: str) -> Path:
    """Where ``name`` goes under ``dest``; HubError for a name that could land anywhere else
    (absolute, drive letters, ``..``, backslashes, control characters, or via a symlink)."""
    parts = name.split("/")
    hostile = (
        not name or "\\" in name or ":" in name or any(ord(c) < 32 for c in name)
        or PurePosixPath(name).is_absolute() or bool(PureWindowsPath(name).drive)
        or any(p in ("", ".", "..") for p in parts) or parts[0] == PARTIAL_DIR
    )
    root = dest.resolve()
    target = root.joinpath(*parts)
    if hostile or not target.resolve().is_relative_to(root):
        raise HubError(f"Refusing to download {name!r}: that name would write outside the download folder "
                       f"{dest}. The repository's file list is broken or hostile; nothing was written.")
    return target


def check_disk_space(dest: Path, needed: int) -> None:
    """HubError when the file system of ``dest`` has less than ``needed`` bytes free."""
    _, free = free_bytes(dest)
    if needed > free:
        raise HubError(f"Not enough disk space in {dest}: the download needs {_gib(needed)} GiB and "
                       f"{_gib(free)} GiB is free. Free some space or download to another folder.")


def _gib(n: int) -> str:
    gib = n / 2**30
    return f"{gib:,.2f}" if gib >= 0.1 else f"{gib:.3f}"


def _still_needed(f: HubFile, target: Path, parts: Path) -> int:
    """Bytes still to come for ``f``: none if it looks complete, less a partial's bytes."""
    if target.is_file() and target.stat().st_size == f.size:
        return 0
    partial = parts / f"{f.sha256}.part"
    if f.sha256 and _SHA256.fullmatch(f.sha256) and partial.is_file():
        return max(f.size - partial.stat().st_size, 0)
    return f.size


class _Progress:
    """Bytes done over all files, reported at most every PROGRESS_EVERY seconds (and at the end)."""

    def __init__(self, total: int, callback: Callable[[int, int], None]) -> None:
        self.done, self.total, self.callback = 0, total, callback
        self.reported = float("-inf")

    def add(self, n: int) -> None:
        if not n:
            return
        self.done += n
        now = time.monotonic()
        if n < 0 or self.done >= self.total or now - self.reported >= PROGRESS_EVERY:
            self.reported = now
            self.callback(self.done, self.total)


def _cancel_message(parts: Path) -> str:
    return f"The download was cancelled. What arrived is kept in {parts}; download again to resume."


def _download_file(repo: HubRepo, f: HubFile, target: Path, parts: Path, auth: str | bool,
                   progress: _Progress, cancelled: Callable[[], bool]) -> None:
    hub = hf()
    url = hub.hf_hub_url(repo.repo_id, f.name, revision=repo.revision, endpoint=endpoint())
    doing = f"downloading {f.name} from {repo.repo_id}"
    try:
        with translated(doing, repo_id=repo.repo_id, endpoint=endpoint(), token_sent=auth is not False):
            meta = hub.get_hf_file_metadata(url, token=auth, endpoint=endpoint(), retry_on_errors=True,
                                            library_name="enclave", library_version=__version__)
            sha, size = _expected(repo, f, meta)
            if _already_there(target, sha, size, progress, cancelled):
                return
            partial = _Partial(parts / f"{sha}.part", progress)
            partial.load(size, cancelled)
            _fetch(url, _headers(auth), partial, size, cancelled, f.name)
            _place(partial, sha, size, target, f"{f.name} from {repo.repo_id}")
    except OSError as e:  # the hub's errors are OSErrors too, but translated() has turned those into HubError
        raise HubError(f"Could not write {target} ({e}). Check the folder's permissions and free space.") from e


def _place(partial: _Partial, sha: str, size: int, target: Path, what: str) -> None:
    """Move the partial file to ``target`` if it is exactly the file the hub described; else delete it."""
    if partial.size != size or partial.digest.hexdigest() != sha:
        partial.discard()
        raise HubError(f"{what} arrived corrupt or tampered with: its SHA-256 does not match the hub's. The "
                       "downloaded bytes were deleted. Try again; if it happens again, a proxy or mirror "
                       "(HF_ENDPOINT) may be altering files.")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial.path, target)


def _expected(repo: HubRepo, f: HubFile, meta: Any) -> tuple[str, int]:
    """The SHA-256 and size the file must have, from the listing and the hub's file metadata."""
    listed = f.sha256.lower() if f.sha256 else None
    if listed is not None and not _SHA256.fullmatch(listed):
        raise HubError(f"The hub's listing gives {f.name} a malformed SHA-256 ({f.sha256!r}); refusing to download.")
    etag = (meta.etag or "").lower()
    linked = etag if _SHA256.fullmatch(etag) else None
    if listed and linked and listed != linked:
        raise HubError(f"The hub's listing and its file metadata disagree on the SHA-256 of {f.name}; refusing "
                       "to download. List the repository again and retry.")
    sha = listed or linked
    if sha is None:
        raise HubError(f"The hub gives no SHA-256 for {f.name} (it is not stored with Git LFS), so Enclave "
                       "cannot verify it and will not download it.")
    if meta.commit_hash and meta.commit_hash != repo.revision:
        raise HubError(f"The hub served {f.name} from commit {meta.commit_hash}, not {repo.revision} as listed; "
                       "refusing to mix revisions. Try again.")
    size = f.size or meta.size or 0
    if meta.size and f.size and meta.size != f.size:
        raise HubError(f"The hub's listing and its file metadata disagree on the size of {f.name}; refusing "
                       "to download. List the repository again and retry.")
    if size <= 0:
        raise HubError(f"The hub gives no size for {f.name}; refusing to download it.")
    return sha, size


def _headers(auth: str | bool) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(token=auth, library_name="enclave", library_version=__version__)
    headers["Accept-Encoding"] = "identity"  # sizes and ranges are of the file's bytes, never of a compression
    return headers


def _hash_into(path: Path, digest: Any, progress: _Progress, cancelled: Callable[[], bool]) -> int:
    """Feed ``path``'s bytes to ``digest``; return how many there were."""
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            if cancelled():
                raise DownloadCancelled("The download was cancelled while checking files already downloaded.")
            digest.update(chunk)
            n += len(chunk)
            progress.add(len(chunk))
    return n


def _already_there(target: Path, sha: str, size: int, progress: _Progress, cancelled: Callable[[], bool]) -> bool:
    """Whether ``target`` already holds exactly these bytes (then nothing is downloaded)."""
    if not target.is_file() or target.stat().st_size != size:
        return False
    digest = hashlib.sha256()
    n = _hash_into(target, digest, progress, cancelled)
    if digest.hexdigest() == sha:
        return True
    progress.add(-n)
    return False


class _Partial:
    """A file being downloaded, with the SHA-256 of its bytes kept up to date as they arrive,
    so that a resumed file is read once (the bytes already there) and never hashed again."""

    def __init__(self, path: Path, progress: _Progress) -> None:
        self.path, self.progress = path, progress
        self.size, self.digest = 0, hashlib.sha256()

    def load(self, limit: int, cancelled: Callable[[], bool]) -> None:
        """Take in the bytes a previous attempt left (dropping them if there are too many)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size > limit:
            self.path.unlink()
        if self.path.is_file():
            self.size = _hash_into(self.path, self.digest, self.progress, cancelled)

    def reset(self) -> None:
        self.path.write_bytes(b"")
        self.progress.add(-self.size)
        self.size, self.digest = 0, hashlib.sha256()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.progress.add(-self.size)
        self.size, self.digest = 0, hashlib.sha256()

    def extend(self, chunks: Iterator[bytes], limit: int, cancelled: Callable[[], bool], message: str) -> None:
        with self.path.open("ab") as out:
            for chunk in chunks:
                if cancelled():
                    raise DownloadCancelled(message)
                out.write(chunk)
                self.digest.update(chunk)
                self.size += len(chunk)
                self.progress.add(len(chunk))
                if self.size > limit:
                    return  # more bytes than the file has: verification will refuse it


def _fetch(url: str, headers: dict[str, str], partial: _Partial, size: int, cancelled: Callable[[], bool],
           name: str) -> None:
    """Bring ``partial`` up to ``size`` bytes, resuming after failures as long as they bring bytes."""
    failures = 0
    while partial.size < size:
        before = partial.size
        try:
            _get(url, headers, partial, size, cancelled)
        except _Interrupted as e:
            failures = 0 if partial.size > before else failures + 1
            if failures >= ATTEMPTS:
                raise HubError(f"The download of {name} kept failing ({e}). The {partial.size:,} bytes that arrived "
                               "are kept: run the download again to resume, once the connection is back.") from e
            time.sleep(RETRY_DELAY * max(failures, 1))


def _get(url: str, headers: dict[str, str], partial: _Partial, size: int, cancelled: Callable[[], bool]) -> None:
    """One GET of the rest of the file (a Range request when part of it is here)."""
    import httpx2
    from huggingface_hub.utils import get_session, hf_raise_for_status

    request = dict(headers)
    if partial.size:
        request["Range"] = f"bytes={partial.size}-"
    timeout = httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    try:
        with get_session().stream("GET", url, headers=request, timeout=timeout, follow_redirects=True) as r:
            if r.status_code == 416:
                partial.reset()
                raise _Interrupted("the hub refused to resume the file; starting it again")
            if r.status_code == 429 or r.status_code >= 500:
                raise _Interrupted(f"the hub answered HTTP {r.status_code}")
            if r.status_code >= 400:
                r.read()
                hf_raise_for_status(r)
            _align(r, partial)
            # As the bytes arrive (no chunk_size): a chunker would lose what it holds when the connection drops.
            partial.extend(r.iter_bytes(), size, cancelled, _cancel_message(partial.path.parent))
    except httpx2.TransportError as e:
        raise _Interrupted(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
    if partial.size < size:
        raise _Interrupted("the connection closed before the end of the file")


def _align(response: Any, partial: _Partial) -> None:
    """Make the partial file match where the response's bytes start."""
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != partial.size:
            partial.reset()
            raise _Interrupted("the hub sent another part of the file than asked for")
    elif partial.size:
        partial.reset()  # the server ignored the Range header and sends the whole file
