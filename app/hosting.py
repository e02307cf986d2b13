"""``enclave host``, headless: serve this machine's devices to other Enclaves through
llama.cpp's RPC server, in a child process (``inference.rpc_host``), within the policy.

``start_host`` checks the policy (``hosting``, ``hosting_bind``: refusals audited), that the
port is free, starts the child, waits until it serves (its devices and memory come from the
child: this process never loads llama.cpp) and records ``host.start``; ``HostSession.wait``
blocks while it serves and ``HostSession.stop`` ends it and records ``host.stop``.
"""

from __future__ import annotations

import errno
import ipaddress
import multiprocessing
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from app.enforcement import Enforcer
from app.policy import is_loopback, shown_network
from inference.devices import format_size
from inference.errors import EnclaveError
from inference.ggml_backend import BackendDevice
from inference.rpc import DEFAULT_PORT, HostUnreachable, check_reachable
from inference.rpc_host import HostFailed, Serving, default_threads, host_child
from inference.worker import crash_cause, how_it_ended, log_lines_since

LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 60.0  # seconds for the child to list its devices and listen (a GPU driver's first start is slow)
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class HostRequest:
    bind: str = LOOPBACK  # an IPv4 address of this machine, or 0.0.0.0 for every interface
    port: int = DEFAULT_PORT
    devices: tuple[str, ...] = ()  # device ids; none: the GPUs, else the CPU
    threads: int | None = None  # for the CPU device; None: half the logical CPUs

    @property
    def endpoint(self) -> str:
        return f"{self.bind}:{self.port}"


def check_bind_address(address: str) -> str:
    """``address`` when llama.cpp's server can listen on it (an IPv4 address), else ``EnclaveError``."""
    try:
        return str(ipaddress.IPv4Address(address.strip()))
    except ValueError:
        raise EnclaveError(f"--bind needs an IPv4 address of this machine (e.g. 10.0.0.5, or 0.0.0.0 for every "
                           f"interface), not {address!r}: llama.cpp's RPC server listens on IPv4 only.") from None


def exposure_warning(bind: str, port: int) -> str | None:
    """What a user must know before serving beyond this machine; None on loopback."""
    if is_loopback(bind):
        return None
    where = f"this machine on port {port} (every interface)" if bind == "0.0.0.0" else f"{bind}:{port}"
    return (f"Warning: llama.cpp's RPC protocol has no authentication and no encryption. Anyone who can reach "
            f"{where} can use this machine's devices and see the model's weights and activations. Use it only "
            "on a network you trust; an administrator can forbid hosting, or limit the addresses it may use, "
            "with the policy's hosting and hosting_bind rules.")


def check_policy(enforcer: Enforcer, request: HostRequest) -> None:
    """Refuse (audited, naming the rule) what the policy does not allow."""
    policy = enforcer.policy
    if not policy.hosting:
        enforcer.refuse("hosting", "Serving this machine's devices to other machines is turned off by your "
                        "organisation (rule hosting = false)", action="host", endpoint=request.endpoint)
    if not policy.hosting_allows(request.bind):
        allowed = ", ".join(shown_network(network) for network in policy.hosting_bind or ())
        enforcer.refuse("hosting_bind", f"Your organisation does not allow hosting on {request.bind} (rule "
                        f"hosting_bind allows only {allowed}); choose one of those with --bind", action="host",
                        endpoint=request.endpoint)


def check_port_free(bind: str, port: int) -> None:
    """Raise ``EnclaveError`` when ``bind:port`` cannot be listened on (bound as llama.cpp's RPC
    server and uvicorn will): said before anything starts, in one line."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as llama.cpp's server does
        try:
            sock.bind((bind, port))
            sock.listen(1)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)):
                raise EnclaveError(f"port {port} on {bind} is already in use (by another program, or another "
                                   "Enclave); choose another with --port.") from None
            raise EnclaveError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}.") from None


def check_request(request: HostRequest, enforcer: Enforcer) -> None:
    """Everything that can refuse a host before it starts: the address, the policy, the port."""
    check_bind_address(request.bind)
    check_policy(enforcer, request)
    check_port_free(request.bind, request.port)


class HostSession:
    """A running host: its endpoint, the devices it serves, and its child process."""

    def __init__(self, endpoint: str, devices: tuple[BackendDevice, ...], process: BaseProcess, conn: Connection,
                 enforcer: Enforcer, log_path: Path, log_offset: int) -> None:
        self.endpoint = endpoint
        self.devices = devices
        self._process = process
        self._conn = conn
        self._enforcer = enforcer
        self._log = (log_path, log_offset)
        self._stopped = False

    def wait(self) -> None:
        """Block while the host serves. It serves until stopped, so a return means it ended:
        that raises ``EnclaveError`` with why."""
        self._process.join()
        failure = _failure(self._conn, self._process, *self._log)
        self.stop(reason=str(failure))
        raise failure

    def stop(self, reason: str = "stopped") -> None:
        """End the child (it holds no data of ours: terminating it is clean) and audit it, once."""
        if self._stopped:
            return
        self._stopped = True
        _end(self._process)
        self._conn.close()
        self._enforcer.record("host.stop", endpoint=self.endpoint, reason=reason)


def start_host(request: HostRequest, enforcer: Enforcer, log_path: Path,
               ready_timeout: float = READY_TIMEOUT) -> HostSession:
    """Check, start the child, and return once it accepts connections on ``request.endpoint``."""
    check_request(request, enforcer)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    offset = log_path.stat().st_size
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    threads = request.threads or default_threads()
    process = ctx.Process(target=host_child, name="enclave-host", daemon=True,
                          args=(child_conn, request.endpoint, list(request.devices), threads, str(log_path)))
    try:
        process.start()
    finally:
        child_conn.close()  # so that recv() sees EOF when the child dies
    try:
        devices = _wait_until_serving(request, parent_conn, process, log_path, offset, ready_timeout)
    except BaseException:
        _end(process)
        parent_conn.close()
        raise
    enforcer.record("host.start", endpoint=request.endpoint, devices=[device.id for device in devices])
    return HostSession(request.endpoint, devices, process, parent_conn, enforcer, log_path, offset)


def _wait_until_serving(request: HostRequest, conn: Connection, process: BaseProcess, log_path: Path, offset: int,
                        timeout: float) -> tuple[BackendDevice, ...]:
    deadline = time.monotonic() + timeout
    serving: Serving | None = None
    target = f"{LOOPBACK if request.bind == '0.0.0.0' else request.bind}:{request.port}"
    while time.monotonic() < deadline:
        if serving is None:
            if not conn.poll(0.1):
                if not process.is_alive():
                    raise _failure(conn, process, log_path, offset)
                continue
            message = _receive(conn)
            if not isinstance(message, Serving):
                raise _failure(conn, process, log_path, offset, message)
            serving = message
        elif conn.poll(0) or not process.is_alive():  # the server stopped at once: the child says why
            raise _failure(conn, process, log_path, offset)
        try:
            check_reachable(target, timeout=0.5)
            return serving.devices
        except HostUnreachable:
            time.sleep(0.1)
    raise EnclaveError(f"The host process did not start serving on {request.endpoint} within {timeout:g} s; "
                       f"llama.cpp's output is in {log_path}.")


def _receive(conn: Connection) -> object:
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


def _failure(conn: Connection, process: BaseProcess, log_path: Path, offset: int,
             message: object = None) -> EnclaveError:
    """Why the child stopped serving: what it said (``HostFailed``), else how it ended and
    the line of llama.cpp's output that explains it."""
    if message is None and conn.poll(0):
        message = _receive(conn)
    if isinstance(message, HostFailed):
        return EnclaveError(message.message)
    process.join(timeout=STOP_TIMEOUT)
    lines = log_lines_since(log_path, offset)
    said = crash_cause(lines) or (lines[-1].strip() if lines else "")
    text = f"The host process {how_it_ended(process.exitcode)}."
    if said:
        text += f" It said: {said.rstrip('.')}."
    return EnclaveError(f"{text} Its output is in {log_path}.")


def _end(process: BaseProcess) -> None:
    if process.is_alive():
        process.terminate()
        process.join(timeout=STOP_TIMEOUT)
    if process.is_alive():
        process.kill()
        process.join()


def serving_lines(session: HostSession) -> list[str]:
    """What is served and how to use it: 'Serving CPU (22.9 GiB free) on 127.0.0.1:50052.', the
    command that adds it elsewhere, 'Ctrl-C stops.'"""
    devices = " and ".join(f"{device.id} ({format_size(device.free_bytes)} free)" for device in session.devices)
    bind, port = session.endpoint.rsplit(":", 1)
    if is_loopback(bind):
        how = [f"Add it in another Enclave on this machine with: enclave hosts add {session.endpoint}",
               f"(it listens on {bind} only; --bind ADDRESS serves other machines)."]
    elif bind == "0.0.0.0":
        how = [f"Add it on another machine with: enclave hosts add THIS-MACHINE'S-ADDRESS:{port}"]
    else:
        how = [f"Add it on another machine with: enclave hosts add {session.endpoint}"]
    return [f"Serving {devices} on {session.endpoint}.", *how, "Ctrl-C stops."]
