"""The machine's devices, asked of llama.cpp in a short-lived child process.

Listing devices means initialising llama.cpp's backends: on a GPU machine a CUDA or
Metal context, holding VRAM the planner does not count, and a driver fault that would
take the process down with it. So the front ends never do it themselves: ``probe_report``
starts a child (spawned, like the worker; its output goes to llama.cpp's log file), which
lists the devices and the backends, sends them back over a pipe and exits. A child that
dies or hangs becomes an ``EnclaveError`` quoting what it wrote last.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from inference.devices import Machine
from inference.errors import EnclaveError
from inference.ggml_backend import BackendDevice
from inference.orphans import exit_with_parent
from inference.worker import crash_cause, how_it_ended, log_lines_since, redirect_output

PROBE_TIMEOUT = 60.0  # seconds; a CUDA driver's first initialisation can take several


@dataclass(frozen=True)
class MachineReport:
    """What the probe saw: the planner's ``Machine`` and, for ``enclave doctor``, the
    backends this llama.cpp build carries and every device with its memory."""

    machine: Machine
    backends: tuple[str, ...]
    devices: tuple[BackendDevice, ...]
    gpu_offload: bool
    system_info: str  # llama.cpp's CPU features line


def probe_child(conn: Connection, log_path: str) -> None:
    """The child's whole life: ask llama.cpp, answer, exit."""
    redirect_output(log_path)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ["GGML_NO_BACKTRACE"] = "1"
    exit_with_parent()
    conn.send(_report())
    conn.close()


def _report() -> MachineReport:
    import llama_cpp

    from inference.devices import detect_machine
    from inference.ggml_backend import backend_names, list_devices

    return MachineReport(
        machine=detect_machine(),
        backends=tuple(backend_names()),
        devices=tuple(list_devices()),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
    )


def probe_report(log_path: Path, timeout: float = PROBE_TIMEOUT) -> MachineReport:
    """This machine's devices and backends, from a child process that ends before this returns."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    offset = log_path.stat().st_size
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    process = ctx.Process(target=probe_child, args=(child_conn, str(log_path)), name="enclave-probe", daemon=True)
    try:
        process.start()
    finally:
        child_conn.close()  # so that recv() sees EOF when the child dies
    try:
        if not parent_conn.poll(timeout):
            process.kill()
            raise _failure(f"did not answer within {timeout:g} s", log_path, offset)
        try:
            return parent_conn.recv()
        except (EOFError, OSError):
            process.join(timeout=5)
            raise _failure(how_it_ended(process.exitcode), log_path, offset) from None
    finally:
        parent_conn.close()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()


def probe_machine(log_path: Path, timeout: float = PROBE_TIMEOUT) -> Machine:
    """This machine as the planner sees it, probed in a child process."""
    return probe_report(log_path, timeout).machine


def _failure(how: str, log_path: Path, offset: int) -> EnclaveError:
    lines = log_lines_since(log_path, offset)
    said = crash_cause(lines) or (lines[-1].strip() if lines else "")
    message = f"Could not detect this machine's devices: the probe process {how}."
    if said:
        message += f" It said: {said.rstrip('.')}."
    return EnclaveError(f"{message} Check the GPU driver; llama.cpp's log is {log_path}.")
