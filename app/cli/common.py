"""The command group and what every command shares: one-line errors, exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import click

from app import __version__
from app.logs import configure_logging
from app.paths import app_paths
from inference.devices import parse_size
from inference.errors import EnclaveError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
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


class Cancellable(Generic[T]):
    """Iterate a stream of events; Ctrl-C asks the producer to stop (``cancel``) and the
    stream is read on to its end, so the worker and the database stay consistent."""

    def __init__(self, events: Iterable[T], cancel: Callable[[], None]) -> None:
        self._events = iter(events)
        self._cancel = cancel
        self.interrupted = False

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                yield next(self._events)
            except StopIteration:
                return
            except KeyboardInterrupt:
                self.interrupted = True
                self._cancel()


class ProgressLine:
    """'Reading the prompt: 1,024/200,000 tokens' on stderr while a long prompt is
    evaluated (only on a terminal, only for prompts worth waiting for)."""

    MIN_TOKENS = 1024

    def __init__(self) -> None:
        self._shown = False

    def show(self, done: int, total: int) -> None:
        if total >= self.MIN_TOKENS and sys.stderr.isatty():
            click.echo(f"\rReading the prompt: {done:,}/{total:,} tokens", err=True, nl=False)
            self._shown = True

    def clear(self) -> None:
        if self._shown:
            click.echo("\r\033[K", err=True, nl=False)
            self._shown = False


class SizeType(click.ParamType):
    """A memory size such as 24GiB or 512MiB."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


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
