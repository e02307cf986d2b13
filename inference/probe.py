"""The machine's devices, asked of llama.cpp in a short-lived child process.

Listing devices means initialising llama.cpp's backends: on a GPU machine a CUDA or
Metal context, holding VRAM the planner does not count, and a driver fault that would
take the process down with it. So the front ends never do it themselves: ``probe_report``
starts a child (spawned, like the worker; its output goes to llama.cpp's log file), which
lists the devices and the backends, sends them back over a pipe and exits. A child that
dies or hangs becomes an ``EnclaveError`` quoting what it wrote last.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from inference.backends import BackendsReport
from inference.device_speed import DeviceSpeed, LinkSpeed
from inference.devices import Machine
from inference.errors import EnclaveError
from inference.ggml_backend import BackendDevice
from inference.orphans import exit_with_parent
from inference.worker import crash_cause, how_it_ended, log_lines_since, redirect_output

if TYPE_CHECKING:
    from inference.llama_log import LlamaLog

PROBE_TIMEOUT = 60.0  # seconds; a CUDA driver's first initialisation can take several
HOST_TIMEOUT = 20.0  # an RPC host's devices and a measure of the link to it
MEASURE_TIMEOUT = 60.0  # one device's speeds
T = TypeVar("T")


@dataclass(frozen=True)
class MachineReport:
    """What the probe saw: the planner's ``Machine`` and, for ``enclave doctor``, the
    backends this llama.cpp build carries and every device with its memory."""

    machine: Machine
    backends: tuple[str, ...]
    devices: tuple[BackendDevice, ...]
    gpu_offload: bool
    system_info: str  # llama.cpp's CPU features line
    loading: BackendsReport | None = None  # the backend libraries: linked in, or loaded and why not


def _child(conn: Connection, log_path: str, task: Callable[..., object], args: tuple[object, ...]) -> None:
    """A probe child's whole life: ask llama.cpp, answer, exit."""
    redirect_output(log_path)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ["GGML_NO_BACKTRACE"] = "1"
    exit_with_parent()
    try:
        conn.send(task(*args))
    except EnclaveError as exc:  # a host that does not answer: its reason, not a dead probe
        conn.send(exc)
    conn.close()


def run_in_child(task: Callable[..., T], args: tuple[object, ...], log_path: Path, *, timeout: float, what: str) -> T:
    """``task(*args)``, run in a spawned child process that ends before this returns. A child
    that dies (llama.cpp aborts on a host that stops answering) or hangs becomes an
    ``EnclaveError`` saying ``what`` failed and quoting what llama.cpp wrote last."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    offset = log_path.stat().st_size
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(child_conn, str(log_path), task, args), name="enclave-probe",
                          daemon=True)
    try:
        process.start()
    finally:
        child_conn.close()  # so that recv() sees EOF when the child dies
    try:
        if not parent_conn.poll(timeout):
            process.kill()
            raise _failure(what, f"did not answer within {timeout:g} s", log_path, offset)
        try:
            answer = parent_conn.recv()
        except (EOFError, OSError):
            process.join(timeout=5)
            raise _failure(what, how_it_ended(process.exitcode), log_path, offset) from None
    finally:
        parent_conn.close()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()
    if isinstance(answer, EnclaveError):
        raise answer
    return answer  # type: ignore[no-any-return]


def _report() -> MachineReport:
    import llama_cpp

    from inference.backends import backends_report
    from inference.devices import detect_machine
    from inference.ggml_backend import backend_names, list_devices

    log = _llama_log()
    return MachineReport(
        machine=detect_machine(),
        backends=tuple(backend_names()),
        devices=tuple(list_devices()),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        loading=backends_report(log.since(0)),
    )


def _llama_log() -> LlamaLog:
    """llama.cpp's lines kept (which backend library it loaded, where the loader cannot say)
    and written to the log file as the worker writes them."""
    from inference.llama_log import LlamaLog

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s [{os.getpid()}] %(name)s: %(message)s")
    log = LlamaLog()
    log.install()
    return log


def probe_report(log_path: Path, timeout: float = PROBE_TIMEOUT) -> MachineReport:
    """This machine's devices and backends, from a child process that ends before this returns."""
    try:
        return run_in_child(_report, (), log_path, timeout=timeout, what="detect this machine's devices")
    except EnclaveError as exc:
        raise EnclaveError(f"{exc} Check the GPU driver; llama.cpp's log is {log_path}.") from None


def probe_machine(log_path: Path, timeout: float = PROBE_TIMEOUT) -> Machine:
    """This machine as the planner sees it, probed in a child process."""
    return probe_report(log_path, timeout).machine


@dataclass(frozen=True)
class HostReport:
    """An RPC host as seen from here: its devices and the link to it."""

    endpoint: str
    devices: tuple[BackendDevice, ...]
    link: LinkSpeed


def _host_report(endpoint: str) -> HostReport:
    from inference.device_speed import measure_link
    from inference.rpc import add_host

    devices = add_host(endpoint)
    return HostReport(endpoint, tuple(devices), measure_link(endpoint))


def probe_host(endpoint: str, log_path: Path, timeout: float = HOST_TIMEOUT) -> HostReport:
    """``endpoint``'s devices and link, asked in a child process: a host that is down, or
    answers something else than llama.cpp's RPC, costs at most ``timeout``."""
    from inference.rpc import check_reachable

    check_reachable(endpoint)  # refused or unroutable: said at once, without starting a child
    return run_in_child(_host_report, (endpoint,), log_path, timeout=timeout, what=f"reach the host {endpoint}")


def _measure(device: str, hosts: tuple[str, ...], n_threads: int) -> DeviceSpeed:
    from inference.device_speed import measure_device
    from inference.rpc import add_host

    for host in hosts:
        add_host(host)
    return measure_device(device, n_threads)


def measure_speed(device: str, n_threads: int, log_path: Path, *, host: str | None = None,
                  timeout: float = MEASURE_TIMEOUT) -> DeviceSpeed:
    """How fast ``device`` (an id; on ``host`` if it is an RPC host's) reads weights and
    computes, measured through ggml in a child process (a few seconds)."""
    return run_in_child(_measure, (device, (host,) if host else (), n_threads), log_path, timeout=timeout,
                        what=f"measure the speed of {device}")


def _failure(what: str, how: str, log_path: Path, offset: int) -> EnclaveError:
    lines = log_lines_since(log_path, offset)
    said = crash_cause(lines) or (lines[-1].strip() if lines else "")
    message = f"Could not {what}: the probe process {how}."
    if said:
        message += f" It said: {said.rstrip('.')}."
    return EnclaveError(message)
