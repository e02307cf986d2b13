"""Why a llama.cpp backend library was or was not loaded, in words: pure functions over
file names, llama.cpp's log lines, dlopen's error text and the CPU's features.

A build with ``GGML_BACKEND_DL`` keeps each backend in its own library beside libllama:
``libggml-cuda.so``, ``libggml-vulkan.so``, ``libggml-rpc.so`` and, with
``GGML_CPU_ALL_VARIANTS``, one CPU library per instruction-set level
(``libggml-cpu-haswell.so``, ``libggml-cpu-skylakex.so``, ...). llama.cpp loads the GPU
backends whose libraries open (their driver is installed) and, of the CPU variants, the one
with the highest score on this CPU (``ggml_backend_load_best`` in ggml-backend-reg.cpp).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

if sys.platform == "win32":
    FILE_PREFIX, FILE_SUFFIX = "ggml-", ".dll"
else:
    FILE_PREFIX, FILE_SUFFIX = "libggml-", ".so"  # macOS too: ggml names its modules .so there
NOT_BACKENDS = ("base",)  # libggml-base: the core every backend links, not a backend

# What llama.cpp calls each backend's registry (the name in "loaded CUDA backend from ...").
BACKEND_NAMES = {
    "cpu": "CPU", "cuda": "CUDA", "vulkan": "Vulkan", "metal": "Metal", "rpc": "RPC", "blas": "BLAS",
    "hip": "ROCm", "sycl": "SYCL", "opencl": "OpenCL", "musa": "MUSA", "cann": "CANN", "zendnn": "ZenDNN",
    "virtgpu": "VirtGPU", "hexagon": "Hexagon", "openvino": "OpenVINO",
}

# The instruction sets each x86 CPU variant is compiled for (ggml/src/CMakeLists.txt,
# GGML_CPU_ALL_VARIANTS), as llama.cpp names them; a CPU without one of them scores 0.
X86_VARIANTS: dict[str, tuple[str, ...]] = {
    "x64": (),
    "sse42": ("SSE42",),
    "sandybridge": ("SSE42", "AVX"),
    "ivybridge": ("SSE42", "AVX", "F16C"),
    "piledriver": ("SSE42", "AVX", "F16C", "FMA"),
    "haswell": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"),
    "skylakex": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512"),
    "cannonlake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI"),
    "cascadelake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VNNI"),
    "icelake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI"),
    "cooperlake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VNNI", "AVX512_BF16"),
    "zen4": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
             "AVX512_BF16"),
    "alderlake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX_VNNI"),
    "sapphirerapids": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
                       "AVX512_BF16", "AMX_TILE", "AMX_INT8"),
}
# llama.cpp's feature name -> the flags /proc/cpuinfo must show (AVX512 is five of them)
CPUINFO_FLAGS: dict[str, tuple[str, ...]] = {
    "SSE42": ("sse4_2",), "AVX": ("avx",), "F16C": ("f16c",), "FMA": ("fma",), "AVX2": ("avx2",),
    "BMI2": ("bmi2",), "AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "AVX512_VBMI": ("avx512vbmi",), "AVX512_VNNI": ("avx512_vnni",), "AVX512_BF16": ("avx512_bf16",),
    "AVX_VNNI": ("avx_vnni",), "AMX_TILE": ("amx_tile",), "AMX_INT8": ("amx_int8",),
}


@dataclass(frozen=True)
class BackendFileName:
    """``libggml-cpu-haswell.so`` -> backend "CPU", variant "haswell"."""

    file: str
    backend: str
    variant: str  # "" for a backend with a single library


def parse_file_name(name: str) -> BackendFileName | None:
    """What a file beside libllama is, or None when it is not a backend library."""
    if not (name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX)):
        return None  # libggml.so, libllama.so, the versioned copies libggml-cpu.so.0
    stem = name[len(FILE_PREFIX):-len(FILE_SUFFIX)]
    key, _, variant = stem.partition("-")
    if not key or key in NOT_BACKENDS:
        return None
    return BackendFileName(name, BACKEND_NAMES.get(key, key.upper()), variant)


def backend_files(names: Iterable[str]) -> list[BackendFileName]:
    """The backend libraries among ``names``: the CPU variants first, from the lowest
    instruction-set level to the highest, then the other backends by name."""
    parsed = [p for p in map(parse_file_name, names) if p is not None]
    levels = list(X86_VARIANTS)
    return sorted(parsed, key=lambda p: (p.backend != "CPU", p.backend,
                                         levels.index(p.variant) if p.variant in levels else len(levels), p.variant))


_LOADED = re.compile(r"load_backend: loaded (?P<backend>\S+) backend from (?P<path>.+?)\s*$")


def loaded_from_log(lines: Iterable[str]) -> dict[str, str]:
    """File name -> backend, from llama.cpp's "load_backend: loaded CPU backend from
    /…/libggml-cpu-haswell.so" lines (with or without a logging prefix before them)."""
    loaded = {}
    for line in lines:
        match = _LOADED.search(line)
        if match:
            loaded[Path(match.group("path")).name] = match.group("backend")
    return loaded


# dlopen's error for a library that needs another which is not installed, on Linux and macOS
_MISSING = re.compile(r"(?P<lib>[\w.+-]+\.so[\d.]*): cannot open shared object file"
                      r"|Library not loaded: \S*?(?P<mac>[\w.+-]+\.dylib)")
_MISSING_REASONS = (
    (re.compile(r"^libcuda\.|^libnvidia-"), "no NVIDIA driver ({lib} is missing)"),
    (re.compile(r"^libcu(dart|blas|blasLt|rand|fft)\."), "the CUDA runtime libraries are missing ({lib})"),
    (re.compile(r"^libvulkan\."), "no Vulkan loader ({lib} is missing: install libvulkan1 and the GPU's Vulkan "
                                  "driver)"),
    (re.compile(r"^lib(amdhip64|hipblas|rocblas|hsa-runtime64)\."), "no ROCm runtime ({lib} is missing)"),
    (re.compile(r"^libOpenCL\."), "no OpenCL loader ({lib} is missing)"),
    (re.compile(r"^libsycl\.|^libsvml\.|^libmkl"), "no oneAPI runtime ({lib} is missing)"),
)


def dlopen_reason(error: str) -> str:
    """dlopen's error text as a reason people can act on."""
    match = _MISSING.search(error)
    if match:
        lib = match.group("lib") or match.group("mac")
        for pattern, reason in _MISSING_REASONS:
            if pattern.search(lib):
                return reason.format(lib=lib)
        return f"a library it needs is missing ({lib})"
    symbol = re.search(r"undefined symbol: (\S+)", error)
    if symbol:
        return f"built for another llama.cpp than this one (undefined symbol {symbol.group(1)})"
    if re.search(r"wrong ELF class|invalid ELF header|not a dynamic executable|incompatible architecture", error):
        return "not a library for this machine"
    return error.strip() or "it could not be opened"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of /proc/cpuinfo's first processor."""
    match = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
    return frozenset(match.group(1).split()) if match else frozenset()


def missing_features(variant: str, flags: frozenset[str]) -> list[str]:
    """The instruction sets ``variant`` needs that a CPU with ``flags`` lacks."""
    needed = X86_VARIANTS.get(variant, ())
    return [feature for feature in needed if not all(f in flags for f in CPUINFO_FLAGS.get(feature, ()))]


# ggml_backend_cpu_x86_score: 1, plus these for each instruction set a variant is built for
SCORE_BITS = {"FMA": 1, "F16C": 2, "SSE42": 4, "BMI2": 8, "AVX": 16, "AVX2": 32, "AVX_VNNI": 64, "AVX512": 128,
              "AVX512_VBMI": 256, "AVX512_BF16": 512, "AVX512_VNNI": 1024, "AMX_INT8": 2048}


def variant_score(variant: str, flags: frozenset[str]) -> int:
    """The score llama.cpp gives ``variant`` on a CPU with ``flags``: 0 if it cannot run it;
    of the variants present, it loads the one with the highest."""
    if variant not in X86_VARIANTS or missing_features(variant, flags):
        return 0
    return 1 + sum(SCORE_BITS.get(feature, 0) for feature in X86_VARIANTS[variant])


def cpu_variant_reason(variant: str, score: int | None, chosen: str | None, flags: frozenset[str]) -> str:
    """Why the CPU variant ``variant`` (scored ``score`` by llama.cpp on this CPU) was not
    loaded when ``chosen`` was."""
    if score == 0:
        lacks = missing_features(variant, flags)
        if lacks:
            return f"this CPU lacks {', '.join(lacks)}"
        return "llama.cpp says this CPU cannot run it"
    if chosen:
        return f"a better variant was chosen ({chosen})"
    return "llama.cpp did not load it"


def other_backend_reason(score: int | None) -> str:
    """Why a GPU (or other) backend library that opens was not loaded."""
    if score == 0:
        return "not supported on this system"
    return "llama.cpp did not load it (its log may say why)"


def describe_loaded(backend: str, devices: Mapping[str, int]) -> str:
    """A note for a loaded backend: a GPU backend without devices finds no GPU."""
    if backend in ("CPU", "RPC", "BLAS") or devices.get(backend, 1) > 0:
        return ""
    return "loaded, but it finds no device"
