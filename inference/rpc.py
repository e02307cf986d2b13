"""llama.cpp's RPC backend: other machines' devices used here, this machine's served to them.

A *host* serves its devices with ``ggml_backend_rpc_start_server``; a client adds it with
``ggml_backend_rpc_add_server`` and registers the result, and from then on llama.cpp sees its
devices as ``RPC0``, ``RPC1``, ... (ids: ``ggml_backend``). Enclave uses that engine; it does
not speak the protocol itself beyond the opening handshake.

Inside llama.cpp a host that cannot be reached, or that answers with another protocol
version, is a ``GGML_ABORT``: the process dies. So ``add_host`` first connects from Python
with a time-out and says why a host cannot be used (refused, timed out, no such name, busy,
another version) before llama.cpp ever tries. A host serves one connection at a time: while a
process has buffers there (a model loaded), another one's handshake waits, and is told so.

Only the worker and child processes call the native parts (``add_host``, ``serve``,
``rpc_available``); the parsing and the checks are plain Python, usable anywhere.
"""

from __future__ import annotations

import ctypes
import ipaddress
import re
import socket
import struct
import time
from collections.abc import Sequence

from inference import ggml_backend
from inference.errors import EnclaveError
from inference.ggml_backend import BackendDevice

DEFAULT_PORT = 50052  # llama.cpp's rpc-server's default
CONNECT_TIMEOUT = 3.0  # seconds
PROTOCOL_MAJOR = 7  # RPC_PROTO_MAJOR_VERSION in ggml-rpc.h of the llama.cpp Enclave is built with
_HELLO = 14  # RPC_CMD_HELLO, fixed across protocol versions
_CAPS_SIZE = 24  # RPC_CONN_CAPS_SIZE: all zero, so no transport upgrade is negotiated
_NOT_RUNNING = "is `enclave host` running there?"
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]\s]+))(?::(?P<port>\d+))?$")

_added: dict[str, int] = {}  # endpoint -> its registry, in this process (add_server once per endpoint)


class HostUnreachable(EnclaveError):
    """An RPC host that cannot be used from here; the message says why."""


def parse_endpoint(text: str) -> str:
    """``host:port`` from what a user typed: ``10.0.0.5`` → ``10.0.0.5:50052``; ``[::1]:9000``
    and host names are kept as given. Raises ``EnclaveError`` with one line when it is not one."""
    match = _HOST_PORT.match(text.strip())
    if match is None:
        raise EnclaveError(f"{text!r} is not a host address: give HOST or HOST:PORT, e.g. 10.0.0.5:{DEFAULT_PORT}.")
    host = match["v6"] or match["host"]
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise EnclaveError(f"{text!r} is not a host address: [{host}] is not an IPv6 address.") from None
    port = int(match["port"]) if match["port"] is not None else DEFAULT_PORT
    if not 0 < port < 65536:
        raise EnclaveError(f"{text!r} is not a host address: the port must be between 1 and 65535.")
    return f"[{host}]:{port}" if match["v6"] is not None else f"{host}:{port}"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) of a parsed endpoint; an IPv6 host without its brackets."""
    host, _, port = parse_endpoint(endpoint).rpartition(":")
    return host.strip("[]"), int(port)


def check_reachable(endpoint: str, timeout: float = CONNECT_TIMEOUT) -> float:
    """Seconds a TCP connection to ``endpoint`` took to open. Raises ``HostUnreachable`` with
    the reason (refused, timed out, no such host) when it does not open."""
    host, port = split_endpoint(endpoint)
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return time.monotonic() - started
    except OSError as exc:
        raise HostUnreachable(f"Cannot reach the host {endpoint}: {_reason(exc, timeout)}; {_NOT_RUNNING}") from None


def _reason(exc: OSError, timeout: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return "no such host"
    return exc.strerror or str(exc)


def handshake(endpoint: str, timeout: float = CONNECT_TIMEOUT) -> tuple[int, int, int]:
    """The RPC protocol version (major, minor, patch) the host at ``endpoint`` speaks, asked
    with the protocol's opening HELLO, as llama.cpp does. A host serves one client at a time:
    one busy with another Enclave does not answer, and that is said rather than waited on."""
    host, port = split_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack("<BQ", _HELLO, _CAPS_SIZE) + bytes(_CAPS_SIZE))
            size = struct.unpack("<Q", _receive(sock, 8))[0]
            answer = _receive(sock, size) if 4 <= size <= 1024 else b""
    except TimeoutError:
        raise HostUnreachable(f"The host {endpoint} accepted the connection but did not answer within {timeout:g} s: "
                              "it serves one Enclave at a time and is probably busy with another one.") from None
    except OSError as exc:
        raise HostUnreachable(f"Cannot reach the host {endpoint}: {_reason(exc, timeout)}; {_NOT_RUNNING}") from None
    if len(answer) < 3:
        raise HostUnreachable(f"{endpoint} does not answer as a llama.cpp RPC host; {_NOT_RUNNING}")
    return answer[0], answer[1], answer[2]


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the host closed the connection")
        data += chunk
    return data


def check_host(endpoint: str, timeout: float = CONNECT_TIMEOUT) -> float:
    """``check_reachable``, then the handshake: the host answers and speaks this build's protocol
    (anything else would abort llama.cpp). Returns the connection's opening time in seconds."""
    seconds = check_reachable(endpoint, timeout)
    major, minor, patch = handshake(endpoint, timeout)
    if major != PROTOCOL_MAJOR:
        raise HostUnreachable(f"The host {endpoint} speaks llama.cpp RPC protocol {major}.{minor}.{patch}; this "
                              f"Enclave speaks {PROTOCOL_MAJOR}.x. Run the same Enclave version on both machines.")
    return seconds


def rpc_available() -> bool:
    """Whether this llama.cpp build carries the RPC backend (``make`` builds it with -DGGML_RPC=on)."""
    return ggml_backend.rpc_function("ggml_backend_rpc_add_server") is not None


NO_RPC = ("This Enclave was built without llama.cpp's RPC backend, so it cannot use or serve hosts. Rebuild it with "
          '`make` (which builds llama-cpp-python with CMAKE_ARGS="-DGGML_RPC=on").')


def require_rpc() -> None:
    """Raise ``EnclaveError`` (``NO_RPC``) when this build has no RPC backend."""
    _require("ggml_backend_rpc_start_server")
    _require("ggml_backend_rpc_add_server")


def _require(symbol: str) -> int:
    address = ggml_backend.rpc_function(symbol)
    if address is None:
        raise EnclaveError(NO_RPC)
    return address


def add_host(endpoint: str) -> list[BackendDevice]:
    """Make the devices of the host at ``endpoint`` llama.cpp devices in this process (registered
    once per endpoint) and return them. Checked from Python first, every time: an unusable
    host raises ``HostUnreachable`` instead of aborting the process."""
    endpoint = parse_endpoint(endpoint)
    _require_ipv4_or_name(endpoint, "connects to")
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(_require("ggml_backend_rpc_add_server"))
    if endpoint in _added:
        check_reachable(endpoint)  # it may have gone since: a refused connection, not an abort at the next call
    else:
        check_host(endpoint)
        reg = add_server(endpoint.encode())
        if not reg:
            raise EnclaveError(f"The host {endpoint} serves no devices.")
        ggml_backend.register_backend(reg)
        _added[endpoint] = reg
    return [device for device in ggml_backend.list_devices() if device.host == endpoint]


def _require_ipv4_or_name(endpoint: str, what: str) -> None:
    if endpoint.startswith("["):
        raise EnclaveError(f"llama.cpp's RPC backend {what} IPv4 only; {endpoint} is an IPv6 address. Use the "
                           "machine's IPv4 address or its name.")


def default_device_ids() -> list[str]:
    """What a host serves when not told: this machine's GPUs and accelerators, else its CPU
    (llama.cpp's rpc-server chooses the same way)."""
    local = [d for d in ggml_backend.list_devices() if d.host is None]
    return [d.id for d in local if d.type != "cpu"] or [d.id for d in local if d.type == "cpu"][:1]


def serving_devices(device_ids: Sequence[str]) -> list[BackendDevice]:
    """The devices a host would serve for ``device_ids`` (none: ``default_device_ids``), in that
    order, each once. An id this machine does not have raises ``EnclaveError`` naming the ones
    it has; a remote (RPC) device cannot be served again."""
    wanted = list(device_ids) or default_device_ids()
    devices = ggml_backend.list_devices()
    chosen: list[BackendDevice] = []
    for device_id in wanted:
        device = next((d for d in devices if device_id.lower() in (d.id.lower(), d.name.lower())), None)
        if device is None:
            raise ggml_backend.UnknownDevice(device_id, [d.id for d in devices])
        if device.host is not None:
            raise EnclaveError(f"{device.id} is another machine's device; a host serves only its own.")
        if device not in chosen:
            chosen.append(device)
    return chosen


def serve(endpoint: str, device_ids: Sequence[str], n_threads: int, cache_dir: str | None = None) -> None:
    """Serve these devices of this machine on ``endpoint`` (``ADDR:PORT``, ADDR an IPv4 address)
    until the process ends: llama.cpp's server loop never returns, and prints to stdout. When it
    does return, it could not start (the port taken, say): that raises ``EnclaveError``."""
    endpoint = parse_endpoint(endpoint)
    address, _ = split_endpoint(endpoint)
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise EnclaveError(f"llama.cpp's RPC server binds to an IPv4 address, not {address!r}.") from None
    start_server = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                    ctypes.POINTER(ctypes.c_void_p))(_require("ggml_backend_rpc_start_server"))
    devices = serving_devices(device_ids)
    handles = (ctypes.c_void_p * len(devices))(*(ggml_backend.device_handle(d.id) for d in devices))
    start_server(endpoint.encode(), cache_dir.encode() if cache_dir else None, max(1, n_threads), len(devices),
                 handles)
    raise EnclaveError(f"llama.cpp's RPC server could not serve on {endpoint} (is the port in use, or the address "
                       "not this machine's?).")
