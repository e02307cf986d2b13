"""Models between machines: folders of GGUF files, and the air-gap manifest.

``export_model`` writes a model's files and ``enclave-manifest.json`` (names, sizes,
SHA-256, source, licence) to a folder — a USB stick, say. ``import_folder`` on the other
side checks every file against that manifest and refuses any that does not match; a
folder without a manifest is imported file by file, each validated and hashed. A vision
model's projector travels with it (the manifest entry's ``projector``); in a folder without a
manifest, an ``mmproj*.gguf`` is the projector of the models beside it, never a model.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.hashing import copy_hashed, running_total
from app.models import ImportMode, Model, ModelRegistry, Progress, checked_projector
from inference.errors import EnclaveError
from inference.gguf_info import inspect_gguf

MANIFEST = "enclave-manifest.json"
FORMAT = "enclave-models"
_SHARD = "-00001-of-"


@dataclass
class ImportReport:
    imported: list[Model] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def model_files_in(folder: Path) -> list[Path]:
    """The GGUF models in ``folder`` (not recursive): single files and first shards. What only
    looks like one (a broken or looping link, a pipe named .gguf) is listed too, to be refused
    with the reason when it is imported."""
    try:
        with os.scandir(folder) as listing:
            names = [entry.name for entry in listing if entry.name.endswith(".gguf") and not _is_folder(entry)]
    except OSError as exc:
        raise EnclaveError(f"{folder}: this folder cannot be read ({exc.strerror or exc}).") from None
    return sorted(folder / name for name in names if "-of-" not in name or _SHARD in name)


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def export_model(registry: ModelRegistry, model: Model, folder: Path, on_progress: Progress = lambda d, t: None,
                 cancelled: Callable[[], bool] = lambda: False) -> Path:
    """Copy ``model`` into ``folder`` (checking each copy's SHA-256 against the registry)
    and add it to the folder's manifest. Returns the manifest's path."""
    registry.enforcer.check_export("model", model=model.id, folder=str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    advance = running_total(sum(f.size for f in model.all_files), on_progress)
    manifest_path = folder / MANIFEST
    manifest = _read_manifest(manifest_path) if manifest_path.exists() else {"format": FORMAT, "models": []}
    _check_names_free(manifest, model)

    for f in model.all_files:
        source = Path(f.path)
        target = folder / source.name
        if copy_hashed(source, target, advance, cancelled) != f.sha256:
            target.unlink(missing_ok=True)
            raise EnclaveError(f"{source}: its bytes no longer match the SHA-256 recorded when it was registered; "
                               "it was not exported. 'enclave models verify' checks it.")
    manifest["models"] = [m for m in manifest["models"] if m.get("id") != model.id] + [{
        "id": model.id,
        "name": model.name,
        "architecture": model.architecture,
        "quantization": model.quantization,
        "license": model.license,
        "source": model.source,
        "files": [{"name": Path(f.path).name, "size": f.size, "sha256": f.sha256} for f in model.files],
        **({"projector": {"name": Path(model.projector.path).name, "size": model.projector.size,
                          "sha256": model.projector.sha256}} if model.projector is not None else {}),
    }]
    manifest_path.write_text(json.dumps(manifest, indent=2))
    registry.enforcer.record("model.export", model=model.id, name=model.name, folder=str(folder.absolute()),
                             sha256=[f.sha256 for f in model.all_files])
    return manifest_path


def _check_names_free(manifest: dict[str, Any], model: Model) -> None:
    """No file of ``model`` may take the name of another model's file already in the folder
    (projectors are often all called mmproj-F16.gguf): the first model would arrive broken."""
    others = {entry["name"]: (m.get("name") or m.get("id"), entry["sha256"])
              for m in manifest["models"] if m.get("id") != model.id
              for entry in [*m.get("files", []), *([m["projector"]] if m.get("projector") else [])]}
    for f in model.all_files:
        name = Path(f.path).name
        if name in others and others[name][1] != f.sha256:
            raise EnclaveError(f"This folder already holds {name} of {others[name][0]}, a different file of the same "
                               f"name: export {model.name} into another folder.")


def import_folder(registry: ModelRegistry, folder: Path, mode: ImportMode,
                  on_progress: Progress = lambda d, t: None, cancelled: Callable[[], bool] = lambda: False
                  ) -> ImportReport:
    candidates = model_files_in(folder)  # first: it says so when the folder cannot be read
    manifest_path = folder / MANIFEST
    if manifest_path.exists():
        return _import_manifest(registry, folder, _read_manifest(manifest_path), mode, on_progress, cancelled)
    report = ImportReport()
    models = [p for p in candidates if not is_projector_name(p.name)]
    if not models:
        raise EnclaveError(f"No .gguf model files in {folder}." + (
            " It holds only a vision projector (mmproj), which is imported with its model." if candidates else ""))
    projector = _projector_of([p for p in candidates if is_projector_name(p.name)])
    for path in models:
        try:
            fitting = projector
            if projector is not None:
                try:
                    info = inspect_gguf(path)
                    checked_projector(projector, info.shape.n_embd, info.name)
                except EnclaveError as exc:  # the model still goes in, for text
                    report.refused.append((str(projector), str(exc)))
                    fitting = None
            report.imported.append(registry.import_files([path], mode, projector=fitting, on_progress=on_progress,
                                                         cancelled=cancelled))
        except EnclaveError as exc:
            report.refused.append((str(path), str(exc)))
    return report


def is_projector_name(name: str) -> bool:
    """A vision projector, by the name every publisher gives it (``mmproj-*.gguf``)."""
    return name.lower().startswith("mmproj")


def _projector_of(paths: list[Path]) -> Path | None:
    """Of a folder's projectors, the one its models get: an f16 one first, then by name."""
    ranked = sorted(paths, key=lambda p: ("f16" not in p.name.lower() or "bf16" in p.name.lower(), p.name))
    return ranked[0] if ranked else None


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("models"), list):
            raise ValueError("not an Enclave model manifest")
        for number, entry in enumerate(data["models"], 1):
            _check_manifest_entry(number, entry)
        return data
    except (OSError, ValueError) as exc:
        raise EnclaveError(f"{path} cannot be used: {exc}. Export the models again.") from exc


def _check_manifest_entry(number: int, entry: object) -> None:
    """A manifest is input from another machine: its shape is checked before any of it is used."""
    if not isinstance(entry, dict) or not isinstance(entry.get("files"), list) or not isinstance(
            entry.get("source", {}), dict | None):
        raise ValueError(f"model {number} of the manifest is not a model entry")
    projector = entry.get("projector")
    for f in entry["files"] + ([projector] if projector is not None else []):
        if not (isinstance(f, dict) and isinstance(f.get("name"), str) and type(f.get("size")) is int
                and isinstance(f.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", f["sha256"])):
            raise ValueError(f"model {number} of the manifest lists a file without a name, size and SHA-256")


def _import_manifest(registry: ModelRegistry, folder: Path, manifest: dict[str, Any],
                     mode: ImportMode, on_progress: Progress,
                     cancelled: Callable[[], bool]) -> ImportReport:
    report = ImportReport()
    for entry in manifest["models"]:
        files = entry.get("files") or []
        paths = [folder / Path(f["name"]).name for f in files]  # names only: never outside the folder
        problem = next((f"{p.name}: missing" for p in paths if not p.exists()), None) or next(
            (f"{p.name}: {p.stat().st_size:,} bytes, the manifest says {f['size']:,}"
             for p, f in zip(paths, files, strict=True) if p.stat().st_size != f["size"]), None)
        if problem or not paths:
            report.refused.append((entry.get("name", "?"), problem or "the manifest lists no files"))
            continue
        source = {**(entry.get("source") or {}), "manifest": str(folder / MANIFEST)}
        projector = entry.get("projector")
        projector_path = folder / Path(projector["name"]).name if projector else None  # names only, as above
        if projector_path is not None and (not projector_path.exists()
                                           or projector_path.stat().st_size != projector["size"]):
            report.refused.append((entry.get("name", "?"), f"{projector_path.name}: missing or not the size the "
                                                           "manifest says"))
            continue
        try:
            report.imported.append(registry.import_files(
                paths[:1], mode, source=source, expected=[f["sha256"] for f in files], projector=projector_path,
                projector_sha256=projector["sha256"] if projector else None, on_progress=on_progress,
                cancelled=cancelled))
        except EnclaveError as exc:
            report.refused.append((paths[0].name, str(exc)))
    return report

