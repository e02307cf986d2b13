"""Running the ``enclave`` command as a user would, and killing it with SIGKILL mid-way."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from app.paths import AppPaths
from tests.proofs.probes import children, still_running

T = TypeVar("T")
RUN_TIMEOUT = 300  # seconds; a run that takes longer has hung
ORPHAN_GRACE = 20  # seconds a killed app's worker may take to notice and end


@dataclass
class Ended(Generic[T]):
    """How a run ended: killed (``code`` None, with what was seen just before) or by itself."""

    code: int | None
    stdout: str
    stderr: str
    seconds: float
    seen: T | None = None  # what the observer read just before the kill
    orphans: tuple[int, ...] = ()  # the killed app's child processes still running afterwards

    @property
    def killed(self) -> bool:
        return self.code is None


class Enclave:
    """The ``enclave`` command with its own data folder (``ENCLAVE_HOME``) and environment."""

    def __init__(self, home: Path, logs: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "ENCLAVE_HOME": str(home),
                    "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",  # never the machine's keyring
                    **(env or {})}
        self.runs = 0
        self._startup: float | None = None

    @property
    def startup(self) -> float:
        """Seconds the command takes to start and exit doing nothing (``--version``): kills
        before that only ever hit Python's start-up."""
        if self._startup is None:
            self._startup = self.run("--version").seconds
        return self._startup

    def kill_delay(self, rng: random.Random, window: float) -> float:
        """A random moment of a run that takes ``window`` seconds, mostly past start-up."""
        return rng.uniform(min(0.8 * self.startup, window / 2), window)

    @property
    def database(self) -> Path:
        return AppPaths.under(self.home).database

    def _start(self, args: tuple[str, ...], stdin: str | None) -> tuple[subprocess.Popen, Path, Path]:
        self.runs += 1
        out, err = self.logs / f"{self.runs}.out", self.logs / f"{self.runs}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "app", *args], env=self.env, text=True,
                                    stdin=subprocess.PIPE, stdout=stdout, stderr=stderr)
        if stdin:
            proc.stdin.write(stdin)
        proc.stdin.close()
        return proc, out, err

    def run(self, *args: str, stdin: str | None = None) -> Ended[None]:
        """Run to the end."""
        started = time.monotonic()
        proc, out, err = self._start(args, stdin)
        code = proc.wait(timeout=RUN_TIMEOUT)
        return Ended(code, out.read_text(errors="replace"), err.read_text(errors="replace"),
                     time.monotonic() - started)

    def run_killed(self, *args: str, after: float, observe: Callable[[], T], stdin: str | None = None) -> Ended[T]:
        """Start, and SIGKILL the process ``after`` seconds later, calling ``observe`` just
        before; a run that ends sooner is returned as it ended."""
        started = time.monotonic()
        proc, out, err = self._start(args, stdin)
        try:
            code = proc.wait(timeout=after)
        except subprocess.TimeoutExpired:
            workers = children(proc.pid)
            seen = observe()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            orphans = tuple(still_running(workers, ORPHAN_GRACE))
            return Ended(None, out.read_text(errors="replace"), err.read_text(errors="replace"),
                         time.monotonic() - started, seen, orphans)
        return Ended(code, out.read_text(errors="replace"), err.read_text(errors="replace"),
                     time.monotonic() - started)
