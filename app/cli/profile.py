"""``enclave models config``: a model's saved profile, and the options that change it.

The same options on ``enclave run`` change the profile for that one run only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from app.cli.common import KV_TYPES, user_errors
from app.cli.registry import models
from app.profiles import PROFILE_FIELDS, ModelProfile, describe
from app.services import Services
from inference.protocol import TensorOverride

F = TypeVar("F", bound=Callable[..., Any])


def parse_override(text: str) -> TensorOverride:
    pattern, sep, device = text.rpartition("=")
    if not sep or not pattern or not device:
        raise click.BadParameter(f"{text!r}: write it as PATTERN=DEVICE, e.g. 'blk\\.[0-9]\\.ffn_.*_exps=CPU'.")
    return TensorOverride(pattern, device)


_OPTIONS: tuple[Callable[[F], F], ...] = (
    click.option("--ctx", "n_ctx", type=click.IntRange(min=0), default=None,
                 help="Context length in tokens; 0: the largest that fits this machine."),
    click.option("--kv-type", type=KV_TYPES, default=None, help="KV cache type (K and V)."),
    click.option("--flash-attn/--no-flash-attn", "flash_attn", default=None, help="Flash attention."),
    click.option("--cpu-moe-layers", type=click.IntRange(min=0), default=None,
                 help="Keep the experts of the first N layers in RAM (manual expert offload)."),
    click.option("--gpu-layers", "n_gpu_layers", type=click.IntRange(min=-1), default=None,
                 help="Place by hand: this many layers on the GPU (-1: all), no memory plan."),
    click.option("-ot", "--override-tensor", "overrides", multiple=True,
                 help="llama.cpp tensor override PATTERN=DEVICE (regex), before the plan's. Repeatable."),
    click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads."),
    click.option("--chat-format", default=None,
                 help="A built-in chat format (chatml, llama3, gemma, ...) instead of the model's own template."),
    click.option("--draft-model", default=None,
                 help="A small model with the same vocabulary (a registered model or a .gguf file) that proposes "
                      "tokens for this one to check: faster replies, the same words. '--reset draft_model' "
                      "clears it: then only the prompt is drafted from."),
    click.option("--vision/--no-vision", "vision", default=None,
                 help="Load the model's vision projector with it (reads images); --no-vision: text only, the "
                      "projector's memory stays free."),
    click.option("--temperature", type=click.FloatRange(min=0), default=None,
                 help="0 is greedy: the same prompt always gives the same reply."),
    click.option("--top-k", type=click.IntRange(min=0), default=None, help="Sample from the K likeliest tokens."),
    click.option("--top-p", type=click.FloatRange(0, 1), default=None, help="Nucleus sampling threshold."),
    click.option("--min-p", type=click.FloatRange(0, 1), default=None, help="Drop tokens this much less likely."),
    click.option("--repeat-penalty", type=click.FloatRange(0.1, 10), default=None, help="Penalty for repeats."),
    click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="Stop a reply after this many tokens."),
    click.option("--system", "system_prompt", default=None, help="The system prompt."),
)


def profile_options(command: F) -> F:
    """The profile's settings as options (``models config`` and ``run`` share them)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def profile_changes(options: dict[str, Any]) -> dict[str, Any]:
    """The profile fields the options given on the command line set; the others are None.
    Consumes the profile's options from ``options``."""
    changes = {name: options.pop(name) for name in list(options) if name in PROFILE_FIELDS}
    kv_type = options.pop("kv_type", None)
    if kv_type is not None:
        changes["type_k"] = changes["type_v"] = kv_type
    overrides = options.pop("overrides", ())
    if overrides:
        changes["tensor_overrides"] = tuple(parse_override(o) for o in overrides)
    return {name: value for name, value in changes.items() if value is not None}


@models.command("config")
@click.argument("model")
@profile_options
@click.option("--reset", "reset", multiple=True,
              help="Forget a setting (e.g. --reset n_ctx), or 'all'. Repeatable.")
@user_errors
def config_command(model: str, reset: tuple[str, ...], **options: Any) -> None:
    """Show MODEL's saved profile, or change it with the options given.

    Chat, library questions, 'enclave run' and the window's Models page all load MODEL
    with this profile. Settings left at (default) follow 'enclave settings' and the
    memory planner.
    """
    changes = profile_changes(options)
    unknown = set(reset) - PROFILE_FIELDS - {"all"}
    if unknown:
        raise click.BadParameter(f"no setting {', '.join(sorted(unknown))}; settings: "
                                 f"{', '.join(sorted(PROFILE_FIELDS))}", param_hint="--reset")
    with Services.open() as services:
        key = services.profile_key(model)
        profile = ModelProfile() if "all" in reset else services.profiles.get(key)
        cleared = {name: getattr(ModelProfile(), name) for name in reset if name in PROFILE_FIELDS}
        if changes or reset:
            profile = services.configure_model(model, profile, **{**cleared, **changes})
        click.echo(f"Profile of {model}" + ("" if key == model else f" ({key})") + ":")
        for line in describe(profile):
            click.echo(f"  {line}")
