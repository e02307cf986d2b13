"""``enclave run``: one prompt, one streamed reply."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from app.chat import PromptProgress, reads_text_only
from app.cli.common import NO_DRAFT, SIZE, Cancellable, ProgressLine, cli, note_guessed_chat_format, user_errors
from app.cli.profile import profile_changes, profile_options
from app.profiles import checked
from app.remote_models import RemoteModel
from app.services import Services
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Done, Event, Failed, ImageInput, Progress, Token

IMAGE = click.option("--image", "image_files", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="An image the model looks at before the prompt (PNG, JPEG, TIFF, WebP, GIF, BMP); "
                          "repeat for several. The model needs its projector (a vision model).")


@cli.command()
@click.argument("model")
@click.argument("prompt")
@profile_options
@click.option("--seed", type=int, default=None, help="Seed for sampling (reproducible replies).")
@click.option("--plan", "plan_mode", type=click.Choice(["auto", "none"]), default=None,
              help="auto: Enclave places every tensor for this machine. none: only what you set (--gpu-layers).")
@click.option("--margin", type=SIZE, default=None, help="Memory to leave free on each device (default 1GiB).")
@click.option("--raw", is_flag=True, help="Complete PROMPT as plain text, without the chat template.")
@click.option("--stats", is_flag=True,
              help="Print token counts, speeds, drafted tokens and the memory plan to stderr.")
@IMAGE
@NO_DRAFT
@user_errors
def run(model: str, prompt: str, seed: int | None, plan_mode: str | None, margin: int | None, raw: bool, stats: bool,
        image_files: tuple[Path, ...], no_draft: bool, **options: Any) -> None:
    """Answer PROMPT with MODEL (a registered model or a .gguf file), streaming the reply.

    MODEL loads as its saved profile says ('enclave models config'); the options given
    here change it for this run only.
    """
    changes = profile_changes(options)
    if plan_mode == "auto" and "n_gpu_layers" in changes:
        raise click.UsageError("--gpu-layers places layers by hand: it goes with --plan none, not --plan auto.")
    if plan_mode == "auto":
        changes["n_gpu_layers"] = None
    if raw and image_files:
        raise click.UsageError("--raw completes plain text: it takes no --image.")
    with Services.open(readonly=True) as services:
        if no_draft:
            services.session_settings["drafting"] = False
        images = tuple(ImageInput(image.png, image.sha256) for image, _name in services.read_images(image_files))
        remote = services.remote_model(model)
        if remote is not None:
            if raw:
                raise EnclaveError(f"{model} runs on {remote.where}: --raw completes text with a local model only.")
            run_remote(services, remote, prompt, seed, stats, images)
            return
        profile = replace(services.profile(model), **changes)
        if plan_mode == "none" and profile.n_gpu_layers is None:
            profile = replace(profile, n_gpu_layers=0)  # no plan: only what is set by hand
        profile = checked(profile)
        outcome = services.load_model(model, profile, margin_bytes=margin)
        if images and not outcome.info.reads_images:
            raise reads_text_only(model)
        note_guessed_chat_format(model, outcome.info.chat_format_guessed and not raw)
        if stats and outcome.plan is not None:
            click.echo(f"plan: {outcome.plan.verdict}", err=True)
        settings = services.current_settings()
        sampling = settings.sampling(**profile.sampling_overrides(), seed=seed)
        runtime = services.runtime
        if raw:
            events = runtime.complete(prompt, sampling)
        else:
            system = settings.system_prompt if profile.system_prompt is None else profile.system_prompt
            user = ChatMessage("user", prompt, images=images)
            messages = ([ChatMessage("system", system)] if system else []) + [user]
            events = runtime.chat(messages, sampling)
        stream_reply(events, runtime.cancel, show_stats=stats)


def run_remote(services: Services, remote: RemoteModel, prompt: str, seed: int | None, stats: bool,
               images: Sequence[ImageInput] = ()) -> None:
    """``run`` on a model served elsewhere: its saved profile's sampling and system prompt, the
    reply streamed from its server; nothing is loaded or planned here."""
    profile = services.profile(remote.name)
    settings = services.current_settings()
    sampling = settings.sampling(**profile.sampling_overrides(), seed=seed)
    system = settings.system_prompt if profile.system_prompt is None else profile.system_prompt
    messages = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt, images=tuple(images))]
    client = services.remote_client(remote)
    stream_reply(client.chat(messages, sampling), client.cancel, show_stats=stats)


def stream_reply(events: Iterable[Event], cancel: Callable[[], None], show_stats: bool) -> None:
    """Write tokens to stdout as they come; Ctrl-C stops the reply, not the program."""
    progress = PromptLine()
    stream = Cancellable(events, cancel)
    for event in stream:
        if isinstance(event, Progress):
            progress.show(PromptProgress(event.done, event.total, event.images, event.images_done))
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


class PromptLine:
    """The prompt's progress on a terminal: "Encoding image 1 of 2…" while its images are
    encoded, then ``ProgressLine``'s tokens; gone when the reply starts."""

    def __init__(self) -> None:
        self._tokens = ProgressLine()
        self._encoding = False

    def show(self, event: PromptProgress) -> None:
        encoding = event.describe()
        if encoding and sys.stderr.isatty():
            click.echo(f"\r\033[K{encoding}…", err=True, nl=False)
            self._encoding = True
            return
        self._clear_encoding()
        self._tokens.show(event.done, event.total)

    def clear(self) -> None:
        self._clear_encoding()
        self._tokens.clear()

    def _clear_encoding(self) -> None:
        if self._encoding:
            click.echo("\r\033[K", err=True, nl=False)
            self._encoding = False


def describe_stats(done: Done) -> str:
    s = done.stats
    drafted = ""
    if s.drafted_tokens > 0:
        drafted = (f"drafted: {s.drafted_tokens} tokens, {s.accepted_tokens} accepted "
                   f"({s.accepted_tokens / s.drafted_tokens:.0%}); ")
    return (f"prompt: {s.prompt_tokens} tokens ({s.cached_tokens} cached), {s.prompt_tokens_per_second:.1f} tokens/s; "
            f"generated: {s.generated_tokens} tokens, {s.generation_tokens_per_second:.1f} tokens/s; "
            f"{drafted}stopped: {s.stop_reason}")
