"""``enclave serve`` as a client sees it: the official ``openai`` client against a server
started as a process on a free loopback port, with the tiny MoE model and a small library.

One server serves the module (starting one takes a model load). Its policy asks a key of
every request (``serve_keyless = false``) and keeps an audit log, so keys and audit are
checked on the same server; the keyless and TLS decisions are checked on ``checked`` alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from starlette.requests import Request

from app.enforcement import Enforcer
from app.policy import Policy
from app.server.config import ServeConfig, checked, insecure_warning
from app.server.errors import ApiError
from app.server.queue import ALONE, FairQueue, QueueFull
from app.server.routes import Server
from inference.errors import EnclaveError
from tests.cli import ROOT, enclave, one_error_line

PROMPT = "Name three colours."
REPLY_TOKENS = 16
START_SECONDS = 120.0
LONG_REPLY = 3000  # tokens: far longer than a test waits for (the tiny model makes ~100/s here)

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Served:
    url: str
    secret: str
    greedy: str  # `enclave run MODEL PROMPT --temperature 0`'s reply
    log: Path
    home: Path
    env: dict[str, str]

    def client(self, key: str | None = None, **options: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key or self.secret, max_retries=0, **options)

    def http(self, path: str, body: bytes | dict | None = None, *, key: str | None = "",
             timeout: float = 120) -> tuple[int, dict]:
        """A request without the client: (status, JSON body). ``key`` None sends no key ("" the good one)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key or self.secret}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _same_text(text: str) -> str:
    """Line ends as a subprocess's text-mode stdout reads them."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"enclave serve ended ({process.returncode}): {log.read_text()}")
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (401: no key given)
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"enclave serve did not answer within {START_SECONDS:.0f} s: {log.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, moe_model: Path) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("serve-home")
    policy = home / "policy.toml"
    policy.write_text("serve_keyless = false\naudit_log = true\n")
    env = {"ENCLAVE_POLICY": str(policy), "HF_HUB_OFFLINE": "1",
           "PYTHON_KEYRING_BACKEND": "tests.memory_keyring.FileKeyring",
           "ENCLAVE_TEST_KEYRING": str(home / "keyring.json")}
    assert enclave("models", "import", "--in-place", str(moe_model), home=home, env=env).returncode == 0
    created = enclave("keys", "create", "ci", home=home, env=env)
    assert created.returncode == 0, created.stderr
    docs = home / "docs"
    docs.mkdir()
    (docs / "lease.txt").write_text("The lease runs for five years and the rent is paid monthly. " * 5)
    assert enclave("library", "add", "contracts", str(docs), "--create", home=home, env=env).returncode == 0
    run = enclave("run", "tiny-moe", PROMPT, "--temperature", "0", "--max-tokens", str(REPLY_TOKENS),
                  home=home, env=env)
    assert run.returncode == 0, run.stderr

    port = _free_port()
    log = home / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), "--model", "tiny-moe", "--max-per-key", "6"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **env, "ENCLAVE_HOME": str(home)})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(url, process, log)
        yield Served(url, created.stdout.strip(), run.stdout.removesuffix("\n"), log, home, env)
    finally:
        process.send_signal(signal.SIGTERM)  # as a service manager stops it (Ctrl-C: the same path)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Stopped." in log.read_text() and process.returncode == 0, log.read_text()  # a clean stop


def test_start_lines_say_url_keys_tls_and_model(served: Served) -> None:
    head = "\n".join(served.log_lines()[:5])
    assert f"Serving the OpenAI API at {served.url}" in head
    assert "Keys: every request needs an API key" in head and "TLS: off" in head and "Model: tiny-moe" in head


def test_models_lists_models_and_libraries(served: Served) -> None:
    names = [m.id for m in served.client().models.list()]
    assert names == ["tiny-moe", "library/contracts"]


def test_whole_and_streamed_replies_equal_enclave_run(served: Served) -> None:
    client = served.client()
    whole = client.chat.completions.create(model="tiny-moe", messages=[{"role": "user", "content": PROMPT}],
                                           temperature=0, max_tokens=REPLY_TOKENS)
    assert _same_text(whole.choices[0].message.content or "") == served.greedy
    assert whole.usage is not None and whole.usage.completion_tokens == REPLY_TOKENS
    assert whole.usage.prompt_tokens > 0 and whole.choices[0].finish_reason == "length"

    stream = client.chat.completions.create(model="tiny-moe", messages=[{"role": "user", "content": PROMPT}],
                                            temperature=0, max_completion_tokens=REPLY_TOKENS, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert _same_text(streamed) == served.greedy
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == REPLY_TOKENS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_plain_completion_counts_its_tokens(served: Served) -> None:
    done = served.client().completions.create(model="tiny-moe", prompt="Once upon a time", temperature=0,
                                              max_tokens=5, stop=["\n\n\n"])
    assert done.object == "text_completion" and done.usage is not None and done.usage.completion_tokens <= 5
    assert done.choices[0].finish_reason in ("length", "stop")


def test_json_schema_output_parses_and_validates(served: Served) -> None:
    # Free strings are left out: llama-cpp-python's converter lets control characters into them,
    # which strict JSON refuses (its `char` rule is [^"\\]); an enum still checks strings.
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]},
                                               "age": {"type": "integer"}, "known": {"type": "boolean"}},
              "required": ["colour", "age", "known"], "additionalProperties": False}
    reply = served.client().chat.completions.create(
        model="tiny-moe", messages=[{"role": "user", "content": "A person, as JSON."}], max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    value = json.loads(reply.choices[0].message.content or "")
    assert set(value) == {"colour", "age", "known"} and value["colour"] in ("red", "green", "blue")
    assert type(value["age"]) is int and type(value["known"]) is bool


def test_keys_are_required_and_checked(served: Served) -> None:
    with pytest.raises(openai.AuthenticationError) as bad:
        served.client(key="enc-not-a-key-at-all").models.list()
    assert bad.value.status_code == 401 and "not valid" in bad.value.message
    status, missing = served.http("/models", key=None)
    assert status == 401 and "needs an API key" in missing["error"]["message"]
    assert missing["error"]["code"] == "invalid_api_key"


def test_unknown_model_is_404(served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        served.client().chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.message


def test_over_long_prompt_is_400_saying_how_long(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as long:
        served.client().chat.completions.create(model="tiny-moe",
                                                messages=[{"role": "user", "content": "word " * 6000}])
    message = long.value.message
    assert long.value.status_code == 400 and "The prompt is " in message and "context holds 4,096" in message
    assert long.value.code == "context_length_exceeded"


def test_bad_body_is_400_naming_the_field(served: Served) -> None:
    status, answer = served.http("/chat/completions", {"model": "tiny-moe", "temperature": 9,
                                                       "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and answer["error"]["param"] == "temperature"
    status, broken = served.http("/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in broken["error"]["message"]


def test_four_concurrent_clients_all_complete(served: Served) -> None:
    """Decoded side by side in the worker's batch (tests/test_batch.py checks each token against the
    model itself: where two tokens tie to the last bits, side by side may pick the other)."""
    used: dict[int, int] = {}

    def ask(i: int) -> None:
        reply = served.client(timeout=120).chat.completions.create(
            model="tiny-moe", messages=[{"role": "user", "content": PROMPT}], temperature=0,
            max_tokens=REPLY_TOKENS, stream=i % 2 == 0, **({"stream_options": {"include_usage": True}}
                                                           if i % 2 == 0 else {}))
        chunks = list(reply) if i % 2 == 0 else [reply]
        used[i] = next(c.usage.completion_tokens for c in chunks if c.usage is not None)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)
    assert used == dict.fromkeys(range(4), REPLY_TOKENS)


def test_a_client_that_leaves_mid_stream_frees_the_server(served: Served) -> None:
    client = served.client(timeout=60)
    stream = client.chat.completions.create(model="tiny-moe", messages=[{"role": "user", "content": "Tell a story."}],
                                            temperature=0, max_tokens=LONG_REPLY, stream=True)
    for received, _chunk in enumerate(stream, 1):
        if received == 5:
            break
    stream.close()  # the client goes away, LONG_REPLY tokens from the end
    started = time.monotonic()
    after = client.chat.completions.create(model="tiny-moe", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=3)
    assert after.usage is not None and after.usage.completion_tokens <= 3
    assert time.monotonic() - started < 10  # the rest of the story would take far longer
    left = [line for line in served.log_lines() if line.startswith("499 POST /v1/chat/completions")]
    assert left, served.log_lines()[-5:]


def test_a_client_that_leaves_while_waiting_in_line_leaves_the_line(served: Served) -> None:
    client = served.client(timeout=60)
    stream = client.chat.completions.create(model="tiny-moe", messages=[{"role": "user", "content": "Tell a story."}],
                                            temperature=0, max_tokens=LONG_REPLY, stream=True)
    next(iter(stream))  # a model's batch runs: a library question waits for the worker alone
    with pytest.raises(openai.APITimeoutError):
        served.client(timeout=1.5).chat.completions.create(
            model="library/contracts", messages=[{"role": "user", "content": "How long is the lease?"}])
    deadline = time.monotonic() + 10
    left: list[str] = []
    while not left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [ln for ln in served.log_lines() if ln.startswith("499 POST") and "library/contracts" in ln]
    stream.close()
    assert left and "tokens=0+0" in left[0]  # out of the line while the story still streamed: nothing ran


def test_a_library_answers_with_its_sources(served: Served) -> None:
    question = [{"role": "user", "content": "How long is the lease?"}]
    status, body = served.http("/chat/completions", {"model": "library/contracts", "max_tokens": 6,
                                                     "messages": question, "stop": ["zzz"]})
    assert status == 200, body
    assert [Path(s["path"]).name for s in body["sources"]] == ["lease.txt"]
    assert body["usage"]["completion_tokens"] <= 6 and body["choices"][0]["message"]["role"] == "assistant"
    history = enclave("history", "list", "--json", home=served.home, env=served.env)
    assert history.returncode == 0 and json.loads(history.stdout) == []  # nothing saved for an API call


def test_each_request_is_audited_without_content(served: Served) -> None:
    served.client().models.list()
    records = [json.loads(line) for path in served.home.rglob("audit.jsonl") for line in path.read_text().splitlines()]
    requests = [r for r in records if r.get("event") == "serve.request"]
    assert requests, records[-3:]
    text = json.dumps(requests)
    assert '"ci"' in text and PROMPT not in text and served.secret not in text


# How the server listens, decided before it starts -------------------------------------------------


def test_keyless_only_on_loopback_when_the_policy_allows() -> None:
    allowing = Enforcer(Policy(serve_keyless=True))
    assert checked(ServeConfig(host="127.0.0.1"), allowing).keys_required is False
    assert checked(ServeConfig(host="0.0.0.0", insecure=True), allowing).keys_required is True
    assert checked(ServeConfig(host="127.0.0.1"), Enforcer(Policy(serve_keyless=False))).keys_required is True


def test_a_network_bind_needs_tls_or_insecure(tmp_path: Path) -> None:
    with pytest.raises(EnclaveError, match="--cert FILE --key FILE"):
        checked(ServeConfig(host="0.0.0.0"), Enforcer(Policy()))
    insecure = checked(ServeConfig(host="0.0.0.0", insecure=True), Enforcer(Policy()))
    assert "without TLS" in (insecure_warning(insecure) or "")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(EnclaveError, match="cannot be used together"):  # said before "Serving …", not after
        checked(ServeConfig(host="0.0.0.0", cert=cert, key=key), Enforcer(Policy()))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    tls = checked(ServeConfig(host="0.0.0.0", cert=cert, key=key), Enforcer(Policy()))
    assert tls.url.startswith("https://") and insecure_warning(tls) is None


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = enclave("serve", "--port", str(port), home=tmp_path / "home")
    line = one_error_line(result)
    assert f"port {port} on 127.0.0.1 is already in use" in line and "Serving" not in result.stdout


def test_the_policy_can_refuse_the_bind(tmp_path: Path) -> None:
    refused = enclave("serve", "--host", "0.0.0.0", "--insecure", home=tmp_path / "home",
                      env={"ENCLAVE_POLICY": _policy(tmp_path, 'serve = "loopback"\n')}, timeout=60)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "loopback" in refused.stderr


def _policy(folder: Path, text: str) -> str:
    path = folder / "policy.toml"
    path.write_text(text)
    return str(path)


# The queue in front of the worker ------------------------------------------------------------------


def test_the_queue_is_first_come_first_served_with_a_limit_per_key() -> None:
    async def scenario() -> tuple[list[str], str]:
        queue = FairQueue(per_key=2)
        order: list[str] = []

        async def request(key: str, name: str) -> None:
            queue.admit(key)
            try:
                await queue.acquire()
                order.append(name)
                await asyncio.sleep(0.01)
                queue.release()
            finally:
                queue.leave(key)

        first = asyncio.ensure_future(request("a", "a1"))
        await asyncio.sleep(0)  # a1 holds the slot
        waiting = [asyncio.ensure_future(request(k, n)) for k, n in (("b", "b1"), ("a", "a2"), ("c", "c1"))]
        await asyncio.sleep(0)
        try:
            queue.admit("a")  # a1 running, a2 waiting: a third is refused
            refused = ""
        except QueueFull as full:
            refused = str(full)
        gone = asyncio.ensure_future(request("d", "d1"))
        await asyncio.sleep(0)
        gone.cancel()  # a client that leaves while waiting leaves the line
        await asyncio.gather(first, *waiting, gone, return_exceptions=True)
        assert queue.in_flight == 0 and queue.waiting == 0
        return order, refused

    order, refused = asyncio.run(scenario())
    assert order == ["a1", "b1", "a2", "c1"]
    assert "already has 2 requests" in refused


def test_a_models_requests_run_together_and_a_library_waits_its_turn() -> None:
    async def scenario() -> list[str]:
        queue = FairQueue(per_key=9, slots=2)
        events: list[str] = []
        gates = {name: asyncio.Event() for name in ("m1", "m2", "lib", "m3", "m4")}

        async def request(name: str, lane: str) -> None:
            await queue.acquire(lane)
            events.append(f"+{name}")
            await gates[name].wait()
            events.append(f"-{name}")
            queue.release(lane)

        tasks = []
        for name, lane in (("m1", "tiny"), ("m2", "tiny"), ("lib", ALONE), ("m3", "tiny"), ("m4", "tiny")):
            tasks.append(asyncio.ensure_future(request(name, lane)))
            await asyncio.sleep(0)
        assert events == ["+m1", "+m2"]  # two slots; the library and those behind it wait
        for name in ("m1", "m2", "lib"):
            gates[name].set()
            await asyncio.sleep(0.01)
        gates["m3"].set()
        gates["m4"].set()
        await asyncio.gather(*tasks)
        return events

    events = asyncio.run(scenario())
    assert events[:6] == ["+m1", "+m2", "-m1", "-m2", "+lib", "-lib"]  # alone, after the batch drained
    assert set(events[6:8]) == {"+m3", "+m4"}  # then together again


class _NoKeys:
    def verify(self, secret: str) -> None:
        return None


def _authorized(keys_required: bool, header: bytes | None) -> str | None:
    server = Server(backend=None, config=ServeConfig(keys_required=keys_required),  # type: ignore[arg-type]
                    enforcer=Enforcer(Policy()), keys=_NoKeys())  # type: ignore[arg-type]
    headers = [(b"authorization", header)] if header is not None else []
    try:
        return server.authorize(Request({"type": "http", "method": "GET", "headers": headers}))
    finally:
        server.runner.shutdown()


def test_keyless_loopback_lets_requests_in_with_or_without_a_key() -> None:
    assert _authorized(False, None) is None
    assert _authorized(False, b"Bearer whatever-the-client-sends") is None  # OpenAI's clients always send one
    for header in (None, b"Bearer enc-wrong"):
        with pytest.raises(ApiError) as refused:
            _authorized(True, header)
        assert refused.value.status == 401
