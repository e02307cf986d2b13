"""The command group and what every command shares: one-line errors, exit code 2."""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import click

from app import __version__
from app.logs import configure_logging
from app.paths import app_paths
from app.policy import PolicyError
from app.sqlcipher import OPERATIONAL_ERRORS
from inference.devices import format_duration, parse_devices, parse_sim_host, parse_size
from inference.errors import EnclaveError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
EXIT_USER_ERROR = 2


def fail(message: str) -> None:
    click.echo(f"enclave: error: {message}", err=True)
    sys.exit(EXIT_USER_ERROR)


def user_errors(fn: F) -> F:
    """Turn what a user can cause into one line on stderr and exit code 2: Enclave's own
    errors, a file that cannot be written or read, the database busy elsewhere."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EnclaveError as exc:
            fail(str(exc))
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            fail(f"cannot use{where}: {exc.strerror or exc}.")
        except OPERATIONAL_ERRORS as exc:
            fail(f"the database is not available right now ({exc}); if another program is using it, close it "
                 "and try again.")

    return wrapper  # type: ignore[return-value]


class Cancellable(Generic[T]):
    """Iterate a stream of events; Ctrl-C asks the producer to stop (``cancel``) and the
    stream is read on to its end, so the worker and the database stay consistent. While
    iterating, SIGINT is handled here rather than raised inside the generators."""

    def __init__(self, events: Iterable[T], cancel: Callable[[], None]) -> None:
        self._events = events
        self._cancel = cancel
        self.interrupted = False

    def _on_interrupt(self, signum: int, frame: object) -> None:
        self.interrupted = True
        self._cancel()

    def __iter__(self) -> Iterator[T]:
        if threading.current_thread() is not threading.main_thread():
            yield from self._events
            return
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            yield from self._events
        finally:
            signal.signal(signal.SIGINT, previous)


def pace(tokens: int, seconds: float, remaining: int) -> str:
    """', 85 tokens/s, 3 min 05 s left' for ``tokens`` evaluated in ``seconds``; '' before
    there is a rate to tell."""
    if seconds < 1 or tokens <= 0:
        return ""
    rate = tokens / seconds
    return f", {rate:,.0f} tokens/s, {format_duration(remaining / rate)} left"


class ProgressLine:
    """'Reading the prompt: 1,024/200,000 tokens, 85 tokens/s, 38 min 58 s left' on stderr
    while a long prompt is evaluated (only on a terminal, only for prompts worth waiting for)."""

    MIN_TOKENS = 1024

    def __init__(self, label: str = "Reading the prompt") -> None:
        self._label = label
        self._shown = False
        self._start: tuple[float, int] | None = None  # (when, tokens done) at the first step

    def show(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._start is None or done < self._start[1]:
            self._start = (now, done)
        if total >= self.MIN_TOKENS and sys.stderr.isatty():
            rate = pace(done - self._start[1], now - self._start[0], total - done)
            click.echo(f"\r\033[K{self._label}: {done:,}/{total:,} tokens{rate}", err=True, nl=False)
            self._shown = True

    def clear(self) -> None:
        if self._shown:
            click.echo("\r\033[K", err=True, nl=False)
            self._shown = False


class ParsedType(click.ParamType):
    """An option's value read by ``parse``, whose ``ValueError`` is the message click shows."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = ParsedType("size", parse_size)  # a memory size: 24GiB, 512MiB
DEVICES = ParsedType("devices", parse_devices)  # simulated GPUs: 24GiB, or 2x24GiB for two
SIM_HOST = ParsedType("host", parse_sim_host)  # a simulated RPC host: 8x80GiB@25Gbit


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="enclave", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Enclave runs open-weight AI models entirely on this machine.

    Nothing leaves it: no telemetry, no update checks, no network unless you ask for a
    download.
    """
    if ctx.invoked_subcommand is None:
        ctx.exit(launch_gui())  # the window says what stops it, a policy that is not valid included
    if ctx.invoked_subcommand == "policy":
        return  # 'policy check FILE' works whatever the policy in force
    try:
        paths = app_paths()  # reads the policy, failing closed: nothing runs under one that cannot be read
    except PolicyError as exc:
        fail(str(exc))
    configure_logging(paths)


KV_TYPES = click.Choice(["f16", "q8_0", "q4_0"])  # the KV cache types the planner knows
# run, chat, ask: the drafting setting off for this command (no draft model loaded either)
NO_DRAFT = click.option("--no-draft", is_flag=True,
                        help="Generate one token at a time: no drafting from the prompt, no draft model loaded. "
                             "The reply is the same, only slower; for comparing speeds or saving memory.")


def launch_gui() -> int:
    """Run the desktop app and return its exit code. ``ui`` is imported by name, here, so
    that ``app`` has no import of it (the layers go ui → app → inference)."""
    if sys.platform.startswith("linux") and not any(
            os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        fail("there is no display to open Enclave's window on (neither DISPLAY nor WAYLAND_DISPLAY is set). "
             "The commands work without one: 'enclave --help' lists them.")
    try:
        # before ui.app: importing Qt's GUI module without libGL/libEGL fails with no package named
        missing = importlib.import_module("ui.qt_requirements").check_qt_requirements()
        if missing:
            fail(missing)
        ui_app = importlib.import_module("ui.app")
    except ImportError as exc:
        fail(f"the desktop app cannot start: {exc}. Reinstall Enclave with its dependencies (PySide6), or use "
             "the commands ('enclave --help').")
    return ui_app.main()


def note_guessed_chat_format(model: str, guessed: bool) -> None:
    """One line on stderr when the loaded model's chat format is a guess (ModelInfo's
    ``chat_format_guessed``): which format is used and how to choose another."""
    if guessed:
        click.echo(f"{model} has no chat template and Enclave does not know its architecture's format; replies "
                   f"use ChatML. Choose another with: enclave models config {model} --chat-format NAME", err=True)
