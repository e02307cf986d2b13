"""What a package is built from and what it says it ships: the committed lock file
(installers/requirements-lock.txt), the CycloneDX SBOM scripts/sbom.py writes for this
environment, THIRD_PARTY_LICENSES derived from it, the digest `enclave doctor --json` reports,
the .deb's Qt dependencies and the tarball launcher's library check. Nothing is downloaded:
the lock is read as committed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.diagnostics import SBOM_NAME, shipped_sbom
from ui.about import license_rows
from ui.qt_requirements import XCB_LIBRARIES, check_qt_requirements

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from package_inputs import LOCK, LockError, parse_lock, read_lock, runtime_closure  # noqa: E402
from sbom import verify  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHA256 = re.compile(r"^[0-9a-f]{64}$")
INSTALLERS = sorted((ROOT / "installers").rglob("*.sh"))


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sbom_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sbom") / "enclave.cdx.json"
    result = run_script("scripts/sbom.py", "-o", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def sbom(sbom_file: Path) -> dict:
    return json.loads(sbom_file.read_text(encoding="utf-8"))


def pypi_components(document: dict) -> list[dict]:
    return [c for c in document["components"] if c.get("purl", "").startswith("pkg:pypi/")]


# ------------------------------------------------------------------------------ the lock


def test_the_lock_pins_each_distribution_to_one_file_and_records_the_llama_build() -> None:
    lock = read_lock()
    assert len(lock.pins) > 40
    for pin in lock.pins.values():
        assert SHA256.match(pin.sha256), pin
        assert pin.filename.endswith((".whl", ".tar.gz")) and pin.version in pin.filename, pin
    assert lock.get("llama-cpp-python").filename == f"llama_cpp_python-{lock.get('llama-cpp-python').version}.tar.gz"
    inputs = lock.build_inputs
    assert inputs["llama-cpp-python.version"] == lock.get("llama-cpp-python").version
    assert re.fullmatch(r"[0-9a-f]{40}", inputs["llama.cpp.commit"])
    assert "-DGGML_RPC=on" in inputs["llama-cpp-python.cmake-args"]
    assert inputs["python"].startswith("CPython 3.") and inputs["platform"] == "linux x86_64"


def test_every_runtime_dependency_and_theirs_is_locked_at_the_version_installed() -> None:
    lock = read_lock()
    env = default_environment()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        pin = lock.get(req.name)
        assert pin is not None, f"{req.name} is not in the lock"
        assert req.specifier.contains(pin.version, prereleases=True), (spec, pin.version)
    shipped = {canonicalize_name(d.metadata["Name"]): d.version for d in runtime_closure()}
    assert {key: pin.version for key, pin in lock.pins.items()} == shipped  # nothing missing, nothing extra
    assert "pip" not in lock.pins  # required by sqlite-utils' metadata, never shipped


# pip's own requirements parser, run in a child (pip is the build's tool, not a dependency to import).
PIP_PARSE = """
import json, sys
from pip._internal.network.session import PipSession
from pip._internal.req.req_file import parse_requirements
print(json.dumps([[r.requirement, r.options.get("hashes", {})]
                  for r in parse_requirements(sys.argv[1], session=PipSession())]))
"""


def test_pip_reads_the_lock_as_the_same_pins() -> None:
    result = subprocess.run([sys.executable, "-c", PIP_PARSE, str(LOCK)], capture_output=True, text=True, check=True)
    parsed = {canonicalize_name(Requirement(line).name): (str(Requirement(line).specifier), hashes)
              for line, hashes in json.loads(result.stdout)}
    lock = read_lock()
    assert set(parsed) == set(lock.pins)
    for key, pin in lock.pins.items():
        assert parsed[key] == (f"=={pin.version}", {"sha256": [pin.sha256]})


@pytest.mark.parametrize(("text", "error"), [
    ("numpy>=1.26 \\\n    --hash=sha256:" + "a" * 64 + "\n", "not an exact pin"),
    ("numpy==2.0\n", "expected one --hash"),
    ("numpy==2.0 --hash=sha256:" + "a" * 64 + " --hash=sha256:" + "b" * 64 + "\n", "expected one --hash"),
    ("numpy==2.0 --hash=sha256:" + "a" * 64 + "\nNumPy==2.0 --hash=sha256:" + "a" * 64 + "\n", "pinned twice"),
])
def test_a_malformed_lock_is_refused(text: str, error: str) -> None:
    with pytest.raises(LockError, match=error):
        parse_lock(text)


# ------------------------------------------------------------------------------ the SBOM


def test_the_sbom_is_cyclonedx_with_a_purl_for_every_component(sbom: dict) -> None:
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] in ("1.5", "1.6") and sbom["version"] == 1
    assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", sbom["serialNumber"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", sbom["metadata"]["timestamp"])
    assert sbom["metadata"]["component"]["name"] == "Enclave"
    refs = [sbom["metadata"]["component"]["bom-ref"]]
    for component in sbom["components"]:
        assert component["type"] in ("library", "framework", "platform", "application")
        assert component["name"] and component["version"] and component["purl"].startswith("pkg:")
        assert component["licenses"], component["name"]
        refs += [component["bom-ref"], *(f["bom-ref"] for f in component.get("components", []))]
    assert len(refs) == len(set(refs))
    for node in sbom["dependencies"]:
        assert node["ref"] in refs and set(node["dependsOn"]) <= set(refs)


def test_the_sbom_lists_every_shipped_distribution_with_the_lock_hash(sbom: dict) -> None:
    lock = read_lock()
    listed = {canonicalize_name(c["name"]): c for c in pypi_components(sbom)}
    assert set(listed) == {canonicalize_name(d.metadata["Name"]) for d in runtime_closure()}
    for key, component in listed.items():
        pin = lock.pins[key]
        assert component["version"] == pin.version
        assert component["hashes"] == [{"alg": "SHA-256", "content": pin.sha256}]
        assert component["purl"] == f"pkg:pypi/{component['name'].lower().replace('_', '-')}@{pin.version}"
    assert verify(sbom, lock) == []
    assert "LGPL" in json.dumps(listed["pyside6"]["licenses"])  # from PySide6's own metadata


def test_the_sbom_names_llama_cpp_its_backends_and_library_hashes(sbom: dict) -> None:
    import llama_cpp

    llama = next(c for c in sbom["components"] if c["bom-ref"] == "llama.cpp")
    assert llama["version"] == read_lock().build_inputs["llama.cpp.commit"]
    properties = {p["name"]: p["value"] for p in llama["properties"]}
    assert {"cpu", "rpc"} <= set(properties["enclave:ggml-backends"].split(", "))
    assert llama["version"].startswith(properties["enclave:ggml-commit-built"].split("-")[0])
    # No --cmake-args given (make package gives them): only what the lock says to build with, named so.
    assert properties["enclave:cmake-args-locked"] == read_lock().build_inputs["llama-cpp-python.cmake-args"]
    assert "enclave:cmake-args" not in properties
    lib = Path(llama_cpp.__file__).parent / "lib"
    files = {f["name"]: f["hashes"][0]["content"] for f in llama["components"]}
    assert "llama_cpp/lib/libllama.so" in files and "llama_cpp/lib/libggml-cpu.so" in files
    for name, digest in files.items():
        assert hashlib.sha256((lib / Path(name).name).read_bytes()).hexdigest() == digest


def test_the_sbom_names_qt_sqlcipher_and_python(sbom: dict) -> None:
    from PySide6 import QtCore

    by_ref = {c["bom-ref"]: c for c in sbom["components"]}
    assert by_ref["qt"]["version"] == QtCore.qVersion()
    assert by_ref["qt"]["licenses"] == [{"expression": "LGPL-3.0-only"}]
    assert by_ref["cpython"]["version"] == ".".join(map(str, sys.version_info[:3]))
    import sqlcipher3

    connection = sqlcipher3.connect(":memory:")
    cipher = connection.execute("PRAGMA cipher_version").fetchone()[0]
    connection.close()
    assert cipher.startswith(by_ref["sqlcipher"]["version"])


def test_verify_names_what_differs_from_the_lock(sbom: dict) -> None:
    lock = read_lock()
    changed = json.loads(json.dumps(sbom))
    numpy = next(c for c in changed["components"] if c["name"] == "numpy")
    numpy["hashes"] = [{"alg": "SHA-256", "content": "0" * 64}]
    changed["components"] = [c for c in changed["components"] if c["name"] != "idna"]
    problems = verify(changed, lock)
    assert len(problems) == 2
    assert problems[0].startswith(f"numpy {numpy['version']}: the SBOM's sha256 {'0' * 64} is not the lock's")
    assert problems[1] == f"idna {lock.get('idna').version} is in the lock but not in the SBOM"


def test_the_sbom_refuses_an_environment_that_is_not_the_lock(tmp_path: Path) -> None:
    text = LOCK.read_text(encoding="utf-8")
    pin = read_lock().get("numpy")
    stale = tmp_path / "lock.txt"
    stale.write_text(text.replace(f"numpy=={pin.version} ", "numpy==1.0.0 "), encoding="utf-8")
    result = run_script("scripts/sbom.py", "--lock", str(stale), "-o", str(tmp_path / "sbom.json"))
    assert result.returncode == 1
    assert f"numpy is {pin.version} here but 1.0.0 in the lock" in result.stderr
    assert not (tmp_path / "sbom.json").exists()


def test_third_party_licenses_are_derived_from_the_sbom(sbom: dict, sbom_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "THIRD_PARTY_LICENSES"
    result = run_script("scripts/third_party_licenses.py", "--sbom", str(sbom_file), "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    rows = {name: version for name, version, _ in license_rows(text)}
    for component in sbom["components"]:
        if component["bom-ref"] == "llama.cpp":
            assert rows["llama.cpp / ggml"] == component["version"][:12]
        else:
            assert rows[component["name"]] == component["version"]
    for component in pypi_components(sbom):
        assert f"\n{component['name']} {component['version']} — " in text
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in text


# ------------------------------------------------------------------------------ doctor


def test_doctor_gives_the_sha256_of_the_sbom_beside_the_packaged_program(tmp_path: Path) -> None:
    (tmp_path / "Enclave").write_bytes(b"")
    (tmp_path / SBOM_NAME).write_text('{"bomFormat": "CycloneDX"}', encoding="utf-8")
    report = shipped_sbom(frozen=True, executable=str(tmp_path / "Enclave"))
    assert report == {"path": str(tmp_path / SBOM_NAME),
                      "sha256": hashlib.sha256(b'{"bomFormat": "CycloneDX"}').hexdigest()}


def test_doctor_says_when_there_is_no_sbom(tmp_path: Path) -> None:
    missing = shipped_sbom(frozen=True, executable=str(tmp_path / "Enclave"))
    assert missing["sha256"] is None and missing["note"] == "this package's SBOM is missing from its folder"
    source = shipped_sbom()  # the tests run from the source tree
    assert source["path"] is None and source["sha256"] is None and "source checkout" in source["note"]


# ------------------------------------------------------------------------------ the installers


@pytest.mark.parametrize("script", INSTALLERS, ids=[str(p.relative_to(ROOT)) for p in INSTALLERS])
def test_every_installer_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def control_fields(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "ENCLAVE_DIST": str(tmp_path)}  # no PyInstaller folder there
    result = subprocess.run(["sh", "installers/linux/build_deb.sh", "--control-only"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^([\w-]+): (.*)$", result.stdout, re.MULTILINE))


def test_the_deb_control_depends_on_the_qt_libraries(tmp_path: Path) -> None:
    fields = control_fields(tmp_path)
    from app import __version__

    assert fields["Package"] == "enclave" and fields["Version"] == __version__
    depends = [part.strip() for part in fields["Depends"].split(",")]
    assert depends[0].startswith("libc6 (>= 2.")
    names = [part.split(" ")[0] for part in depends]
    assert len(names) == len(set(names))
    assert set(XCB_LIBRARIES.values()) <= set(names)
    assert {"libwayland-client0", "libwayland-egl1"} <= set(names)


def launcher(tmp_path: Path, replace: tuple[str, str] | None = None) -> Path:
    text = subprocess.run(["sh", "installers/linux/build_tarball.sh", "--launcher-only"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    if replace is not None:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1])
    (tmp_path / "lib").mkdir()
    app = tmp_path / "lib" / "Enclave"
    app.write_text('#!/bin/sh\necho "the app ran with: $*"\n', encoding="utf-8")
    app.chmod(0o755)
    script = tmp_path / "Enclave"
    script.write_text(text, encoding="utf-8")
    script.chmod(0o755)
    return script


def run_launcher(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), *args], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                          text=True, timeout=30)


def test_the_launcher_carries_the_one_list(tmp_path: Path) -> None:
    text = launcher(tmp_path).read_text(encoding="utf-8")
    for soname, package in XCB_LIBRARIES.items():
        assert f"\n{soname} {package}\n" in text


def test_the_launcher_names_a_missing_library_and_its_package_in_one_line(tmp_path: Path) -> None:
    script = launcher(tmp_path, ("\nlibxcb-cursor.so.0 libxcb-cursor0\n", "\nlibenclave-none.so.0 libxcb-cursor0\n"))
    result = run_launcher(script, DISPLAY=":0")
    assert result.returncode == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("Enclave needs the system librar")
    assert "libenclave-none.so.0" in line and "libxcb-cursor0" in line.split("sudo apt install ", 1)[1]
    # The commands, and other platforms, are not held back by the window's libraries.
    assert run_launcher(script, "doctor", DISPLAY=":0").stdout == "the app ran with: doctor\n"
    assert run_launcher(script, QT_QPA_PLATFORM="offscreen", DISPLAY=":0").returncode == 0
    assert run_launcher(script, WAYLAND_DISPLAY="wayland-0", DISPLAY=":0").returncode == 0


def test_the_launcher_agrees_with_the_apps_own_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    result = run_launcher(launcher(tmp_path), DISPLAY=":0")
    expected = check_qt_requirements({"DISPLAY": ":0"})
    if expected is None:
        assert result.returncode == 0 and result.stdout == "the app ran with: \n"
    else:
        assert result.returncode == 2 and result.stderr.strip() == expected


def _cuda_dry_run(**env: str) -> str:
    result = subprocess.run(["sh", str(ROOT / "installers/gpu/build_cuda_backend.sh"), "--dry-run"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_cuda_backend_add_on_builds_from_the_locked_llama_cpp_for_this_version() -> None:
    """A real build takes hours of nvcc; its dry run shows what it would do."""
    out = _cuda_dry_run()
    from app import __version__ as version
    llama = read_lock().get("llama-cpp-python")
    assert llama is not None
    assert f"llama-cpp-python=={llama.version} --hash=sha256:{llama.sha256}" in out and "--require-hashes" in out
    assert "-DGGML_BACKEND_DL=ON -DGGML_CUDA=ON" in out and "--target ggml-cuda" in out
    assert f"Depends: enclave (= {version})" in out
    copied = [line for line in out.splitlines() if line.startswith("+ cp")]
    assert copied and not [line for line in copied if "libcuda.so" in line]  # the driver's is never shipped
    assert f"Enclave-{version}/lib/_internal/llama_cpp/lib" in out  # where the portable folder keeps llama.cpp


def test_the_cuda_add_on_is_built_with_nvidias_cuda_13_wheels_by_default() -> None:
    """CUDA 12's wheels have no nvcc: the default toolkit is CUDA 13.0's, all from one release."""
    out = _cuda_dry_run()
    from app import __version__ as version
    wheels = re.findall(r"(nvidia-[a-z-]+)==([\d.*]+)", out)
    assert {name for name, _ in wheels} >= {"nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cublas"}
    assert wheels and all(pin.startswith("13.0.") for _, pin in wheels)  # exact: installers/gpu/cuda13-lock.txt
    assert f"dist/enclave-cuda13_{version}_amd64.deb" in out and f"Enclave-{version}-linux-x86_64-cuda13.tar.gz" in out
    assert "Package: enclave-cuda13" in out and "NVIDIA driver 580 or newer" in out
    archs = re.search(r"-DCMAKE_CUDA_ARCHITECTURES=(\S+)", out)
    assert archs is not None and archs.group(1).startswith("75-real;")  # CUDA 13 starts at Turing


def _cuda_12_toolkit(tmp_path: Path) -> tuple[Path, Path]:
    """An installed CUDA 12.8 toolkit as the add-on's script sees one: its folder and nvcc."""
    toolkit = tmp_path / "cuda-12.8"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "lib64").mkdir()
    (toolkit / "lib64" / "libcudart.so").touch()
    nvcc = toolkit / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.8, V12.8.93'\n")
    nvcc.chmod(0o755)
    return toolkit, nvcc


def test_an_installed_cuda_12_toolkit_names_the_add_on_after_its_major_version(tmp_path: Path) -> None:
    toolkit, nvcc = _cuda_12_toolkit(tmp_path)
    out = _cuda_dry_run(CUDA_TOOLKIT=str(toolkit))
    assert "nvidia-cuda-nvcc" not in out and f"-DCMAKE_CUDA_COMPILER={nvcc}" in out
    assert "Package: enclave-cuda12" in out and "NVIDIA driver 525 or newer" in out and "-cuda12.tar.gz" in out
    assert f"{toolkit}/lib64/libcublasLt.so.12" in out


# ------------------------------------------------------------------------------ build tools and the GPU add-on

from package_inputs import BUILD_TOOLS_LOCK, CUDA_LOCK  # noqa: E402
from sbom_gpu import build as gpu_sbom  # noqa: E402


def pip_parse(path: Path) -> dict[str, tuple[str, dict]]:
    result = subprocess.run([sys.executable, "-c", PIP_PARSE, str(path)], capture_output=True, text=True, check=True)
    return {canonicalize_name(Requirement(line).name): (str(Requirement(line).specifier), hashes)
            for line, hashes in json.loads(result.stdout)}


def test_the_build_tools_are_pinned_by_hash_apart_from_what_ships() -> None:
    tools, shipped = read_lock(BUILD_TOOLS_LOCK), read_lock()
    assert not set(tools.pins) & set(shipped.pins)  # a distribution both need is pinned once, where it ships
    for pin in tools.pins.values():
        assert SHA256.match(pin.sha256) and pin.version in pin.filename, pin
    assert pip_parse(BUILD_TOOLS_LOCK) == {key: (f"=={pin.version}", {"sha256": [pin.sha256]})
                                           for key, pin in tools.pins.items()}
    # What builds the package: pip, enclave's build backend, llama-cpp-python's with CMake and ninja
    assert {"pip", "setuptools", "scikit-build-core", "cmake", "ninja"} <= set(tools.pins)
    assert "scikit-build-core" in tools.build_inputs["llama-cpp-python.build-requires"]
    # … and every requirement of the package and dev extras, at a version they allow
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for spec in [*project["project"]["optional-dependencies"]["package"],
                 *project["project"]["optional-dependencies"]["dev"], *project["build-system"]["requires"]]:
        req = Requirement(spec)
        pin = tools.get(req.name) or shipped.get(req.name)
        assert pin is not None and req.specifier.contains(pin.version, prereleases=True), spec
    assert tools.build_inputs["python"] == shipped.build_inputs["python"]


def test_pillow_ships_as_a_runtime_dependency_not_a_build_tool() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "pillow" in {canonicalize_name(Requirement(s).name) for s in project["dependencies"]}
    assert "pillow" not in {canonicalize_name(Requirement(s).name) for s in project["optional-dependencies"]["package"]}
    assert read_lock().get("pillow") is not None and read_lock(BUILD_TOOLS_LOCK).get("pillow") is None


def test_make_package_installs_only_pinned_files_tools_first_and_builds_llama_with_them() -> None:
    result = subprocess.run(["make", "-n", "-B", "package"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.replace("\\\n", " ").splitlines()
    installs = [line for line in lines if ".venv-package/bin/python -m pip install" in line]
    assert "-r installers/build-tools-lock.txt" in installs[0] and "--require-hashes" in installs[0]
    # the shipped lock in two parts: llama-cpp-python last, its build then finding what scikit-build-core
    # needs among the shipped distributions (packaging) already installed
    splits = [line for line in lines if line.startswith("awk ") and "installers/requirements-lock.txt" in line]
    assert [line.rsplit("> ", 1)[1] for line in splits] == [".venv-package/lock-but-llama.txt",
                                                             ".venv-package/lock-llama.txt"]
    assert "-r .venv-package/lock-but-llama.txt" in installs[1] and "--require-hashes" in installs[1]
    assert "-r .venv-package/lock-llama.txt" in installs[2]
    assert "--require-hashes" in installs[2] and "--no-build-isolation" in installs[2] and "CMAKE_ARGS=" in installs[2]
    # The rest installs nothing from an index: enclave itself, without its dependencies or a fetched backend.
    assert installs[3:] == [".venv-package/bin/python -m pip install --quiet --no-build-isolation --no-deps -e ."]
    assert "--upgrade pip" not in result.stdout

    # the two parts hold every pin of the lock once, llama-cpp-python alone in the second
    parts = []
    for split in splits:
        command = split.rsplit("> ", 1)[0].replace(".venv-package/", "")
        parts.append(subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout)
    pins = [[canonicalize_name(line.split("==")[0]) for line in part.splitlines()
             if "==" in line and not line.startswith(" ")] for part in parts]
    assert pins[1] == ["llama-cpp-python"] and "packaging" in pins[0]
    assert sorted(pins[0] + pins[1]) == sorted(read_lock(LOCK).pins)


def test_the_cuda_add_on_is_built_from_a_lock_of_one_cuda_release() -> None:
    lock = read_lock(CUDA_LOCK)
    release = lock.build_inputs["cuda.release"]
    nvidia = {key: pin for key, pin in lock.pins.items() if key.startswith("nvidia-")}
    assert {"nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cublas"} <= set(nvidia)
    assert all(pin.version.startswith(release + ".") for pin in nvidia.values())
    assert {"cmake", "ninja", "packaging"} <= set(lock.pins)
    out = _cuda_dry_run()
    assert f"-r {ROOT}/build/cuda/tools-lock.txt" in out and "--require-hashes --no-deps" in out
    written = next(line for line in out.splitlines() if line.startswith("+ write") and "tools-lock.txt" in line)
    assert set(written.split(": ", 1)[1].split()) == {f"{pin.name}=={pin.version}" for pin in lock.pins.values()}


def test_the_cuda_add_on_writes_and_ships_its_sbom() -> None:
    from app import __version__ as version

    out = _cuda_dry_run()
    sbom = f"dist/enclave-cuda13-{version}-sbom.cdx.json"
    assert re.search(rf"python scripts/sbom_gpu.py --name enclave-cuda13 --release 13.0 --lib-dir \S+/lib "
                     rf"--cuda-lock installers/gpu/cuda13-lock.txt --cmake-args .*-DGGML_CUDA=ON.* -o {sbom}$",
                     out, re.MULTILINE)
    lines = out.splitlines()
    made = next(i for i, line in enumerate(lines) if "sbom_gpu.py" in line)
    assert made > max(i for i, line in enumerate(lines) if line.startswith("+ cp -L"))  # after the files are in place
    assert f"+ cp {sbom} {ROOT}/build/cuda/deb/opt/enclave/sbom-cuda13.cdx.json" in lines
    assert f"+ cp {sbom} {ROOT}/build/cuda/tar/Enclave-{version}/lib/sbom-cuda13.cdx.json" in lines


def test_a_toolkit_add_on_installs_no_nvidia_wheels_and_names_its_toolkit_in_the_sbom(tmp_path: Path) -> None:
    toolkit, _nvcc = _cuda_12_toolkit(tmp_path)
    out = _cuda_dry_run(CUDA_TOOLKIT=str(toolkit))
    written = next(line for line in out.splitlines() if line.startswith("+ write") and "tools-lock.txt" in line)
    assert "cmake==" in written and "nvidia" not in written
    assert f"--toolkit {toolkit} " in out and "-o dist/enclave-cuda12-" in out


def fake_wheel(site: Path, name: str, version: str, files: list[str]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                   "License: NVIDIA Proprietary Software\n", encoding="utf-8")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files), encoding="utf-8")
    for file in files:  # importlib.metadata lists only the files that are there
        (site / file).parent.mkdir(parents=True, exist_ok=True)
        (site / file).write_bytes(b"")


def gpu_add_on(tmp_path: Path) -> tuple[Path, Path]:
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("libggml-cuda.so", "libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"):
        (lib / name).write_bytes(name.encode() * 3)
    site = tmp_path / "site"
    cuda = read_lock(CUDA_LOCK)
    runtime = cuda.get("nvidia-cuda-runtime").version
    fake_wheel(site, "nvidia-cuda-runtime", runtime, ["nvidia/cu13/lib/libcudart.so.13"])
    fake_wheel(site, "nvidia-cublas", cuda.get("nvidia-cublas").version,
               ["nvidia/cu13/lib/libcublas.so.13", "nvidia/cu13/lib/libcublasLt.so.13"])
    return lib, site


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_gpu_sbom_lists_each_shipped_file_under_the_wheel_it_came_from(tmp_path: Path) -> None:
    from importlib import metadata

    lib, site = gpu_add_on(tmp_path)
    cuda = read_lock(CUDA_LOCK)
    doc = gpu_sbom("enclave-cuda13", "13.0", lib, read_lock(), "-DGGML_CUDA=ON", cuda_lock=cuda,
                   dists=metadata.distributions(path=[str(site)]))
    assert doc["bomFormat"] == "CycloneDX" and doc["metadata"]["component"]["name"] == "enclave-cuda13"
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    llama = by_ref["llama.cpp"]
    assert llama["version"] == read_lock().build_inputs["llama.cpp.commit"]
    assert {"name": "enclave:cmake-args", "value": "-DGGML_CUDA=ON"} in llama["properties"]
    assert [f["name"] for f in llama["components"]] == ["_internal/llama_cpp/lib/libggml-cuda.so"]
    listed = {}
    for wheel in ("nvidia-cuda-runtime", "nvidia-cublas"):
        pin = cuda.get(wheel)
        component = by_ref[f"pkg:pypi/{wheel}@{pin.version}"]
        assert component["hashes"] == [{"alg": "SHA-256", "content": pin.sha256}]  # the wheel's, from the lock
        listed |= {f["name"].rsplit("/", 1)[1]: (wheel, f["hashes"][0]["content"]) for f in component["components"]}
    assert listed == {"libcudart.so.13": ("nvidia-cuda-runtime", sha(lib / "libcudart.so.13")),
                      "libcublas.so.13": ("nvidia-cublas", sha(lib / "libcublas.so.13")),
                      "libcublasLt.so.13": ("nvidia-cublas", sha(lib / "libcublasLt.so.13"))}
    assert doc["dependencies"] == [{"ref": "enclave-cuda13", "dependsOn": list(by_ref)}]


def test_the_gpu_sbom_refuses_a_file_of_unknown_origin_or_a_wheel_not_the_locks(tmp_path: Path) -> None:
    from importlib import metadata

    lib, site = gpu_add_on(tmp_path)
    (lib / "libnvrtc.so.13").write_bytes(b"?")
    with pytest.raises(LockError, match=r"no installed NVIDIA wheel holds libnvrtc\.so\.13"):
        gpu_sbom("enclave-cuda13", "13.0", lib, read_lock(), "", cuda_lock=read_lock(CUDA_LOCK),
                 dists=metadata.distributions(path=[str(site)]))
    (lib / "libnvrtc.so.13").unlink()
    other = tmp_path / "other"
    fake_wheel(other, "nvidia-cuda-runtime", "13.0.1", ["nvidia/cu13/lib/libcudart.so.13"])
    fake_wheel(other, "nvidia-cublas", read_lock(CUDA_LOCK).get("nvidia-cublas").version,
               ["nvidia/cu13/lib/libcublas.so.13", "nvidia/cu13/lib/libcublasLt.so.13"])
    with pytest.raises(LockError, match=r"nvidia-cuda-runtime is 13\.0\.1 here but"):
        gpu_sbom("enclave-cuda13", "13.0", lib, read_lock(), "", cuda_lock=read_lock(CUDA_LOCK),
                 dists=metadata.distributions(path=[str(other)]))


def test_the_gpu_sbom_of_a_toolkit_build_from_the_command_line(tmp_path: Path) -> None:
    lib, _ = gpu_add_on(tmp_path)
    out = tmp_path / "addon.cdx.json"
    result = run_script("scripts/sbom_gpu.py", "--name", "enclave-cuda12", "--release", "12.8", "--lib-dir", str(lib),
                        "--toolkit", "/usr/local/cuda-12.8", "-o", str(out))
    assert result.returncode == 0, result.stderr
    components = json.loads(out.read_text(encoding="utf-8"))["components"]
    toolkit = next(c for c in components if c["bom-ref"] == "cuda-toolkit")
    assert toolkit["version"] == "12.8" and toolkit["purl"] == "pkg:generic/nvidia/cuda-toolkit@12.8"
    assert {f["name"].rsplit("/", 1)[1]: f["hashes"][0]["content"] for f in toolkit["components"]} == {
        name: sha(lib / name) for name in ("libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13")}
    (lib / "libggml-cuda.so").unlink()
    result = run_script("scripts/sbom_gpu.py", "--name", "x", "--release", "12.8", "--lib-dir", str(lib),
                        "--toolkit", "/t", "-o", str(out))
    assert result.returncode == 1 and "holds no libggml-" in result.stderr and "Traceback" not in result.stderr


def test_the_whole_app_cuda_build_is_not_named_like_an_add_on(tmp_path: Path) -> None:
    script = (ROOT / "installers/gpu/build_cuda.sh").read_text(encoding="utf-8")
    assert "VARIANT=full-cuda12" in script and "ENCLAVE_VARIANT=$VARIANT installers/linux/build_deb.sh" in script
    env = {**os.environ, "ENCLAVE_DIST": str(tmp_path), "ENCLAVE_VARIANT": "full-cuda12"}
    control = subprocess.run(["sh", "installers/linux/build_deb.sh", "--control-only"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    fields = dict(re.findall(r"^([\w-]+): (.*)$", control, re.MULTILINE))
    assert fields["Package"] == "enclave-full-cuda12" and fields["Provides"] == "enclave"
    assert "Package: enclave-cuda13" in _cuda_dry_run()  # the add-ons keep enclave-cuda<major>


@pytest.mark.parametrize("script", ["installers/windows/build.ps1", "installers/macos/build_app.sh",
                                    "installers/gpu/build_cuda.sh"])
def test_the_other_platforms_builds_write_an_sbom_and_derive_the_licences_from_it(script: str) -> None:
    """They cannot run here (Windows, macOS, a CUDA toolkit): their text says what they run."""
    text = (ROOT / script).read_text(encoding="utf-8")
    assert re.search(r"scripts[/\\]sbom\.py (--no-lock |--cmake-args \S+ )?-o \S+", text)
    assert re.search(r"scripts[/\\]third_party_licenses\.py --sbom \S+", text)
    assert text.index("sbom.py") < text.index("third_party_licenses.py") < text.index("pyinstaller")
