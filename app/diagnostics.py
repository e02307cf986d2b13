"""``enclave doctor``: what this installation can do, as plain data."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from app import __version__
from app.encryption import status as encryption_status
from app.paths import AppPaths
from app.policy import policy_in_force
from inference.errors import EnclaveError
from inference.probe import probe_report

# The CycloneDX bill of materials `make package` puts beside the frozen program
# (/opt/enclave/sbom.cdx.json in the .deb, lib/sbom.cdx.json in the tarball).
SBOM_NAME = "sbom.cdx.json"


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
        "sbom": shipped_sbom(),
    }


def shipped_sbom(frozen: bool | None = None, executable: str | None = None) -> dict[str, Any]:
    """Where the package's SBOM is and its sha256, to compare with the one published beside the
    package. A source checkout ships none: then ``path`` and ``sha256`` are None and ``note``
    says why (nothing is computed from the installed packages in its place)."""
    frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    if not frozen:
        return {"path": None, "sha256": None,
                "note": "running from a source checkout: only a package built by make package ships an SBOM"}
    path = Path(executable or sys.executable).resolve().parent / SBOM_NAME
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return {"path": str(path), "sha256": None, "note": "this package's SBOM is missing from its folder"}
    return {"path": str(path), "sha256": digest}


def _devices(paths: AppPaths) -> dict[str, Any]:
    try:
        report = probe_report(paths.llama_log)
    except EnclaveError as exc:
        return {"backends": [], "gpu_offload": False, "system_info": "", "devices": [], "backend_libraries": None,
                "probe_error": str(exc)}
    return {
        "backends": list(report.backends),
        "gpu_offload": report.gpu_offload,
        "system_info": report.system_info,
        "devices": [asdict(d) for d in report.devices],
        # how the build carries its backends and, for each library beside libllama, loaded or why not
        "backend_libraries": asdict(report.loading) if report.loading else None,
    }


def _policy() -> dict[str, Any] | None:
    policy = policy_in_force()
    return {"source": str(policy.source), **dict(policy.rules())} if policy.in_force else None
