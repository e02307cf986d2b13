"""``enclave doctor``: what this installation can do, as plain data."""

from __future__ import annotations

from dataclasses import asdict
from importlib.metadata import version
from typing import Any

from app import __version__
from app.encryption import status as encryption_status
from app.paths import AppPaths
from app.policy import policy_in_force
from inference.errors import EnclaveError
from inference.probe import probe_report


def collect(paths: AppPaths) -> dict[str, Any]:
    """The report; llama.cpp's backends and devices come from a probe process (a failed
    probe is reported in ``probe_error``, with the rest of the report)."""
    return {
        "version": __version__,
        "llama_cpp_python": version("llama-cpp-python"),
        **_devices(paths),
        "paths": paths.as_dict(),
        "encryption": encryption_status(paths.database),
        "policy": _policy(),
    }


def _devices(paths: AppPaths) -> dict[str, Any]:
    try:
        report = probe_report(paths.llama_log)
    except EnclaveError as exc:
        return {"backends": [], "gpu_offload": False, "system_info": "", "devices": [], "probe_error": str(exc)}
    return {
        "backends": list(report.backends),
        "gpu_offload": report.gpu_offload,
        "system_info": report.system_info,
        "devices": [asdict(d) for d in report.devices],
    }


def _policy() -> dict[str, Any] | None:
    policy = policy_in_force()
    return {"source": str(policy.source), **dict(policy.rules())} if policy.in_force else None
