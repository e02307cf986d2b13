"""Device speeds, measured once and kept: how fast each device reads weights and computes,
for the speed a plan predicts.

A measurement takes a few seconds per device (``inference.probe.measure_speed``, in a child
process), so the answers are kept in ``device-speeds.json`` in the cache folder, keyed by
what would change them: the device, its description and memory, the thread count and the
llama.cpp build. Simulated devices have published figures instead (``inference.devices``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from inference.device_speed import DeviceSpeed
from inference.devices import Machine
from inference.errors import EnclaveError
from inference.probe import measure_speed
from inference.speed import CPU_DEVICE

log = logging.getLogger(__name__)
Measure = Callable[..., DeviceSpeed]
# One operation of ggml's CPU backend takes microseconds (a thread barrier). A step of more
# than this means other programs had the cores while measuring: measured again, and not kept.
BUSY_STEP_SECONDS = 200e-6
TRIES = 3


def _build() -> str:
    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:  # pragma: no cover - a frozen app without metadata
        return "unknown"


class SpeedCache:
    def __init__(self, path: Path, log_path: Path, measure: Measure = measure_speed) -> None:
        self.path = path
        self.log_path = log_path
        self._measure = measure
        self._lock = threading.Lock()

    def _key(self, device: str, description: str, total: int, n_threads: int) -> str:
        return f"{device}|{description}|{total}|{n_threads if device == CPU_DEVICE else 0}|{_build()}"

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def speed(self, device: str, description: str, total: int, n_threads: int, host: str | None = None
              ) -> DeviceSpeed:
        """``device``'s speed: kept, or measured now and kept."""
        key = self._key(device, description, total, n_threads)
        with self._lock:
            known = self._read()
            if key in known:
                try:
                    return DeviceSpeed.from_dict(known[key])  # type: ignore[arg-type]
                except (KeyError, TypeError, ValueError):
                    pass  # an older or damaged entry: measured again
            measured = self._measure(device, n_threads, self.log_path, host=host)
            for _ in range(TRIES - 1):
                if device != CPU_DEVICE or measured.step_seconds <= BUSY_STEP_SECONDS:
                    break
                again = self._measure(device, n_threads, self.log_path, host=host)
                measured = min(measured, again, key=lambda m: m.step_seconds)
            if device == CPU_DEVICE and measured.step_seconds > BUSY_STEP_SECONDS:
                raise EnclaveError(f"The CPU was busy with other programs while its speed was measured (an "
                                   f"operation took {measured.step_seconds * 1000:.1f} ms), so no speed is "
                                   "predicted now; it is measured again next time.")
            known[key] = measured.as_dict()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(known, indent=1))
            tmp.replace(self.path)
            return measured

    def with_speeds(self, machine: Machine, n_threads: int) -> Machine:
        """``machine`` with the speed of its CPU and of each device (simulated machines keep
        their published figures, but for the CPU: this one's). A device that cannot be
        measured is left without: the plan then states no speed."""
        have = {s.device for s in machine.speeds}
        wanted: list[tuple[str, str, int, str | None]] = []
        if CPU_DEVICE not in have or machine.simulated:
            wanted.append((CPU_DEVICE, "cpu", 0, None))  # this machine's cores, whatever RAM is simulated
        wanted += [(g.ident, g.description, g.total_bytes, g.host) for g in machine.gpus
                   if g.ident not in have and not machine.simulated]
        speeds = {s.device: s for s in machine.speeds}
        for device, description, total, host in wanted:
            try:
                speeds[device] = self.speed(device, description, total, n_threads, host)
            except EnclaveError as exc:
                log.warning("could not measure %s: %s", device, exc)
        return replace(machine, speeds=tuple(speeds.values()))

