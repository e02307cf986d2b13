"""Nothing goes online unless asked. The whole app — every command, the GUI, their llama.cpp
workers — runs through ``tests/airgap_check.py`` (``make airgap-test``): inside a network
namespace with no interfaces when this machine can make one, and always with an audit hook
in every process that records any socket connection, name lookup or network program."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.airgap_check import namespace_command
from tests.audit_log import ROOT
from tests.cli import enclave, one_error_line

pytestmark = pytest.mark.slow
NAMESPACE, WHY_NOT = namespace_command()


def airgap_check(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "tests.airgap_check", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=280)
    print(result.stdout, result.stderr)  # the figures, shown when a test fails
    return result


def assert_no_network_used(out: str) -> None:
    assert "connections recorded: 0\n" in out and "DNS lookups: 0\n" in out, out
    assert "network programs started: 0\n" in out and "every command had the hook active" in out, out
    workers = re.search(r"(\d+) llama.cpp worker", out)
    assert workers and int(workers.group(1)) >= 5, out  # run, library show, ask, chat and the GUI loaded the model
    assert re.search(r"\b1 GUI\b", out) and out.rstrip().endswith("air-gap check: PASSED"), out


@pytest.mark.skipif(NAMESPACE is None, reason=f"no network namespace on this machine: {WHY_NOT}")
def test_the_whole_app_in_a_network_namespace_uses_no_network() -> None:
    result = airgap_check()
    assert result.returncode == 0
    assert_no_network_used(result.stdout)
    assert "interfaces: lo, none up" in result.stdout
    # models pull and search, asked to go online, were seen trying and failed in one line
    assert re.search(r"asked to go online .*: [1-9]\d* attempts recorded \(socket\.getaddrinfo \('huggingface\.co'",
                     result.stdout), result.stdout


@pytest.mark.skipif(NAMESPACE is not None, reason="the namespace test runs the same steps, with more")
def test_the_whole_app_with_the_audit_hook_alone_uses_no_network() -> None:
    result = airgap_check("--no-namespace")
    assert result.returncode == 0
    assert_no_network_used(result.stdout)


def test_a_connection_attempt_fails_the_check() -> None:
    result = airgap_check("--quick", "--probe", *(() if NAMESPACE else ("--no-namespace",)))
    assert result.returncode == 1
    assert "connections recorded: 1\n" in result.stdout and "DNS lookups: 1\n" in result.stdout
    assert "PROBLEM  network use: socket.connect (('127.0.0.1', 9),)" in result.stdout
    assert "air-gap check: FAILED (2 problems)" in result.stdout


def test_the_offline_setting_refuses_downloads_plainly(tmp_path: Path) -> None:
    """ENCLAVE_OFFLINE=1 is in the air-gap check; the setting does the same."""
    assert enclave("settings", "set", "offline", "true", home=tmp_path).returncode == 0
    for args in (("models", "pull", "Qwen/Qwen3-30B-A3B-GGUF"), ("models", "search", "qwen")):
        assert "offline" in one_error_line(enclave(*args, home=tmp_path)).lower()
