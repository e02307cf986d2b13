"""Talking to the hub through huggingface_hub, only when a caller asks.

huggingface_hub is imported lazily, so importing Enclave opens no socket and loads no HTTP
stack. Its telemetry (which, when on, also fetches an "agent harness" list from the hub on
the first request of a process) is switched off before and after the import.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from app import __version__
from app.hub.errors import TOKENS_PAGE, HubError, NoNetworkError, refuse_if_offline, translated
from app.hub.repos import HubFile, HubRepo, hub_file
from app.hub.tokens import resolve

DEFAULT_ENDPOINT = "https://huggingface.co"
API_TIMEOUT = 30.0  # seconds for a listing; huggingface_hub's default is to wait forever
SEARCH_LIMIT_MAX = 100

# huggingface_hub reads this once, at its import; set it for the whole process first.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def hf() -> Any:
    """huggingface_hub, imported now, with telemetry off even if something imported it before us."""
    import huggingface_hub
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_TELEMETRY = True
    return huggingface_hub


def endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` (a mirror, or the tests' loopback hub) read now, not at import."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or DEFAULT_ENDPOINT


def require_network() -> None:
    """Fail at once, in one line, when the hub's name cannot be resolved (a machine with no
    network or no DNS): huggingface_hub would otherwise retry a search for half a minute,
    logging every attempt. Behind a proxy the proxy resolves names, so nothing is checked."""
    address = urlsplit(endpoint())
    host = address.hostname or ""
    proxies = urllib.request.getproxies()
    proxied = bool(proxies.get(address.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host)
    if not host or proxied:
        return
    try:
        socket.getaddrinfo(host, address.port or (443 if address.scheme == "https" else 80),
                           type=socket.SOCK_STREAM)
    except OSError as exc:
        raise NoNetworkError(host, exc.strerror or str(exc)) from exc


def api() -> Any:
    return hf().HfApi(endpoint=endpoint(), library_name="enclave", library_version=__version__)


def list_gguf(repo_id: str, *, revision: str | None = None, token: str | None = None,
              offline: bool = False) -> HubRepo:
    """The GGUF files of ``repo_id`` at ``revision`` (default: main), with sizes and SHA-256,
    and the commit sha the listing was made at."""
    refuse_if_offline(offline, "list")
    require_network()
    auth = resolve(token)
    with translated(f"listing the files of {repo_id}", repo_id=repo_id, endpoint=endpoint(),
                    token_sent=auth is not False):
        info = api().model_info(repo_id, revision=revision, files_metadata=True, token=auth, timeout=API_TIMEOUT)
    if not info.sha:
        raise HubError(f"The hub did not say which commit of {repo_id} it listed, so a download could not be "
                       "pinned to it. Check HF_ENDPOINT, or try again later.")
    files = sorted((_hub_file(s) for s in info.siblings or () if s.rfilename.lower().endswith(".gguf")),
                   key=lambda f: f.name)
    return HubRepo(repo_id=info.id or repo_id, revision=info.sha, files=tuple(files))


def _hub_file(sibling: Any) -> HubFile:
    lfs = sibling.lfs
    size = (lfs.size if lfs else sibling.size) or 0
    return hub_file(sibling.rfilename, int(size), lfs.sha256.lower() if lfs and lfs.sha256 else None)


def search(query: str, *, limit: int = 20, token: str | None = None, offline: bool = False) -> list[dict]:
    """GGUF repositories matching ``query``, most downloaded first: dicts with id, downloads,
    likes, last_modified (ISO 8601 or None) and gated."""
    refuse_if_offline(offline, "search")
    require_network()
    limit = max(1, min(int(limit), SEARCH_LIMIT_MAX))
    auth = resolve(token)
    refused = (f"The hub refused the saved token while searching. Create a new read token at {TOKENS_PAGE} and "
               "run `enclave auth login` with it, or `enclave auth logout` to search without one.")
    with translated(f"searching for {query!r}", repo_id=query, endpoint=endpoint(), token_sent=auth is not False,
                    refused=refused):
        found = list(api().list_models(search=query, filter="gguf", sort="downloads", limit=limit,
                                       expand=["downloads", "likes", "lastModified", "gated"], token=auth))
    found.sort(key=lambda m: m.downloads or 0, reverse=True)  # a mirror (HF_ENDPOINT) may not sort
    return [{"id": m.id, "downloads": m.downloads or 0, "likes": m.likes or 0,
             "last_modified": _iso(m.last_modified), "gated": bool(m.gated)} for m in found]


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None
