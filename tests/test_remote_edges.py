"""Remote models at their edges, against a tiny fake OpenAI-compatible server in this process
(no llama.cpp): credentials in an address, Stop while the server is silent, a name shared
with a local model, malformed chunks, redirects, failed tokenize requests."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.remote_backend import RemoteClient
from app.remote_models import RemoteModel, base_url
from app.services import Services
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Done, Failed, Sampling, Token
from tests.conftest import audit_records

SECRET = "s3cret-pass"
Handler = Callable[[BaseHTTPRequestHandler], None]


class FakeServer:
    """``/v1/models`` lists "m"; every POST is answered by ``on_post`` (set by each test)."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        self.release = threading.Event()  # a silent server waits on it (set at teardown)
        self.on_post: Handler = lambda handler: None
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                _send(self, 200, json.dumps({"data": [{"id": "m", "context_length": 2048}]}))

            def do_POST(self) -> None:
                fake.posts.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.on_post(self)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stream(self, *chunks: str) -> None:
        """Answer chat with these ``data:`` lines, as server-sent events."""
        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.end_headers()
            for chunk in chunks:
                handler.wfile.write(f"data: {chunk}\n\n".encode())
                handler.wfile.flush()
        self.on_post = answer


def _send(handler: BaseHTTPRequestHandler, code: int, body: str, **headers: str) -> None:
    handler.send_response(code)
    for name, value in {"Content-Type": "application/json", **headers}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body.encode())))
    handler.end_headers()
    handler.wfile.write(body.encode())


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.release.set()
    fake.http.shutdown()
    fake.http.server_close()


def _client(services: Services, server: FakeServer, **options: float) -> RemoteClient:
    model = services.add_remote_model("box", server.url).model
    return RemoteClient(model, services.enforcer, offline=False, **options)


def _ask(client: RemoteClient) -> list:
    return list(client.chat([ChatMessage("user", "the secret plan")], Sampling(max_tokens=5)))


# 1. Credentials in an address ------------------------------------------------------------------

def test_an_address_with_a_password_is_refused_and_never_stored_shown_or_audited(
        server: FakeServer, audited: Path) -> None:
    with pytest.raises(EnclaveError, match="--key-env") as refused:
        base_url(f"http://alice:{SECRET}@127.0.0.1:8080")
    assert SECRET not in str(refused.value) and "alice" not in str(refused.value)
    assert "http://127.0.0.1:8080" in str(refused.value)

    with Services.open() as services:
        with pytest.raises(EnclaveError, match="user name or password"):
            services.add_remote_model("box", server.url.replace("http://", f"http://alice:{SECRET}@"))
        assert services.remote_models.all() == []
    assert server.posts == []
    assert audited.exists() and SECRET not in audited.read_text() and "alice" not in audited.read_text()


def test_a_policy_refusal_audits_the_host_and_port_only(tmp_path: Path, audited: Path) -> None:
    policy = tmp_path / "admin" / "policy.toml"  # the one ``audited`` put in force
    policy.write_text(f'audit_log = "{audited}"\nremote_hosts = ["gpu.corp.example"]\n')
    with Services.open() as services, pytest.raises(EnclaveError, match="does not allow connecting"):
        services.add_remote_model("r", "https://evil.example/v1?token=abc")
    (refusal,) = audit_records(audited, "policy.refused")
    assert refusal["host"] == "evil.example:443" and "token" not in audited.read_text()


# 2. Stop, at once -----------------------------------------------------------------------------

def test_stop_while_the_server_is_silent_ends_the_reply_at_once(server: FakeServer, audited: Path) -> None:
    def silent_after_headers(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        handler.wfile.flush()
        server.release.wait(30)  # a long prompt being read

    server.on_post = silent_after_headers
    with Services.open() as services:
        client = _client(services, server)
        threading.Timer(0.3, client.cancel).start()
        started = time.monotonic()
        events = _ask(client)
    assert time.monotonic() - started < 3  # not READ_SECONDS
    assert len(events) == 1 and isinstance(events[0], Done) and events[0].stats.stop_reason == "cancelled"
    assert [r["status"] for r in audit_records(audited, "remote.request") if r["action"] == "chat"] == ["cancelled"]


def test_stop_before_the_answers_headers_ends_the_reply_at_once(server: FakeServer) -> None:
    server.on_post = lambda handler: server.release.wait(30)  # not even a status line yet
    with Services.open() as services:
        client = _client(services, server)
        threading.Timer(0.3, client.cancel).start()
        started = time.monotonic()
        events = _ask(client)
    assert time.monotonic() - started < 3
    assert [type(e) for e in events] == [Done] and events[0].stats.stop_reason == "cancelled"


def test_a_stop_that_came_before_the_request_is_kept_and_nothing_is_sent(server: FakeServer) -> None:
    server.stream('{"choices":[{"delta":{"content":"hi"}}]}', "[DONE]")
    with Services.open() as services:
        client = _client(services, server)
        client.cancel()  # Stop while the prompt was being prepared
        events = _ask(client)
        assert [type(e) for e in events] == [Done] and events[0].stats.stop_reason == "cancelled"
        assert server.posts == []
        again = _ask(client)  # the next request starts afresh
    assert [e.text for e in again if isinstance(e, Token)] == ["hi"] and again[-1].stats.stop_reason == "eog"


# 3. A name a local model and a remote model share ------------------------------------------------

def test_a_local_model_and_a_remote_model_never_share_a_name(tmp_path: Path, dense_model: Path) -> None:
    source = tmp_path / "incoming" / dense_model.name
    source.parent.mkdir()
    shutil.copy(dense_model, source)
    with Services.open() as services:
        services.settings.set("offline", True)
        name = services.models.import_files([source], "link").name  # a way in that bypasses the check
        local = services.models.get(name)
        services.remove_model(local.id, delete_files=True)

        services.add_remote_model(name, "http://gpu-box.example:8080", model_id="m")
        with pytest.raises(EnclaveError, match=f"remote model '{name}' .* already has this model's name"):
            services.import_model(source, "link")
        assert services.models.all() == []  # nothing copied, linked or registered

        services.remove_remote_model(name)
        assert services.import_model(source, "link").imported[0].name == name
        with pytest.raises(EnclaveError, match=f"The local model {name} .* already answers to '{name}'"):
            services.add_remote_model(name, "http://gpu-box.example:8080", model_id="m")
        assert services.remote_models.all() == []


def test_a_registered_local_model_wins_over_a_remote_one_of_its_name(tmp_path: Path, dense_model: Path) -> None:
    with Services.open() as services:
        services.settings.set("offline", True)
        local = services.models.import_files([dense_model], "in_place")
        # a clash the checks cannot see coming (a model found or downloaded by another path)
        services.remote_models.add(RemoteModel(local.name, "http://gpu-box.example:8080/v1", "m", None, 4096,
                                               "default"))
        assert services.remote_model(local.name) is None and services.remote_turns(local.name) is None
        assert services.chat._source(local.name) is services.chat._local
        assert services.resolve_model(local.name) == local.path
        assert services.profile_key(local.name) == local.id


# 4. Chunks not shaped as OpenAI's --------------------------------------------------------------

@pytest.mark.parametrize("chunk", ["[1,2]", '{"choices":["x"]}', '{"choices":[{"delta":{"content":[1]}}]}',
                                   '{"choices":{"a":1}}', '{"usage":{"prompt_tokens":"many"}}', '"text"'])
def test_a_malformed_chunk_is_one_sentence_and_audited_as_an_error(server: FakeServer, audited: Path,
                                                                   chunk: str) -> None:
    server.stream('{"choices":[{"delta":{"content":"hi"}}]}', chunk, "[DONE]")
    with Services.open() as services:
        events = _ask(_client(services, server))
    assert isinstance(events[-1], Failed) and "not an OpenAI-compatible answer" in events[-1].message
    (record,) = [r for r in audit_records(audited, "remote.request") if r["action"] == "chat"]
    assert record["status"] == "error" and "secret plan" not in audited.read_text()


# 5. Redirects ---------------------------------------------------------------------------------

def test_a_redirect_is_never_followed_and_names_where_it_points(server: FakeServer, audited: Path) -> None:
    elsewhere = "http://gpu-elsewhere.example:9/v1/chat/completions?key=abc"  # following it fails the test
    server.on_post = lambda handler: _send(handler, 302, "", Location=elsewhere)
    with Services.open() as services:
        events = _ask(_client(services, server))
    assert [type(e) for e in events] == [Failed]
    assert "redirects to gpu-elsewhere.example:9" in events[0].message and "add the model again" in events[0].message
    assert "key=abc" not in events[0].message
    assert [r["status"] for r in audit_records(audited, "remote.request") if r["action"] == "chat"] == ["error"]


# 6. Tokenize requests that fail -----------------------------------------------------------------

def test_failed_tokenize_requests_are_audited_without_content(server: FakeServer, audited: Path) -> None:
    server.on_post = lambda handler: _send(handler, 500, '{"error":{"message":"no"}}')
    with Services.open() as services:
        client = _client(services, server)
        assert client.count_tokens(["the secret plan", "more"]) is None
        assert client.count_tokens(["again"]) is None  # known now: not asked again
    assert server.posts == ["/extras/tokenize", "/tokenize"]
    records = [r for r in audit_records(audited, "remote.request") if r["action"] == "tokenize"]
    assert [(r["status"], r["texts"]) for r in records] == [("error", 2), ("error", 2)]
    assert "secret plan" not in audited.read_text()
