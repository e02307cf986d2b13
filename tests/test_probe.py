"""Devices are probed in a child process: the front ends never start a llama.cpp backend."""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytestqt.qtbot import QtBot

from app.cli import cli
from app.machine import MachineProbe
from app.runtime import Runtime
from app.services import Services
from inference import ggml_backend, probe
from inference.devices import Machine, simulated_machine
from inference.errors import EnclaveError
from inference.planner import PlanRequest
from inference.probe import MachineReport, probe_machine, probe_report
from inference.protocol import ChatMessage, Sampling, Token
from tests.conftest import settings_for
from ui.first_run import FirstRunPage
from ui.models_page import ModelsPage
from ui.tasks import TaskRunner

NATIVE_ENTRIES = ("llama_backend_init", "llama_supports_gpu_offload", "llama_print_system_info")
GGML_ENTRIES = ("ggml_backend_reg_count", "ggml_backend_dev_count")


def meminfo_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M).group(1))  # type: ignore[union-attr]


# Children for the failure tests: spawned, so they must live at module level ----------------


def aborting_probe() -> None:
    print("ggml-backend.cpp:42: GGML_ASSERT(device != NULL) failed", file=sys.stderr, flush=True)
    os.abort()


def silent_probe() -> None:
    time.sleep(120)


# The probe itself -------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads /proc/meminfo to compare")
def test_probe_sees_this_machines_ram_and_its_cpu(tmp_path: Path) -> None:
    machine = probe_machine(tmp_path / "llama.log")
    assert machine.ram_total_bytes == meminfo_kib("MemTotal") * 1024
    available = meminfo_kib("MemAvailable") * 1024
    assert available / 2 < machine.ram_free_bytes < available * 2  # it moves, not by that much
    assert machine.gpus == () and machine.describe().startswith("CPU only")  # the CPU build the tests use
    report = probe_report(tmp_path / "llama.log")
    assert "CPU" in report.backends and [d.type for d in report.devices] == ["cpu"]
    # the build the tests use has the CPU and RPC backends: RPC hosts' devices take offloaded layers
    assert report.backends == ("RPC", "CPU") and report.gpu_offload is True
    assert report.system_info  # llama.cpp's CPU features line
    assert not multiprocessing.active_children()  # the child is gone


def test_a_probe_that_crashes_is_one_line_that_quotes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "_report", aborting_probe)
    with pytest.raises(EnclaveError) as failed:
        probe_machine(tmp_path / "llama.log")
    message = str(failed.value)
    assert message.startswith("Could not detect this machine's devices: the probe process was stopped by SIGABRT. "
                              "It said: GGML_ASSERT(device != NULL) failed.")
    assert str(tmp_path / "llama.log") in message and "\n" not in message
    assert not multiprocessing.active_children()


def test_a_probe_that_hangs_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "_report", silent_probe)
    started = time.monotonic()
    with pytest.raises(EnclaveError, match="the probe process did not answer within 3 s"):
        probe_machine(tmp_path / "llama.log", timeout=3)
    assert time.monotonic() - started < 20
    assert not multiprocessing.active_children()  # killed, not left behind


def test_a_failed_probe_is_the_clis_one_line_error(enclave_home: Path, moe_model: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "_report", aborting_probe)
    result = CliRunner().invoke(cli, ["plan", str(moe_model)])
    assert result.exit_code == 2
    assert "Could not detect this machine's devices" in result.output and "GGML_ASSERT" in result.output


# The session's probe --------------------------------------------------------------------


def counting(machines: list[Machine], delay: float = 0.0) -> tuple[Callable[[Path], MachineReport], list[Path]]:
    """A stand-in probe that answers ``machines`` in turn, and the calls it got."""
    calls: list[Path] = []

    def fake(log_path: Path) -> MachineReport:
        calls.append(log_path)
        time.sleep(delay)
        return MachineReport(machines[len(calls) - 1], ("CPU",), (), False, "")

    return fake, calls


def test_the_session_probes_once_then_again_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = simulated_machine(None, 8 << 30), simulated_machine(None, 4 << 30)
    fake, calls = counting([first, second])
    machines = MachineProbe(tmp_path / "llama.log", fake)
    assert machines.get() is first and machines.get() is first
    assert machines.get(refresh=True) is first  # a moment after a probe, a refresh takes its answer
    monkeypatch.setattr("app.machine.FRESH_SECONDS", 0.0)
    assert machines.get(refresh=True) is second and machines.get() is second
    assert calls == [tmp_path / "llama.log"] * 2


def test_a_failed_probe_is_remembered_until_a_refresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def failing(log_path: Path) -> MachineReport:
        calls.append(1)
        raise EnclaveError("Could not detect this machine's devices: the probe process did not answer.")

    machines = MachineProbe(tmp_path / "llama.log", failing)
    for _ in range(3):
        with pytest.raises(EnclaveError, match="did not answer"):
            machines.get()
    assert len(calls) == 1  # a probe that hangs costs its time-out once
    monkeypatch.setattr("app.machine.FRESH_SECONDS", 0.0)
    with pytest.raises(EnclaveError):
        machines.get(refresh=True)
    assert len(calls) == 2


def test_threads_asking_together_share_one_probe(tmp_path: Path) -> None:
    fake, calls = counting([simulated_machine(None, 8 << 30)], delay=0.3)
    machines = MachineProbe(tmp_path / "llama.log", fake)
    seen: list[Machine] = []
    threads = [threading.Thread(target=lambda: seen.append(machines.get())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(seen) == 4 and len(set(map(id, seen))) == 1


def test_a_load_probes_again_but_the_loaded_request_does_not(tmp_path: Path, services: Services,
                                                              moe_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.machine.FRESH_SECONDS", 0.0)
    fake, calls = counting([simulated_machine(None, 8 << 30), simulated_machine(None, 7 << 30)])
    runtime = Runtime(services.paths, probe=MachineProbe(services.paths.llama_log, fake))
    try:
        settings = settings_for(moe_model)
        first = runtime.load(str(moe_model), settings, planned=PlanRequest(n_ctx=512))
        assert len(calls) == 1 and first.plan is not None and first.plan.ram.budget_bytes < 8 << 30
        assert runtime.load(str(moe_model), settings, planned=PlanRequest(n_ctx=512)) is first
        assert len(calls) == 1  # the same request: nothing loaded, nothing probed
        second = runtime.load(str(moe_model), settings, planned=PlanRequest(n_ctx=1024))
        assert len(calls) == 2 and second.plan is not None and second.plan.ram.budget_bytes < 7 << 30
    finally:
        runtime.close()


# No backend in the front ends' process -----------------------------------------------------


@pytest.fixture
def backend_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every call, in this process, of the entries that start llama.cpp's backends."""
    import llama_cpp
    import llama_cpp.llama_cpp as bindings
    from llama_cpp._ggml import libggml

    calls: list[str] = []

    def recorder(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def record(*args: object) -> object:
            calls.append(name)
            return real(*args)
        return record

    for module in (llama_cpp, bindings):
        for name in NATIVE_ENTRIES:
            monkeypatch.setattr(module, name, recorder(name, getattr(module, name)))
    for name in GGML_ENTRIES:
        monkeypatch.setattr(libggml, name, recorder(name, getattr(libggml, name)))
    ggml_backend._lib.cache_clear()  # an earlier test's cached call would hide one
    yield calls
    ggml_backend._lib.cache_clear()


def test_no_front_end_flow_starts_a_backend_in_its_process(backend_calls: list[str], qtbot: QtBot,
                                                           services: Services, moe_model: Path) -> None:
    machine = services.machine()
    assert machine.ram_total_bytes > 0 and not machine.simulated

    services.runtime.load(str(moe_model), settings_for(moe_model), planned=PlanRequest(n_ctx=512))
    greedy = Sampling(temperature=0, max_tokens=6)
    tokens = [e for e in services.runtime.chat([ChatMessage("user", "hello")], greedy) if isinstance(e, Token)]
    assert tokens

    runner = CliRunner()
    plan = runner.invoke(cli, ["plan", str(moe_model), "--ctx", "1024"])
    assert plan.exit_code == 0, plan.output
    assert "on CPU only" in plan.output and "fits" in plan.output
    run = runner.invoke(cli, ["run", str(moe_model), "hello", "--max-tokens", "6", "--temperature", "0"])
    assert run.exit_code == 0, run.output
    assert run.output.strip()
    doctor = runner.invoke(cli, ["doctor"])
    assert doctor.exit_code == 0, doctor.output
    assert "llama.cpp backends: RPC, CPU" in doctor.output and re.search(r"^  CPU\s+cpu ", doctor.output, re.M)

    page = ModelsPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    page.import_paths([moe_model])
    view = page.plan_view
    assert view.plan is not None, view.error
    assert view.machine_picker.here.text().startswith("This machine: CPU only")
    first_run = FirstRunPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(first_run)
    first_run.show_catalog()
    assert first_run.results_box.title().startswith("The catalog — for this machine: CPU only")

    assert backend_calls == []
    ggml_backend.list_devices()  # the guard sees a call when there is one
    assert backend_calls[:1] == ["llama_backend_init"]


def test_a_new_load_counts_the_memory_of_the_model_it_replaces_as_free() -> None:
    from app.runtime import freeing
    from inference.devices import GiB, GpuDevice, Machine
    from inference.load_report import LoadReport

    busy = Machine(gpus=(GpuDevice("CUDA0", "simulated", 2 * GiB, 8 * GiB),), ram_free_bytes=10 * GiB,
                   ram_total_bytes=32 * GiB, simulated=True)
    loaded = LoadReport(model_buffers={"CUDA0": 5 * GiB, "CPU_Mapped": 3 * GiB},
                        kv_buffers={"CUDA0": GiB // 2, "CPU": GiB // 4}, compute_buffers={"CUDA0": GiB // 4})
    freed = freeing(busy, loaded)
    assert freed.gpus[0].free_bytes == 2 * GiB + 5 * GiB + GiB // 2 + GiB // 4
    assert freed.ram_free_bytes == 10 * GiB + GiB // 4  # mapped weights are page cache: already available
    assert freeing(busy, None) is busy
    full = freeing(busy, LoadReport(model_buffers={"CUDA0": 20 * GiB}))
    assert full.gpus[0].free_bytes == 8 * GiB  # never more than the card has
