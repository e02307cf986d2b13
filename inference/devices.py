"""The machine as the planner sees it: GPU memory, host RAM, unified or not.

``detect_machine`` asks llama.cpp's backend registry (so it sees exactly the devices the
loaded build can use) and the OS for available RAM. ``simulated_machine`` builds the same
value by hand, so plans can be made and tested for machines we do not have.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inference.ggml_backend import BackendDevice, list_devices

GiB = 1 << 30


@dataclass(frozen=True)
class GpuDevice:
    name: str  # llama.cpp's device name: "CUDA0", "Metal", "Vulkan0"; used in tensor overrides
    description: str
    free_bytes: int
    total_bytes: int
    kind: Literal["gpu", "igpu"] = "gpu"


@dataclass(frozen=True)
class Machine:
    gpus: tuple[GpuDevice, ...]
    ram_free_bytes: int  # what the OS says is available now
    ram_total_bytes: int
    unified_memory: bool = False  # Apple silicon: the GPU's memory is the host's RAM
    simulated: bool = False

    @property
    def gpu(self) -> GpuDevice | None:
        """The GPU the planner fills: the one with the most free memory."""
        return max(self.gpus, key=lambda g: g.free_bytes, default=None)

    def describe(self) -> str:
        ram = f"{format_size(self.ram_free_bytes)} RAM free of {format_size(self.ram_total_bytes)}"
        if not self.gpus:
            return f"CPU only, {ram}"
        gpus = ", ".join(f"{g.name} {format_size(g.free_bytes)} free" for g in self.gpus)
        return f"{gpus}; {ram}" + (" (unified memory)" if self.unified_memory else "")


def simulated_machine(vram_bytes: int | None, ram_bytes: int, *, unified: bool = False,
                      gpu_name: str = "GPU0") -> Machine:
    """A machine with one GPU of ``vram_bytes`` (None: no GPU) and ``ram_bytes`` of RAM,
    all free."""
    gpus: tuple[GpuDevice, ...] = ()
    if unified:
        gpus = (GpuDevice("Metal", "simulated unified-memory GPU", ram_bytes, ram_bytes, "igpu"),)
    elif vram_bytes:
        gpus = (GpuDevice(gpu_name, "simulated GPU", vram_bytes, vram_bytes),)
    return Machine(gpus=gpus, ram_free_bytes=ram_bytes, ram_total_bytes=ram_bytes, unified_memory=unified,
                   simulated=True)


def available_ram(devices: list[BackendDevice] | None = None) -> tuple[int, int]:
    """(available, total) host RAM in bytes. ``devices``: ggml's list, when the caller has it."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        values = dict(re.findall(r"^(\w+):\s+(\d+) kB", meminfo.read_text(), re.M))
        if "MemAvailable" in values:
            return int(values["MemAvailable"]) * 1024, int(values["MemTotal"]) * 1024
    devices = devices if devices is not None else list_devices()  # macOS, Windows: ggml knows the RAM
    cpu = next((d for d in devices if d.type == "cpu"), None)
    if cpu is not None and cpu.total_bytes:
        return cpu.free_bytes, cpu.total_bytes
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return total, total


def detect_machine() -> Machine:
    devices = list_devices()
    free, total = available_ram(devices)
    gpus = tuple(
        GpuDevice(d.name, d.description, d.free_bytes, d.total_bytes, "igpu" if d.type == "igpu" else "gpu")
        for d in devices
        if d.type in ("gpu", "igpu")
    )
    unified = any(g.kind == "igpu" or g.name.lower().startswith("metal") for g in gpus)
    return Machine(gpus=gpus, ram_free_bytes=free, ram_total_bytes=total, unified_memory=unified)


def format_size(n: int) -> str:
    """Bytes for people: '1.5 GiB', '340 MiB', '12 KiB'."""
    for unit, size in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}" if unit == "GiB" else f"{n / size:.0f} {unit}"
    return f"{n} B"


def format_duration(seconds: float) -> str:
    """Time for people: '42 s', '3 min 05 s', '1 h 07 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def parse_size(text: str) -> int:
    """'24GiB', '16 GB', '512MiB', '1.5T' -> bytes (binary units: a 24 GB card has 24 GiB)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not match:
        raise ValueError(f"Not a size: {text!r}. Write it like 24GiB or 512MiB.")
    number, unit = float(match.group(1)), match.group(2)
    return int(number * (1 << (10 * " kmgt".index(unit or " "))))
