"""How fast a ggml device reads weights and computes, and how fast the link to an RPC host
is: a short probe through ggml itself, so the speed Enclave predicts before loading a model
comes from the kernels llama.cpp will run.

Generating a token multiplies every weight matrix by one vector: the weights stream through
once, so generation is bound by ``read_bytes_per_s`` of ``ggml_mul_mat(W, x)``. Reading a
prompt multiplies them by a batch of n_ubatch columns at once: bound by arithmetic,
``flops``. Each graph also costs a fixed ``step_seconds`` (thread wake-up, or a network
round trip for an RPC device), measured apart and taken out of both rates.

Weights are placed where llama.cpp places them: in the device's first extra buffer type that
supports the product (the CPU's repacked layouts for q4_K and others), else its own buffer.

Measure with the threads llama.cpp will use, on a machine otherwise idle: while other work
runs, a thread on every core makes graphs wait for scheduler ticks (milliseconds), and the
rates measure the load, not the device. Each timing keeps its fastest run to ride out short
bursts; a busy minute it cannot.

Run these only in a child process: ggml's RPC client aborts the whole process when a host
stops answering mid-call.
"""

from __future__ import annotations

import ctypes
import functools
import statistics
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from inference import ggml_backend, rpc
from inference.errors import EnclaveError

DEFAULT_TYPES = ("q4_K", "q6_K", "q8_0", "f16")
WEIGHT_BYTES = 96 * 2**20  # the read-rate matrix: past the last-level cache, yet quick to fill
LINK_BYTES = 32 * 2**20
UBATCH = 512  # llama.cpp's default n_ubatch: the columns of a prompt-processing product
K = 4096  # columns of every weight matrix (a typical hidden size)

# ggml.h's enum ggml_type (checked against ggml_type_name at run time).
_TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
             "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13, "q6_K": 14, "bf16": 30}
_F32, _I8 = 0, 24
_TILE_ROWS = 64  # rows quantized from random floats; the matrix repeats them
_COMPUTE_ROWS = 512  # rows of the flops matrix: 2·K·512·512 ≈ 2.1 GFLOP per product
_RUNS = 3
_MIN_TIMING_S = 0.25  # per graph: spans enough scheduler ticks of other processes to find a quiet one
_MAX_RUNS = 200
_STEP_RUNS = 15
_LATENCY_RUNS = 20
_LINK_RUNS = 3


@dataclass(frozen=True)
class DeviceSpeed:
    """One device's measured speeds. ``n_threads`` is what the CPU backend was given (other
    devices have no such setting)."""

    device: str
    read_bytes_per_s: dict[str, float] = field(hash=False)
    flops: dict[str, float] = field(hash=False)
    step_seconds: float
    n_threads: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceSpeed:
        return cls(
            device=str(data["device"]),
            read_bytes_per_s={str(k): float(v) for k, v in data["read_bytes_per_s"].items()},
            flops={str(k): float(v) for k, v in data["flops"].items()},
            step_seconds=float(data["step_seconds"]),
            n_threads=int(data["n_threads"]),
        )


@dataclass(frozen=True)
class LinkSpeed:
    """The link to one RPC host: bulk transfer rate and the round trip of a tiny request."""

    endpoint: str
    bytes_per_s: float
    latency_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinkSpeed:
        return cls(str(data["endpoint"]), float(data["bytes_per_s"]), float(data["latency_s"]))


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


_P = ctypes.c_void_p
_SIZE = ctypes.c_size_t
_SIGNATURES: dict[str, tuple[list[Any], Any]] = {
    "ggml_init": ([_InitParams], _P),
    "ggml_free": ([_P], None),
    "ggml_tensor_overhead": ([], _SIZE),
    "ggml_graph_overhead": ([], _SIZE),
    "ggml_new_tensor_2d": ([_P, ctypes.c_int, ctypes.c_int64, ctypes.c_int64], _P),
    "ggml_mul_mat": ([_P, _P, _P], _P),
    "ggml_add": ([_P, _P, _P], _P),
    "ggml_new_graph": ([_P], _P),
    "ggml_build_forward_expand": ([_P, _P], None),
    "ggml_nbytes": ([_P], _SIZE),
    "ggml_row_size": ([ctypes.c_int, ctypes.c_int64], _SIZE),
    "ggml_type_name": ([ctypes.c_int], ctypes.c_char_p),
    "ggml_quantize_requires_imatrix": ([ctypes.c_int], ctypes.c_bool),
    "ggml_quantize_chunk": ([ctypes.c_int, _P, _P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, _P], _SIZE),
    "ggml_backend_dev_get": ([_SIZE], _P),
    "ggml_backend_dev_init": ([_P, ctypes.c_char_p], _P),
    "ggml_backend_dev_backend_reg": ([_P], _P),
    "ggml_backend_dev_supports_op": ([_P, _P], ctypes.c_bool),
    "ggml_backend_reg_get_proc_address": ([_P, ctypes.c_char_p], _P),
    "ggml_backend_free": ([_P], None),
    "ggml_backend_alloc_ctx_tensors": ([_P, _P], _P),
    "ggml_backend_alloc_ctx_tensors_from_buft": ([_P, _P], _P),
    "ggml_backend_buffer_free": ([_P], None),
    "ggml_backend_tensor_set": ([_P, _P, _SIZE, _SIZE], None),
    "ggml_backend_tensor_get": ([_P, _P, _SIZE, _SIZE], None),
    "ggml_backend_graph_compute": ([_P, _P], ctypes.c_int),
}
_RPC_SIGNATURES: dict[str, tuple[list[Any], Any]] = {
    "ggml_backend_rpc_get_device_memory": (
        [ctypes.c_char_p, ctypes.c_uint32, ctypes.POINTER(_SIZE), ctypes.POINTER(_SIZE)], None),
    "ggml_backend_rpc_buffer_type": ([ctypes.c_char_p, ctypes.c_uint32], _P),
}
_SetThreads = ctypes.CFUNCTYPE(None, _P, ctypes.c_int)
_ExtraBufts = ctypes.CFUNCTYPE(ctypes.POINTER(_P), _P)


def _declare(signatures: dict[str, tuple[list[Any], Any]], backend: str | None = None) -> ctypes.CDLL:
    """``signatures`` declared on libggml, or on ``backend``'s own library (in a backend-DL build
    its functions are not reachable through libggml)."""
    from llama_cpp._ggml import libggml

    from inference.backends import backend_library, init_backends, loading

    init_backends()  # never llama_backend_init alone: a backend-DL build would have no backends
    dynamic = backend is not None and loading() == "dynamic"  # linked in: through libggml, as llama.cpp does
    library = (backend_library(backend) if dynamic else None) or libggml
    missing = [name for name in signatures if not hasattr(library, name)]
    if missing:
        raise EnclaveError(
            f"This llama.cpp build lacks {', '.join(missing)}, which the speed probe needs; "
            "reinstall Enclave's llama-cpp-python."
        )
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(library, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return library


@functools.cache
def _lib() -> ctypes.CDLL:
    return _declare(_SIGNATURES)


@functools.cache
def _rpc_lib() -> ctypes.CDLL:
    _lib()
    return _declare(_RPC_SIGNATURES, "RPC")


def _type_id(name: str) -> int:
    lib = _lib()
    type_id = _TYPE_IDS.get(name)
    if type_id is None or (lib.ggml_type_name(type_id) or b"").decode() != name:
        raise ValueError(f"the speed probe does not know the weight type {name!r} (it knows {', '.join(_TYPE_IDS)})")
    if lib.ggml_quantize_requires_imatrix(type_id):
        raise ValueError(f"{name} needs an importance matrix to quantize; the speed probe cannot fill it")
    return type_id


def _context(stack: ExitStack, n_tensors: int, n_graphs: int = 0) -> int:
    """A ggml context holding only tensor and graph descriptions (the data go in buffers)."""
    lib = _lib()
    size = n_tensors * lib.ggml_tensor_overhead() + n_graphs * lib.ggml_graph_overhead()
    ctx = lib.ggml_init(_InitParams(size, None, True))
    if not ctx:
        raise EnclaveError("ggml could not create a context for the speed probe.")
    stack.callback(lib.ggml_free, ctx)
    return ctx


def _allocate(stack: ExitStack, ctx: int, *, backend: int | None = None, buft: int | None = None) -> int:
    lib = _lib()
    if buft is not None:
        buffer = lib.ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft)
    else:
        buffer = lib.ggml_backend_alloc_ctx_tensors(ctx, backend)
    if not buffer:
        raise EnclaveError("The device has not enough free memory for the speed probe's buffers.")
    stack.callback(lib.ggml_backend_buffer_free, buffer)
    return buffer


def _proc(dev: int, name: str) -> int | None:
    lib = _lib()
    reg = lib.ggml_backend_dev_backend_reg(dev)
    return lib.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None


def _set_threads(dev: int, backend: int, n_threads: int) -> None:
    address = _proc(dev, "ggml_backend_set_n_threads")
    if address:
        _SetThreads(address)(backend, n_threads)


def _extra_bufts(dev: int) -> list[int]:
    address = _proc(dev, "ggml_backend_dev_get_extra_bufts")
    if not address:
        return []
    array = _ExtraBufts(address)(dev)
    bufts: list[int] = []
    while array and array[len(bufts)]:
        bufts.append(array[len(bufts)])
    return bufts


def _weights_buft(dev: int, type_id: int) -> int | None:
    """The extra buffer type llama.cpp would keep this weight type in (the first one whose
    product the device supports), or None for the device's own."""
    lib = _lib()
    for buft in _extra_bufts(dev):
        with ExitStack() as stack:
            weights = _context(stack, 1)
            w = lib.ggml_new_tensor_2d(weights, type_id, K, _COMPUTE_ROWS)
            _allocate(stack, weights, buft=buft)
            io = _context(stack, 2)
            product = lib.ggml_mul_mat(io, w, lib.ggml_new_tensor_2d(io, _F32, K, 1))
            if lib.ggml_backend_dev_supports_op(dev, product):
                return buft
    return None


def _quantized_tile(type_id: int, rng: np.random.Generator) -> np.ndarray:
    """_TILE_ROWS rows of random floats in ``type_id``'s layout, so block scales are sane."""
    lib = _lib()
    floats = rng.standard_normal(_TILE_ROWS * K, dtype=np.float32)
    tile = np.empty(_TILE_ROWS * lib.ggml_row_size(type_id, K), dtype=np.uint8)
    lib.ggml_quantize_chunk(type_id, floats.ctypes.data, tile.ctypes.data, 0, _TILE_ROWS, K, None)
    return tile


def _set(tensor: int, data: np.ndarray) -> None:
    lib = _lib()
    size = lib.ggml_nbytes(tensor)
    buf = np.resize(data.view(np.uint8), size)  # repeats the data to fill the tensor
    lib.ggml_backend_tensor_set(tensor, buf.ctypes.data, 0, size)


def _graph(ctx: int, result: int) -> int:
    lib = _lib()
    graph = lib.ggml_new_graph(ctx)
    lib.ggml_build_forward_expand(graph, result)
    return graph


def _seconds(backend: int, graph: int, result: int, runs: int) -> float:
    """The fastest computation of ``graph`` among at least ``runs`` (after a warm-up) and
    at least _MIN_TIMING_S of them, each ended by reading 4 bytes of its ``result``: the read
    is what says the device has finished (an RPC device computes after the call returns;
    llama.cpp too waits on the logits it reads). The fastest, not the median: another
    process taking a core for a moment only ever slows a run (by a whole scheduler tick when
    every core runs one of ggml's threads), and the figure is cached as what the device can
    do."""
    lib = _lib()
    out = ctypes.c_float()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) <= runs or (time.perf_counter() - started < _MIN_TIMING_S and len(times) < _MAX_RUNS):
        start = time.perf_counter()
        status = lib.ggml_backend_graph_compute(backend, graph)
        lib.ggml_backend_tensor_get(result, ctypes.byref(out), 0, ctypes.sizeof(out))
        times.append(time.perf_counter() - start)
        if status != 0:
            raise EnclaveError(f"ggml failed to compute the speed probe's graph (status {status}).")
    return min(times[1:])


def _step_seconds(backend: int) -> float:
    """The fixed cost of one graph: a single addition of two floats."""
    lib = _lib()
    with ExitStack() as stack:
        ctx = _context(stack, 2, 1)
        a = lib.ggml_new_tensor_2d(ctx, _F32, 1, 1)
        total = lib.ggml_add(ctx, a, a)
        graph = _graph(ctx, total)
        _allocate(stack, ctx, backend=backend)
        _set(a, np.ones(1, dtype=np.float32))
        return _seconds(backend, graph, total, _STEP_RUNS)


def _rates(dev: int, backend: int, type_id: int, step: float, weight_bytes: int) -> tuple[float, float]:
    """(weight bytes read per second, flops) of ``type_id`` on the device."""
    lib = _lib()
    rng = np.random.default_rng(type_id)
    rows = max(_TILE_ROWS, weight_bytes // lib.ggml_row_size(type_id, K) // _TILE_ROWS * _TILE_ROWS)
    with ExitStack() as stack:
        weights = _context(stack, 2)
        w_read = lib.ggml_new_tensor_2d(weights, type_id, K, rows)
        w_compute = lib.ggml_new_tensor_2d(weights, type_id, K, _COMPUTE_ROWS)
        buft = _weights_buft(dev, type_id)
        _allocate(stack, weights, backend=backend, buft=buft)
        io = _context(stack, 4, 2)
        vector = lib.ggml_new_tensor_2d(io, _F32, K, 1)
        batch = lib.ggml_new_tensor_2d(io, _F32, K, UBATCH)
        read_product = lib.ggml_mul_mat(io, w_read, vector)
        compute_product = lib.ggml_mul_mat(io, w_compute, batch)
        read_graph, compute_graph = _graph(io, read_product), _graph(io, compute_product)
        _allocate(stack, io, backend=backend)
        tile = _quantized_tile(type_id, rng)
        _set(w_read, tile)
        _set(w_compute, tile)
        _set(vector, rng.standard_normal(K, dtype=np.float32))
        _set(batch, rng.standard_normal(K * UBATCH, dtype=np.float32))
        read_s = _seconds(backend, read_graph, read_product, _RUNS)
        compute_s = _seconds(backend, compute_graph, compute_product, _RUNS)
    # A step that is most of a run is noise; never let it make a rate absurd.
    read_rate = lib.ggml_row_size(type_id, K) * rows / max(read_s - step, read_s / 2)
    flops = 2 * K * _COMPUTE_ROWS * UBATCH / max(compute_s - step, compute_s / 2)
    return read_rate, flops


def measure_device(
    device: str, n_threads: int, types: Iterable[str] = DEFAULT_TYPES, *, weight_bytes: int = WEIGHT_BYTES
) -> DeviceSpeed:
    """Measure ``device`` (a name such as "CPU" or "RPC0", or an id "RPC0[host:port]") for each
    weight type in ``types``. ``weight_bytes`` sizes the read-rate matrix: keep it well past
    the device's caches (the default is) except in tests."""
    lib = _lib()
    type_ids = {name: _type_id(name) for name in types}
    dev = ggml_backend.device_handle(device)
    with ExitStack() as stack:
        backend = lib.ggml_backend_dev_init(dev, None)
        if not backend:
            raise EnclaveError(f"ggml could not start the device {device} to measure its speed.")
        stack.callback(lib.ggml_backend_free, backend)
        _set_threads(dev, backend, n_threads)
        step = _step_seconds(backend)
        rates = {name: _rates(dev, backend, type_id, step, weight_bytes) for name, type_id in type_ids.items()}
    return DeviceSpeed(
        device=device,
        read_bytes_per_s={name: read for name, (read, _) in rates.items()},
        flops={name: flops for name, (_, flops) in rates.items()},
        step_seconds=step,
        n_threads=n_threads,
    )


def measure_link(endpoint: str, *, transfer_bytes: int = LINK_BYTES) -> LinkSpeed:
    """The link to the RPC host at ``endpoint`` ("host:port"): latency is the median round
    trip of a free-memory query, bandwidth the median rate of writing ``transfer_bytes``
    into a buffer on the host's first device."""
    rpc.require_rpc()
    lib = _rpc_lib()
    rpc.check_reachable(endpoint)  # a sentence, not ggml's abort, when nothing answers
    name = endpoint.encode()
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)

    def round_trip() -> None:
        lib.ggml_backend_rpc_get_device_memory(name, 0, ctypes.byref(free), ctypes.byref(total))

    # the lower quartile: a round trip the other programs on either machine did not delay
    latency = statistics.quantiles([_timed(round_trip) for _ in range(_LATENCY_RUNS + 1)][1:], n=4)[0]
    with ExitStack() as stack:
        ctx = _context(stack, 1)
        tensor = lib.ggml_new_tensor_2d(ctx, _I8, transfer_bytes, 1)
        _allocate(stack, ctx, buft=lib.ggml_backend_rpc_buffer_type(name, 0))
        data = np.random.default_rng(0).integers(0, 256, transfer_bytes, dtype=np.uint8)

        def transfer() -> None:  # the round trip after it: the host has read every byte
            lib.ggml_backend_tensor_set(tensor, data.ctypes.data, 0, transfer_bytes)
            round_trip()

        seconds = statistics.median([_timed(transfer) for _ in range(_LINK_RUNS + 1)][1:])
    return LinkSpeed(endpoint, transfer_bytes / max(seconds - latency, seconds / 2), latency)


def _timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start
