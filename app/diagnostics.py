"""``enclave doctor``: what this installation can do, as plain data."""

from __future__ import annotations

from dataclasses import asdict
from importlib.metadata import version
from typing import Any

from app import __version__
from app.encryption import status as encryption_status
from app.paths import AppPaths
from app.policy import policy_in_force
from inference import ggml_backend


def collect(paths: AppPaths) -> dict[str, Any]:
    import llama_cpp

    return {
        "version": __version__,
        "llama_cpp_python": version("llama-cpp-python"),
        "backends": ggml_backend.backend_names(),
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "devices": [asdict(d) for d in ggml_backend.list_devices()],
        "paths": paths.as_dict(),
        "encryption": encryption_status(paths.database),
        "policy": _policy(),
    }


def _policy() -> dict[str, Any] | None:
    policy = policy_in_force()
    return {"source": str(policy.source), **dict(policy.rules())} if policy.in_force else None
