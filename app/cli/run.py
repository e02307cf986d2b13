"""``enclave run``: one prompt, one streamed reply."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

import click

from app.cli.common import KV_TYPES, Cancellable, ProgressLine, SizeType, cli, user_errors
from app.services import Services
from inference.errors import EnclaveError
from inference.planner import PlanRequest
from inference.protocol import (
    ChatMessage,
    Done,
    Event,
    Failed,
    ModelSettings,
    Progress,
    Sampling,
    TensorOverride,
    Token,
)


def parse_override(text: str) -> TensorOverride:
    pattern, sep, device = text.rpartition("=")
    if not sep or not pattern or not device:
        raise click.BadParameter(f"{text!r}: write it as PATTERN=DEVICE, e.g. 'blk\\.[0-9]\\.ffn_.*_exps=CPU'.")
    return TensorOverride(pattern, device)


@cli.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--max-tokens", type=click.IntRange(min=1), default=512, show_default=True,
              help="Stop after this many tokens.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True,
              help="0 is greedy: the same prompt always gives the same reply.")
@click.option("--seed", type=int, default=None, help="Seed for sampling (reproducible replies).")
@click.option("--ctx", "n_ctx", type=click.IntRange(min=0), default=4096, show_default=True,
              help="Context length in tokens; 0: the largest that fits this machine.")
@click.option("--system", default=None, help="A system prompt.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--plan", "plan_mode", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
              help="auto: Enclave places every tensor for this machine. none: only what you set here.")
@click.option("--kv-type", type=KV_TYPES, default="f16", show_default=True, help="KV cache type.")
@click.option("--cpu-moe-layers", type=click.IntRange(min=0), default=None,
              help="Keep the experts of the first N layers in RAM (manual expert offload).")
@click.option("--gpu-layers", type=int, default=0, show_default=True, help="With --plan none: layers on the GPU.")
@click.option("-ot", "--override-tensor", "overrides", multiple=True,
              help="llama.cpp tensor override PATTERN=DEVICE (regex), applied before the plan's. Repeatable.")
@click.option("--margin", type=SizeType(), default="1GiB", show_default=True,
              help="Memory to leave free on each device.")
@click.option("--raw", is_flag=True, help="Complete PROMPT as plain text, without the chat template.")
@click.option("--stats", is_flag=True, help="Print token counts, speeds and the memory plan to stderr.")
@user_errors
def run(model: str, prompt: str, max_tokens: int, temperature: float, seed: int | None, n_ctx: int,
        system: str | None, threads: int | None, plan_mode: str, kv_type: str, cpu_moe_layers: int | None,
        gpu_layers: int, overrides: tuple[str, ...], margin: int, raw: bool, stats: bool) -> None:
    """Answer PROMPT with MODEL (a .gguf file), streaming the reply to stdout."""
    extra = {"n_threads": threads} if threads else {}
    settings = ModelSettings(path=model, n_ctx=n_ctx, n_gpu_layers=gpu_layers, type_k=kv_type,  # type: ignore[arg-type]
                             type_v=kv_type, flash_attn=None if kv_type == "f16" else True, **extra)
    planned = None
    if plan_mode == "auto":
        planned = PlanRequest(n_ctx=n_ctx or None, type_k=kv_type, type_v=kv_type,  # type: ignore[arg-type]
                              margin_bytes=margin, cpu_moe_layers=cpu_moe_layers)
    sampling = Sampling(temperature=temperature, max_tokens=max_tokens, seed=seed)
    with Services.open(readonly=True) as services:
        runtime = services.runtime
        outcome = runtime.load(model, settings, planned=planned,
                               extra_overrides=tuple(parse_override(o) for o in overrides))
        if stats and outcome.plan is not None:
            click.echo(f"plan: {outcome.plan.verdict}", err=True)
        if raw:
            events = runtime.complete(prompt, sampling)
        else:
            messages = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt)]
            events = runtime.chat(messages, sampling)
        stream_reply(events, runtime.cancel, show_stats=stats)


def stream_reply(events: Iterable[Event], cancel: Callable[[], None], show_stats: bool) -> None:
    """Write tokens to stdout as they come; Ctrl-C stops the reply, not the program."""
    progress = ProgressLine()
    stream = Cancellable(events, cancel)
    for event in stream:
        if isinstance(event, Progress):
            progress.show(event.done, event.total)
        elif isinstance(event, Token):
            progress.clear()
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, Done):
            sys.stdout.write("\n")
            if show_stats:
                click.echo(describe_stats(event), err=True)
        elif isinstance(event, Failed):
            raise EnclaveError(event.message)
    if stream.interrupted:
        sys.exit(130)


def describe_stats(done: Done) -> str:
    s = done.stats
    return (f"prompt: {s.prompt_tokens} tokens ({s.cached_tokens} cached), {s.prompt_tokens_per_second:.1f} tokens/s; "
            f"generated: {s.generated_tokens} tokens, {s.generation_tokens_per_second:.1f} tokens/s; "
            f"stopped: {s.stop_reason}")
