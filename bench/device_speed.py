"""What the speed probe measures on this machine: the CPU's weight read rate and flops per
weight type, its fixed cost per graph, and (with --loopback) the link to an RPC host on
127.0.0.1 and that host's device, so a person can see the figures the speed prediction uses.

    python bench/device_speed.py [--threads N] [--loopback]

Neither /proc nor lscpu report memory bandwidth; the CPU model and caches they do report
are printed so the read rate can be set beside the CPU's published figure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from inference.device_speed import DEFAULT_TYPES, DeviceSpeed, LinkSpeed, measure_device

ROOT = Path(__file__).resolve().parent.parent
_MEASURE_HOST = """
import json, sys
from inference import device_speed, rpc
device = rpc.add_host(sys.argv[1])[0]
link = device_speed.measure_link(sys.argv[1])
speed = device_speed.measure_device(device.id, int(sys.argv[2]))
print(json.dumps({"link": link.as_dict(), "device": speed.as_dict()}))
"""


def cpu_facts() -> list[str]:
    """What lscpu says about the CPU and its caches (nothing about memory bandwidth)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ["lscpu is not available here"]
    keep = ("Model name", "CPU family", "Model:", "CPU(s):", "Hypervisor", "L2 cache", "L3 cache")
    return [line.strip() for line in out.splitlines() if line.strip().startswith(keep)]


def print_speed(speed: DeviceSpeed, seconds: float) -> None:
    threads = f"{speed.n_threads} thread" + ("s" if speed.n_threads != 1 else "")
    print(f"\n{speed.device} ({threads}), probe took {seconds:.2f} s")
    print(f"{'type':8}{'read GB/s':>12}{'GFLOP/s':>10}")
    for name in speed.read_bytes_per_s:
        print(f"{name:8}{speed.read_bytes_per_s[name] / 1e9:>12.1f}{speed.flops[name] / 1e9:>10.0f}")
    print(f"step: {speed.step_seconds * 1e6:.1f} µs per graph")


def loopback(threads: int) -> tuple[LinkSpeed, DeviceSpeed]:
    """Serve this CPU on a free loopback port and measure it from another process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{sock.getsockname()[1]}"
    port = endpoint.rsplit(":", 1)[1]
    host = subprocess.Popen([sys.executable, "-m", "inference.rpc_host", "--port", port, "--device", "CPU",
                             "--threads", str(threads)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)  # the host's start-up; measuring connects with a time-out anyway
        child = subprocess.run([sys.executable, "-c", _MEASURE_HOST, endpoint, str(threads)], cwd=ROOT,
                               capture_output=True, text=True, timeout=300, check=True)
    finally:
        host.kill()
        host.wait()
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    return LinkSpeed.from_dict(measured["link"]), DeviceSpeed.from_dict(measured["device"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--loopback", action="store_true", help="also measure a loopback RPC host")
    args = parser.parse_args()
    print("\n".join(cpu_facts()))
    print("memory bandwidth: not reported by /proc or lscpu (compare the read rate with the CPU's published figure)")
    start = time.perf_counter()
    speed = measure_device("CPU", args.threads, DEFAULT_TYPES)
    print_speed(speed, time.perf_counter() - start)
    if args.loopback:
        start = time.perf_counter()
        link, remote = loopback(args.threads)
        print(f"\nloopback link {link.endpoint}: {link.bytes_per_s / 1e6:.0f} MB/s, "
              f"latency {link.latency_s * 1e6:.0f} µs")
        print_speed(remote, time.perf_counter() - start)


if __name__ == "__main__":
    main()
