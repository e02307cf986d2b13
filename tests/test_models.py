"""The model registry: import in three ways, verify, remove, carry across an air gap."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from app.enforcement import Enforcer
from app.models import ModelRegistry
from app.policy import Policy, PolicyRefusal
from app.store import open_store
from app.transfer import MANIFEST, export_model, import_folder
from inference.errors import EnclaveError
from tests.tiny_models import DENSE, MOE, write_tiny_model


@pytest.fixture
def registry(tmp_path: Path):
    with open_store(tmp_path / "db" / "enclave.db") as store:
        yield ModelRegistry(store, tmp_path / "models")


@pytest.fixture
def usb(tmp_path: Path, moe_model: Path) -> Path:
    stick = tmp_path / "usb"
    stick.mkdir()
    shutil.copy(moe_model, stick / "tiny-moe.gguf")
    return stick


def test_copy_import_hashes_and_describes(registry: ModelRegistry, usb: Path) -> None:
    seen: list[tuple[int, int]] = []
    model = registry.import_files([usb / "tiny-moe.gguf"], "copy", on_progress=lambda d, t: seen.append((d, t)))
    assert model.origin == "copied" and registry.owns(model.path) and model.path.exists()
    assert (model.architecture, model.experts, model.experts_used, model.context_length) == ("llama", 8, 2, 4096)
    assert model.files[0].sha256 == __import__("hashlib").sha256((usb / "tiny-moe.gguf").read_bytes()).hexdigest()
    assert seen[-1][0] == seen[-1][1] == model.size
    assert model.id.startswith("tiny-moe-") and registry.get(model.id[:10]) == model
    assert registry.get("tiny-moe") == model  # by name too
    with pytest.raises(EnclaveError, match=f"already registered as {model.id}"):
        registry.import_files([usb / "tiny-moe.gguf"], "in_place")


def test_link_and_in_place_leave_the_file_where_it_is(registry: ModelRegistry, usb: Path, dense_model: Path) -> None:
    linked = registry.import_files([usb / "tiny-moe.gguf"], "link")
    assert linked.origin == "linked" and linked.path.is_symlink()
    assert linked.path.resolve() == (usb / "tiny-moe.gguf").resolve()
    here = registry.import_files([dense_model], "in_place")
    assert here.origin == "in_place" and here.path == dense_model
    assert registry.find(str(dense_model)) == here


def test_a_broken_file_is_refused_and_nothing_is_left(registry: ModelRegistry, tmp_path: Path, moe_model: Path
                                                      ) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(moe_model.read_bytes()[:50_000])
    with pytest.raises(EnclaveError, match="incomplete"):
        registry.import_files([cut], "copy")
    (tmp_path / "notes.gguf").write_text("not a model")
    with pytest.raises(EnclaveError, match="not a GGUF"):
        registry.import_files([tmp_path / "notes.gguf"], "copy")
    assert registry.all() == [] and not any((tmp_path / "models").glob("**/*.gguf"))


def test_verify_finds_a_changed_file(registry: ModelRegistry, usb: Path) -> None:
    model = registry.import_files([usb / "tiny-moe.gguf"], "in_place")
    assert registry.verify(model).ok
    data = bytearray((usb / "tiny-moe.gguf").read_bytes())
    data[-10] ^= 0xFF
    (usb / "tiny-moe.gguf").write_bytes(bytes(data))
    result = registry.verify(model)
    assert not result.ok and "SHA-256" in result.problems[0]
    (usb / "tiny-moe.gguf").unlink()
    assert "missing" in registry.verify(model).problems[0]


def test_remove_never_deletes_outside_files_unless_told(registry: ModelRegistry, usb: Path, tmp_path: Path) -> None:
    outside = registry.import_files([usb / "tiny-moe.gguf"], "in_place")
    kept = registry.remove(outside, delete_files=True)
    assert kept == [str(usb / "tiny-moe.gguf")] and (usb / "tiny-moe.gguf").exists()
    copied = registry.import_files([usb / "tiny-moe.gguf"], "copy")
    assert registry.remove(copied, delete_files=True) == [] and not copied.path.exists()
    linked = registry.import_files([usb / "tiny-moe.gguf"], "link")
    registry.remove(linked, delete_files=True)
    assert not linked.path.is_symlink() and (usb / "tiny-moe.gguf").exists()  # the link, never its target
    again = registry.import_files([usb / "tiny-moe.gguf"], "in_place")
    registry.remove(again, delete_files=True, delete_external=True)
    assert not (usb / "tiny-moe.gguf").exists()


def test_air_gap_transfer_checks_every_byte(tmp_path: Path, moe_model: Path, dense_model: Path) -> None:
    with open_store(tmp_path / "a" / "enclave.db") as store:
        online = ModelRegistry(store, tmp_path / "a" / "models")
        moe = online.import_files([moe_model], "in_place", source={"repo": "example/tiny"})
        dense = online.import_files([dense_model], "in_place")
        stick = tmp_path / "stick"
        export_model(online, moe, stick)
        export_model(online, dense, stick)
    manifest = json.loads((stick / MANIFEST).read_text())
    assert [m["id"] for m in manifest["models"]] == [moe.id, dense.id]
    assert manifest["models"][0]["files"][0]["sha256"] == moe.files[0].sha256
    assert manifest["models"][0]["source"] == {"repo": "example/tiny", "path": str(moe_model)}

    data = bytearray((stick / "tiny-dense.gguf").read_bytes())  # damaged on the way
    data[-5] ^= 0xFF
    (stick / "tiny-dense.gguf").write_bytes(bytes(data))
    with open_store(tmp_path / "b" / "enclave.db") as store:
        offline = ModelRegistry(store, tmp_path / "b" / "models")
        report = import_folder(offline, stick, "copy")
        assert [m.id for m in report.imported] == [moe.id]
        assert report.refused and "do not match" in report.refused[0][1]
        assert [m.id for m in offline.all()] == [moe.id]
        assert not (tmp_path / "b" / "models" / "tiny-dense").exists()  # no half copy left


def test_a_manifest_cannot_point_outside_its_folder(registry: ModelRegistry, tmp_path: Path, moe_model: Path) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / MANIFEST).write_text(json.dumps({"format": "enclave-models", "models": [
        {"id": "x", "name": "x", "files": [{"name": "../../" + moe_model.name, "size": 1, "sha256": "0" * 64}]}]}))
    report = import_folder(registry, stick, "copy")
    assert not report.imported and "missing" in report.refused[0][1]


@pytest.mark.parametrize("models", [
    "not a list", [["a list"]], [{"files": "x"}], [{"files": [{"name": "a.gguf"}]}],
    [{"files": [{"name": "a.gguf", "size": "1", "sha256": "0" * 64}]}],
    [{"files": [{"name": 3, "size": 1, "sha256": "0" * 64}]}], [{"files": [], "source": ["x"]}],
])
def test_a_malformed_manifest_is_refused_in_one_sentence(registry: ModelRegistry, tmp_path: Path,
                                                         models: object) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / MANIFEST).write_text(json.dumps({"format": "enclave-models", "models": models}))
    with pytest.raises(EnclaveError, match=r"cannot be used: .*Export the models again"):
        import_folder(registry, stick, "copy")
    assert registry.all() == []


@pytest.mark.parametrize("mode", ["copy", "link"])
def test_a_refused_import_never_touches_the_files_of_a_registered_model(
        registry: ModelRegistry, tmp_path: Path, moe_model: Path, mode: str) -> None:
    first = registry.import_files([moe_model], mode)
    with pytest.raises(EnclaveError, match="already registered"):  # the same model again
        registry.import_files([moe_model], mode)
    other = tmp_path / "elsewhere" / moe_model.name  # same name and file name, other weights
    other.parent.mkdir()
    write_tiny_model(other, replace(MOE, seed=MOE.seed + 1))
    registry.enforcer = Enforcer(Policy(allowed_models=frozenset({first.files[0].sha256})))
    with pytest.raises(PolicyRefusal):
        registry.import_files([other], mode)
    assert registry.verify(first).problems == ()
    assert [m.id for m in registry.all()] == [first.id]
    assert sorted(p.name for p in registry.folder.iterdir()) == [Path(first.files[0].path).parent.name]


def test_a_folder_of_models_without_a_manifest(registry: ModelRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    write_tiny_model(folder / "a.gguf", MOE)
    write_tiny_model(folder / "b.gguf", replace(DENSE, seed=9))
    (folder / "c.gguf").write_bytes(os.urandom(100))
    report = import_folder(registry, folder, "in_place")
    assert sorted(m.path.name for m in report.imported) == ["a.gguf", "b.gguf"]
    assert [Path(p).name for p, _ in report.refused] == ["c.gguf"]
