"""The import rules (ui -> app -> inference, headless core, what the UI may reach), checked by
import-linter's contracts in pyproject.toml: the tree keeps every one of them, and every one of
them bites: a copy of the tree with a forbidden import added breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from importlinter.cli import lint_imports

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
CONTRACTS: list[dict[str, Any]] = CONFIG["contracts"]


def test_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(no_cache=True) == 0


def test_the_layers_and_the_headless_core_are_contracts() -> None:
    assert ["ui", "app", "inference"] in [c["layers"] for c in CONTRACTS if c["type"] == "layers"]
    assert any(set(c.get("source_modules", ())) >= {"app", "inference"} and "PySide6" in c["forbidden_modules"]
               for c in CONTRACTS if c["type"] == "forbidden")


def forbidden_imports(contract: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (importer, imported) pair of packages that ``contract`` forbids."""
    if contract["type"] == "layers":
        layers = contract["layers"]
        return [(lower, higher) for i, higher in enumerate(layers) for lower in layers[i + 1:]]
    if contract["type"] == "forbidden":
        return [(source, target) for source in contract["source_modules"] for target in contract["forbidden_modules"]]
    raise AssertionError(f"no probe for import-linter's {contract['type']!r} contracts yet ({contract['name']}): "
                         "teach forbidden_imports() what breaks one")


def copy_of_the_code(where: Path) -> Path:
    for package in CONFIG["root_packages"]:
        shutil.copytree(ROOT / package, where / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", where / "pyproject.toml")
    return where


def lint_imports_in(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports run on ``tree`` (its packages come first on the path: the current directory)."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    return subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c["name"] for c in CONTRACTS])
def test_each_contract_is_broken_by_each_import_it_forbids(contract: dict[str, Any], tmp_path: Path) -> None:
    tree = copy_of_the_code(tmp_path)
    probes = []
    for n, (importer, imported) in enumerate(forbidden_imports(contract)):
        probe = f"_contract_probe_{n}"
        (tree / importer.replace(".", "/") / f"{probe}.py").write_text(f"import {imported}\n", encoding="utf-8")
        probes.append(f"{importer}.{probe} -> {imported}")
    result = lint_imports_in(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract['name']} BROKEN" in result.stdout, result.stdout
    missed = [probe for probe in probes if probe not in result.stdout]
    assert probes and missed == [], result.stdout
