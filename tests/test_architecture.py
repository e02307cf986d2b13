"""The direction ui -> app -> inference, checked by import-linter's contracts in
pyproject.toml, so a wrong import fails the tests rather than waiting for a review."""

from __future__ import annotations

import os
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(no_cache=True) == 0


def test_contracts_cover_the_three_layers() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'layers = ["ui", "app", "inference"]' in text
    assert 'forbidden_modules = ["PySide6"]' in text
    assert os.path.isdir(ROOT / "ui") and os.path.isdir(ROOT / "app") and os.path.isdir(ROOT / "inference")
