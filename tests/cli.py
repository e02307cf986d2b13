"""Running ``enclave`` as a user does: a process of its own, its data in a folder of the test's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def enclave(*args: str, home: Path, env: Mapping[str, str | None] | None = None, stdin: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``enclave ARGS`` with its data under ``home``. ``env`` is added to the test's environment
    (a None value removes that variable)."""
    full = {**os.environ, "ENCLAVE_HOME": str(home)}
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run([sys.executable, "-m", "app", *args], input=stdin, capture_output=True, text=True,
                          env=full, cwd=ROOT, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a user error prints (exit code 2, ``enclave: error: ...``), checked as such."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enclave: error: "), result.stderr
    return lines[0]
