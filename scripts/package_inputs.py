"""What a package of Enclave is built from, shared by scripts/lock_package.py, scripts/sbom.py
and scripts/third_party_licenses.py: the runtime dependency closure of the installed
``enclave`` distribution, the licence its metadata declares, and the lock file
(installers/requirements-lock.txt) that pins each of those distributions to one file by
its sha256.

The lock is a pip requirements file (``pip install --require-hashes --no-deps -r``) whose
header comments carry the build inputs pip cannot express, one ``# build-input: key = value``
line each (the llama-cpp-python build's CMAKE_ARGS, the llama.cpp commit it vendors, the
Python and platform the files were chosen for).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "installers" / "requirements-lock.txt"
# What builds a package but is not shipped (pip, setuptools, scikit-build-core, CMake, ninja, PyInstaller,
# the dev extra the smoke test uses), and what builds the CUDA add-on (NVIDIA's wheels, CMake, ninja):
# the same format, pinned and hashed the same way (scripts/lock_package.py writes all three).
BUILD_TOOLS_LOCK = ROOT / "installers" / "build-tools-lock.txt"
CUDA_LOCK = ROOT / "installers" / "gpu" / "cuda13-lock.txt"
# Required by a dependency's metadata but never imported, so not in the frozen app (nor the lock).
NOT_SHIPPED = {"pip"}  # sqlite-utils requires it for its `install` command only

_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
_FILE = re.compile(r"^#\s*file:\s*(\S+)")
_BUILD_INPUT = re.compile(r"^#\s*build-input:\s*([\w.-]+)\s*=\s*(.*?)\s*$")


class LockError(ValueError):
    """The lock file is malformed, or the environment does not match it."""


@dataclass(frozen=True)
class Pin:
    """One locked distribution: the exact version and the sha256 of the one file pip installs."""

    name: str
    version: str
    sha256: str
    filename: str = ""

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)


@dataclass
class Lock:
    pins: dict[str, Pin] = field(default_factory=dict)  # canonical name -> pin
    build_inputs: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Pin | None:
        return self.pins.get(canonicalize_name(name))


def parse_lock(text: str) -> Lock:
    """The pins and build inputs of a lock file; a pin without exactly one sha256 is an error."""
    lock = Lock()
    # Join pip's line continuations so that each requirement is one logical line.
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if pending:
            pending += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                logical.append(pending)
                pending = ""
            continue
        if line.endswith("\\") and not line.startswith("#"):
            pending = line.rstrip("\\").strip()
            continue
        logical.append(line)
    if pending:
        logical.append(pending)
    last: Pin | None = None
    for line in logical:
        if not line:
            continue
        if line.startswith("#"):
            if (match := _BUILD_INPUT.match(line)) is not None:
                lock.build_inputs[match.group(1)] = match.group(2)
            elif (match := _FILE.match(line)) is not None and last is not None:
                last = Pin(last.name, last.version, last.sha256, match.group(1))
                lock.pins[last.key] = last
            continue
        match = _REQUIREMENT.match(line)
        if match is None:
            raise LockError(f"not an exact pin (name==version): {line!r}")
        hashes = _HASH.findall(line)
        if len(hashes) != 1:
            raise LockError(f"{match.group(1)}: expected one --hash=sha256:…, found {len(hashes)}")
        last = Pin(match.group(1), match.group(2), hashes[0])
        if last.key in lock.pins:
            raise LockError(f"{last.name} is pinned twice")
        lock.pins[last.key] = last
    return lock


def read_lock(path: Path = LOCK) -> Lock:
    try:
        return parse_lock(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LockError(f"cannot read the lock file {path}: {exc.strerror or exc}") from exc


def runtime_closure(root: str = "enclave", extras: tuple[str, ...] = ()) -> list[metadata.Distribution]:
    """``root`` and everything it requires at run time, recursively (markers evaluated for this
    interpreter, extras followed where a requirement names them: ``extras`` are ``root``'s own),
    without ``root`` itself and without ``NOT_SHIPPED``."""
    env = default_environment()
    seen: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset(extras))]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            print(f"warning: {name} is required but not installed", file=sys.stderr)
            continue
        if key in seen and not extras:
            continue
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            todo.append((req.name, frozenset(req.extras)))
    seen.pop(canonicalize_name(root), None)
    for name in NOT_SHIPPED:
        seen.pop(canonicalize_name(name), None)
    return sorted(seen.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def licence_of(dist: metadata.Distribution) -> str:
    """The licence a distribution declares: License-Expression, a short License field, or the
    licence classifiers."""
    meta = dist.metadata
    expression = meta.get("License-Expression")
    if expression:
        return expression.strip()
    text = (meta.get("License") or "").strip()
    if text and len(text) < 100 and "\n" not in text:
        return text
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return "; ".join(classifiers)
    return "see the licence text below" if text else "unknown (no licence metadata)"


def check_against_lock(dists: list[metadata.Distribution], lock: Lock) -> list[str]:
    """One sentence per shipped distribution that is missing from the lock or installed at
    another version (empty: the environment is exactly the lock's)."""
    problems = []
    for dist in dists:
        pin = lock.get(dist.metadata["Name"])
        if pin is None:
            problems.append(f"{dist.metadata['Name']} {dist.version} is shipped but not in the lock")
        elif pin.version != dist.version:
            problems.append(f"{dist.metadata['Name']} is {dist.version} here but {pin.version} in the lock")
    return problems
