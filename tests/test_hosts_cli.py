"""``enclave hosts`` and ``enclave plan`` with RPC hosts: a real loopback host, one that is
not there, and simulated ones."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import enclave, one_error_line
from tests.rpc_hosts import LoopbackHosts, free_port


def test_a_host_that_is_not_there_is_kept_with_the_reason(enclave_home: Path) -> None:
    assert "No hosts." in enclave("hosts", home=enclave_home).stdout
    closed = f"127.0.0.1:{free_port()}"
    added = enclave("hosts", "add", closed, home=enclave_home)
    assert added.returncode == 0, added.stderr
    assert f"Added {closed}." in added.stdout and "not reachable" in added.stdout
    assert "connection refused" in added.stdout and "kept" in added.stdout
    listed = json.loads(enclave("hosts", "--json", home=enclave_home).stdout)
    assert listed == [{"host": closed, "memory_limit": None, "reachable": False, "error": listed[0]["error"],
                       "devices": [], "link": None}]
    assert f"Removed {closed}." in enclave("hosts", "remove", closed, home=enclave_home).stdout
    assert "No host" in one_error_line(enclave("hosts", "remove", closed, home=enclave_home))
    assert "is not a host address" in one_error_line(enclave("hosts", "add", "not an address", home=enclave_home))


def test_a_loopback_host_lists_its_device_and_takes_layers(enclave_home: Path, moe_model: Path,
                                                            rpc_hosts: LoopbackHosts) -> None:
    endpoint = rpc_hosts.endpoints[1]
    added = enclave("hosts", "add", endpoint, "--memory", "4GiB", home=enclave_home)
    assert added.returncode == 0, added.stderr
    assert f"RPC0[{endpoint}]" in added.stdout and "Gbit/s" in added.stdout and "up to 4.0 GiB" in added.stdout
    listed = json.loads(enclave("hosts", "--json", home=enclave_home).stdout)[0]
    assert listed["reachable"] and listed["devices"][0]["id"] == f"RPC0[{endpoint}]"
    assert listed["link"]["bytes_per_s"] > 10e6 and 0 < listed["link"]["latency_s"] < 0.05

    for _ in range(3):  # a CPU busy while its speed is measured gives no speed, and is measured again next time
        data = json.loads(enclave("plan", str(moe_model), "--ctx", "1024", "--margin", "0", "--json",
                                  home=enclave_home).stdout)
        if data["speed"] is not None:
            break
    host = next(d for d in data["devices"] if d["host"] == endpoint)
    assert host["budget"] == 4 * 2**30 and host["layers"] == 4  # the whole model fits there
    assert data["rpc_hosts"] == [endpoint] and data["tensor_split"] == [5]
    assert data["speed"]["generation_tps"] > 0 and data["speed"]["link_bytes_per_token"][endpoint] > 0


def test_plan_for_simulated_gpus_and_hosts(enclave_home: Path, moe_model: Path) -> None:
    result = enclave("plan", str(moe_model), "--vram", "2x24GiB", "--sim-host", "2x80GiB@25Gbit", "--ctx", "2048",
                     home=enclave_home)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "GPU0 24.0 GiB free, GPU1 24.0 GiB free, RPC0 on sim-host-1:50052 80.0 GiB free" in out
    assert "RPC1 on sim-host-1:50052" in out and "Speed: about " in out and "tokens/s generation" in out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()[0] in
            ("RPC0", "RPC1", "GPU0", "GPU1", "RAM")]
    assert rows == ["RPC0", "RPC1", "GPU0", "GPU1", "RAM"]  # llama.cpp's order: hosts first
    wrong = enclave("plan", str(moe_model), "--sim-host", "80GiB", home=enclave_home)
    assert wrong.returncode == 2 and "Write it like 8x80GiB@25Gbit" in wrong.stderr
