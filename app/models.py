"""The model registry: every model Enclave can use, what it is, and proof of its bytes.

A model is one GGUF file or the shards of a split one. Registering it means: inspect it
(``gguf_info`` validates the file first), hash every file (SHA-256, with progress), and
record where it came from — copied into Enclave's model folder, linked there, used in
place, downloaded (repo, revision, file) or discovered in another app's folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.conversations import NotFound, now
from app.discovery import FoundModel
from app.enforcement import Enforcer
from app.hashing import copy_hashed, running_total, sha256_file
from app.paths import free_bytes
from app.store import Store
from inference.errors import EnclaveError
from inference.gguf_info import GGUFInfo, inspect_gguf

Origin = Literal["copied", "linked", "in_place", "downloaded", "discovered"]
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class ModelFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    origin: Origin
    source: dict[str, Any]
    architecture: str | None
    parameters: int | None
    experts: int | None
    experts_used: int | None
    quantization: str | None
    context_length: int | None
    license: str | None
    size: int
    added_at: str
    verified_at: str | None
    files: tuple[ModelFile, ...] = field(default=())

    @property
    def path(self) -> Path:
        """What llama.cpp is given: the file, or the first shard."""
        return Path(self.files[0].path)


@dataclass(frozen=True)
class Verification:
    model: Model
    problems: tuple[str, ...]  # empty: every file is there with its recorded SHA-256

    @property
    def ok(self) -> bool:
        return not self.problems


def model_id(name: str, sha256: str) -> str:
    """A short, readable, stable id: 'qwen3-30b-a3b-q4_k_m-3f2a'."""
    slug = re.sub(r"[^a-z0-9_.]+", "-", name.lower()).strip("-.")[:48] or "model"
    return f"{slug}-{sha256[:4]}"


class ModelRegistry:
    def __init__(self, store: Store, folder: Path, enforcer: Enforcer | None = None) -> None:
        self.store = store
        self.folder = folder  # Enclave's own model folder
        self.enforcer = enforcer or Enforcer()

    # Reading ---------------------------------------------------------------------------

    def all(self) -> list[Model]:
        return [self._model(r) for r in self.store.read().query("SELECT * FROM models ORDER BY name, id")]

    def find(self, ref: str) -> Model | None:
        """A model by id, by name, by the path of one of its files, or by an id prefix."""
        db = self.store.read()
        rows = list(db.query("SELECT * FROM models WHERE id = ? OR name = ?", [ref, ref]))
        if not rows:
            path = str(Path(ref).expanduser().absolute()) if ("/" in ref or ref.endswith(".gguf")) else None
            rows = list(db.query("SELECT m.* FROM models m JOIN model_files f ON f.model_id = m.id "
                                 "WHERE f.path = ?", [path])) if path else []
        if not rows:
            rows = list(db.query("SELECT * FROM models WHERE id LIKE ? ESCAPE '\\'",
                                 [ref.replace("%", "\\%").replace("_", "\\_") + "%"]))
            if len(rows) > 1:
                raise EnclaveError(f"{ref!r} could be any of {', '.join(r['id'] for r in rows)}; give more of the id.")
        return self._model(rows[0]) if rows else None

    def get(self, ref: str) -> Model:
        model = self.find(ref)
        if model is None:
            raise NotFound(f"No model {ref!r} is registered. 'enclave models list' shows them; "
                           "'enclave models import PATH' adds one.")
        return model

    def by_hash(self, sha256: str) -> Model | None:
        row = self.store.read().execute("SELECT model_id FROM model_files WHERE sha256 = ? AND position = 0",
                                        [sha256]).fetchone()
        return self.get(row[0]) if row else None

    def _model(self, row: dict[str, Any]) -> Model:
        files = tuple(ModelFile(r["path"], r["size"], r["sha256"]) for r in self.store.read().query(
            "SELECT path, size, sha256 FROM model_files WHERE model_id = ? ORDER BY position", [row["id"]]))
        values = {k: row[k] for k in Model.__dataclass_fields__ if k not in ("files", "source")}
        return Model(**values, source=json.loads(row["source"]), files=files)

    # Registering -----------------------------------------------------------------------

    def register(self, files: Sequence[Path], *, origin: Origin, source: dict[str, Any] | None = None,
                 hashes: Sequence[str] | None = None, on_progress: Progress = lambda d, t: None,
                 cancelled: Callable[[], bool] = lambda: False) -> Model:
        """Inspect and hash ``files`` (one model: a file or all its shards) and record them.
        Known hashes (a verified download) are checked, not trusted: they are recomputed."""
        return self._register(inspect_gguf(files[0]), origin=origin, source=source, hashes=hashes,
                              on_progress=on_progress, cancelled=cancelled)

    def _register(self, info: GGUFInfo, *, origin: Origin, source: dict[str, Any] | None,
                  hashes: Sequence[str] | None, on_progress: Progress, cancelled: Callable[[], bool]) -> Model:
        paths = [p for p, _ in info.files]
        advance = running_total(sum(size for _, size in info.files), on_progress)
        shas = [sha256_file(p, advance, cancelled) for p in paths]
        if hashes is not None and list(hashes) != shas:
            raise EnclaveError(f"{paths[0].name}: the files' SHA-256 does not match what was expected; "
                               "the copy is damaged or was changed. Nothing was registered.")
        return self._record(info, shas, origin, source or {})

    def _record(self, info: GGUFInfo, shas: Sequence[str], origin: Origin, source: dict[str, Any]) -> Model:
        """Record the model ``info`` describes (its files as inspected) with their SHA-256."""
        existing = self.by_hash(shas[0])
        if existing is not None:
            raise EnclaveError(f"This model is already registered as {existing.id} ({existing.name}).")
        self.enforcer.check_model(info.name, shas, "import")
        shape = info.shape
        new_id = model_id(info.name, shas[0])
        stamp = now()
        with self.store.write() as db:
            db.execute(
                "INSERT INTO models (id, name, origin, source, architecture, parameters, experts, experts_used, "
                "quantization, context_length, license, size, info, added_at, verified_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [new_id, info.name, origin, json.dumps(source), info.architecture, info.parameter_count,
                 shape.expert_count, shape.expert_used_count, info.file_type, info.context_length, info.license,
                 info.file_bytes, json.dumps(_summary(info)), stamp, stamp])
            for position, ((path, size), sha) in enumerate(zip(info.files, shas, strict=True)):
                db.execute("INSERT INTO model_files (model_id, position, path, size, sha256) VALUES (?, ?, ?, ?, ?)",
                           [new_id, position, str(path.absolute()), size, sha])
        files = [{"path": str(p.absolute()), "sha256": sha} for (p, _), sha in zip(info.files, shas, strict=True)]
        self.enforcer.record("model.import", model=new_id, name=info.name, origin=origin, files=files)
        return self.get(new_id)

    def registered_found(self, found: FoundModel) -> Model | None:
        """The registered model that ``found`` (another app's download) is, if any."""
        return self.find(str(found.load_files[0]))

    def register_found(self, found: FoundModel, *, on_progress: Progress = lambda d, t: None,
                       cancelled: Callable[[], bool] = lambda: False) -> Model:
        """Register another app's download where it is."""
        return self.register(found.load_files, origin="discovered", source={"app": found.app, **found.source},
                             on_progress=on_progress, cancelled=cancelled)

    def import_files(self, files: Sequence[Path], mode: Literal["copy", "link", "in_place"], *,
                     source: dict[str, Any] | None = None, expected: Sequence[str] | None = None,
                     on_progress: Progress = lambda d, t: None,
                     cancelled: Callable[[], bool] = lambda: False) -> Model:
        """Bring one model in: copied into Enclave's folder (hashed while copying and the
        copy checked), linked there, or used where it is."""
        info = inspect_gguf(files[0])  # validated before a byte is copied
        paths = [p for p, _ in info.files]
        if mode == "in_place":
            return self._register(info, origin="in_place", source={"path": str(paths[0]), **(source or {})},
                                  hashes=expected, on_progress=on_progress, cancelled=cancelled)
        target_dir = _free_folder(self.folder / re.sub(r"[^\w.-]+", "_", info.name or paths[0].stem),
                                  [p.name for p in paths])
        total = sum(size for _, size in info.files)
        _check_space(target_dir, total if mode == "copy" else 0)
        target_dir.mkdir(parents=True, exist_ok=True)
        targets = [target_dir / p.name for p in paths]  # none exists yet: a failure removes only what it made
        advance = running_total(total, on_progress)

        try:
            if mode == "copy":
                shas = [copy_hashed(src, dst, advance, cancelled) for src, dst in zip(paths, targets, strict=True)]
                if expected is not None and list(expected) != shas:
                    raise EnclaveError(f"{paths[0].name}: the copied bytes do not match the expected SHA-256; the "
                                       "source is damaged or was changed. Nothing was registered.")
                model_info = inspect_gguf(targets[0])
                return self._record(model_info, shas, "copied", {"path": str(paths[0]), **(source or {})})
            for src, dst in zip(paths, targets, strict=True):
                os.symlink(src.absolute(), dst)
            return self.register(targets, origin="linked", source={"path": str(paths[0]), **(source or {})},
                                 hashes=expected, on_progress=on_progress, cancelled=cancelled)
        except BaseException:
            for target in targets:
                target.unlink(missing_ok=True)
            if target_dir.exists() and not any(target_dir.iterdir()):
                target_dir.rmdir()
            raise

    # Checking and removing -------------------------------------------------------------

    def verify(self, model: Model, on_progress: Progress = lambda d, t: None) -> Verification:
        problems = []
        advance = running_total(model.size, on_progress)

        for f in model.files:
            path = Path(f.path)
            if not path.exists():
                problems.append(f"{path}: missing")
                continue
            actual = sha256_file(path, advance)
            if actual != f.sha256:
                problems.append(f"{path}: SHA-256 is {actual[:16]}…, expected {f.sha256[:16]}… (changed or damaged)")
        if not problems:
            with self.store.write() as db:
                db.execute("UPDATE models SET verified_at = ? WHERE id = ?", [now(), model.id])
        return Verification(self.get(model.id), tuple(problems))

    def owns(self, path: Path) -> bool:
        """Whether ``path`` lies in Enclave's own model folder (links included, not their targets)."""
        try:
            return path.absolute().is_relative_to(self.folder.absolute())
        except OSError:
            return False

    def remove(self, model: Model, *, delete_files: bool = False, delete_external: bool = False) -> list[str]:
        """Forget ``model``. With ``delete_files``, delete its files inside Enclave's model
        folder (links there are removed, never their targets); files elsewhere only with
        ``delete_external``. Returns the paths kept on disk."""
        kept = []
        with self.store.write() as db:
            db.execute("DELETE FROM models WHERE id = ?", [model.id])
        for f in model.files:
            path = Path(f.path)
            if delete_files and (self.owns(path) or delete_external):
                path.unlink(missing_ok=True)
            elif path.exists() or path.is_symlink():
                kept.append(str(path))
        self.enforcer.record("model.remove", model=model.id, name=model.name, deleted_files=delete_files,
                             files=[{"path": f.path, "sha256": f.sha256} for f in model.files])
        if delete_files:
            for parent in {Path(f.path).parent for f in model.files if self.owns(Path(f.path))}:
                if parent.exists() and not any(parent.iterdir()):
                    parent.rmdir()
        return kept


def _summary(info: GGUFInfo) -> dict[str, Any]:
    s = info.shape
    return {"n_layer": s.n_layer, "n_embd": s.n_embd, "n_head": s.n_head, "n_head_kv": s.n_head_kv,
            "expert_shared_count": s.expert_shared_count, "sliding_window": s.sliding_window,
            "has_chat_template": info.chat_template is not None, "files": len(info.files)}


def _free_folder(base: Path, names: Sequence[str]) -> Path:
    """``base``, or ``base-2``, ``base-3``… : the first folder where none of ``names`` exists, so
    that an import never overwrites (nor, failing, deletes) a file another model uses."""
    candidate, n = base, 1
    while any(os.path.lexists(candidate / name) for name in names):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _check_space(folder: Path, needed: int) -> None:
    probe, free = free_bytes(folder)
    if needed > free:
        raise EnclaveError(f"Not enough free disk space in {probe}: {needed / 2**30:.1f} GiB needed, "
                           f"{free / 2**30:.1f} GiB free. Free some space, or import with --link or --in-place.")
