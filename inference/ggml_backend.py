"""The few ggml backend-registry calls llama-cpp-python does not wrap, through its ctypes
layer: list the devices llama.cpp sees and find a device's buffer type by id or name.

A device's *name* (``CPU``, ``CUDA0``, ``RPC0``) is what llama.cpp calls it in this process;
RPC devices are numbered in the order their hosts were added, so ``RPC0`` can be another
machine in another process. A device's *id* is stable: its name, except for an RPC device,
``RPC{k}[host:port]`` with k its index on that host, which is also the name of its buffer
type in llama.cpp's load log ("RPC0[127.0.0.1:50052] model buffer size = ...").

Everything native that Enclave adds beyond llama-cpp-python's own bindings lives here
(and in ``overrides``), so there is one place to check after an upgrade.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Literal

from inference.backends import init_backends
from inference.errors import EnclaveError

DeviceType = Literal["cpu", "gpu", "igpu", "accel", "meta"]
_DEVICE_TYPES: tuple[DeviceType, ...] = ("cpu", "gpu", "igpu", "accel", "meta")
RPC_REG_NAME = "RPC"  # the backend registry every RPC device belongs to, whichever host it is on


@dataclass(frozen=True)
class BackendDevice:
    index: int
    name: str
    description: str
    type: DeviceType
    free_bytes: int
    total_bytes: int
    id: str = ""  # stable across processes (see the module's docstring); list_devices always fills it
    host: str | None = None  # "host:port" of an RPC device's host; None for this machine's devices


@functools.cache
def _lib() -> ctypes.CDLL:
    from llama_cpp._ggml import libggml

    init_backends()  # registers the backends (loads them, in a backend-DL build)
    p = ctypes.c_void_p
    signatures: dict[str, tuple[list[type], type | None]] = {
        "ggml_backend_dev_count": ([], ctypes.c_size_t),
        "ggml_backend_dev_get": ([ctypes.c_size_t], p),
        "ggml_backend_dev_name": ([p], ctypes.c_char_p),
        "ggml_backend_dev_description": ([p], ctypes.c_char_p),
        "ggml_backend_dev_type": ([p], ctypes.c_int),
        "ggml_backend_dev_memory": ([p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)], None),
        "ggml_backend_dev_buffer_type": ([p], p),
        "ggml_backend_buft_name": ([p], ctypes.c_char_p),
        "ggml_backend_reg_count": ([], ctypes.c_size_t),
        "ggml_backend_reg_get": ([ctypes.c_size_t], p),
        "ggml_backend_reg_name": ([p], ctypes.c_char_p),
        "ggml_backend_reg_by_name": ([ctypes.c_char_p], p),
        "ggml_backend_reg_get_proc_address": ([p, ctypes.c_char_p], p),
        "ggml_backend_register": ([p], None),
        "ggml_backend_dev_backend_reg": ([p], p),
    }
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(libggml, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return libggml


def backend_names() -> list[str]:
    """The backends this llama.cpp build carries: "CPU", "CUDA", "Metal", "Vulkan", ..."""
    lib = _lib()
    registries = (lib.ggml_backend_reg_get(i) for i in range(lib.ggml_backend_reg_count()))
    return [lib.ggml_backend_reg_name(reg).decode() for reg in registries]


@dataclass(frozen=True)
class _Entry:
    """A device as the registry lists it, before its memory is asked (a round trip for RPC)."""

    index: int
    handle: int
    name: str
    description: str
    id: str
    host: str | None


def _entries() -> list[_Entry]:
    lib = _lib()
    entries: list[_Entry] = []
    per_host: dict[str, int] = {}  # devices seen so far on each RPC host: the next one's k
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        name = lib.ggml_backend_dev_name(dev).decode()
        description = (lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace")
        host = description if _is_rpc(lib, dev) else None  # an RPC device's description is its endpoint
        device_id = name
        if host is not None:
            k = per_host.get(host, 0)
            per_host[host] = k + 1
            device_id = f"RPC{k}[{host}]"
        entries.append(_Entry(i, dev, name, description, device_id, host))
    return entries


def _is_rpc(lib: ctypes.CDLL, dev: int) -> bool:
    reg = lib.ggml_backend_dev_backend_reg(dev)
    return bool(reg) and (lib.ggml_backend_reg_name(reg) or b"").decode() == RPC_REG_NAME


def list_devices() -> list[BackendDevice]:
    """Every device llama.cpp sees, in its order, with its memory and its stable id."""
    lib = _lib()
    devices = []
    for entry in _entries():
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(entry.handle, ctypes.byref(free), ctypes.byref(total))
        kind = lib.ggml_backend_dev_type(entry.handle)
        devices.append(
            BackendDevice(
                index=entry.index,
                name=entry.name,
                description=entry.description,
                type=_DEVICE_TYPES[kind] if 0 <= kind < len(_DEVICE_TYPES) else "accel",
                free_bytes=free.value,
                total_bytes=total.value,
                id=entry.id,
                host=entry.host,
            )
        )
    return devices


def device_handle(device: str) -> int:
    """The native ``ggml_backend_dev_t`` of the device with this id or name (case-insensitive).
    Raises ``UnknownDevice`` naming the devices there are."""
    entries = _entries()
    wanted = device.lower()
    for entry in entries:
        if wanted in (entry.id.lower(), entry.name.lower()):
            return entry.handle
    raise UnknownDevice(device, [entry.id for entry in entries])


def buffer_type(device: str) -> int:
    """The default buffer type (a native pointer) of the device with this id or name."""
    return _lib().ggml_backend_dev_buffer_type(device_handle(device))


def rpc_function(symbol: str) -> int | None:
    """The address of one of the RPC backend's functions (``ggml_backend_rpc_add_server``,
    ``ggml_backend_rpc_start_server``), asked of its registry as llama.cpp's own tools do, so
    it works whether the backend is linked in or loaded as a library; None without RPC."""
    lib = _lib()
    reg = lib.ggml_backend_reg_by_name(RPC_REG_NAME.encode())
    if not reg:
        return None
    return lib.ggml_backend_reg_get_proc_address(reg, symbol.encode()) or None


def register_backend(reg: int) -> None:
    """Add a backend registry (an RPC host's) to the devices llama.cpp uses."""
    _lib().ggml_backend_register(reg)


class UnknownDevice(EnclaveError, ValueError):
    """A device id or name llama.cpp does not know here."""

    def __init__(self, device: str, known: list[str]) -> None:
        names = ", ".join(known) or "none"
        super().__init__(f"llama.cpp has no device {device!r} here (it has: {names}).")

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return EnclaveError, (str(self),)  # a probe child's error, rebuilt in the parent
