from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.paths import AppPaths, app_paths


def test_enclave_home_moves_every_path(enclave_home: Path) -> None:
    paths = app_paths()
    for folder in (paths.data, paths.config, paths.cache, paths.logs, paths.database, paths.llama_log):
        assert enclave_home in folder.parents
    paths.ensure()
    assert paths.logs.is_dir() and paths.data.is_dir()


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG base directories are Linux's")
def test_without_enclave_home_the_platform_folders_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENCLAVE_HOME")
    for kind in ("data", "config", "cache", "state"):
        monkeypatch.setenv(f"XDG_{kind.upper()}_HOME", str(tmp_path / kind))
    paths = app_paths()
    assert paths == AppPaths(data=tmp_path / "data" / "Enclave", config=tmp_path / "config" / "Enclave",
                             cache=tmp_path / "cache" / "Enclave", logs=tmp_path / "state" / "Enclave" / "log")
    assert paths.database == tmp_path / "data" / "Enclave" / "enclave.db"
    assert paths.llama_log == tmp_path / "state" / "Enclave" / "log" / "llama.log"
