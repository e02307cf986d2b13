"""``enclave serve`` under load: 1, 4 and 8 concurrent clients on loopback.

For each number of clients, every client sends ``--requests`` streamed chat completions one
after another with the official ``openai`` client. Reported: the aggregate generated tokens/s
(all clients' tokens ÷ wall time) divided by one client's, and the p50 / p95 time to first
token (request sent → first content chunk). A model's requests are decoded together in the
worker's continuous batch (``--parallel``, default 4, at most 8), so on a machine whose speed
is bound by reading the weights the aggregate grows with the clients up to ``--parallel``;
beyond it, requests wait in line and the time to first token grows.

    python bench/serve.py [MODEL.gguf] [--clients 1,4,8] [--requests 3] [--gen-tokens 64]

Without MODEL, the bench MoE is made in a temporary folder (``tests.tiny_models --kind bench``).
The server gets a temporary ENCLAVE_HOME and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai

if not __package__:  # run as a file rather than with -m: the repository root holds tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tiny_models import KINDS, write_tiny_model

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a short paragraph about the sea."
START_SECONDS = 180.0


@dataclass(frozen=True)
class Sample:
    first_token: float  # seconds from the request to its first content chunk
    tokens: int


@dataclass(frozen=True)
class Round:
    clients: int
    samples: list[Sample]
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return sum(s.tokens for s in self.samples) / self.seconds

    def first_token(self, quantile: float) -> float:
        ordered = sorted(s.first_token for s in self.samples)
        return ordered[min(len(ordered) - 1, round(quantile * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def enclave(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENCLAVE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          check=True)


def start_server(home: Path, model: str, port: int, parallel: int) -> subprocess.Popen[bytes]:
    log = (home / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port), "--model", model,
                               "--max-per-key", "64", "--parallel", str(parallel)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "ENCLAVE_HOME": str(home)})
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"enclave serve ended: {(home / 'serve.log').read_text()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).close()
            return server
        except urllib.error.HTTPError:
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("enclave serve did not answer in time")


def one_request(client: openai.OpenAI, model: str, gen_tokens: int) -> Sample:
    sent = time.perf_counter()
    first: float | None = None
    tokens = 0
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=gen_tokens, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - sent
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return Sample(first if first is not None else time.perf_counter() - sent, tokens)


def run_round(url: str, model: str, clients: int, requests: int, gen_tokens: int) -> Round:
    samples: list[Sample] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client_loop() -> None:
        client = openai.OpenAI(base_url=url, api_key="keyless", max_retries=0, timeout=600)
        for _ in range(requests):
            try:
                sample = one_request(client, model, gen_tokens)
            except openai.OpenAIError as exc:
                with lock:
                    failures.append(str(exc))
                return
            with lock:
                samples.append(sample)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} of {clients} clients failed: {failures[0]}")
    return Round(clients, samples, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="A GGUF file (default: the bench MoE, made here).")
    parser.add_argument("--clients", default="1,4,8", help="Numbers of concurrent clients, comma-separated.")
    parser.add_argument("--requests", type=int, default=3, help="Requests per client in each round.")
    parser.add_argument("--gen-tokens", type=int, default=64, help="max_tokens of each request.")
    parser.add_argument("--parallel", type=int, default=4, help="enclave serve --parallel.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="enclave-bench-serve-") as folder:
        home = Path(folder) / "home"
        model_path = args.model or write_tiny_model(Path(folder) / "bench-moe.gguf", KINDS["bench"])
        enclave(home, "models", "import", "--in-place", str(model_path))
        name = json.loads(enclave(home, "models", "list", "--json").stdout)[0]["name"]
        port = free_port()
        server = start_server(home, name, port, args.parallel)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            run_round(url, name, 1, 1, 8)  # warm: the first request's prompt and caches
            rounds = [run_round(url, name, int(n), args.requests, args.gen_tokens) for n in args.clients.split(",")]
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    base = rounds[0].tokens_per_second
    print(f"enclave serve --parallel {args.parallel}, {model_path.name}, {args.requests} requests per client, "
          f"{args.gen_tokens} tokens each")
    print(f"{'clients':>7} {'tokens/s':>9} {'× one':>6} {'TTFT p50':>9} {'TTFT p95':>9}")
    for r in rounds:
        print(f"{r.clients:>7} {r.tokens_per_second:>9.1f} {r.tokens_per_second / base:>6.2f} "
              f"{r.first_token(0.5) * 1000:>7.0f}ms {r.first_token(0.95) * 1000:>7.0f}ms")
    print(f"(mean generated per request: {statistics.mean(s.tokens for r in rounds for s in r.samples):.0f} tokens)")


if __name__ == "__main__":
    main()
