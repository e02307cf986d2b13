"""Write the CycloneDX 1.6 bill of materials of a GPU add-on (installers/gpu/build_cuda_backend.sh).

    <tools venv>/bin/python scripts/sbom_gpu.py --name enclave-cuda13 --release 13.0 --lib-dir LIB \\
        --cuda-lock installers/gpu/cuda13-lock.txt --cmake-args ARGS -o dist/enclave-cuda13-<v>-sbom.cdx.json
    … --toolkit /usr/local/cuda-12.8 instead of --cuda-lock: the runtime came from an installed toolkit

It lists what the add-on ships, every file of LIB with its own sha256:

- llama.cpp's CUDA backend (``libggml-cuda.so``) under llama.cpp, at the commit the llama-cpp-python
  sdist of installers/requirements-lock.txt vendors (the add-on is built from that sdist), with the
  CMAKE_ARGS it was compiled with;
- each CUDA runtime library under the NVIDIA wheel it was copied from, that wheel's version and the
  sha256 its lock pins (the wheels installed in the running environment must be the lock's);
  or, built against an installed toolkit, under that toolkit and its release.

A file whose origin is unknown is an error, not an SBOM. Run it with the Python of the venv the
wheels are installed in (it finds which wheel holds which file from their installed RECORD).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from package_inputs import LOCK, Lock, LockError, check_against_lock, read_lock
from sbom import document, file_component, llama_cpp_component, python_component, write

GGML = "libggml-"  # the llama.cpp libraries; everything else in the add-on is NVIDIA's
TOOLKIT_REF = "cuda-toolkit"


def version_of_enclave() -> str:
    """The version in app/__init__.py, read as text: this runs in a venv without Enclave."""
    text = (Path(__file__).resolve().parent.parent / "app" / "__init__.py").read_text(encoding="utf-8")
    return next(line.split('"')[1] for line in text.splitlines() if line.startswith("__version__"))


def wheel_owners(names: Iterable[str], dists: Iterable[metadata.Distribution]) -> dict[str, metadata.Distribution]:
    """Which installed distribution holds each file name (by its RECORD): only NVIDIA's wheels."""
    wanted = set(names)
    owners: dict[str, metadata.Distribution] = {}
    for dist in dists:
        if not dist.metadata["Name"].lower().startswith("nvidia"):
            continue
        for file in dist.files or []:
            if file.name in wanted:
                owners.setdefault(file.name, dist)
    return owners


def llama_cuda_component(files: list[dict[str, Any]], lock: Lock, cmake_args: str) -> dict[str, Any]:
    commit = lock.build_inputs.get("llama.cpp.commit", "unknown")
    llama = lock.get("llama-cpp-python")
    properties = [{"name": "enclave:cmake-args", "value": cmake_args}]
    if llama is not None:
        properties.append({"name": "enclave:source",
                           "value": f"{llama.filename or 'llama-cpp-python==' + llama.version} sha256:{llama.sha256}"})
    return llama_cpp_component(commit, "llama.cpp's CUDA backend, a ggml library loaded at run time", properties, files)


def toolkit_component(toolkit: Path, release: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "library",
        "bom-ref": TOOLKIT_REF,
        "name": "NVIDIA CUDA Toolkit",
        "version": release,
        "description": "the CUDA runtime and cuBLAS, copied from an installed toolkit",
        "supplier": {"name": "NVIDIA Corporation"},
        "purl": f"pkg:generic/nvidia/cuda-toolkit@{release}",
        "licenses": [{"license": {"name": "NVIDIA CUDA Toolkit EULA"}}],
        "properties": [{"name": "enclave:toolkit-path", "value": str(toolkit)}],
        "components": files,
    }


def build(name: str, release: str, lib_dir: Path, lock: Lock, cmake_args: str, *, cuda_lock: Lock | None = None,
          toolkit: Path | None = None, dists: Iterable[metadata.Distribution] | None = None,
          app_folder: str = "_internal/llama_cpp/lib") -> dict[str, Any]:
    """The add-on's SBOM. ``cuda_lock``: the runtime came from NVIDIA's wheels (installed in
    ``dists``, by default this environment's); ``toolkit``: from that installed toolkit."""
    if (cuda_lock is None) == (toolkit is None):
        raise LockError("say where the CUDA runtime came from: a wheel lock or a toolkit, one of them")
    shipped = sorted(p for p in lib_dir.iterdir() if p.is_file())
    if not any(p.name.startswith(GGML) for p in shipped):
        raise LockError(f"{lib_dir} holds no {GGML}… library: nothing was built")
    files = {p.name: file_component(p, f"{app_folder}/{p.name}") for p in shipped}
    version = version_of_enclave()
    components = [llama_cuda_component([f for n, f in files.items() if n.startswith(GGML)], lock, cmake_args)]
    nvidia = [n for n in files if not n.startswith(GGML)]
    if toolkit is not None:
        components.append(toolkit_component(toolkit, release, [files[n] for n in nvidia]))
    elif cuda_lock is not None:
        owners = wheel_owners(nvidia, metadata.distributions() if dists is None else dists)
        if unknown := [n for n in nvidia if n not in owners]:
            raise LockError(f"no installed NVIDIA wheel holds {', '.join(unknown)}: where did it come from?")
        wheels = {dist.metadata["Name"]: dist for dist in owners.values()}
        if problems := check_against_lock(list(wheels.values()), cuda_lock):
            raise LockError("the NVIDIA wheels installed are not the lock's:\n  " + "\n  ".join(problems))
        for _, dist in sorted(wheels.items()):
            component = python_component(dist, cuda_lock)
            component["components"] = [files[n] for n in nvidia if owners[n] is dist]
            components.append(component)
    subject = {
        "type": "application",
        "bom-ref": name,
        "name": name,
        "version": version,
        "description": f"NVIDIA CUDA {release} backend for Enclave {version}, an add-on to its CPU package",
        "licenses": [{"expression": "Apache-2.0"}],
        "properties": [{"name": "enclave:requires", "value": f"enclave (= {version})"},
                       {"name": "enclave:cuda-release", "value": release}],
    }
    graph = [{"ref": name, "dependsOn": [c["bom-ref"] for c in components]}]
    return document(subject, components, graph, tool="scripts/sbom_gpu.py", tool_version=version)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the add-on package's name, e.g. enclave-cuda13")
    parser.add_argument("--release", required=True, help="the CUDA release, e.g. 13.0")
    parser.add_argument("--lib-dir", type=Path, required=True, help="the folder of the files the add-on ships")
    parser.add_argument("--cmake-args", default="", help="the CMAKE_ARGS libggml-cuda was compiled with")
    parser.add_argument("--lock", type=Path, default=LOCK, help="the package's lock (the llama.cpp commit)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cuda-lock", type=Path, help="the lock of the NVIDIA wheels the runtime came from")
    source.add_argument("--toolkit", type=Path, help="the installed CUDA toolkit the runtime came from")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    try:
        bom = build(args.name, args.release, args.lib_dir, read_lock(args.lock), args.cmake_args,
                    cuda_lock=read_lock(args.cuda_lock) if args.cuda_lock else None, toolkit=args.toolkit)
    except (LockError, OSError) as exc:
        print(f"sbom_gpu: {exc}", file=sys.stderr)
        return 1
    write(bom, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
