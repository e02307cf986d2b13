"""The app's own log: a rotating file under the log directory, never the terminal."""

from __future__ import annotations

import logging
import logging.handlers

from app.paths import AppPaths

_configured = False


def configure_logging(paths: AppPaths, level: int = logging.INFO) -> None:
    global _configured
    if _configured:
        return
    paths.logs.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        paths.app_log, maxBytes=5 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    _configured = True
