"""Write a CycloneDX 1.6 JSON bill of materials of what a package of Enclave ships.

    .venv-package/bin/python scripts/sbom.py -o dist/enclave-<v>-sbom.cdx.json    (make package)
    scripts/sbom.py --no-lock -o FILE        without hashes (a platform the lock is not for)
    scripts/sbom.py --verify FILE            does an SBOM list exactly the lock's files and hashes?

Run in the environment the package is built from. It lists:

- every Python distribution the app ships (the runtime dependency closure of ``enclave``,
  scripts/package_inputs.py): name, version, ``pkg:pypi`` purl, the licence its metadata
  declares, and the sha256 of the file installed, taken from installers/requirements-lock.txt
  (a distribution missing from the lock, or installed at another version, is an error: the
  package would not be what the lock says);
- llama.cpp: the commit llama-cpp-python vendors (from the lock, checked against the commit
  the built ``libggml-base`` reports), the CMAKE_ARGS it was built with, the ggml backends
  built, and each shared library in ``llama_cpp/lib`` with its own sha256;
- Qt (the version PySide6 bundles), SQLCipher (the version sqlcipher3 is built on, when it is
  installed) and the Python interpreter.

Plain JSON written against the CycloneDX 1.6 specification (no cyclonedx library needed);
scripts/third_party_licenses.py derives THIRD_PARTY_LICENSES from this document.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.util
import json
import os
import platform
import re
import sys
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from package_inputs import LOCK, Lock, LockError, check_against_lock, licence_of, read_lock, runtime_closure
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SPEC_VERSION = "1.6"
APP_REF = "enclave"
LLAMA_REF = "llama.cpp"
LLAMA_LIBRARY = re.compile(r"^(lib)?(ggml|llama|mtmd)[\w.-]*\.(so|dylib|dll)$")


def pypi_purl(name: str, version: str) -> str:
    """The package URL of a PyPI distribution (purl spec: lower case, ``_`` as ``-``)."""
    return f"pkg:pypi/{name.lower().replace('_', '-')}@{version}"


def python_component(dist: metadata.Distribution, lock: Lock | None) -> dict[str, Any]:
    name, version = dist.metadata["Name"], dist.version
    component: dict[str, Any] = {
        "type": "library",
        "bom-ref": pypi_purl(name, version),
        "name": name,
        "version": version,
        "purl": pypi_purl(name, version),
    }
    # An SPDX expression where the metadata gives one (License-Expression), else the declared text.
    expression = (dist.metadata.get("License-Expression") or "").strip()
    component["licenses"] = [{"expression": expression}] if expression else [{"license": {"name": licence_of(dist)}}]
    pin = lock.get(name) if lock else None
    if pin is not None:
        component["hashes"] = [{"alg": "SHA-256", "content": pin.sha256}]
        if pin.filename:
            component["properties"] = [{"name": "enclave:file", "value": pin.filename}]
    home = dist.metadata.get("Home-page") or next(
        (u.split(",", 1)[1].strip() for u in dist.metadata.get_all("Project-URL") or [] if "," in u), None
    )
    if home:
        component["externalReferences"] = [{"type": "website", "url": home}]
    return component


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def llama_lib_dir() -> Path | None:
    """llama_cpp/lib, where llama_cpp loads its libraries from and build.spec takes them (the
    wheel's second copy in site-packages/lib is not shipped)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "lib"
    return folder if folder.is_dir() else None


def built_ggml_commit(lib_dir: Path) -> str | None:
    """What the built ggml says it is (``ggml_commit()``, e.g. "0c1e570-dirty"), or None."""
    base = next((p for p in sorted(lib_dir.iterdir()) if p.name.startswith(("libggml-base.", "ggml-base."))), None)
    if base is None:
        return None
    try:
        library = ctypes.CDLL(str(base))
        library.ggml_commit.restype = ctypes.c_char_p
        commit = library.ggml_commit()
    except (OSError, AttributeError):
        return None
    return commit.decode(errors="replace") if commit else None


def backends(lib_dir: Path) -> list[str]:
    """The ggml backend libraries built: cpu, rpc, cuda, vulkan … (and CPU variants such as
    cpu-haswell when llama.cpp is built with GGML_CPU_ALL_VARIANTS)."""
    names = {
        m.group(1)
        for p in lib_dir.iterdir()
        if (m := re.match(r"^(?:lib)?ggml-([\w-]+?)\.(?:so|dylib|dll)", p.name)) and m.group(1) != "base"
    }
    return sorted(names)


def llama_component(lock: Lock | None, cmake_args: str | None) -> dict[str, Any] | None:
    lib_dir = llama_lib_dir()
    if lib_dir is None:
        return None
    built = built_ggml_commit(lib_dir)
    locked = lock.build_inputs.get("llama.cpp.commit") if lock else None
    if locked and built and not locked.startswith(built.split("-")[0]):
        raise LockError(f"the built llama.cpp is commit {built}, the lock says {locked}: rebuild, or run make lock")
    commit = locked or (built or "unknown").split("-")[0]
    properties = [{"name": "enclave:ggml-backends", "value": ", ".join(backends(lib_dir))}]
    if built:
        properties.append({"name": "enclave:ggml-commit-built", "value": built})
    # The arguments make package built with; without them only what the lock says to build with.
    if cmake_args is not None:
        properties.append({"name": "enclave:cmake-args", "value": cmake_args})
    elif lock is not None and (locked_args := lock.build_inputs.get("llama-cpp-python.cmake-args")) is not None:
        properties.append({"name": "enclave:cmake-args-locked", "value": locked_args})
    files = [
        file_component(p, f"llama_cpp/lib/{p.name}")
        for p in sorted(lib_dir.iterdir())
        # libX.so.0 and libX.so.0.N.M are copies of libX.so that build.spec links or drops.
        if LLAMA_LIBRARY.match(p.name) and p.is_file() and not p.is_symlink() and not re.search(r"\.so\.\d", p.name)
    ]
    return llama_cpp_component(commit, "llama.cpp and ggml, compiled into llama-cpp-python's shared libraries",
                               properties, files)


def llama_cpp_component(commit: str, description: str, properties: list[dict[str, str]],
                        files: list[dict[str, Any]]) -> dict[str, Any]:
    """llama.cpp at ``commit`` as a CycloneDX component holding the library ``files`` built from it
    (the app's SBOM and the GPU add-on's, scripts/sbom_gpu.py)."""
    return {
        "type": "library",
        "bom-ref": LLAMA_REF,
        "name": "llama.cpp",
        "version": commit,
        "description": description,
        "purl": f"pkg:github/ggml-org/llama.cpp@{commit}",
        "licenses": [{"expression": "MIT"}],
        "externalReferences": [{"type": "vcs", "url": "https://github.com/ggml-org/llama.cpp"}],
        "properties": properties,
        "components": files,
    }


def qt_component() -> dict[str, Any] | None:
    try:
        from PySide6 import QtCore
    except ImportError:
        return None
    version = QtCore.qVersion()
    return {
        "type": "framework",
        "bom-ref": "qt",
        "name": "Qt",
        "version": version,
        "description": "Qt 6 libraries and plugins, bundled in the PySide6 wheels and linked dynamically",
        "supplier": {"name": "The Qt Company Ltd."},
        "purl": f"pkg:generic/qt@{version}",
        "licenses": [{"expression": "LGPL-3.0-only"}],
        "externalReferences": [{"type": "distribution", "url": "https://download.qt.io/official_releases/qt/"}],
    }


def sqlcipher_component() -> dict[str, Any] | None:
    try:
        import sqlcipher3
    except ImportError:
        return None
    connection = sqlcipher3.connect(":memory:")
    try:
        row = connection.execute("PRAGMA cipher_version").fetchone()
        sqlite = connection.execute("SELECT sqlite_version()").fetchone()[0]
    finally:
        connection.close()
    if not row:
        return None
    version = str(row[0]).split()[0]
    return {
        "type": "library",
        "bom-ref": "sqlcipher",
        "name": "SQLCipher",
        "version": version,
        "description": f"SQLCipher {row[0]} (SQLite {sqlite}), built into sqlcipher3",
        "purl": f"pkg:github/sqlcipher/sqlcipher@v{version}",
        "licenses": [{"expression": "BSD-3-Clause"}],
        "properties": [{"name": "enclave:sqlite-version", "value": str(sqlite)}],
    }


def python_interpreter_component() -> dict[str, Any]:
    version = platform.python_version()
    return {
        "type": "platform",
        "bom-ref": "cpython",
        "name": "CPython",
        "version": version,
        "purl": f"pkg:generic/cpython@{version}",
        "licenses": [{"expression": "PSF-2.0"}],
    }


def dependencies(dists: list[metadata.Distribution]) -> list[dict[str, Any]]:
    """Who requires whom among the shipped distributions (markers evaluated, no extras)."""
    env = default_environment()
    refs = {canonicalize_name(d.metadata["Name"]): pypi_purl(d.metadata["Name"], d.version) for d in dists}

    def requires(dist: metadata.Distribution) -> list[str]:
        out = []
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            if (ref := refs.get(canonicalize_name(req.name))) is not None and ref not in out:
                out.append(ref)
        return out

    graph = [{"ref": APP_REF, "dependsOn": [*requires(metadata.distribution("enclave")), LLAMA_REF]}]
    graph += [{"ref": refs[canonicalize_name(d.metadata["Name"])], "dependsOn": requires(d)} for d in dists]
    return graph


def timestamp() -> str:
    """Now, or SOURCE_DATE_EPOCH for a reproducible document."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build(lock: Lock | None, cmake_args: str | None = None) -> dict[str, Any]:
    """The SBOM of this environment. With a lock, every shipped distribution must be pinned
    in it at the installed version (LockError otherwise) and carries the lock's sha256."""
    from app import __version__

    dists = runtime_closure()
    if lock is not None and (problems := check_against_lock(dists, lock)):
        raise LockError("this environment is not the lock's:\n  " + "\n  ".join(problems))
    components = [python_component(d, lock) for d in dists]
    components += [c for c in (llama_component(lock, cmake_args), qt_component(), sqlcipher_component()) if c]
    components.append(python_interpreter_component())
    subject = {
        "type": "application",
        "bom-ref": APP_REF,
        "name": "Enclave",
        "version": __version__,
        "licenses": [{"expression": "Apache-2.0"}],
    }
    return document(subject, components, dependencies(dists), tool="scripts/sbom.py", tool_version=__version__)


def document(subject: dict[str, Any], components: list[dict[str, Any]], graph: list[dict[str, Any]], *,
             tool: str, tool_version: str) -> dict[str, Any]:
    """A CycloneDX document: what it describes (``subject``, metadata.component), its components
    and who depends on whom. Shared by this script and scripts/sbom_gpu.py."""
    return {
        "$schema": f"http://cyclonedx.org/schema/bom-{SPEC_VERSION}.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": timestamp(),
            "tools": {"components": [{"type": "application", "name": tool, "version": tool_version}]},
            "component": subject,
            "properties": [{"name": "enclave:platform", "value": f"{sys.platform} {platform.machine()}"}],
        },
        "components": components,
        "dependencies": graph,
    }


def file_component(path: Path, name: str) -> dict[str, Any]:
    """One shipped file with its sha256 (``name``: where it is, relative to the package's folder)."""
    return {"type": "file", "bom-ref": f"file:{name}", "name": name,
            "hashes": [{"alg": "SHA-256", "content": file_sha256(path)}]}


def verify(sbom: dict[str, Any], lock: Lock) -> list[str]:
    """One sentence per difference between an SBOM's Python components and the lock (empty:
    every locked file is listed, at its version, with its sha256, and nothing else)."""
    problems = []
    listed: set[str] = set()
    for component in sbom.get("components", []):
        if not str(component.get("purl", "")).startswith("pkg:pypi/"):
            continue
        name, version = component["name"], component["version"]
        listed.add(canonicalize_name(name))
        pin = lock.get(name)
        sha256 = next((h["content"] for h in component.get("hashes", []) if h.get("alg") == "SHA-256"), None)
        if pin is None:
            problems.append(f"{name} {version} is in the SBOM but not in the lock")
        elif pin.version != version:
            problems.append(f"{name} is {version} in the SBOM but {pin.version} in the lock")
        elif sha256 != pin.sha256:
            problems.append(f"{name} {version}: the SBOM's sha256 {sha256} is not the lock's {pin.sha256}")
    problems += [f"{pin.name} {pin.version} is in the lock but not in the SBOM"
                 for key, pin in sorted(lock.pins.items()) if key not in listed]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--verify", type=Path, metavar="SBOM", help="compare an SBOM with the lock; write nothing")
    parser.add_argument("--lock", type=Path, default=LOCK, help="the lock file the hashes come from")
    parser.add_argument("--no-lock", action="store_true", help="no lock: components without hashes")
    parser.add_argument("--cmake-args", default=None, help="the CMAKE_ARGS llama-cpp-python was built with")
    args = parser.parse_args()
    if args.verify is not None:
        try:
            problems = verify(json.loads(args.verify.read_text(encoding="utf-8")), read_lock(args.lock))
        except (OSError, ValueError) as exc:
            print(f"sbom: {exc}", file=sys.stderr)
            return 1
        for problem in problems:
            print(f"sbom: {problem}", file=sys.stderr)
        if not problems:
            print(f"{args.verify}: every Python distribution and sha256 is the lock's ({args.lock})")
        return 1 if problems else 0
    if args.output is None:
        parser.error("-o/--output is required (or --verify SBOM)")
    try:
        document = build(None if args.no_lock else read_lock(args.lock), args.cmake_args)
    except LockError as exc:
        print(f"sbom: {exc}", file=sys.stderr)
        return 1
    write(document, args.output)
    return 0


def write(document: dict[str, Any], output: Path) -> None:
    """Write a CycloneDX document as this project ships it (also scripts/sbom_gpu.py's)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output} ({len(document['components'])} components)")


if __name__ == "__main__":
    raise SystemExit(main())
