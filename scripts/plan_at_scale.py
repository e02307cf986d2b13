"""Enclave's plan and predicted speed, on paper, at the scale of the largest open MoE models.

    python scripts/plan_at_scale.py [--out docs/plan-at-scale.md] [--this-cpu]

Writes sparse GGUF files (``sparse_gguf``: real header and tensor infos, the data a hole)
of DeepSeek-V3 at Q4_K_M and of a hypothetical 1.6-trillion-parameter MoE (DeepSeek-V3's
layout with 624 routed experts instead of 256), then asks ``enclave plan --json`` where
they go on a simulated workstation (one 24 GiB GPU, 256 GiB RAM) joined by 1, 2, 4 or 8
simulated RPC hosts of eight 80 GiB GPUs behind 10, 25 or 100 Gbit links, at a context of
32,768 tokens. Prints Markdown tables and writes them, with what they mean, to ``--out``.

The workstation's CPU is a simulated one too (its published figure, ``devices.PUBLISHED_CPU``),
set in the temporary ENCLAVE_HOME's speed cache before planning; ``--this-cpu`` keeps what
Enclave normally does for a simulated machine: measure this machine's CPU. Everything lives
in a temporary folder, deleted at the end; the run takes about half a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository's packages, when run as a file
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sparse_gguf beside this file

from sparse_gguf import bytes_per_token, deepseek_v3, parameter_count, with_experts, write_sparse_gguf  # noqa: E402

from app.cli import cli  # noqa: E402
from app.device_speeds import SpeedCache  # noqa: E402
from app.paths import AppPaths  # noqa: E402
from app.services import Services  # noqa: E402
from inference.devices import PUBLISHED_CPU, PUBLISHED_GPUS, format_size, published_speed  # noqa: E402
from inference.protocol import default_threads  # noqa: E402
from inference.speed import CPU_DEVICE  # noqa: E402

CONTEXT = 32_768
WORKSTATION = ("--vram", "24GiB", "--ram", "256GiB")
HOST = "8x80GiB"
LINKS_GBIT = (10, 25, 100)
HOST_COUNTS = (1, 2, 4, 8)
HYPOTHETICAL_EXPERTS = 624  # DeepSeek-V3's 58 MoE layers with 624 routed experts: 1.61 T parameters
HYPOTHETICAL = f"1.6T MoE (hypothetical: DeepSeek-V3 layout, {HYPOTHETICAL_EXPERTS} experts)"
OUT = ROOT / "docs" / "plan-at-scale.md"


@dataclass(frozen=True)
class Model:
    label: str
    path: Path
    parameters: int
    size_bytes: int  # the weights, as ``enclave inspect`` sums them


@dataclass(frozen=True)
class Result:
    model: Model
    hosts: int
    link_gbit: int | None  # None: the workstation alone
    plan: dict[str, Any]

    @property
    def fits(self) -> bool:
        return bool(self.plan["fits"])


def enclave(home: Path, *args: str) -> dict[str, Any]:
    """``enclave ARGS --json`` run in this process with ENCLAVE_HOME=home, its JSON answer."""
    result = CliRunner().invoke(cli, [*args, "--json"], env={"ENCLAVE_HOME": str(home)}, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"enclave {' '.join(args)} failed: {result.output.strip()}")
    return json.loads(result.stdout)


def simulate_workstation_cpu(home: Path) -> None:
    """Put the published desktop CPU in the speed cache as "this machine's" CPU, so the
    workstation's cores are simulated like its GPU (a simulated machine otherwise takes the
    CPU Enclave runs on, measured)."""
    os.environ["ENCLAVE_HOME"] = str(home)
    with Services.open() as services:
        threads = services.current_settings().threads or default_threads()
    paths = AppPaths.under(home)
    cache = SpeedCache(paths.cache / "device-speeds.json", paths.llama_log,
                       measure=lambda *_, **__: published_speed(CPU_DEVICE, None))
    cache.speed(CPU_DEVICE, "cpu", 0, threads)  # the key ``SpeedCache.with_speeds`` looks up


def write_models(folder: Path, home: Path) -> list[Model]:
    deepseek = deepseek_v3()
    layouts = [(deepseek.name, deepseek), (HYPOTHETICAL, with_experts(deepseek, HYPOTHETICAL_EXPERTS,
                                                                      "hypothetical-1.6T-MoE"))]
    models = []
    for label, layout in layouts:
        path = folder / f"{layout.name}-Q4_K_M.gguf"
        write_sparse_gguf(path, layout)
        info = enclave(home, "inspect", str(path))
        assert info["parameters"] == parameter_count(layout)
        models.append(Model(label, path, info["parameters"], info["size_bytes"]))
    return models


def plan(home: Path, model: Model, hosts: int, link_gbit: int | None) -> Result:
    sim = [arg for _ in range(hosts) for arg in ("--sim-host", f"{HOST}@{link_gbit}Gbit")]
    answer = enclave(home, "plan", str(model.path), *WORKSTATION, *sim, "--ctx", str(CONTEXT))
    return Result(model, hosts, link_gbit, answer)


# --- the tables --------------------------------------------------------------------------


def _rate(tps: float) -> str:
    return f"{tps:,.0f}" if tps >= 10 else f"{tps:.1f}"


def _experts(p: dict[str, Any]) -> str:
    """Where the routed experts went: "366.9 GiB on 5 GPUs of 1 host + the workstation's GPU; 0 B in RAM"."""
    on_devices = [d for d in p["devices"] if d["device"] != "RAM" and d["experts"]]
    in_ram = sum(d["experts"] for d in p["devices"] if d["device"] == "RAM")
    hosted = [d for d in on_devices if d["host"]]
    hosts = len({d["host"] for d in hosted})
    where = [f"{len(hosted)} GPUs of {hosts} host{'s' if hosts != 1 else ''}"] if hosted else []
    where += ["the workstation's GPU"] if any(d["host"] is None for d in on_devices) else []
    placed = sum(d["experts"] for d in on_devices)
    return f"{format_size(placed)} on {' + '.join(where) or 'no GPU'}; {format_size(in_ram)} in RAM"


def _speed_cells(p: dict[str, Any]) -> list[str]:
    speed = p["speed"]
    if not p["fits"]:
        return ["—", "—", "does not fit: " + p["verdict"].removeprefix("Does not fit: ").rstrip(".")]
    if speed is None:
        return ["?", "?", "no speed figures"]
    return [_rate(speed["generation_tps"]), _rate(speed["prompt_tps"]), speed["dominant"]]


HEADER = ("| model | size | hosts needed | link | experts | generation tok/s | prompt tok/s "
          "| most of a token's time |\n| --- | --- | --- | --- | --- | ---: | ---: | --- |")
SCALING_HEADER = ("| model | hosts | devices used | generation tok/s | prompt tok/s | network per token | "
                  "most of a token's time |\n| --- | ---: | ---: | ---: | ---: | --- | --- |")


def row(r: Result) -> str:
    m = r.model
    size = f"{format_size(m.size_bytes)} ({m.parameters / 1e9:,.0f} B params)"
    hosts = f"{r.hosts} × {HOST}" if r.link_gbit is not None else "none (workstation alone)"
    link = f"{r.link_gbit} Gbit" if r.link_gbit is not None else "—"
    cells = [m.label, size, hosts, link, _experts(r.plan) if r.fits else "—", *_speed_cells(r.plan)]
    return "| " + " | ".join(cells) + " |"


def scaling_row(r: Result) -> str:
    p = r.plan
    used = _devices_used(r)
    network = sum((p["speed"] or {}).get("link_bytes_per_token", {}).values())
    cells = [r.model.label, str(r.hosts), str(used), *_speed_cells(p)[:2], format_size(network),
             _speed_cells(p)[2]]
    return "| " + " | ".join(cells) + " |"


def fewest_fitting(results: list[Result], model: Model, link: int) -> Result | None:
    return next((r for r in results if r.model is model and r.link_gbit == link and r.fits), None)


def tables(models: list[Model], results: list[Result], alone: list[Result]) -> tuple[str, str]:
    main = [HEADER]
    for model in models:
        main.append(row(next(r for r in alone if r.model is model)))
        for link in LINKS_GBIT:
            found = fewest_fitting(results, model, link)
            main.append(row(found) if found else f"| {model.label} | | more than {HOST_COUNTS[-1]} | {link} Gbit "
                                                 "| | | | does not fit |")
    scaling = [SCALING_HEADER]
    scaling += [scaling_row(r) for r in results if r.link_gbit == 25 and r.fits]
    return "\n".join(main), "\n".join(scaling)


def document(models: list[Model], main: str, scaling: str, cpu_note: str, why: str) -> str:
    h100_bw, _, card = PUBLISHED_GPUS[80]
    deepseek, big = models
    return f"""# Planned at scale: DeepSeek-V3 and a 1.6T-parameter MoE over RPC hosts

Made by `python scripts/plan_at_scale.py` from `enclave plan --json`: sparse GGUF files
(real header and tensor list, no weights) of DeepSeek-V3 at Q4_K_M — 671 B parameters, the
published configuration from `shared/model-shapes.json` — and of a **hypothetical** 1.6 T MoE:
DeepSeek-V3's layout with {HYPOTHETICAL_EXPERTS} routed experts per MoE layer instead of 256
(nothing of that size has a published configuration in our data): {big.parameters / 1e12:.2f} T
parameters, {big.size_bytes / 1e9:,.0f} GB. DeepSeek-V3's file comes to {deepseek.size_bytes / 1e9:,.1f} GB
({deepseek.parameters / 1e9:,.2f} B parameters; Q4_K, with Q6_K for `ffn_down` in the layers llama.cpp's
Q4_K_M gives more bits, the output head Q6_K): Hugging Face lists about 404 GB for unsloth's
DeepSeek-V3 Q4_K_M (quoted from memory: `model-shapes.json` has no Q4_K_M size, only Q3_K_M at
319.3 GB). The machine is a simulated
workstation (`--vram 24GiB --ram 256GiB`; {cpu_note}) with simulated RPC hosts of eight
80 GiB GPUs each (`--sim-host {HOST}@NGbit`, {card}: {h100_bw / 1e12:.2f} TB/s), at a context
of {CONTEXT:,} tokens. "Hosts needed" is the fewest of {", ".join(map(str, HOST_COUNTS))}
with which the plan fits. Speeds are predictions (`inference/speed.py`), not measurements.

{main}

More hosts than needed, at 25 Gbit:

{scaling}

**What dominates.** {why}
"""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _devices_used(r: Result) -> int:
    return sum(1 for d in r.plan["devices"] if d["device"] != "RAM" and d["layers"])


def _more_hosts(results: list[Result], model: Model) -> str:
    """What hosts beyond the fewest that fit do to ``model``'s plan at 25 Gbit, in words."""
    runs = [r for r in results if r.model is model and r.link_gbit == 25 and r.fits and r.plan["speed"]]
    if len(runs) < 2:
        return ""
    first, last = runs[0], runs[-1]
    gen = f"{_rate(first.plan['speed']['generation_tps'])} to {_rate(last.plan['speed']['generation_tps'])}"
    if _devices_used(last) == _devices_used(first):
        return (f"With {last.hosts} hosts instead of {first.hosts} the plan still uses the same {_devices_used(first)} "
                f"devices; the others stay idle and the prediction does not move ({gen} tokens/s).")
    return (f"Beyond the fewest that fit, more hosts only spread the same layers over more devices and hops: with "
            f"{last.hosts} hosts instead of {first.hosts} the plan uses {_devices_used(last)} devices instead of "
            f"{_devices_used(first)}, and the prediction falls from {gen} tokens/s generation (second table).")


def dominance(models: list[Model], results: list[Result]) -> str:
    """What the figures say dominates a token's time, with the figures."""
    deepseek, big = models
    slow, fast = fewest_fitting(results, deepseek, LINKS_GBIT[0]), fewest_fitting(results, deepseek, LINKS_GBIT[-1])
    large = fewest_fitting(results, big, 25)
    if slow is None or fast is None or large is None or not slow.plan["speed"] or not fast.plan["speed"]:
        return "The plans did not all fit or have speeds: nothing to compare."
    s10, s100 = slow.plan["speed"], fast.plan["speed"]
    total = 1 / s10["generation_tps"]
    link10 = sum(v for k, v in s10["seconds_per_token"].items() if k.startswith("link to "))
    link100 = sum(v for k, v in s100["seconds_per_token"].items() if k.startswith("link to "))
    sent = sum(s10["link_bytes_per_token"].values())
    return (
        f"For DeepSeek-V3 on one host a generated token takes about {_ms(total)}: {_ms(total - link10)} on the "
        f"devices and {_ms(link10)} on the network at {LINKS_GBIT[0]} Gbit ({_ms(link100)} at {LINKS_GBIT[-1]}). "
        f"On the devices, each reads the weights of its layers — of an MoE layer only the 8 experts the router "
        f"picks, {format_size(bytes_per_token(deepseek_v3()))} per token over all devices — and pays a fixed step "
        "for each of the graph's 40 to 50 operations per layer; no one device dominates (the largest share: "
        f"{s10['dominant']}). The bytes on the wire are few ({format_size(sent)} per token: a hidden state of "
        "7,168 floats to the host and back; between its GPUs the host copies it itself), so a link costs its "
        "latency — two round trips into the host and one from each of its GPUs to the next — far more "
        f"than its bandwidth, and a faster link barely changes generation ({_rate(s10['generation_tps'])} "
        f"against {_rate(s100['generation_tps'])} tokens/s). Reading a prompt is different: 512 tokens cross "
        "each hop at once, and bandwidth shows "
        f"({_rate(s10['prompt_tps'])} tokens/s at {LINKS_GBIT[0]} Gbit, {_rate(s100['prompt_tps'])} at "
        f"{LINKS_GBIT[-1]}). llama.cpp's RPC backend runs the layers one device after another — while one GPU "
        f"works, the others wait — so hosts add memory, not speed. {_more_hosts(results, deepseek)} "
        "The hypothetical 1.6 T model generates about as fast as DeepSeek-V3: a token "
        "reads the same 8 experts of the same size; it needs 2.4 times the memory. The workstation's CPU is "
        "simulated too (its published figure), so that the table does not depend on the machine it is made on.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help="the Markdown file to write")
    parser.add_argument("--this-cpu", action="store_true",
                        help="measure this machine's CPU for the workstation instead of the published figure")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="enclave-scale-") as tmp:
        home = Path(tmp) / "home"
        if not args.this_cpu:
            simulate_workstation_cpu(home)
        models = write_models(Path(tmp), home)
        alone = [plan(home, m, 0, None) for m in models]
        results = [plan(home, m, n, link) for m in models for link in LINKS_GBIT for n in HOST_COUNTS]
    main_table, scaling_table = tables(models, results, alone)
    bandwidth, _, cpu = PUBLISHED_CPU
    cpu_note = ("its CPU measured on the machine that ran the script" if args.this_cpu
                else f"its CPU simulated too: {cpu}, {bandwidth / 1e9:.1f} GB/s")
    args.out.write_text(document(models, main_table, scaling_table, cpu_note, dominance(models, results)))
    print(main_table, "\n", scaling_table, sep="\n")
    print(f"\nwritten to {args.out} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
