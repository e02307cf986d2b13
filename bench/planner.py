"""The planner on real models' published shapes and three simulated machines: the plan,
the VRAM it leaves unused, and how long planning takes (target: under 50 ms each).

    python bench/planner.py [--ctx N]

Without --ctx the planner also searches for the largest context that fits, which is the
slower path (a binary search over contexts), so that is what is timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as a file rather than with -m: the repository root holds tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.devices import GiB, format_size, simulated_machine
from inference.planner import PlanRequest, plan
from tests.model_shapes import real_shapes

MODELS = ["gpt-oss-120b", "Qwen3-30B-A3B", "Qwen3-235B-A22B", "Llama-4-Scout-17B-16E", "Llama-3.1-8B"]
MACHINES = {
    "24 GiB GPU + 64 GiB RAM": simulated_machine(24 * GiB, 64 * GiB, gpu_name="CUDA0"),
    "16 GiB GPU + 128 GiB RAM": simulated_machine(16 * GiB, 128 * GiB, gpu_name="CUDA0"),
    "Apple 128 GiB unified": simulated_machine(None, 128 * GiB, unified=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ctx", type=int, default=None, help="a fixed context (default: the largest that fits)")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    shapes = real_shapes()
    worst = 0.0
    print(f"{'model':24}{'machine':26}{'ctx':>9}{'GPU layers':>11}{'experts in RAM':>16}{'VRAM unused':>13}"
          f"{'plan ms':>9}  verdict")
    for name in MODELS:
        for label, machine in MACHINES.items():
            req = PlanRequest(n_ctx=args.ctx)
            times = []
            for _ in range(args.reps):
                start = time.perf_counter()
                p = plan(shapes[name], machine, req)
                times.append(time.perf_counter() - start)
            ms = sorted(times)[len(times) // 2] * 1000
            worst = max(worst, ms)
            unused = format_size(p.gpu.unused_bytes) if p.gpu and p.fits else "-"
            print(f"{name:24}{label:26}{p.n_ctx:>9,}{p.n_gpu_layers:>11}{format_size(p.ram.experts_bytes):>16}"
                  f"{unused:>13}{ms:>9.2f}  {p.verdict}")
    print(f"slowest median plan: {worst:.2f} ms (target < 50 ms)")


if __name__ == "__main__":
    main()
