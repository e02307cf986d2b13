"""``enclave serve`` stops cleanly: SIGTERM (a service manager) or Ctrl-C in the middle of a streamed
reply ends that reply properly within the grace — its last chunk has a ``finish_reason`` and the
stream ends with ``[DONE]`` — and the terminal shows "Stopped.", never a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cli import ROOT, enclave

START_SECONDS = 120.0
GRACE = 4  # seconds: generations are stopped after 2, the reply asked for takes longer than that
LONG_REPLY = 100_000  # tokens: the context (4,096) ends it after 4 s at the least (the tiny model makes ≤ 1,000/s)

pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"enclave serve ended ({process.returncode}): {process.communicate()}")
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"enclave serve did not answer within {START_SECONDS:.0f} s")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_mid_stream_ends_the_reply_properly_and_prints_no_traceback(
        tmp_path: Path, moe_model: Path, stop: signal.Signals) -> None:
    home = tmp_path / "home"
    policy = tmp_path / "policy.toml"
    policy.write_text("")  # the defaults (keyless on loopback), not this machine's policy
    env = {"HF_HUB_OFFLINE": "1", "ENCLAVE_POLICY": str(policy)}
    assert enclave("models", "import", "--in-place", str(moe_model), home=home, env=env).returncode == 0
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--model", "tiny-moe", "--grace", str(GRACE)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **env, "ENCLAVE_HOME": str(home)})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(url, process)
        body = {"model": "tiny-moe", "stream": True, "max_tokens": LONG_REPLY,
                "messages": [{"role": "user", "content": "Tell a long story."}]}
        events: list[str] = []
        request = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        stopped_at: float | None = None
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
            for raw in response:  # lines as the events arrive
                line = raw.decode().rstrip("\n")
                if not line.startswith("data: "):
                    continue
                events.append(line.removeprefix("data: "))
                if stopped_at is None and '"content"' in line:
                    process.send_signal(stop)  # the reply has begun
                    stopped_at = time.monotonic()
        assert stopped_at is not None
        ended_after = time.monotonic() - stopped_at
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, err
    assert "Traceback" not in err and "CancelledError" not in err and "ERROR" not in err, err
    assert err == ""  # nothing but Enclave's own lines, and those go to stdout
    assert out.rstrip().splitlines()[-1] == "Stopped."
    assert out.count(" POST /v1/chat/completions ") == 1 and "200 POST /v1/chat/completions" in out
    # the client got a whole reply, cut short in time: the final chunk says why it ended, then [DONE]
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["delta"] == {}
    pieces = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert 0 < sum(1 for piece in pieces if piece) < LONG_REPLY
    assert ended_after < GRACE + 1.0
