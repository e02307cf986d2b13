"""The ``enclave`` command as a user runs it: a real process, real exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app import __version__
from tests.cli import enclave as run_enclave
from tests.cli import one_error_line


def enclave(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return run_enclave(*args, home=home, timeout=120)


def test_version(enclave_home: Path) -> None:
    result = enclave("--version", home=enclave_home)
    assert result.returncode == 0
    assert result.stdout.strip() == f"enclave {__version__}"


def test_run_streams_a_reply_and_stats(enclave_home: Path, moe_model: Path) -> None:
    result = enclave("run", str(moe_model), "hello", "--max-tokens", "12", "--temperature", "0", "--stats",
                     home=enclave_home)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) > 0
    assert "generated: 12 tokens" in result.stderr
    assert "llama_model_loader" not in result.stdout + result.stderr  # llama.cpp's log stays in the log file
    assert "llama_model_loader" in (enclave_home / "logs" / "llama.log").read_text()


def test_run_is_reproducible_with_temperature_zero(enclave_home: Path, dense_model: Path) -> None:
    args = ("run", str(dense_model), "the model", "--max-tokens", "8", "--temperature", "0",
            "--system", "be brief")
    first, second = enclave(*args, home=enclave_home), enclave(*args, home=enclave_home)
    assert first.returncode == 0 and first.stdout == second.stdout


def truncated(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp, models: tmp / "missing.gguf", "missing.gguf: the file does not exist"),
        (lambda tmp, models: tmp, "this is a folder, not a model file"),
        (lambda tmp, models: (tmp / "notes.gguf", (tmp / "notes.gguf").write_text("hello"))[0],
         "notes.gguf: this is not a GGUF model file"),
        (lambda tmp, models: truncated(models["moe"], tmp / "cut.gguf"), "cut.gguf: the file is incomplete"),
        (lambda tmp, models: models["abort"], "crashed while loading tiny-abort.gguf"),
    ],
    ids=["missing", "folder", "not-gguf", "truncated", "llama-abort"],
)
def test_user_errors_are_one_line_and_exit_2(make, expected: str, tmp_path: Path, enclave_home: Path,
                                             moe_model: Path, aborting_model: Path) -> None:
    path = make(tmp_path, {"moe": moe_model, "abort": aborting_model})
    result = enclave("run", str(path), "hello", home=enclave_home)
    assert result.stdout == ""
    assert expected in one_error_line(result)


def test_doctor_reports_backend_devices_and_paths(enclave_home: Path) -> None:
    result = enclave("doctor", home=enclave_home)
    assert result.returncode == 0, result.stderr
    assert "llama.cpp backends: RPC, CPU" in result.stdout
    assert "CPU" in result.stdout and "GiB free of" in result.stdout
    assert str(enclave_home / "data" / "enclave.db") in result.stdout


def test_help_lists_the_commands(enclave_home: Path) -> None:
    result = enclave("--help", home=enclave_home)
    assert result.returncode == 0
    for command in ("run", "doctor", "chat", "gui"):
        assert command in result.stdout


def test_inspect_describes_the_model(enclave_home: Path, moe_model: Path) -> None:
    result = enclave("inspect", str(moe_model), home=enclave_home)
    assert result.returncode == 0, result.stderr
    assert "tiny-moe  (llama, 8 experts, 2 used per token)" in result.stdout
    assert "trained context 4,096 tokens" in result.stdout
    as_json = json.loads(enclave("inspect", str(moe_model), "--json", home=enclave_home).stdout)
    assert as_json["architecture"] == "llama"


def test_plan_for_a_simulated_machine_as_json(enclave_home: Path, moe_model: Path) -> None:
    result = enclave("plan", str(moe_model), "--vram", "24GiB", "--ram", "64GiB", "--ctx", "2048",
                     "--cpu-moe-layers", "1", "--json", home=enclave_home)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["fits"] is True
    assert data["n_gpu_layers"] == 5 and data["cpu_expert_layers"] == [0]
    gpu, ram = data["devices"]
    assert gpu["device"] == "GPU0" and gpu["budget"] == 23 * 2**30
    assert ram["budget"] == 63 * 2**30
    assert data["contexts"][-1]["n_ctx"] == 4096


def test_plan_refusal_says_what_is_missing(enclave_home: Path, moe_model: Path) -> None:
    result = enclave("plan", str(moe_model), "--ram", "1MiB", "--margin", "0", "--ctx", "4096", home=enclave_home)
    assert result.returncode == 0
    assert "Does not fit" in result.stdout and "missing" in result.stdout and "would help:" in result.stdout


def test_run_refuses_a_plan_that_does_not_fit(enclave_home: Path, moe_model: Path) -> None:
    result = enclave("run", str(moe_model), "hi", "--margin", "4096GiB", home=enclave_home)
    assert result.returncode == 2
    assert result.stderr.startswith("enclave: error: Does not fit")
