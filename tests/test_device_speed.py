"""The speed probe measures for real: the CPU here, and a loopback RPC host of the session
(its link and its device). Sizes are small; the ranges are what any machine gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inference.device_speed import DeviceSpeed, LinkSpeed, measure_device, measure_link
from inference.errors import EnclaveError
from inference.ggml_backend import UnknownDevice
from tests.rpc_hosts import LoopbackHosts, free_port

ROOT = Path(__file__).resolve().parent.parent
SMALL = 16 * 2**20  # weight bytes per read-rate matrix in tests

# Runs in a child, as Enclave does: registering an RPC host is for the rest of a process's
# life, and a host that goes away later would abort whatever process still has it.
_MEASURE_HOST = """
import json, sys
from inference import device_speed, rpc
device = rpc.add_host(sys.argv[1])[0]
link = device_speed.measure_link(sys.argv[1])
speed = device_speed.measure_device(device.id, 1, ["q4_K", "q8_0"], weight_bytes=int(sys.argv[2]))
print(json.dumps({"link": link.as_dict(), "device": speed.as_dict()}))
"""


@pytest.fixture(scope="module")
def cpu_speed() -> DeviceSpeed:
    """One thread: with a thread on every core, another process running (other tests, other
    suites) makes each graph wait for a scheduler tick, and the rates measure the load."""
    return measure_device("CPU", 1, weight_bytes=SMALL)


def test_cpu_read_rate_is_a_memory_bandwidth(cpu_speed: DeviceSpeed) -> None:
    assert cpu_speed.device == "CPU" and cpu_speed.n_threads == 1
    assert set(cpu_speed.read_bytes_per_s) == {"q4_K", "q6_K", "q8_0", "f16"}
    assert 100e6 < cpu_speed.read_bytes_per_s["q4_K"] < 1e12
    ratio = cpu_speed.read_bytes_per_s["q8_0"] / cpu_speed.read_bytes_per_s["q4_K"]
    assert 0.1 < ratio < 10


def test_cpu_flops_and_step(cpu_speed: DeviceSpeed) -> None:
    assert all(flops > 1e8 for flops in cpu_speed.flops.values()), cpu_speed.flops
    assert all(flops < 1e14 for flops in cpu_speed.flops.values()), cpu_speed.flops
    assert 0 < cpu_speed.step_seconds < 0.05


def test_speeds_round_trip_through_json(cpu_speed: DeviceSpeed) -> None:
    assert DeviceSpeed.from_dict(json.loads(json.dumps(cpu_speed.as_dict()))) == cpu_speed
    link = LinkSpeed("10.0.0.5:50052", 1.2e9, 0.0004)
    assert LinkSpeed.from_dict(json.loads(json.dumps(link.as_dict()))) == link


def test_unknown_type_or_device_is_a_sentence() -> None:
    with pytest.raises(ValueError, match="does not know the weight type 'q4_k'"):
        measure_device("CPU", 1, ["q4_k"])
    with pytest.raises(UnknownDevice, match="no device 'GPU7'"):
        measure_device("GPU7", 1, ["q4_K"])


def test_unreachable_host_is_a_sentence_not_an_abort() -> None:
    with pytest.raises(EnclaveError, match=r"Cannot reach the host 127\.0\.0\.1:\d+: connection refused"):
        measure_link(f"127.0.0.1:{free_port()}")


def test_loopback_host_link_and_device(rpc_hosts: LoopbackHosts) -> None:
    rpc_host = rpc_hosts.endpoints[0]
    child = subprocess.run([sys.executable, "-c", _MEASURE_HOST, rpc_host, str(SMALL)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    link = LinkSpeed.from_dict(measured["link"])
    assert link.endpoint == rpc_host
    assert 0 < link.latency_s < 0.05
    assert link.bytes_per_s > 50e6
    speed = DeviceSpeed.from_dict(measured["device"])
    assert speed.device == f"RPC0[{rpc_host}]"
    assert 100e6 < speed.read_bytes_per_s["q4_K"] < 1e12
    assert 0.1 < speed.read_bytes_per_s["q8_0"] / speed.read_bytes_per_s["q4_K"] < 10
    assert speed.flops["q4_K"] > 1e8
    assert 0 < speed.step_seconds < 0.05  # a loopback round trip
