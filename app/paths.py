"""Where Enclave keeps its files: the one place that asks platformdirs.

``ENCLAVE_HOME`` moves everything (data, config, cache, logs) under one folder; tests
and portable installs on a USB stick use it. An organisation's policy with ``data_dir``
does the same, and wins over ``ENCLAVE_HOME``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from platformdirs import PlatformDirs

from app.policy import Policy, policy_in_force

APP_NAME = "Enclave"
HOME_ENV = "ENCLAVE_HOME"


@dataclass(frozen=True)
class AppPaths:
    data: Path
    config: Path
    cache: Path
    logs: Path

    @classmethod
    def under(cls, root: Path) -> AppPaths:
        """Every folder under one ``root``, as ``ENCLAVE_HOME`` (or a policy's ``data_dir``) lays them out."""
        return cls(data=root / "data", config=root / "config", cache=root / "cache", logs=root / "logs")

    @property
    def models(self) -> Path:
        return self.data / "models"

    @property
    def database(self) -> Path:
        return self.data / "enclave.db"

    @property
    def kv_cache(self) -> Path:
        """Saved KV states of prompt prefixes (library prompts)."""
        return self.cache / "kv"

    @property
    def llama_log(self) -> Path:
        """llama.cpp's own log, written by the worker process."""
        return self.logs / "llama.log"

    @property
    def app_log(self) -> Path:
        return self.logs / "enclave.log"

    def ensure(self) -> AppPaths:
        for folder in (self.data, self.config, self.cache, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def as_dict(self) -> dict[str, str]:
        return {
            "data": str(self.data),
            "config": str(self.config),
            "cache": str(self.cache),
            "logs": str(self.logs),
            "database": str(self.database),
            "models": str(self.models),
        }


def app_paths(policy: Policy | None = None) -> AppPaths:
    """The paths in force now: under the policy's ``data_dir``, else under ``ENCLAVE_HOME``
    when set, else the platform's. ``policy``: the one in force, when the caller read it."""
    home = (policy if policy is not None else policy_in_force()).data_dir or os.environ.get(HOME_ENV)
    if home:
        return AppPaths.under(Path(home).expanduser().resolve())
    dirs = PlatformDirs(APP_NAME, appauthor=False)
    return AppPaths(
        data=Path(dirs.user_data_dir),
        config=Path(dirs.user_config_dir),
        cache=Path(dirs.user_cache_dir),
        logs=Path(dirs.user_log_dir),
    )


def free_bytes(path: Path) -> tuple[Path, int]:
    """(the nearest existing folder at or above ``path``, the bytes free on its file system):
    for checking room before writing somewhere that does not exist yet."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free
