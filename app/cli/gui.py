"""``enclave gui``: the desktop window. ``ui`` is imported only here, when asked for, so the
core never depends on Qt (import-linter forbids ``app`` → ``ui`` imports)."""

from __future__ import annotations

import sys

from app.cli.common import cli, launch_gui


@cli.command()
def gui() -> None:
    """Open the desktop app (the same as 'enclave' with no command)."""
    sys.exit(launch_gui())
