"""The machine as the planner sees it: GPU memory, host RAM, unified or not.

``detect_machine`` asks llama.cpp's backend registry (so it sees exactly the devices the
loaded build can use) and the OS for available RAM. ``simulated_machine`` builds the same
value by hand, so plans can be made and tested for machines we do not have.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inference.device_speed import DeviceSpeed, LinkSpeed
from inference.ggml_backend import BackendDevice, list_devices

GiB = 1 << 30


@dataclass(frozen=True)
class GpuDevice:
    """A device layers can be offloaded to: a GPU of this machine, or a device an RPC host
    serves (``host`` is then its "address:port")."""

    name: str  # llama.cpp's device name: "CUDA0", "Metal", "Vulkan0", "RPC0"
    description: str
    free_bytes: int
    total_bytes: int
    kind: Literal["gpu", "igpu"] = "gpu"
    host: str | None = None
    # stable across processes: "RPC0[10.0.0.5:50052]" for a host's first device (the name of
    # its buffers in llama.cpp's log); the name for a device of this machine
    ident: str = ""

    def __post_init__(self) -> None:
        if not self.ident:
            object.__setattr__(self, "ident", self.name)

    @property
    def label(self) -> str:
        """For people: "CUDA0", "RPC0 on 10.0.0.5:50052"."""
        return f"{self.ident.split('[')[0]} on {self.host}" if self.host else self.name


@dataclass(frozen=True)
class Machine:
    gpus: tuple[GpuDevice, ...]  # this machine's GPUs, then the devices of RPC hosts
    ram_free_bytes: int  # what the OS says is available now
    ram_total_bytes: int
    unified_memory: bool = False  # Apple silicon: the GPU's memory is the host's RAM
    simulated: bool = False
    links: tuple[LinkSpeed, ...] = ()  # to each RPC host whose devices are in ``gpus``
    unreachable: tuple[tuple[str, str], ...] = ()  # (host, why) for hosts added but not answering
    speeds: tuple[DeviceSpeed, ...] = ()  # measured or published; "CPU" is this machine's RAM and cores

    @property
    def gpu(self) -> GpuDevice | None:
        """The local GPU with the most free memory."""
        return max(self.local_gpus, key=lambda g: g.free_bytes, default=None)

    @property
    def local_gpus(self) -> tuple[GpuDevice, ...]:
        return tuple(g for g in self.gpus if g.host is None)

    @property
    def remote_devices(self) -> tuple[GpuDevice, ...]:
        return tuple(g for g in self.gpus if g.host is not None)

    @property
    def offload_order(self) -> tuple[GpuDevice, ...]:
        """The devices in llama.cpp's order: RPC hosts' devices first (they get the first
        offloaded layers), then this machine's GPUs (the last layers and the output head)."""
        return self.remote_devices + self.local_gpus

    def link(self, host: str) -> LinkSpeed | None:
        return next((link for link in self.links if link.endpoint == host), None)

    def speed(self, device: str) -> DeviceSpeed | None:
        return next((s for s in self.speeds if s.device == device), None)

    def describe(self) -> str:
        ram = f"{format_size(self.ram_free_bytes)} RAM free of {format_size(self.ram_total_bytes)}"
        if not self.gpus:
            return f"CPU only, {ram}"
        gpus = ", ".join(f"{g.label} {format_size(g.free_bytes)} free" for g in self.gpus)
        return f"{gpus}; {ram}" + (" (unified memory)" if self.unified_memory else "")


SIMULATED_LINK_LATENCY = 100e-6  # seconds per round trip on a switched data-centre network
# Published figures for simulated devices, by memory size: (memory bandwidth bytes/s, dense
# FP16 tensor flops, the card). llama.cpp reaches about 70 % of the bandwidth when generating
# and, with quantized weights, about 40 % of the tensor flops reading a prompt.
PUBLISHED_GPUS: dict[int, tuple[float, float, str]] = {
    16: (717e9, 97e12, "RTX 4080"), 24: (1008e9, 165e12, "RTX 4090"), 32: (1792e9, 209e12, "RTX 5090"),
    40: (1555e9, 312e12, "A100 40GB"), 48: (864e9, 362e12, "L40S"), 80: (3350e9, 989e12, "H100 SXM"),
    141: (4800e9, 989e12, "H200"), 192: (8000e9, 2250e12, "B200"),
}
DEFAULT_GPU = (1000e9, 150e12, "a GPU with 1 TB/s")
PUBLISHED_CPU = (89.6e9, 1.5e12, "dual-channel DDR5-5600, 16 cores")
READ_EFFICIENCY, FLOPS_EFFICIENCY = 0.7, 0.4
GPU_STEP_SECONDS = 5e-6  # one operation of the graph on a GPU: a kernel launch
SIMULATED_TYPES = ("q4_K", "q6_K", "q8_0", "f16")


def published_speed(device: str, memory_bytes: int | None) -> DeviceSpeed:
    """A simulated device's speed from its published figures: the card with that much memory
    in ``PUBLISHED_GPUS`` (else 1 TB/s), or, for "CPU", a desktop's dual-channel DDR5."""
    if device == "CPU":
        bandwidth, flops, _ = PUBLISHED_CPU
        step = 3e-6
    else:
        bandwidth, flops, _ = PUBLISHED_GPUS.get(round((memory_bytes or 0) / GiB), DEFAULT_GPU)
        step = GPU_STEP_SECONDS
    return DeviceSpeed(device, dict.fromkeys(SIMULATED_TYPES, bandwidth * READ_EFFICIENCY),
                       dict.fromkeys(SIMULATED_TYPES, flops * FLOPS_EFFICIENCY), step, 0)


def simulated_machine(vram_bytes: int | Sequence[int] | None, ram_bytes: int, *, unified: bool = False,
                      gpu_name: str = "GPU0", hosts: Sequence[SimulatedHost] = (),
                      cpu_speed: DeviceSpeed | None = None) -> Machine:
    """A machine with GPUs of ``vram_bytes`` each (one size: one GPU; None: no GPU), ``ram_bytes``
    of RAM, all free, and RPC ``hosts`` whose devices it can use. Devices are as fast as
    their published figures say; the CPU as ``cpu_speed`` (this machine's, measured) if given."""
    gpus: tuple[GpuDevice, ...] = ()
    sizes = ([] if vram_bytes is None else [int(vram_bytes)] if isinstance(vram_bytes, (int, float))
             else list(vram_bytes))
    if unified:
        gpus = (GpuDevice("Metal", "simulated unified-memory GPU", ram_bytes, ram_bytes, "igpu"),)
    elif len(sizes) == 1:
        gpus = (GpuDevice(gpu_name, "simulated GPU", sizes[0], sizes[0]),)
    else:
        gpus = tuple(GpuDevice(f"GPU{i}", "simulated GPU", size, size) for i, size in enumerate(sizes))
    remote: list[GpuDevice] = []
    links = []
    for number, host in enumerate(hosts, start=1):
        endpoint = f"sim-host-{number}:50052"
        remote += [GpuDevice(f"RPC{len(remote)}", "simulated host's GPU", host.bytes_each, host.bytes_each,
                             host=endpoint, ident=f"RPC{k}[{endpoint}]") for k in range(host.count)]
        links.append(LinkSpeed(endpoint, host.link_bits_per_s / 8, SIMULATED_LINK_LATENCY))
    all_gpus = gpus + tuple(remote)
    speeds = (cpu_speed or published_speed("CPU", None),
              *(published_speed(g.ident, g.total_bytes) for g in all_gpus))
    return Machine(gpus=all_gpus, ram_free_bytes=ram_bytes, ram_total_bytes=ram_bytes, unified_memory=unified,
                   simulated=True, links=tuple(links), speeds=speeds)


@dataclass(frozen=True)
class SimulatedHost:
    """An RPC host we do not have: ``count`` GPUs of ``bytes_each``, behind a link of
    ``link_bits_per_s``."""

    count: int
    bytes_each: int
    link_bits_per_s: float


def parse_devices(text: str) -> list[int]:
    """'24GiB' -> one device of 24 GiB; '2x24GiB' -> two."""
    count, _, size = text.strip().rpartition("x")
    try:
        n = int(count) if count else 1
    except ValueError:
        raise ValueError(f"Not a device list: {text!r}. Write it like 24GiB or 2x24GiB.") from None
    if not 1 <= n <= 64:
        raise ValueError(f"{text!r}: between 1 and 64 devices.")
    return [parse_size(size)] * n


def parse_sim_host(text: str) -> SimulatedHost:
    """'8x80GiB@25Gbit' -> a host with eight 80 GiB GPUs behind a 25 Gbit/s link."""
    devices, at, link = text.partition("@")
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)bit(?:/s)?\s*", link.lower())
    if not at or not match:
        raise ValueError(f"Not a simulated host: {text!r}. Write it like 8x80GiB@25Gbit.")
    sizes = parse_devices(devices)
    bits = float(match.group(1)) * 1000 ** " kmgt".index(match.group(2) or " ")
    if bits <= 0:
        raise ValueError(f"{text!r}: a link faster than 0 bit/s, e.g. 25Gbit.")
    return SimulatedHost(len(sizes), sizes[0], bits)


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
