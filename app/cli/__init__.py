"""The ``enclave`` command: a thin layer over the app services.

Errors a user can cause print one line and exit 2; nothing here shows a traceback.
Each command group lives in its own module and registers itself on ``cli``.
"""

from __future__ import annotations

import multiprocessing

# Registering the commands is importing their modules.
from app.cli import (  # noqa: F401
    chat,
    database,
    gui,
    history,
    host,
    hosts,
    keys,
    library,
    models,
    policy,
    profile,
    registry,
    remote,
    run,
    serve,
    system,
)
from app.cli.common import cli

__all__ = ["cli", "main"]


def main() -> None:
    multiprocessing.freeze_support()
    cli(prog_name="enclave")


if __name__ == "__main__":
    main()
