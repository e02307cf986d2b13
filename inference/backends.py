"""llama.cpp's backends started in this process, whichever way the build carries them.

A *static* build (pip's default) links its backends into libggml: they are registered as
soon as ggml starts. A build with ``GGML_BACKEND_DL`` (``make package``) keeps each in its
own library beside libllama and registers none until they are loaded. llama.cpp's
``llama_backend_init`` then looks for them only beside the Python executable and in the
current directory, never in llama_cpp's ``lib`` folder, so ``init_backends`` loads them from
that folder first (a library planted in the current directory is never picked up).

Called in the processes that run llama.cpp (the worker, the probe, the host), never in the
window's process: loading a GPU backend starts its driver. ``backends_report`` says, for
``enclave doctor``, which library was loaded and why each other one was not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inference.backend_reasons import (
    BackendFileName,
    backend_files,
    cpu_flags,
    cpu_variant_reason,
    describe_loaded,
    dlopen_reason,
    loaded_from_log,
    other_backend_reason,
)
from inference.errors import EnclaveError

Loading = Literal["static", "dynamic"]


@dataclass(frozen=True)
class BackendFile:
    """One backend library beside libllama, as ``enclave doctor`` lists it."""

    file: str  # "libggml-cpu-haswell.so"
    backend: str  # "CPU", "CUDA", "Vulkan", "RPC"
    variant: str  # the CPU variant ("haswell"); "" for a backend with a single library
    loaded: bool
    reason: str  # why not loaded; for a loaded one, a note ("" when there is nothing to say)


@dataclass(frozen=True)
class BackendsReport:
    loading: Loading  # "static": linked into libggml; "dynamic": libraries loaded at run time
    directory: str  # llama_cpp's lib folder, where the libraries are
    registered: tuple[str, ...]  # the backends llama.cpp uses in this process: "CPU", "RPC", ...
    files: tuple[BackendFile, ...]
    cpu_variant: str | None  # the CPU library llama.cpp chose ("haswell"); None in a static build


_SIGNATURES: dict[str, tuple[list[type], type | None]] = {
    "ggml_backend_reg_count": ([], ctypes.c_size_t),
    "ggml_backend_reg_get": ([ctypes.c_size_t], ctypes.c_void_p),
    "ggml_backend_reg_name": ([ctypes.c_void_p], ctypes.c_char_p),
    "ggml_backend_reg_dev_count": ([ctypes.c_void_p], ctypes.c_size_t),
    "ggml_backend_load_all_from_path": ([ctypes.c_char_p], None),
}


def _declared(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, (argtypes, restype) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


@functools.cache
def _ggml() -> ctypes.CDLL:
    """libggml as Enclave's own ggml calls (``ggml_backend``) reach it."""
    from llama_cpp._ggml import libggml

    return _declared(libggml)


@functools.cache
def _llama_ggml() -> ctypes.CDLL:
    """libggml as libllama reaches it: its symbols looked up through libllama's handle, which
    searches libllama's own dependencies. pip unpacks libggml.so and libggml.so.0 as two files,
    so llama_cpp (which opens libggml.so) and libllama (which needs libggml.so.0) can hold two
    copies of libggml, each with its own backend registry."""
    from llama_cpp.llama_cpp import _lib

    return _declared(ctypes.CDLL(_lib._name, handle=_lib._handle))


def library_dir() -> Path:
    """The folder llama_cpp loads libllama and libggml from (``_internal/llama_cpp/lib`` in the
    package), where a backend-DL build keeps its backend libraries too."""
    from llama_cpp._ggml import libggml_base_path

    return Path(libggml_base_path)


def loading() -> Loading:
    """How this build carries its backends. A static build's libggml links the CPU backend,
    so its symbols resolve through libggml; a backend-DL build loads it privately (RTLD_LOCAL)."""
    return "dynamic" if not hasattr(_ggml(), "ggml_backend_cpu_reg") else "static"


def init_backends() -> Loading:
    """Start llama.cpp's backends in this process: a backend-DL build's libraries are loaded
    from ``library_dir()`` first (the best CPU variant for this machine, the GPU backends whose
    driver is installed), then ``llama_backend_init``. Calling it again does nothing more
    (nothing is loaded twice). Raises ``EnclaveError`` when the CPU backend could not be
    loaded (an incomplete installation)."""
    import llama_cpp

    how = loading()
    if how == "dynamic":
        for registry in (_llama_ggml(), _ggml()):  # the same library once, or two copies: each loads
            if registry.ggml_backend_reg_count() == 0:  # never twice into one registry
                registry.ggml_backend_load_all_from_path(os.fsencode(library_dir()))
    llama_cpp.llama_backend_init()
    if "CPU" not in _registries():
        raise EnclaveError(f"llama.cpp's CPU backend library (libggml-cpu-*.so) is not in {library_dir()}: this "
                           "installation is incomplete. Reinstall Enclave (a llama-cpp-python built with "
                           "GGML_BACKEND_DL needs -DCMAKE_INSTALL_BINDIR=llama_cpp/lib: installers/README.md).")
    return how


def _registries() -> dict[str, int]:
    """Backend name -> its registry handle, for every backend registered here."""
    lib = _ggml()
    regs = (lib.ggml_backend_reg_get(i) for i in range(lib.ggml_backend_reg_count()))
    return {lib.ggml_backend_reg_name(reg).decode(): reg for reg in regs}


class _DlInfo(ctypes.Structure):
    _fields_ = (("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p))


@functools.cache
def _dladdr() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if os.name != "posix":
        return None
    for lib in (None, ctypes.util.find_library("dl")):  # in libc since glibc 2.34, in libdl before
        fn = getattr(ctypes.CDLL(lib), "dladdr", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
            fn.restype = ctypes.c_int
            return fn
    return None


def _library_of(address: int) -> Path | None:
    """The loaded library holding ``address`` (a registry lives in its backend's library),
    or None where dladdr is unavailable (Windows)."""
    dladdr = _dladdr()
    info = _DlInfo()
    if dladdr is None or not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return Path(os.fsdecode(info.dli_fname))


def _file_name(path: Path) -> str:
    """A linked library is opened by its SONAME (libggml-cpu.so.0): the file name beside it."""
    return re.sub(r"(\.so)(\.\d+)+$", r"\1", path.name)


def backend_library(backend: str) -> ctypes.CDLL | None:
    """The library a registered backend ("RPC") lives in, for its own exported functions: in a
    backend-DL build they are not reachable through libggml (ggml loads backends privately)."""
    reg = _registries().get(backend)
    path = _library_of(reg) if reg else None
    return ctypes.CDLL(str(path)) if path else None  # already loaded: the same library, not a copy


def loaded_files(log_lines: Sequence[str] = ()) -> dict[str, str]:
    """File name -> backend, for every backend library llama.cpp loaded (or linked) here:
    asked of the loader where it can say, else read from llama.cpp's log."""
    found = {_file_name(path): backend for backend, reg in _registries().items() if (path := _library_of(reg))}
    return found or loaded_from_log(log_lines)


def _score(handle: ctypes.CDLL) -> int | None:
    fn = getattr(handle, "ggml_backend_score", None)
    if fn is None:
        return None
    fn.restype = ctypes.c_int
    return int(fn())


def _why_not(path: Path, parsed: BackendFileName, chosen_variant: str | None) -> str:
    """Why llama.cpp did not load ``path``: the library opened here (as llama.cpp does to score
    it) to read dlopen's error or the variant's score on this CPU."""
    try:
        handle = ctypes.CDLL(str(path), mode=getattr(os, "RTLD_LOCAL", 0))
    except OSError as exc:
        # a frozen app's ctypes (PyInstaller's) replaces dlopen's words with "not found when the
        # application was frozen", keeping them as the cause
        return dlopen_reason(str(exc.__cause__ or exc))
    score = _score(handle)
    if parsed.backend == "CPU":
        return cpu_variant_reason(parsed.variant, score, chosen_variant, _this_cpu())
    return other_backend_reason(score)


def _this_cpu() -> frozenset[str]:
    try:
        return cpu_flags(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return frozenset()


def backends_report(log_lines: Sequence[str] = ()) -> BackendsReport:
    """Every backend library beside libllama, loaded or not and why; after ``init_backends``.
    ``log_lines``: llama.cpp's log since then, read where the loader cannot be asked."""
    how = init_backends()
    directory = library_dir()
    registries = _registries()
    lib = _ggml()
    devices = {name: int(lib.ggml_backend_reg_dev_count(reg)) for name, reg in registries.items()}
    loaded = loaded_files(log_lines)
    files = backend_files(p.name for p in directory.iterdir() if p.is_file() or p.is_symlink())
    chosen = next((f.variant for f in files if f.file in loaded and f.backend == "CPU" and f.variant), None)
    listed = []
    for parsed in files:
        if parsed.file in loaded:
            listed.append(BackendFile(parsed.file, parsed.backend, parsed.variant, True,
                                      describe_loaded(parsed.backend, devices)))
        else:
            reason = _why_not(directory / parsed.file, parsed, chosen)
            listed.append(BackendFile(parsed.file, parsed.backend, parsed.variant, False, reason))
    return BackendsReport(how, str(directory), tuple(registries), tuple(listed), chosen)
