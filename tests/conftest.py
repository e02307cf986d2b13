"""Shared fixtures. Tests never touch the network or the user's home: every test gets
its own ``ENCLAVE_HOME``, and an audit hook refuses any outbound connection."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from app.services import Services
from inference.protocol import ModelSettings
from inference.worker import Worker
from tests.fuzzing import cases_run, slowest_case
from tests.memory_keyring import MemoryKeyring
from tests.rpc_hosts import LoopbackHosts, RpcUnavailable
from tests.tiny_models import DENSE, MOE, write_aborting_model, write_tiny_model
from tests.tiny_projector import write_tiny_projector

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _refuse_network(event: str, args: tuple) -> None:
    """Any connection beyond this machine fails the test; loopback (the fake hub the
    download tests start) is allowed."""
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise RuntimeError(f"test tried to connect to {address!r}: tests never use the network")
    elif event == "socket.getaddrinfo" and args[0] not in LOOPBACK:
        raise RuntimeError(f"test tried to resolve {args[0]!r}: tests never use the network")


sys.addaudithook(_refuse_network)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # GUI tests draw nowhere
import ui.pyside_fixes  # noqa: E402, F401  (PySide6 6.12's emit leak; see the module)


@pytest.fixture(autouse=True)
def no_system_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tests never read this machine's policy: the system file is one that does not exist
    (tests put one there to act as the administrator), and ENCLAVE_POLICY is unset."""
    path = tmp_path / "system-config" / "enclave" / "policy.toml"
    monkeypatch.setattr("app.policy.system_policy_path", lambda: path)
    monkeypatch.delenv("ENCLAVE_POLICY", raising=False)
    return path


@pytest.fixture(autouse=True)
def enclave_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "enclave-home"
    monkeypatch.setenv("ENCLAVE_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(autouse=True)
def memory_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryKeyring]:
    """Every test's keyring is a fresh dict: the HF token and database keys never reach the
    machine's password store — nor in the ``enclave`` processes a test starts, which get a
    keyring file of their own (a test may name another backend for them)."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.memory_keyring.FileKeyring")
    monkeypatch.setenv("ENCLAVE_TEST_KEYRING", str(tmp_path / "test-keyring.json"))
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def moe_model(models_dir: Path) -> Path:
    return write_tiny_model(models_dir / "tiny-moe.gguf", MOE)


@pytest.fixture(scope="session")
def dense_model(models_dir: Path) -> Path:
    return write_tiny_model(models_dir / "tiny-dense.gguf", DENSE)


@pytest.fixture(scope="session")
def projector(models_dir: Path) -> Path:
    """A tiny Gemma 3 vision projector for the tiny models (tests/tiny_projector.py)."""
    return write_tiny_projector(models_dir / "mmproj-tiny.gguf")


@pytest.fixture(scope="session")
def aborting_model(models_dir: Path) -> Path:
    return write_aborting_model(models_dir / "tiny-abort.gguf")


@pytest.fixture
def audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A policy that turns the audit log on at a path of the administrator's choosing."""
    log = tmp_path / "var-log" / "audit.jsonl"
    policy = tmp_path / "admin" / "policy.toml"
    policy.parent.mkdir()
    policy.write_text(f'audit_log = "{log}"\n')
    monkeypatch.setenv("ENCLAVE_POLICY", str(policy))
    return log


def audit_records(log: Path, event: str) -> list[dict]:
    """The details of every ``event`` record in the audit log at ``log`` (none yet: [])."""
    if not log.exists():
        return []
    return [r["details"] for r in map(json.loads, log.read_text().splitlines()) if r["event"] == event]


def settings_for(path: Path, **overrides: object) -> ModelSettings:
    """Settings that match plain llama-cpp-python's defaults where it matters for
    comparisons (flash attention off), small enough to be quick."""
    base: dict[str, object] = {"path": str(path), "n_ctx": 512, "flash_attn": False, "n_threads": 2}
    base.update(overrides)
    return ModelSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    w = Worker(tmp_path / "logs" / "llama.log")
    yield w
    w.close()


@pytest.fixture
def services(enclave_home: Path) -> Iterator[Services]:
    """The app's services under this test's own ENCLAVE_HOME, closed afterwards."""
    with Services.open() as opened:
        yield opened


@pytest.fixture(scope="module")
def moe_worker(tmp_path_factory: pytest.TempPathFactory, moe_model: Path) -> Iterator[Worker]:
    """One worker with the MoE model loaded, shared by a module's tests."""
    w = Worker(tmp_path_factory.mktemp("logs") / "llama.log")
    w.load(settings_for(moe_model))
    yield w
    w.close()


@pytest.fixture(scope="session")
def rpc_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackHosts]:
    """Two llama.cpp RPC hosts on 127.0.0.1 (CPU, one thread each) for the whole run: a second
    and third device. ``rpc_hosts.endpoints``; see tests/rpc_hosts.py before killing one."""
    try:
        hosts = LoopbackHosts(2, tmp_path_factory.mktemp("rpc-hosts"))
    except RpcUnavailable as exc:  # `make` builds llama.cpp with RPC: a build without it is a failure
        pytest.fail(str(exc))
    with hosts:
        yield hosts


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if cases_run:
        counts = ", ".join(f"{category} {n:,}" for category, n in sorted(cases_run.items()))
        terminalreporter.write_line(f"fuzz cases run: {sum(cases_run.values()):,} ({counts})")
        category, seconds = max(slowest_case.items(), key=lambda item: item[1])
        terminalreporter.write_line(f"slowest fuzz case: {seconds:.2f} s ({category})")
