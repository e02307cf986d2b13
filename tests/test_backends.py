"""llama.cpp's backend libraries: linked in (the test build) or loaded at run time (the package's
build), and doctor's account of each file: loaded, or not and why.

The tests marked ``dl_build`` run only when ``ENCLAVE_DL_VENV`` names a virtual environment whose
llama-cpp-python is built the way ``make package`` builds it (GGML_BACKEND_DL, all CPU variants):
    python3 -m venv /tmp/dl-venv && CMAKE_ARGS="-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \\
        -DGGML_RPC=on -DGGML_NATIVE=OFF" /tmp/dl-venv/bin/pip install --no-binary llama-cpp-python \\
        llama-cpp-python==0.3.36
    ENCLAVE_DL_VENV=/tmp/dl-venv pytest tests/test_backends.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from inference.backend_reasons import (
    X86_VARIANTS,
    backend_files,
    cpu_flags,
    cpu_variant_reason,
    dlopen_reason,
    loaded_from_log,
    missing_features,
    parse_file_name,
    variant_score,
)
from inference.probe import probe_report
from tests.cli import ROOT, enclave

# /proc/cpuinfo's flags of a Haswell-level CPU (AVX2, no AVX-512), as this test machine has them
HASWELL_FLAGS = cpu_flags("processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 popcnt avx f16c "
                          "bmi1 avx2 bmi2 rdseed adx\n")
SAPPHIRE_FLAGS = HASWELL_FLAGS | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi",
                                  "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8"}


# The parsing, on recorded lines ----------------------------------------------------------------


def test_backend_libraries_are_told_from_the_other_files_beside_libllama() -> None:
    names = ["libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so.0", "libggml-rpc.so",
             "libggml-cpu-skylakex.so", "libggml-cuda.so", "libggml-cpu-haswell.so", "libmtmd.so"]
    files = backend_files(names)
    assert [(f.file, f.backend, f.variant) for f in files] == [
        ("libggml-cpu-haswell.so", "CPU", "haswell"),
        ("libggml-cpu-skylakex.so", "CPU", "skylakex"),
        ("libggml-cuda.so", "CUDA", ""),
        ("libggml-rpc.so", "RPC", ""),
    ]
    assert parse_file_name("libggml-vulkan.so").backend == "Vulkan"  # type: ignore[union-attr]


def test_the_library_llama_cpp_loaded_is_read_from_its_log() -> None:
    recorded = [
        "load_backend: loaded RPC backend from /opt/enclave/_internal/llama_cpp/lib/libggml-rpc.so",
        "2026-12-03 12:40:01,123 [4242] enclave.llama: load_backend: loaded CPU backend from "
        "/opt/enclave/_internal/llama_cpp/lib/libggml-cpu-haswell.so",
        "load_backend: backend /opt/enclave/_internal/llama_cpp/lib/libggml-cpu-skylakex.so is not supported on "
        "this system",
        "llama_model_loader: loaded meta data with 25 key-value pairs",
    ]
    assert loaded_from_log(recorded) == {"libggml-rpc.so": "RPC", "libggml-cpu-haswell.so": "CPU"}


@pytest.mark.parametrize(("error", "reason"), [
    ("libggml-cuda.so: libcuda.so.1: cannot open shared object file: No such file or directory",
     "no NVIDIA driver (libcuda.so.1 is missing)"),
    ("/opt/enclave/_internal/llama_cpp/lib/libggml-cuda.so: libcublas.so.12: cannot open shared object file: "
     "No such file or directory", "the CUDA runtime libraries are missing (libcublas.so.12)"),
    ("libggml-vulkan.so: libvulkan.so.1: cannot open shared object file: No such file or directory",
     "no Vulkan loader (libvulkan.so.1 is missing: install libvulkan1 and the GPU's Vulkan driver)"),
    ("libggml-hip.so: libamdhip64.so.6: cannot open shared object file: No such file or directory",
     "no ROCm runtime (libamdhip64.so.6 is missing)"),
    ("libggml-blas.so: libopenblas.so.0: cannot open shared object file: No such file or directory",
     "a library it needs is missing (libopenblas.so.0)"),
    ("/x/libggml-cuda.so: undefined symbol: ggml_backend_buffer_init",
     "built for another llama.cpp than this one (undefined symbol ggml_backend_buffer_init)"),
    ("/x/libggml-cuda.so: invalid ELF header", "not a library for this machine"),
    ("dlopen(/x/libggml-metal.so, 0x0006): Library not loaded: @rpath/libfoo.1.dylib",
     "a library it needs is missing (libfoo.1.dylib)"),
])
def test_dlopen_errors_become_reasons_people_can_act_on(error: str, reason: str) -> None:
    assert dlopen_reason(error) == reason


def test_the_packaged_apps_ctypes_does_not_hide_dlopens_reason(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """PyInstaller's CDLL raises its own "not found when the application was frozen" error
    from dlopen's; the reason must come from dlopen's."""
    from inference import backends

    def frozen_cdll(name: str, mode: int = 0) -> None:
        try:
            raise OSError(f"{name}: libcuda.so.1: cannot open shared object file: No such file or directory")
        except OSError as dlopen_error:
            raise OSError(f"Failed to load dynlib/dll {name!r}. Most likely this dynlib/dll was not found when "
                          "the application was frozen.") from dlopen_error

    monkeypatch.setattr(backends.ctypes, "CDLL", frozen_cdll)
    parsed = parse_file_name("libggml-cuda.so")
    assert parsed is not None
    assert backends._why_not(tmp_path / "libggml-cuda.so", parsed, None) == "no NVIDIA driver (libcuda.so.1 is missing)"


def test_a_cpu_variant_says_which_instruction_sets_this_cpu_lacks() -> None:
    assert missing_features("skylakex", HASWELL_FLAGS) == ["AVX512"]
    assert missing_features("sapphirerapids", HASWELL_FLAGS) == [
        "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8"]
    assert cpu_variant_reason("skylakex", 0, "haswell", HASWELL_FLAGS) == "this CPU lacks AVX512"
    assert cpu_variant_reason("alderlake", 0, "haswell", HASWELL_FLAGS) == "this CPU lacks AVX_VNNI"
    assert cpu_variant_reason("sse42", 5, "haswell", HASWELL_FLAGS) == "a better variant was chosen (haswell)"


def test_the_variant_scores_follow_llama_cpps() -> None:
    def best(flags: frozenset[str]) -> str:
        return max(X86_VARIANTS, key=lambda v: variant_score(v, flags))

    assert best(HASWELL_FLAGS) == "haswell"
    assert best(SAPPHIRE_FLAGS) == "sapphirerapids"
    assert best(frozenset({"sse4_2"})) == "sse42"
    assert best(frozenset()) == "x64"
    assert variant_score("haswell", HASWELL_FLAGS) == 64 and variant_score("skylakex", HASWELL_FLAGS) == 0


# The test build: backends linked in ----------------------------------------------------------------


def test_the_test_build_is_static_and_doctor_lists_its_linked_in_backends(tmp_path: Path,
                                                                          enclave_home: Path) -> None:
    report = probe_report(tmp_path / "llama.log").loading
    assert report is not None and report.loading == "static" and report.cpu_variant is None
    assert set(report.registered) == {"CPU", "RPC"}
    assert {(f.file, f.loaded) for f in report.files} == {("libggml-cpu.so", True), ("libggml-rpc.so", True)}

    result = enclave("doctor", home=enclave_home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    head = next(line for line in lines if line.startswith("Backend libraries:"))
    assert head.startswith("Backend libraries: static build, backends linked in (RPC, CPU)")
    assert any(line.split() == ["linked", "in", "libggml-cpu.so"] for line in lines)
    libraries = json.loads(enclave("doctor", "--json", home=enclave_home).stdout)["backend_libraries"]
    assert libraries["loading"] == "static"
    assert {f["file"] for f in libraries["files"]} == {"libggml-cpu.so", "libggml-rpc.so"}


# The package's build: backends loaded at run time -------------------------------------------------

DL_VENV = Path(os.environ.get("ENCLAVE_DL_VENV", "/nonexistent"))
dl_build = pytest.mark.skipif(not (DL_VENV / "bin" / "python").exists(),
                              reason="ENCLAVE_DL_VENV does not name a venv with a backend-DL llama-cpp-python")

# Run with the DL venv's Python: the backends report of this process, and with a model, a short reply
# from Enclave's worker (whose own child loads the backends the same way).
CHILD = textwrap.dedent("""
    import json, sys
    from dataclasses import asdict
    from pathlib import Path
    from inference.backends import backends_report
    out = {"report": asdict(backends_report())}
    if len(sys.argv) > 1:
        from inference.protocol import Generate, ModelSettings, Sampling, Token
        from inference.worker import Worker
        worker = Worker(Path(sys.argv[2]))
        try:
            worker.load(ModelSettings(path=sys.argv[1], n_ctx=256, flash_attn=False, n_threads=2))
            events = worker.generate(Generate(prompt="Hello", sampling=Sampling(max_tokens=4, temperature=0.0)))
            out["reply"] = "".join(e.text for e in events if isinstance(e, Token))
        finally:
            worker.close()
    print(json.dumps(out))
""")


def run_dl_child(pythonpath: list[Path], *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*pythonpath, ROOT]))}
    result = subprocess.run([str(DL_VENV / "bin" / "python"), "-c", CHILD, *args], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def this_cpu() -> frozenset[str]:
    return cpu_flags(Path("/proc/cpuinfo").read_text())


def ranked_variants(present: set[str]) -> list[str]:
    """The variants among ``present`` this CPU can run, best first (as llama.cpp scores them)."""
    usable = [v for v in present if variant_score(v, this_cpu()) > 0]
    return sorted(usable, key=lambda v: variant_score(v, this_cpu()), reverse=True)


def dl_llama_cpp() -> Path:
    found = list(DL_VENV.glob("lib/python3*/site-packages/llama_cpp"))
    assert found, f"no llama_cpp in {DL_VENV}"
    return found[0]


@dl_build
@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="compares with /proc/cpuinfo")
def test_the_package_build_loads_the_cpu_variant_that_matches_this_cpu() -> None:
    report = run_dl_child([])["report"]
    assert report["loading"] == "dynamic"
    variants = {f["variant"] for f in report["files"] if f["backend"] == "CPU"}
    assert {"x64", "sse42", "haswell", "skylakex", "alderlake"} <= variants
    best = ranked_variants(variants)[0]
    assert report["cpu_variant"] == best
    by_variant = {f["variant"]: f for f in report["files"] if f["backend"] == "CPU"}
    assert by_variant[best]["loaded"] and by_variant[best]["reason"] == ""
    for variant, entry in by_variant.items():
        if variant == best:
            continue
        assert not entry["loaded"]
        lacks = missing_features(variant, this_cpu())
        expected = f"this CPU lacks {', '.join(lacks)}" if lacks else f"a better variant was chosen ({best})"
        assert entry["reason"] == expected, variant
    assert {"CPU", "RPC"} <= set(report["registered"])


def fake_cuda_backend(directory: Path, build: Path) -> None:
    """A libggml-cuda.so as the CUDA package ships it: linked against the NVIDIA driver's
    libcuda.so.1, which this machine does not have (the stub it was linked with is deleted)."""
    build.mkdir()
    (build / "cuda.c").write_text("int cuInit(unsigned flags) { return flags; }\n")
    (build / "backend.c").write_text("int cuInit(unsigned); int ggml_backend_score(void) { return cuInit(0) + 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(build / "libcuda.so.1"),
                    str(build / "cuda.c")], check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(directory / "libggml-cuda.so"), str(build / "backend.c"),
                    str(build / "libcuda.so.1")], check=True)
    shutil.rmtree(build)


@dl_build
@pytest.mark.skipif(shutil.which("gcc") is None, reason="builds a stand-in CUDA backend with gcc")
def test_without_the_best_variant_a_lower_one_loads_and_the_model_still_answers(tmp_path: Path,
                                                                                 moe_model: Path) -> None:
    package = tmp_path / "site"
    shutil.copytree(dl_llama_cpp(), package / "llama_cpp", symlinks=True)
    lib = package / "llama_cpp" / "lib"
    variants = {f.variant for f in backend_files(p.name for p in lib.iterdir()) if f.backend == "CPU"}
    best, second = ranked_variants(variants)[:2]
    (lib / f"libggml-cpu-{best}.so").unlink()
    fake_cuda_backend(lib, tmp_path / "cuda-build")
    log = tmp_path / "llama.log"

    answer = run_dl_child([package], str(moe_model), str(log))

    report = answer["report"]
    assert report["directory"] == str(lib) and report["cpu_variant"] == second
    assert f"libggml-cpu-{best}.so" not in {f["file"] for f in report["files"]}
    cuda = next(f for f in report["files"] if f["file"] == "libggml-cuda.so")
    assert not cuda["loaded"] and cuda["reason"] == "no NVIDIA driver (libcuda.so.1 is missing)"
    assert answer["reply"].strip(), "the tiny model gave no reply"
    # the worker's llama.cpp log names the variant it loaded
    assert loaded_from_log(log.read_text().splitlines()).get(f"libggml-cpu-{second}.so") == "CPU"
