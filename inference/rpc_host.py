"""The process that serves this machine's devices to other Enclaves (``enclave host``).

llama.cpp's RPC server blocks forever in native code and prints to stdout, so it runs in a
child of its own (spawned, like the worker and the probe): its output goes to a log file,
Ctrl-C is the parent's to handle, and it ends with its parent. It tells the parent, over a
pipe, which devices it serves (``Serving``) before the server starts, or why it cannot
(``HostFailed``: the message for the user), also when the server stops at once.

``python -m inference.rpc_host --port N [--device CPU] [--threads N]`` serves in the
foreground, without the app: the tests start loopback hosts with it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from inference.errors import EnclaveError
from inference.ggml_backend import BackendDevice
from inference.orphans import exit_with_parent
from inference.rpc import DEFAULT_PORT, require_rpc, serve, serving_devices
from inference.worker import redirect_output


@dataclass(frozen=True)
class Serving:
    """The host is about to serve these devices on ``endpoint``."""

    endpoint: str
    devices: tuple[BackendDevice, ...]


@dataclass(frozen=True)
class HostFailed:
    """The host cannot serve; ``message`` says why, for the user."""

    message: str


def host_child(conn: Connection, endpoint: str, device_ids: Sequence[str], n_threads: int, log_path: str,
               cache_dir: str | None = None) -> None:
    """The child's whole life: say what it serves, then serve until the parent ends it."""
    redirect_output(log_path)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ["GGML_NO_BACKTRACE"] = "1"
    exit_with_parent()
    try:
        require_rpc()
        devices = serving_devices(device_ids)
        conn.send(Serving(endpoint, tuple(devices)))
        serve(endpoint, [device.id for device in devices], n_threads, cache_dir)
    except EnclaveError as exc:
        print(f"enclave host: {exc}", file=sys.stderr)
        conn.send(HostFailed(str(exc)))
    finally:
        conn.close()


def default_threads() -> int:
    """Half the logical CPUs, as llama.cpp's rpc-server uses for the CPU device."""
    return max(1, (os.cpu_count() or 2) // 2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.rpc_host",
                                     description="Serve this machine's devices over llama.cpp's RPC protocol.")
    parser.add_argument("--bind", default="127.0.0.1", help="IPv4 address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--device", action="append", default=[], help="device id to serve (repeatable)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="threads for the CPU device")
    parser.add_argument("--cache-dir", default=None, help="folder for llama.cpp's tensor cache")
    args = parser.parse_args(argv)
    try:
        serve(f"{args.bind}:{args.port}", args.device, args.threads, args.cache_dir)
    except EnclaveError as exc:
        print(f"rpc_host: error: {exc}", file=sys.stderr)
        return 2
    return 0  # pragma: no cover  (serve returns only by raising)


if __name__ == "__main__":
    sys.exit(main())
