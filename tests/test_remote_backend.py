"""Remote models against a server Enclave did not write: llama-cpp-python's own
OpenAI-compatible server (``python -m llama_cpp.server``) with a tiny model, on loopback.
One server for the module; every wait is bounded."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx2
import pytest
from PySide6.QtWidgets import QApplication

from app.remote_backend import RemoteError
from app.services import Services
from inference.protocol import ChatMessage, Done, Failed, Sampling, Token
from tests import test_ui_chat
from tests.cli import enclave
from tests.conftest import audit_records
from ui import theme

START_SECONDS = 90
REPLY_TOKENS = 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaCppServer:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def requests(self, line: str) -> int:
        """How many requests the server logged that contain ``line`` (e.g. "GET /v1/models")."""
        return self.log.read_text(errors="replace").count(line)

    def greedy(self, messages: list[dict[str, str]]) -> str:
        """What the server answers ``messages`` with, asked directly (greedy, not streamed)."""
        body = {"model": "tiny", "messages": messages, "temperature": 0, "max_tokens": REPLY_TOKENS,
                "repeat_penalty": 1.0}  # Enclave's (the server's own default is 1.1)
        response = httpx2.post(f"{self.url}/v1/chat/completions", json=body, timeout=60)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def server(dense_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server extra is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(dense_model), "--model_alias", "tiny",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
             "--n_threads", "1", "--n_threads_batch", "1"],  # spinning threads on shared cores crawl
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if httpx2.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield LlamaCppServer(url, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _greedy(services: Services) -> None:
    services.settings.save(replace(services.settings.load(), temperature=0.0, max_tokens=REPLY_TOKENS,
                                   system_prompt=""))


def _greedy_settings(home: Path) -> None:
    with Services.open() as services:
        _greedy(services)


def _add(home: Path, server: LlamaCppServer, name: str = "box", *extra: str) -> subprocess.CompletedProcess[str]:
    return enclave("models", "add-remote", name, server.url, *extra, home=home, timeout=60)


def test_add_remote_asks_the_server_once_and_registers_it(enclave_home: Path, server: LlamaCppServer,
                                                          audited: Path) -> None:
    asked = server.requests("GET /v1/models")
    added = _add(enclave_home, server)
    assert added.returncode == 0, added.stderr
    where = server.url.removeprefix("http://")
    assert f"Added box: tiny on {where}." in added.stdout
    assert "does not say its context" in added.stdout  # llama-cpp-python's /v1/models has none: said so
    assert server.requests("GET /v1/models") == asked + 1
    with Services.open(readonly=True) as services:
        (remote,) = services.remote_models.all()
    assert (remote.name, remote.url, remote.model_id, remote.where) == ("box", f"{server.url}/v1", "tiny", where)
    assert (remote.context_length, remote.context_source, remote.key_env) == (4096, "default", None)

    listed = enclave("models", "list", home=enclave_home)
    assert f"remote: tiny on {where}" in listed.stdout
    assert audit_records(audited, "remote.added") == [{"name": "box", "host": where, "model": "tiny", "checked": True}]

    unknown = _add(enclave_home, server, "other", "--model", "not-served")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "has no model 'not-served' (it serves: tiny)" in unknown.stderr

    removed = enclave("models", "remove", "box", home=enclave_home)
    assert removed.returncode == 0 and "Removed remote model box" in removed.stdout
    with Services.open(readonly=True) as services:
        assert services.remote_models.all() == []


def test_run_streams_the_servers_greedy_reply_and_audits_it_without_content(
        enclave_home: Path, server: LlamaCppServer, audited: Path) -> None:
    assert _add(enclave_home, server).returncode == 0
    _greedy_settings(enclave_home)
    prompt = "Tell me about the tides"
    ran = enclave("run", "box", prompt, home=enclave_home, timeout=90)
    assert ran.returncode == 0, ran.stderr
    expected = server.greedy([{"role": "user", "content": prompt}])
    assert expected and ran.stdout == expected + "\n"

    (record,) = [r for r in audit_records(audited, "remote.request") if r["action"] == "chat"]
    assert record["host"] == server.url.removeprefix("http://") and record["model"] == "tiny"
    assert record["status"] == "ok" and record["tokens_out"] == REPLY_TOKENS
    assert prompt not in audited.read_text() and expected not in audited.read_text()  # never content


def test_a_library_question_answers_and_is_stored_with_its_sources(enclave_home: Path, server: LlamaCppServer,
                                                                   tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "tides.txt").write_text("The tide at Port Ellen turns at four in the afternoon.\n")
    (folder / "boats.txt").write_text("The ferry leaves from the north pier every hour.\n")
    with Services.open() as services:
        services.add_remote_model("box", server.url)
        _greedy(services)
        library = services.libraries.create("harbour")
        services.add_to_library(library.id, [folder])
        conversation = services.chat.start(model="box", library_id=library.id)
        assert services.chat.library_context_need(conversation.id) is None  # nothing to size here
        events = list(services.chat.send(conversation.id, "When does the tide turn?"))
        reply = events[-1].message
        assert reply.status == "complete", reply.error
        assert reply.content and reply.model == "box"
        # llama-cpp-python's server streams no usage: the tokens are counted as its chunks, which is
        # close (a chunk may carry no token) but not exact
        assert REPLY_TOKENS <= (reply.completion_tokens or 0) <= REPLY_TOKENS + 2
        assert reply.context_note.startswith("Read the whole library: 2 documents")
        assert "estimates" not in reply.context_note  # counted with the server's own tokenizer
        assert sorted(s.title for s in reply.sources if not s.left_out) == ["boats.txt", "tides.txt"]
        stored = services.conversations.messages(conversation.id)
        assert [m.role for m in stored] == ["user", "assistant"]
        assert [s.title for s in stored[-1].sources] == [s.title for s in reply.sources]
        assert services._runtime is None or services.runtime.model is None  # nothing loaded here, ever


def test_offline_refuses_before_any_connection(enclave_home: Path, server: LlamaCppServer) -> None:
    assert _add(enclave_home, server).returncode == 0
    chats = server.requests("POST /v1/chat/completions")
    ran = enclave("run", "box", "hello", home=enclave_home, env={"ENCLAVE_OFFLINE": "1"}, timeout=60)
    assert ran.returncode == 2 and ran.stdout == ""
    assert ran.stderr.count("\n") == 1 and "set to work offline" in ran.stderr and "Traceback" not in ran.stderr
    assert server.requests("POST /v1/chat/completions") == chats


def test_a_host_outside_remote_hosts_is_refused(enclave_home: Path, server: LlamaCppServer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert _add(enclave_home, server).returncode == 0  # added before the policy came
    policy = tmp_path / "policy.toml"
    policy.write_text('remote_hosts = ["gpu.corp.example:8000"]\n')
    monkeypatch.setenv("ENCLAVE_POLICY", str(policy))
    asked, chats = server.requests("GET /v1/models"), server.requests("POST /v1/chat/completions")

    added = _add(enclave_home, server, "other")
    assert added.returncode == 2 and added.stderr.count("\n") == 1
    assert "does not allow connecting to 127.0.0.1" in added.stderr and "remote_hosts" in added.stderr
    ran = enclave("run", "box", "hello", home=enclave_home, timeout=60)
    assert ran.returncode == 2 and "does not allow connecting" in ran.stderr
    assert (server.requests("GET /v1/models"), server.requests("POST /v1/chat/completions")) == (asked, chats)
    with Services.open(readonly=True) as services:
        assert [m.name for m in services.remote_models.all()] == ["box"]


def test_a_dead_server_is_one_line(enclave_home: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    added = enclave("models", "add-remote", "gone", url, home=enclave_home, timeout=60)
    assert added.returncode == 2 and added.stderr.count("\n") == 1
    assert "Cannot reach the server at 127.0.0.1" in added.stderr and "is it running" in added.stderr
    offline = enclave("models", "add-remote", "gone", url, "--model", "tiny", home=enclave_home,
                      env={"ENCLAVE_OFFLINE": "1"})
    assert offline.returncode == 0 and "not checked (Enclave is offline)" in offline.stdout
    ran = enclave("run", "gone", "hello", home=enclave_home, timeout=60)
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and "Cannot reach the server" in ran.stderr


def test_cancel_closes_the_stream(enclave_home: Path, server: LlamaCppServer) -> None:
    with Services.open() as services:
        remote = services.add_remote_model("box", server.url).model
        client = services.remote_client(remote)
        events = client.chat([ChatMessage("user", "hello")], Sampling(temperature=0, max_tokens=400))
        first = next(events)
        assert isinstance(first, Token)
        threading.Timer(0.05, client.cancel).start()
        rest = list(events)
    assert isinstance(rest[-1], Done) and rest[-1].stats.stop_reason == "cancelled"
    assert rest[-1].stats.generated_tokens < 400 and not any(isinstance(e, Failed) for e in rest)


def test_a_key_variable_that_is_not_set_is_said(enclave_home: Path, server: LlamaCppServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOX_KEY", raising=False)
    with Services.open() as services, pytest.raises(RemoteError.__mro__[1], match=r"\$BOX_KEY, which is not set"):
        services.add_remote_model("box", server.url, key_env="BOX_KEY")
    refused = enclave("models", "add-remote", "box", server.url, "--key-env", "sk-123", home=enclave_home)
    assert refused.returncode == 2 and "never the key itself" in refused.stderr


make_page = test_ui_chat.make_page  # the chat page's fixtures, shared


def test_the_window_chats_with_a_remote_model_and_says_where_it_runs(qtbot, make_page, services: Services,
                                                                     server: LlamaCppServer) -> None:
    where = server.url.removeprefix("http://")
    services.add_remote_model("box", server.url)
    _greedy(services)
    services.settings.set("default_model", "box")
    page = make_page()
    assert page.model_combo.currentText() == f"box · on {where}" and page.chosen_model() == "box"

    page.composer.setPlainText("Tell me about the tides")
    page.submit()
    reply = page.model.message_at(1)
    assert reply.status == "complete" and reply.model == "box"
    assert reply.content == server.greedy([{"role": "user", "content": "Tell me about the tides"}])
    assert page._model_name("box") == f"box on {where}"  # the card's author line
    assert page.error_bar.isHidden()

    app = QApplication.instance()
    for dark in (False, True):
        app.setPalette(theme.palette_for(dark))
        for size in ((1024, 700), (1920, 1080)):
            page.resize(*size)
            qtbot.wait(50)
            page.grab().save(f"/tmp/remote-R-chat-{size[0]}-{'dark' if dark else 'light'}.png")
    app.setPalette(theme.palette_for(False))
