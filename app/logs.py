"""The app's own log: a rotating file under the log directory, never the terminal.

Libraries' log records and Python warnings go there too, and so does everything a child
process of the app writes (the document reader's pypdf warnings, say): a user's terminal
shows only what Enclave itself says.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from app.paths import AppPaths

_log_file: Path | None = None


def configure_logging(paths: AppPaths, level: int = logging.INFO) -> None:
    global _log_file
    if _log_file is not None:
        return
    paths.logs.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        paths.app_log, maxBytes=5 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn from a library: a record in the file, not a line on stderr
    _log_file = paths.app_log


def log_file() -> Path | None:
    """The file this process logs to, once ``configure_logging`` has run (the CLI and the window run it)."""
    return _log_file


def log_child_to(path: Path, level: int = logging.INFO) -> None:
    """In a child process of the app: its stdout and stderr (native writes included), its
    logging and its warnings all go to ``path``, appended, never to the terminal."""
    from inference.worker import redirect_output

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        redirect_output(str(path))
    except OSError:  # the log folder cannot be written: silence rather than noise on the user's terminal
        redirect_output(os.devnull)
    logging.basicConfig(stream=sys.stderr, level=level, force=True,
                        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s")
    logging.captureWarnings(True)
