"""Loopback RPC hosts for tests: a second (and third) device in every test run.

``LoopbackHosts(n)`` starts ``n`` hosts (``python -m inference.rpc_host`` on free ports of
127.0.0.1, the CPU device, one thread), waits until each accepts connections, and stops them
all at the end. ``kill(i)`` SIGKILLs one (a host lost mid-reply); ``revive(i)`` starts it
again on the same port.

A host serves one connection at a time: while a process has buffers on it (a model
loaded), another process's handshake waits. Tests that load onto the shared hosts must end
that load (the worker unloaded or stopped) before the test ends; tests that kill a host
should start their own ``LoopbackHosts`` rather than kill the session's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from inference.rpc import NO_RPC

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0  # seconds for a host to list its device and listen


def free_port() -> int:
    """A port of 127.0.0.1 nobody listens on now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RpcUnavailable(RuntimeError):
    """This llama.cpp build has no RPC backend (the hosts said so): tests that need one skip."""


class LoopbackHosts:
    def __init__(self, count: int, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.ports: list[int] = []
        while len(self.ports) < count:
            port = free_port()
            if port not in self.ports:
                self.ports.append(port)
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * count
        try:
            for index in range(count):
                self.revive(index)
        except BaseException:
            self.stop()
            raise

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def log(self, index: int) -> Path:
        return self.log_dir / f"rpc-host-{index}.log"

    def revive(self, index: int) -> str:
        """Start host ``index`` (again) on its port and wait until it accepts connections."""
        if self.alive(index):
            return self.endpoints[index]
        port = self.ports[index]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log(index).open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "inference.rpc_host", "--port", str(port), "--device", "CPU", "--threads", "1"],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "GGML_NO_BACKTRACE": "1"})
        self._processes[index] = process
        deadline = time.monotonic() + READY_TIMEOUT
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                self.kill(index)
                tail = self.log(index).read_text(errors="replace")[-2000:]
                if NO_RPC in tail:
                    raise RpcUnavailable(NO_RPC)
                raise RuntimeError(f"the loopback RPC host on port {port} did not start:\n{tail}")
            time.sleep(0.05)
        return self.endpoints[index]

    def alive(self, index: int) -> bool:
        process = self._processes[index]
        return process is not None and process.poll() is None

    def kill(self, index: int) -> None:
        """SIGKILL host ``index`` and wait for it: its clients see the connection drop."""
        process = self._processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        for process in self._processes:
            if process is not None and process.poll() is None:
                process.terminate()
        for index, process in enumerate(self._processes):
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
                self.kill(index)

    def __enter__(self) -> LoopbackHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
