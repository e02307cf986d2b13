"""The few ggml backend-registry calls llama-cpp-python does not wrap, through its ctypes
layer: list the devices llama.cpp sees and find a device's buffer type by name.

Everything native that Enclave adds beyond llama-cpp-python's own bindings lives here
(and in ``overrides``), so there is one place to check after an upgrade.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Literal

DeviceType = Literal["cpu", "gpu", "igpu", "accel", "meta"]
_DEVICE_TYPES: tuple[DeviceType, ...] = ("cpu", "gpu", "igpu", "accel", "meta")


@dataclass(frozen=True)
class BackendDevice:
    index: int
    name: str
    description: str
    type: DeviceType
    free_bytes: int
    total_bytes: int


@functools.cache
def _lib() -> ctypes.CDLL:
    import llama_cpp
    from llama_cpp._ggml import libggml

    llama_cpp.llama_backend_init()  # registers the backends
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


def list_devices() -> list[BackendDevice]:
    lib = _lib()
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        kind = lib.ggml_backend_dev_type(dev)
        devices.append(
            BackendDevice(
                index=i,
                name=lib.ggml_backend_dev_name(dev).decode(),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                type=_DEVICE_TYPES[kind] if 0 <= kind < len(_DEVICE_TYPES) else "accel",
                free_bytes=free.value,
                total_bytes=total.value,
            )
        )
    return devices


def buffer_type(device_name: str) -> int:
    """The default buffer type (a native pointer) of the device called ``device_name``."""
    lib = _lib()
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_name(dev).decode().lower() == device_name.lower():
            return lib.ggml_backend_dev_buffer_type(dev)
    known = ", ".join(d.name for d in list_devices())
    raise ValueError(f"llama.cpp has no device called {device_name!r} (it has: {known})")
