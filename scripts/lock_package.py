"""Write installers/requirements-lock.txt: every Python distribution a package of Enclave ships,
each pinned to one version and the sha256 of the one file pip installs on this platform; and,
beside it, the locks of what builds a package without being shipped.

    make lock                                   (the Makefile passes its CMAKE_ARGS)
    .venv/bin/python scripts/lock_package.py [--upgrade] [--cmake-args ARGS] [-o FILE]
    .venv/bin/python scripts/lock_package.py --check    is this environment exactly the lock's?

Three files, one format (pip's ``--require-hashes`` requirements, read by scripts/package_inputs.py):

- installers/requirements-lock.txt: what ships (below);
- installers/build-tools-lock.txt: what ``make package`` builds with: pip, setuptools (the build
  backend of ``pip install -e .``), llama-cpp-python's build backend (scikit-build-core, from its
  sdist's pyproject.toml) with CMake and ninja (compiled with ``--no-build-isolation``, so these
  are the ones used), PyInstaller and the rest of the ``package`` and ``dev`` extras. A
  distribution both lists need is pinned once, in requirements-lock.txt, and the tools are
  resolved against those pins, so the two install together;
- installers/gpu/cuda13-lock.txt: what installers/gpu/build_cuda_backend.sh builds the CUDA add-on
  with: NVIDIA's CUDA 13.0 wheels (the add-on ships libraries taken from them), CMake, ninja, and
  packaging (for scripts/sbom_gpu.py in that venv).

The tools keep the versions installed here (the dev tools the tests ran with), else the ones
their lock already has; ``--upgrade`` takes the newest allowed for all three.

The requirements are pyproject.toml's runtime dependencies. By default every distribution is
held at the version installed in the running environment (the one the tests passed with);
``--upgrade`` lets pip pick the newest versions pyproject.toml allows. pip's own resolver
chooses the files (``pip install --dry-run --ignore-installed --report``) and PyPI's index
gives their sha256. llama-cpp-python is an sdist compiled by ``make package``: the lock also
records the CMAKE_ARGS it is built with and the llama.cpp commit its sdist vendors (read from
the sdist, which is downloaded once and checked against its hash).

The files are chosen for this interpreter and platform (the header says which): lock on the
machine that builds the package, with the Python it builds with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from package_inputs import (
    BUILD_TOOLS_LOCK,
    CUDA_LOCK,
    LOCK,
    NOT_SHIPPED,
    ROOT,
    LockError,
    check_against_lock,
    read_lock,
    runtime_closure,
)
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

LLAMA = "llama-cpp-python"
VENDORED_HEAD = ".git/modules/vendor/llama.cpp/HEAD"  # the llama.cpp submodule's commit in the sdist
TOOL_EXTRAS = ("package", "dev")  # pyproject.toml's extras make package installs (not shipped)
# scikit-build-core takes CMake and ninja from the build environment when they are there (as Python
# packages); otherwise it would ask pip for any version, or use whatever the machine has.
NINJA = "ninja>=1.11"
# The CUDA add-on: one CUDA release for every NVIDIA wheel (PTX from a newer nvcc would not load on
# an older 13.x driver); CUDA 13 needs CMake 3.31.8 or newer.
CUDA_RELEASE = "13.0"
CUDA_WHEELS = ("nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm", "nvidia-cuda-cccl", "nvidia-cuda-runtime",
               "nvidia-cublas", "nvidia-cuda-nvrtc")
CUDA_TOOLS = ("cmake>=3.31.8", NINJA, "packaging>=24")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def runtime_requirements() -> list[str]:
    return list(pyproject()["project"]["dependencies"])


def installed_pins(extras: tuple[str, ...] = ()) -> list[str]:
    """``name==version`` for every distribution the installed enclave ships (the tested set), and
    with ``extras`` what those extras bring too."""
    return [f"{dist.metadata['Name']}=={dist.version}" for dist in runtime_closure(extras=extras)]


def pins_of(path: Path) -> list[str]:
    """``name==version`` of every pin in an existing lock (none when there is no such file yet)."""
    return [f"{pin.name}=={pin.version}" for pin in read_lock(path).pins.values()] if path.exists() else []


def resolve(requirements: list[str], constraints: list[str], work: Path) -> list[dict]:
    """pip's resolution of ``requirements``: one report entry per distribution it would install."""
    (work / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (work / "constraints.txt").write_text("\n".join(constraints) + "\n", encoding="utf-8")
    report = work / "report.json"
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report), "-r", str(work / "requirements.txt"), "-c", str(work / "constraints.txt"),
    ]
    subprocess.run(command, check=True)
    return json.loads(report.read_text(encoding="utf-8"))["install"]


def read_llama_sdist(version: str, sha256: str, work: Path) -> tuple[str, list[str]]:
    """The llama.cpp commit the llama-cpp-python sdist vendors ("unknown" if it does not say) and
    the requirements that build it: its build backend and, for scikit-build-core, CMake (at the
    sdist's ``cmake.minimum-version``) and ninja."""
    folder = work / "sdist"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         f"{LLAMA}=={version}", "-d", str(folder)],
        check=True,
    )
    (sdist,) = folder.glob("*.tar.gz")
    if hashlib.sha256(sdist.read_bytes()).hexdigest() != sha256:
        raise LockError(f"{sdist.name} does not match the sha256 pip resolved ({sha256})")
    commit, project = "unknown", {}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            if member.name.endswith(VENDORED_HEAD) and (head := tar.extractfile(member)) is not None:
                commit = head.read().decode().strip()
            elif (member.name.count("/") == 1 and member.name.endswith("/pyproject.toml")
                  and (file := tar.extractfile(member)) is not None):
                project = tomllib.loads(file.read().decode())
    build = list(project.get("build-system", {}).get("requires", []))
    if not build:
        raise LockError(f"{sdist.name} names no build requirements (build-system.requires)")
    if any(r.startswith("scikit-build-core") for r in build):
        cmake = project.get("tool", {}).get("scikit-build", {}).get("cmake", {}).get("minimum-version", "3.15")
        build += [f"cmake>={cmake}", NINJA]
    return commit, build


HEADERS = {
    "shipped": [
        "# Every Python distribution a package of Enclave ships, each pinned to the one file pip installs",
        "# and its sha256. Generated by scripts/lock_package.py (make lock): do not edit by hand.",
        "# make package installs exactly these: pip install --require-hashes --no-deps -r this file.",
    ],
    "tools": [
        "# What make package builds with and does not ship: pip, setuptools, llama-cpp-python's build",
        "# backend with CMake and ninja, PyInstaller, pyproject.toml's package and dev extras. Each pinned",
        "# to one file and its sha256; a distribution also shipped is pinned in requirements-lock.txt.",
        "# Generated by scripts/lock_package.py (make lock): do not edit by hand. make package installs",
        "# these first (pip install --require-hashes --no-deps -r this file), then requirements-lock.txt",
        "# with --no-build-isolation: llama-cpp-python is compiled with the scikit-build-core, CMake and",
        "# ninja pinned here.",
    ],
    "cuda": [
        "# What installers/gpu/build_cuda_backend.sh builds the CUDA add-on with: NVIDIA's CUDA wheels",
        "# (nvcc; the runtime and cuBLAS the add-on ships), CMake, ninja, and packaging for",
        "# scripts/sbom_gpu.py. Each pinned to one file and its sha256 (platform-independent wheels for",
        "# linux x86_64). Generated by scripts/lock_package.py (make lock): do not edit by hand.",
    ],
}


def render(entries: list[dict], build_inputs: dict[str, str], kind: str = "shipped") -> str:
    lines = [
        *HEADERS[kind],
        "#",
        *(f"# build-input: {key} = {value}" for key, value in build_inputs.items()),
        "",
    ]
    for entry in sorted(entries, key=lambda e: canonicalize_name(e["metadata"]["name"])):
        meta, download = entry["metadata"], entry["download_info"]
        sha256 = download.get("archive_info", {}).get("hashes", {}).get("sha256")
        if not sha256:
            raise LockError(f"pip gave no sha256 for {meta['name']} ({download['url']})")
        lines += [
            f"{meta['name']}=={meta['version']} \\",
            f"    --hash=sha256:{sha256}",
            f"    # file: {download['url'].rsplit('/', 1)[-1].split('#', 1)[0]}",
        ]
    return "\n".join(lines) + "\n"


def first_pins(*sources: list[str]) -> list[str]:
    """One ``name==version`` per name, the first source that has it winning."""
    chosen: dict[str, str] = {}
    for source in sources:
        for pin in source:
            chosen.setdefault(canonicalize_name(pin.split("==", 1)[0]), pin)
    return list(chosen.values())


def pinned(entries: list[dict]) -> list[str]:
    return [f"{e['metadata']['name']}=={e['metadata']['version']}" for e in entries]


def write_lock(output: Path, cmake_args: str, upgrade: bool, tools: Path = BUILD_TOOLS_LOCK,
               cuda: Path = CUDA_LOCK) -> None:
    here = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{sys.platform} {platform.machine()}",
    }
    with tempfile.TemporaryDirectory(prefix="enclave-lock-") as tmp:
        work = Path(tmp)
        entries = [
            e for e in resolve(runtime_requirements(), [] if upgrade else installed_pins(), work)
            if canonicalize_name(e["metadata"]["name"]) not in NOT_SHIPPED
        ]
        llama = next((e for e in entries if canonicalize_name(e["metadata"]["name"]) == LLAMA), None)
        if llama is None:
            raise LockError(f"{LLAMA} is not among the resolved distributions")
        llama_version = llama["metadata"]["version"]
        llama_sha = llama["download_info"]["archive_info"]["hashes"]["sha256"]
        commit, llama_build = read_llama_sdist(llama_version, llama_sha, work)
        build_inputs = {
            **here,
            "llama-cpp-python.version": llama_version,
            "llama-cpp-python.cmake-args": cmake_args,
            "llama.cpp.commit": commit,
        }
        text = render(entries, build_inputs)

        # The build tools, resolved together with the shipped pins (which they must not move).
        extras = pyproject()["project"]["optional-dependencies"]
        tool_requirements = [
            "pip", *pyproject()["build-system"]["requires"], *llama_build,
            *(req for extra in TOOL_EXTRAS for req in extras[extra]),
        ]
        shipped = {canonicalize_name(e["metadata"]["name"]) for e in entries}
        held = [] if upgrade else first_pins(installed_pins(TOOL_EXTRAS), pins_of(tools))
        tool_entries = [
            e for e in resolve(tool_requirements, first_pins(pinned(entries), held), work)
            if canonicalize_name(e["metadata"]["name"]) not in shipped
        ]
        tools_text = render(tool_entries, {**here, "llama-cpp-python.build-requires": ", ".join(llama_build)}, "tools")

        cuda_requirements = [*(f"{name}=={CUDA_RELEASE}.*" for name in CUDA_WHEELS), *CUDA_TOOLS]
        cuda_entries = resolve(cuda_requirements, [] if upgrade else pins_of(cuda), work)
        cuda_text = render(cuda_entries, {"platform": f"{sys.platform} {platform.machine()}",
                                          "cuda.release": CUDA_RELEASE}, "cuda")
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output} ({len(entries)} distributions, llama.cpp {build_inputs['llama.cpp.commit'][:12]})")
    tools.write_text(tools_text, encoding="utf-8")
    print(f"wrote {tools} ({len(tool_entries)} build tools)")
    cuda.write_text(cuda_text, encoding="utf-8")
    print(f"wrote {cuda} ({len(cuda_entries)} distributions, CUDA {CUDA_RELEASE})")


def check(lock_path: Path) -> int:
    problems = check_against_lock(runtime_closure(), read_lock(lock_path))
    for problem in problems:
        print(f"lock mismatch: {problem}", file=sys.stderr)
    if problems:
        print(f"this environment is not the one {lock_path} pins: run make lock, or reinstall from it",
              file=sys.stderr)
        return 1
    print(f"this environment ships exactly what {lock_path} pins")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=LOCK)
    parser.add_argument("--cmake-args", default="", help="the CMAKE_ARGS make package builds llama-cpp-python with")
    parser.add_argument("--upgrade", action="store_true", help="newest allowed versions, not the installed ones")
    parser.add_argument("--check", action="store_true", help="compare this environment with the lock; write nothing")
    args = parser.parse_args()
    try:
        if args.check:
            return check(args.output)
        write_lock(args.output, args.cmake_args, args.upgrade)
    except (LockError, subprocess.CalledProcessError) as exc:
        print(f"lock_package: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
