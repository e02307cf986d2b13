"""RPC hosts: other machines running ``enclave host``, whose devices take layers of a model
too big for this one.

The list lives in the database (``hosts``). Before a plan, each host is asked, in a child
process of its own, which devices it serves and how fast the link to it is; a host that is
down is reported with the reason and planned without, never waited for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from app.store import Store
from inference.devices import GpuDevice, Machine, format_size
from inference.errors import EnclaveError
from inference.probe import HostReport, probe_host
from inference.rpc import parse_endpoint


@dataclass(frozen=True)
class Host:
    endpoint: str  # "address:port"
    memory_limit: int | None = None  # bytes of each device Enclave may fill; None: what is free
    added_at: str = ""


@dataclass(frozen=True)
class HostStatus:
    host: Host
    report: HostReport | None  # None: unreachable, see ``error``
    error: str | None = None


class HostRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self) -> list[Host]:
        rows = self.store.read().query("SELECT endpoint, memory_limit, added_at FROM hosts ORDER BY rowid")
        return [Host(r["endpoint"], r["memory_limit"], r["added_at"]) for r in rows]

    def add(self, address: str, memory_limit: int | None = None) -> Host:
        """Add a host, or change the memory limit of one already added (None keeps its limit)."""
        endpoint = parse_endpoint(address)
        added = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.store.write() as db:
            db.execute("INSERT INTO hosts (endpoint, memory_limit, added_at) VALUES (?, ?, ?) ON CONFLICT(endpoint) "
                       "DO UPDATE SET memory_limit = COALESCE(excluded.memory_limit, memory_limit)",
                       [endpoint, memory_limit, added])
        return next(h for h in self.list() if h.endpoint == endpoint)

    def remove(self, address: str) -> Host:
        endpoint = parse_endpoint(address)
        host = next((h for h in self.list() if h.endpoint == endpoint), None)
        if host is None:
            known = ", ".join(h.endpoint for h in self.list()) or "none"
            raise EnclaveError(f"No host {endpoint} was added (hosts: {known}).")
        with self.store.write() as db:
            db.execute("DELETE FROM hosts WHERE endpoint = ?", [endpoint])
        return host


def describe_host(status: HostStatus) -> list[str]:
    """A host in words, as `enclave hosts` and the Models page show it: its link and devices, or
    why it is not reachable."""
    host = status.host
    limit = f", up to {format_size(host.memory_limit)} per device" if host.memory_limit else ""
    if status.report is None:
        return [f"{host.endpoint}{limit}: not reachable: {status.error}"]
    link = status.report.link
    lines = [f"{host.endpoint}{limit}: link {link.bytes_per_s * 8 / 1e9:.1f} Gbit/s, "
             f"{link.latency_s * 1000:.2f} ms round trip"]
    for dev in status.report.devices:
        lines.append(f"  {dev.id:<32} {format_size(dev.free_bytes)} free of {format_size(dev.total_bytes)}")
    return lines


HostProbe = Callable[[str, Path], HostReport]


def check_hosts(hosts: Sequence[Host], log_path: Path, probe: HostProbe = probe_host) -> list[HostStatus]:
    """Every host's devices and link, asked at once (each in its own child process)."""

    def check(host: Host) -> HostStatus:
        try:
            return HostStatus(host, probe(host.endpoint, log_path))
        except EnclaveError as exc:
            return HostStatus(host, None, str(exc))

    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(hosts)), thread_name_prefix="enclave-hosts") as pool:
        return list(pool.map(check, hosts))


def with_hosts(machine: Machine, statuses: Sequence[HostStatus]) -> Machine:
    """``machine`` with the devices of the hosts that answered (each capped at its host's
    memory limit) and their links; the others listed with the reason."""
    devices: list[GpuDevice] = []
    links = list(machine.links)
    unreachable = list(machine.unreachable)
    for status in statuses:
        if status.report is None:
            unreachable.append((status.host.endpoint, status.error or "did not answer"))
            continue
        limit = status.host.memory_limit
        for dev in status.report.devices:
            free = dev.free_bytes if limit is None else min(dev.free_bytes, limit)
            devices.append(GpuDevice(dev.name, dev.description, free, dev.total_bytes, host=status.host.endpoint,
                                     ident=dev.id))
        links.append(status.report.link)
    return replace(machine, gpus=machine.gpus + tuple(devices), links=tuple(links), unreachable=tuple(unreachable))
