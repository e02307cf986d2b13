"""``enclave inspect`` and ``enclave plan``: what a model is, and where it would go."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from app.cli.common import DEVICES, KV_TYPES, SIM_HOST, SIZE, cli, user_errors
from app.runtime import make_plan
from app.services import Services
from inference.devices import Machine, SimulatedHost, format_size
from inference.gguf_info import GGUFInfo, inspect_gguf
from inference.planner import RAM_DEVICE, Plan, PlanRequest, ProjectorSize, context_table, projector_size
from inference.projector_info import read_projector


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (sizes in bytes).")
@user_errors
def inspect(model: str, as_json: bool) -> None:
    """What MODEL is: architecture, experts, quantization, context, and its size by part
    (and, for a registered vision model, its projector)."""
    with Services.open(readonly=True) as services:
        info = inspect_gguf(services.resolve_model(model))
        projector_path = services.models.projector_path(model)
    projector = read_projector(projector_path) if projector_path else None
    if as_json:
        click.echo(json.dumps({**info.as_dict(), "projector": None if projector is None else {
            "path": str(projector.path), "type": projector.projector_type, "size": projector.size,
            "tokens_per_image": projector.tokens_per_image, "tokens_estimated": projector.tokens_estimated}},
            indent=2))
        return
    click.echo(describe_model(info))
    if projector is not None:
        click.echo(f"  images          reads images ({projector.describe()}), {format_size(projector.size)}: "
                   f"{projector.path}")


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def describe_model(info: GGUFInfo) -> str:
    s = info.shape
    experts = (f"{s.expert_count} experts, {s.expert_used_count} used per token"
               + (f", {s.expert_shared_count} shared" if s.expert_shared_count else "")) if s.is_moe else "dense"
    window = f", sliding window {s.sliding_window}" if s.sliding_window else ""
    files = f" in {len(info.files)} files" if len(info.files) > 1 else ""
    lines = [
        f"{info.name}  ({info.architecture}, {experts})",
        f"  parameters      {_count(info.parameter_count)}",
        f"  quantization    {info.file_type}",
        f"  size            {format_size(info.total_bytes)}{files}",
        f"  trained context {info.context_length:,} tokens",
        f"  layers          {s.n_layer} x {s.n_embd} wide, {s.n_head} attention heads, {s.n_head_kv} KV heads "
        f"(head size {s.key_length}){window}",
        f"  chat format     {info.chat_format.description}",
    ]
    if info.chat_format.guessed:
        lines.append("                  choose another with: enclave models config MODEL --chat-format NAME")
    if info.license:
        lines.append(f"  license         {info.license}")
    if s.is_moe:
        non_expert = s.total_bytes - s.expert_bytes
        lines.append(f"  experts         {format_size(s.expert_bytes)}; everything else {format_size(non_expert)}")
    return "\n".join(lines)


@cli.command("plan")
@click.argument("model")
@click.option("--ctx", "n_ctx", type=click.IntRange(min=1), default=None,
              help="Context length; default: the largest that fits.")
@click.option("--kv-type", type=KV_TYPES, default=None, help="KV cache type (default: the model's profile).")
@click.option("--vram", type=DEVICES, default=None,
              help="Plan for GPUs with this much memory each: 24GiB, or 2x24GiB for two.")
@click.option("--ram", type=SIZE, default=None, help="Plan for this much free RAM, e.g. 64GiB.")
@click.option("--unified", is_flag=True, help="Plan for unified memory (Apple silicon) of --ram.")
@click.option("--sim-host", "sim_hosts", type=SIM_HOST, multiple=True,
              help="Plan with a simulated RPC host, e.g. 8x80GiB@25Gbit (repeat for more hosts).")
@click.option("--cpu-moe-layers", type=click.IntRange(min=0), default=None,
              help="Keep the experts of the first N layers in RAM (default: the model's profile).")
@click.option("--margin", type=SIZE, default="1GiB", show_default=True, help="Memory to leave free per device.")
@click.option("--no-flash-attn", is_flag=True, help="Plan without flash attention.")
@click.option("--no-speed", is_flag=True, help="Do not predict the speed (measuring a device takes a few seconds, "
                                               "once).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (sizes in bytes).")
@user_errors
def plan_command(model: str, n_ctx: int | None, kv_type: str | None, vram: list[int] | None, ram: int | None,
                 unified: bool, sim_hosts: tuple[SimulatedHost, ...], cpu_moe_layers: int | None, margin: int,
                 no_flash_attn: bool, no_speed: bool, as_json: bool) -> None:
    """Where every part of MODEL would go on this machine and its hosts (or on simulated
    ones: --vram, --ram, --sim-host), what fits, and how fast it will be.

    KV cache type, flash attention and expert layers in RAM come from MODEL's profile
    unless given here; without --ctx it proposes the largest context that fits.
    """
    with Services.open(readonly=True) as services:
        info = inspect_gguf(services.resolve_model(model))
        machine = _machine(services, vram, ram, unified, sim_hosts)
        saved = services.profile_request(model, info) or PlanRequest()
        request = replace(saved, n_ctx=n_ctx, margin_bytes=margin, projector=_projector(services, model),
                          **({"type_k": kv_type, "type_v": kv_type} if kv_type else {}),
                          **({"cpu_moe_layers": cpu_moe_layers} if cpu_moe_layers is not None else {}),
                          **({"flash_attn": False} if no_flash_attn else {}))
        chosen = make_plan(info, request, machine)
        speed = None if no_speed else services.predicted_speed(info, chosen, machine)
    table = context_table(info.shape, machine, request)
    if as_json:
        click.echo(json.dumps({**chosen.as_dict(), "machine": machine.describe(),
                               "unreachable_hosts": [{"host": h, "reason": why} for h, why in machine.unreachable],
                               "speed": speed.as_dict() if speed else None,
                               "contexts": [_row(p) for p in table]}, indent=2))
        return
    click.echo(f"{info.name} on {machine.describe()}")
    for host, why in machine.unreachable:
        click.echo(f"  host {host} left out: {why}")
    click.echo(describe_plan(chosen))
    if speed is not None:
        click.echo(f"Speed: {speed.describe()}.")
        for host, sent in speed.link_bytes_per_token.items():
            click.echo(f"  network to {host}: {format_size(sent)} per generated token")
    click.echo("\nWhat fits at which context:")
    for p in table:
        click.echo(f"  {p.n_ctx:>9,} tokens  {'fits' if p.fits else 'does not fit':<13} "
                   f"KV {format_size(p.kv_bytes):>9}  " + _placement(p))


def _projector(services: Services, model: str) -> ProjectorSize | None:
    """The registered model's vision projector as the plan counts it, unless its profile loads
    it without (``vision = False``)."""
    path = services.models.projector_path(model)
    if path is None or not services.profile(model).vision:
        return None
    return projector_size(read_projector(path))


def _resolve(model: str) -> Path:
    with Services.open(readonly=True) as services:
        return services.resolve_model(model)


def _machine(services: Services, vram: list[int] | None, ram: int | None, unified: bool,
             sim_hosts: tuple[SimulatedHost, ...]) -> Machine:
    """This machine (probed) with its hosts, or a simulated one; --vram or --sim-host alone
    keep this machine's free RAM."""
    if vram is None and ram is None and not unified and not sim_hosts:
        return services.machine()
    free_ram = ram if ram is not None else services.machine().ram_free_bytes
    return services.simulated_machine(vram, free_ram, unified=unified, hosts=sim_hosts)


def describe_plan(p: Plan) -> str:
    width = max(8, *(len(d.label or d.device) + 1 for d in p.devices))
    header = (f"  {'device':<{width}}{'layers':>7}{'weights':>11}{'experts':>11}{'KV cache':>11}{'compute':>11}"
              f"{'total':>11}{'budget':>11}")
    rows = [header]
    for d in p.devices:
        layers = str(d.layers) if d.device != RAM_DEVICE else str(p.n_layer - sum(x.layers for x in p.devices))
        rows.append(f"  {d.label or d.device:<{width}}{layers:>7}" + "".join(f"{format_size(v):>11}" for v in (
            d.weights_bytes, d.experts_bytes, d.kv_bytes, d.compute_bytes, d.total_bytes, d.budget_bytes))
            + ("" if d.fits else "  over budget"))
    rows.append(f"  GPU layers: {p.n_gpu_layers}  context: {p.n_ctx:,}  KV cache: {p.type_k}/{p.type_v}  "
                f"flash attention: {'on' if p.flash_attn else 'off'}")
    if p.cpu_expert_layers or p.cpu_expert_tensors:
        rows.append(f"  experts in RAM: layers {list(p.cpu_expert_layers)}"
                    + (f" and {', '.join(p.cpu_expert_tensors)}" if p.cpu_expert_tensors else ""))
    if p.projector is not None:
        rows.append(f"  {p.projector_words()}" + (f"; {p.image_words()}" if p.image_words() else ""))
    rows.append(p.verdict)
    rows += [f"  would help: {tip}" for tip in p.suggestions]
    return "\n".join(rows)


def _placement(p: Plan) -> str:
    if p.gpu is None:
        return f"needs {format_size(p.devices[0].total_bytes)}"
    placed = sum(d.experts_bytes for d in p.offload_devices)
    return (f"experts {format_size(placed)} on devices, {format_size(p.ram.experts_bytes)} in RAM; "
            f"RAM needed {format_size(p.ram.total_bytes)}")


def _row(p: Plan) -> dict[str, object]:
    return {"n_ctx": p.n_ctx, "fits": p.fits, "kv_bytes": p.kv_bytes, "n_gpu_layers": p.n_gpu_layers,
            "cpu_expert_layers": list(p.cpu_expert_layers),
            "devices": {d.device: d.total_bytes for d in p.devices}}
