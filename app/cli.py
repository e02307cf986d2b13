"""The ``enclave`` command: a thin layer over the app services.

Errors a user can cause print one line and exit 2; nothing here shows a traceback.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from app import __version__
from app.logs import configure_logging
from app.paths import app_paths
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Done, Failed, ModelSettings, Progress, Sampling, Token

F = TypeVar("F", bound=Callable[..., Any])
EXIT_USER_ERROR = 2


def fail(message: str) -> None:
    click.echo(f"enclave: error: {message}", err=True)
    sys.exit(EXIT_USER_ERROR)


def user_errors(fn: F) -> F:
    """Turn an ``EnclaveError`` into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EnclaveError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="enclave", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Enclave runs open-weight AI models entirely on this machine.

    Nothing leaves it: no telemetry, no update checks, no network unless you ask for a
    download.
    """
    configure_logging(app_paths())
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--max-tokens", type=click.IntRange(min=1), default=512, show_default=True,
              help="Stop after this many tokens.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True,
              help="0 is greedy: the same prompt always gives the same reply.")
@click.option("--seed", type=int, default=None, help="Seed for sampling (reproducible replies).")
@click.option("--ctx", "n_ctx", type=click.IntRange(min=0), default=4096, show_default=True,
              help="Context length in tokens; 0 means the model's trained context.")
@click.option("--system", default=None, help="A system prompt.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--gpu-layers", type=int, default=0, show_default=True, help="Layers to put on the GPU (-1: all).")
@click.option("--raw", is_flag=True, help="Complete PROMPT as plain text, without the chat template.")
@click.option("--stats", is_flag=True, help="Print token counts and speeds to stderr.")
@user_errors
def run(model: str, prompt: str, max_tokens: int, temperature: float, seed: int | None, n_ctx: int,
        system: str | None, threads: int | None, gpu_layers: int, raw: bool, stats: bool) -> None:
    """Answer PROMPT with MODEL (a .gguf file), streaming the reply to stdout."""
    from app.runtime import Runtime

    runtime = Runtime(app_paths().ensure())
    extra = {"n_threads": threads} if threads else {}
    settings = ModelSettings(path=model, n_ctx=n_ctx, n_gpu_layers=gpu_layers, **extra)
    sampling = Sampling(temperature=temperature, max_tokens=max_tokens, seed=seed)
    try:
        runtime.load(model, settings)
        if raw:
            events = runtime.complete(prompt, sampling)
        else:
            messages = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt)]
            events = runtime.chat(messages, sampling)
        _stream(events, runtime.cancel, show_stats=stats)
    finally:
        runtime.close()


def _stream(events: Any, cancel: Callable[[], None], show_stats: bool) -> None:
    progress_shown = False
    interrupted = False
    iterator = iter(events)
    while True:
        try:
            event = next(iterator)
        except StopIteration:
            break
        except KeyboardInterrupt:
            cancel()  # the worker stops after at most one more token; keep reading to its end
            interrupted = True
            continue
        if isinstance(event, Progress) and event.total >= 1024 and sys.stderr.isatty():
            click.echo(f"\rReading the prompt: {event.done}/{event.total} tokens", err=True, nl=False)
            progress_shown = True
        elif isinstance(event, Token):
            if progress_shown:
                click.echo("\r\033[K", err=True, nl=False)
                progress_shown = False
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, Done):
            sys.stdout.write("\n")
            if show_stats:
                s = event.stats
                click.echo(
                    f"prompt: {s.prompt_tokens} tokens ({s.cached_tokens} cached), "
                    f"{s.prompt_tokens_per_second:.1f} tokens/s; "
                    f"generated: {s.generated_tokens} tokens, {s.generation_tokens_per_second:.1f} tokens/s; "
                    f"stopped: {s.stop_reason}",
                    err=True,
                )
        elif isinstance(event, Failed):
            raise EnclaveError(event.message)
    if interrupted:
        sys.exit(130)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def doctor(as_json: bool) -> None:
    """What llama.cpp was built with, the devices it sees, and where Enclave keeps data."""
    from app.diagnostics import collect

    report = collect(app_paths())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"Enclave {report['version']}  (llama-cpp-python {report['llama_cpp_python']})")
    click.echo(f"llama.cpp backends: {', '.join(report['backends'])}  (GPU offload: "
               f"{'yes' if report['gpu_offload'] else 'no'})")
    click.echo(f"CPU features: {report['system_info']}")
    click.echo("Devices:")
    for dev in report["devices"]:
        click.echo(f"  {dev['name']:<10} {dev['type']:<5} {dev['description']}: "
                   f"{_gib(dev['free_bytes'])} free of {_gib(dev['total_bytes'])}")
    click.echo("Data:")
    for name, path in report["paths"].items():
        click.echo(f"  {name:<9} {path}")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def main() -> None:
    multiprocessing.freeze_support()
    cli(prog_name="enclave")


if __name__ == "__main__":
    main()
