"""A Hugging Face hub on 127.0.0.1, enough of it for ``app.hub``: what huggingface_hub 2.4
asks for, answered the way huggingface.co answers.

* ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (``?blobs=True``):
  repo info with its commit sha and siblings, each with size and LFS sha256;
* ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: ``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag``, ``X-Linked-Size``, ``Content-Length``, ``Accept-Ranges`` (and no
  ``X-Xet-*`` header, so plain HTTP is used), Range requests answered 206 or 416;
* ``GET /api/models?search=...``: search results, in the order the repos were added (unsorted:
  Enclave orders them itself).

Switches: ``drops`` (per GET, drop the connection after that many body bytes), ``corrupt``
(file names served with wrong bytes), ``rate`` (file bodies sent at that many bytes per
second, so that a client can be killed mid-file), a repo's ``token`` (gated: files need it;
private: everything needs it). ``requests`` logs every request.
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    sha: str = COMMIT
    token: str | None = None  # the token that opens a gated or private repo
    private: bool = False  # private: even the listing needs the token; else gated: only the files do
    downloads: int = 0
    likes: int = 0
    last_modified: str = "2025-05-01T12:00:00.000Z"
    gguf: bool = True  # shows up in searches filtered on gguf

    @property
    def gated(self) -> bool:
        return self.token is not None and not self.private


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names


HUB_ENVIRONMENT = ("HF_HUB_OFFLINE", "ENCLAVE_OFFLINE", "HF_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                   "http_proxy", "https_proxy", "all_proxy")


def point_huggingface_hub_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make huggingface_hub, in this process, talk to ``url`` and nothing else: the
    endpoint, no offline switch (conftest sets one, read at import), no token or proxy
    from the environment, and a fresh shared client. Call ``close_session()`` afterwards."""
    import huggingface_hub.constants as hf_constants
    from huggingface_hub.utils import close_session

    monkeypatch.setenv("HF_ENDPOINT", url)
    for var in HUB_ENVIRONMENT:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    close_session()


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[Logged] = field(default_factory=list)
    drops: list[int] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)
    ignore_range: bool = False  # answer Range requests with the whole file, as some CDNs do
    rate: int = 0  # bytes per second a file's body is sent at; 0: as fast as it goes
    url: str = ""

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def gets(self, name: str | None = None) -> list[Logged]:
        """The GETs of files (of one file, if named)."""
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path
                and (name is None or r.path.endswith("/" + name))]

    def __enter__(self) -> FakeHub:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: FakeHub

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's name (getfqdn); a loopback test needs no DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    # -- routing ------------------------------------------------------------------------

    def _route(self, body: bool) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        hub.requests.append(Logged(self.command, path, query, {k.lower(): v for k, v in self.headers.items()}))
        auth = self.headers.get("Authorization")
        if auth is not None and auth.removeprefix("Bearer ") not in {r.token for r in hub.repos.values()}:
            self._error(401, "", "Invalid credentials in Authorization header")  # as the hub answers a bad token
        elif path == "/api/models":
            self._search(query)
        elif path.startswith("/api/models/"):
            repo_id, _, revision = path[len("/api/models/"):].partition("/revision/")
            self._info(repo_id, revision or "main")
        elif "/resolve/" in path:
            repo_id, _, rest = path.lstrip("/").partition("/resolve/")
            revision, _, name = rest.partition("/")
            self._resolve(repo_id, revision, name, body)
        else:
            self._error(404, "EntryNotFound", "Not found")

    def _authorized(self, repo: FakeRepo) -> bool:
        return repo.token is None or self.headers.get("Authorization") == f"Bearer {repo.token}"

    def _repo(self, repo_id: str, revision: str, listing: bool) -> FakeRepo | None:
        repo = self.server.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(repo)):
            self._error(401, "RepoNotFound", "Invalid username or password.")
            return None
        if revision not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        if not listing and not self._authorized(repo):
            self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it "
                                          "and be authenticated to access it. Please log in.")
            return None
        return repo

    # -- answers -------------------------------------------------------------------------

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, revision, listing=True)
        if repo is None:
            return
        readme = b"# a fake repo\n"
        siblings = [{"rfilename": "README.md", "size": len(readme), "blobId": _git_blob_id(readme)}]
        siblings += [
            {"rfilename": name, "size": len(data), "blobId": _git_blob_id(data),
             "lfs": {"size": len(data), "sha256": _sha256(data), "pointerSize": 134}}
            for name, data in repo.files.items()
        ]
        self._json({"_id": repo_id, "id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": repo.private,
                    "gated": "manual" if repo.gated else False, "downloads": repo.downloads, "likes": repo.likes,
                    "lastModified": repo.last_modified, "tags": ["gguf"], "siblings": siblings})

    def _search(self, query: dict[str, list[str]]) -> None:
        words = query.get("search", [""])[0].lower()
        limit = int(query.get("limit", ["1000"])[0])
        found = [r for r in self.server.hub.repos.values()
                 if words in r.repo_id.lower() and not r.private and ("gguf" not in query.get("filter", []) or r.gguf)]
        self._json([{"_id": r.repo_id, "id": r.repo_id, "downloads": r.downloads, "likes": r.likes,
                     "lastModified": r.last_modified, "gated": "manual" if r.gated else False}
                    for r in found[:limit]])

    def _resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
        repo = self._repo(repo_id, revision, listing=False)
        if repo is None:
            return
        data = repo.files.get(name)
        if data is None:
            self._error(404, "EntryNotFound", f"{name} does not exist on {revision}")
            return
        sha = _sha256(data)
        if body and name in self.server.hub.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = self._range_start(len(data))
        if start is None:
            return
        payload = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha}"')
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("X-Repo-Commit", repo.sha)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        drops = self.server.hub.drops
        if drops:
            self.wfile.write(payload[:drops.pop(0)])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early
            self.close_connection = True
            return
        self._send_body(payload)

    def _send_body(self, payload: bytes) -> None:
        rate = self.server.hub.rate
        if not rate:
            self.wfile.write(payload)
            return
        step = max(rate // 20, 1)  # 20 writes a second
        try:
            for start in range(0, len(payload), step):
                self.wfile.write(payload[start:start + step])
                self.wfile.flush()
                time.sleep(step / rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (was killed) mid-file

    def _range_start(self, size: int) -> int | None:
        """Where a Range request starts (0 without one); None once a 416 is sent."""
        header = self.headers.get("Range")
        if not header or self.server.hub.ignore_range:
            return 0
        start = int(header.removeprefix("bytes=").split("-")[0])
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return start

    def _json(self, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
