"""What llama.cpp says it did while loading: buffers per device and overridden tensors.

llama.cpp logs every buffer it allocates ("CUDA0 model buffer size = 1234.56 MiB",
"CPU KV buffer size", "CPU compute buffer size") and every tensor whose buffer type an
override changed. Parsing those lines lets Enclave check its plan against the real thing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MiB = 1 << 20
_BUFFER = re.compile(
    r"^(?P<stage>\w+):\s+(?P<device>\S+)\s+(?P<kind>model|KV|compute) buffer size =\s+(?P<mib>[\d.]+) MiB"
)
_OVERRIDE = re.compile(r"^tensor (?P<name>\S+) \(.*\) buffer type overridden to (?P<device>\S+)")


@dataclass(frozen=True)
class LoadReport:
    model_buffers: dict[str, int] = field(default_factory=dict)  # device -> bytes
    kv_buffers: dict[str, int] = field(default_factory=dict)
    compute_buffers: dict[str, int] = field(default_factory=dict)
    overridden: dict[str, str] = field(default_factory=dict)  # tensor name -> buffer type

    @property
    def model_bytes(self) -> int:
        return sum(self.model_buffers.values())

    @property
    def kv_bytes(self) -> int:
        return sum(self.kv_buffers.values())

    @property
    def compute_bytes(self) -> int:
        return sum(self.compute_buffers.values())


def parse_load_log(lines: Iterable[str]) -> LoadReport:
    report = LoadReport()
    targets = {"model": report.model_buffers, "KV": report.kv_buffers, "compute": report.compute_buffers}
    for line in lines:
        line = line.strip()
        if m := _BUFFER.match(line):
            buffers = targets[m["kind"]]
            buffers[m["device"]] = buffers.get(m["device"], 0) + round(float(m["mib"]) * MiB)
        elif m := _OVERRIDE.match(line):
            report.overridden[m["name"]] = m["device"]
    return report


@dataclass(frozen=True)
class EstimateCheck:
    what: str  # "model", "kv", "compute"
    estimated: int
    actual: int
    tolerance: float

    @property
    def error(self) -> float:
        """Signed relative error of the estimate: +0.05 is 5% too high."""
        return (self.estimated - self.actual) / self.actual if self.actual else float(self.estimated != 0)

    @property
    def ok(self) -> bool:
        return abs(self.error) <= self.tolerance

    def describe(self) -> str:
        return (f"{self.what}: estimated {self.estimated / MiB:.2f} MiB, llama.cpp {self.actual / MiB:.2f} MiB "
                f"({self.error:+.1%}{'' if self.ok else ' - over tolerance'})")
