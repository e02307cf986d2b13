from __future__ import annotations

from pathlib import Path

import pytest

from app.paths import app_paths


def test_enclave_home_moves_every_path(enclave_home: Path) -> None:
    paths = app_paths()
    for folder in (paths.data, paths.config, paths.cache, paths.logs, paths.database, paths.llama_log):
        assert enclave_home in folder.parents
    paths.ensure()
    assert paths.logs.is_dir() and paths.data.is_dir()


def test_without_enclave_home_the_platform_folders_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENCLAVE_HOME")
    paths = app_paths()
    assert "Enclave" in str(paths.data)
    assert paths.data != paths.config or paths.data != paths.logs
