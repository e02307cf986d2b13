"""The model registry: every model Enclave can use, what it is, and proof of its bytes.

A model is one GGUF file or the shards of a split one. Registering it means: inspect it
(``gguf_info`` validates the file first), hash every file (SHA-256, with progress), and
record where it came from — copied into Enclave's model folder, linked there, used in
place, downloaded (repo, revision, file) or discovered in another app's folder.

A vision model has one projector file too (``mmproj-*.gguf``: ``model_files`` row with role
'projector'), checked against the model (``projector_info``: the width of its output must
be the model's embedding length), hashed, verified and removed with it. ``Model.files`` are
the weights only; ``Model.projector`` is that file.
"""

from __future__ import annotations

import json
import logging
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
from inference.planner import ProjectorSize, projector_size
from inference.projector_info import ProjectorInfo, read_projector, tokens_words

log = logging.getLogger(__name__)

Origin = Literal["copied", "linked", "in_place", "downloaded", "discovered"]
Progress = Callable[[int, int], None]  # (bytes done, bytes total)
ImportMode = Literal["copy", "link", "in_place"]
PROJECTOR_POSITION = -1  # the projector's row in model_files: apart from the shards 0, 1, …


@dataclass(frozen=True)
class ModelFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Projector:
    """A model's vision projector: its file and what the list says of it."""

    path: str
    size: int
    sha256: str
    projector_type: str
    tokens_per_image: int
    tokens_estimated: bool  # an upper estimate (the projector follows the image's resolution or tiles it)

    def describe(self) -> str:
        """ "reads images (gemma3 projector, 256 tokens an image)"."""
        tokens = tokens_words(self.tokens_per_image, self.tokens_estimated)
        return f"reads images ({self.projector_type} projector, {tokens})"


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
    files: tuple[ModelFile, ...] = field(default=())  # the weights: one file, or its shards in order
    projector: Projector | None = None
    n_embd: int | None = None  # the language model's embedding length (what a projector must match)

    @property
    def reads_images(self) -> bool:
        return self.projector is not None

    @property
    def all_files(self) -> tuple[ModelFile, ...]:
        """Every file the model is: the weights, then the projector."""
        if self.projector is None:
            return self.files
        p = self.projector
        return (*self.files, ModelFile(p.path, p.size, p.sha256))

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
                                 "WHERE f.path = ? AND f.role = 'model'", [path])) if path else []
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
        rows = list(self.store.read().query(
            "SELECT path, size, sha256, role FROM model_files WHERE model_id = ? ORDER BY position", [row["id"]]))
        files = tuple(ModelFile(r["path"], r["size"], r["sha256"]) for r in rows if r["role"] == "model")
        info = json.loads(row["info"] or "{}")
        projector = None
        kept = info.get("projector") or {}
        for r in rows:
            if r["role"] == "projector":
                projector = Projector(r["path"], r["size"], r["sha256"], str(kept.get("type", "?")),
                                      int(kept.get("tokens_per_image", 0)), bool(kept.get("tokens_estimated")))
        values = {k: row[k] for k in Model.__dataclass_fields__ if k not in ("files", "source", "projector", "n_embd")}
        return Model(**values, source=json.loads(row["source"]), files=files, projector=projector,
                     n_embd=info.get("n_embd"))

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
        """Register another app's download where it is, with the projector the app keeps beside
        it (a projector that does not fit is left out, with a warning in the log: the model is
        still usable for text)."""
        model = self.register(found.load_files, origin="discovered", source={"app": found.app, **found.source},
                              on_progress=on_progress, cancelled=cancelled)
        if found.projector is None:
            return model
        try:
            return self.attach_projector(model, found.projector, "in_place", cancelled=cancelled)
        except EnclaveError as exc:
            log.warning("%s: its projector was not attached: %s", model.id, exc)
            return model

    def import_files(self, files: Sequence[Path], mode: ImportMode, *,
                     source: dict[str, Any] | None = None, expected: Sequence[str] | None = None,
                     projector: Path | None = None, projector_sha256: str | None = None,
                     on_progress: Progress = lambda d, t: None,
                     cancelled: Callable[[], bool] = lambda: False) -> Model:
        """Bring one model in: copied into Enclave's folder (hashed while copying and the
        copy checked), linked there, or used where it is; with ``projector`` (its mmproj file,
        ``projector_sha256`` the hash it must have), attached the same way. A projector that
        does not fit the model is refused before a byte is copied, and a failure to attach it
        takes the model out again."""
        info = inspect_gguf(files[0])  # validated before a byte is copied
        if projector is None:
            return self._import_files(info, mode, source, expected, on_progress, cancelled)
        checked_projector(projector, info.shape.n_embd, info.name)
        model = self._import_files(info, mode, source, expected, on_progress, cancelled)
        try:
            return self.attach_projector(model, projector, mode, expected=projector_sha256, on_progress=on_progress,
                                         cancelled=cancelled)
        except BaseException:
            self.remove(model, delete_files=True)  # its copy or link here; never a file in place
            raise

    def _import_files(self, info: GGUFInfo, mode: ImportMode, source: dict[str, Any] | None,
                      expected: Sequence[str] | None, on_progress: Progress, cancelled: Callable[[], bool]) -> Model:
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

    # Projectors ------------------------------------------------------------------------

    def attach_projector(self, model: Model, path: Path, mode: ImportMode = "copy", *,
                         expected: str | None = None, on_progress: Progress = lambda d, t: None,
                         cancelled: Callable[[], bool] = lambda: False) -> Model:
        """Give ``model`` its vision projector: checked against it first (the width of its
        output must be the model's embedding length), then copied into Enclave's folder (beside
        the model when that is there), linked there or used in place, and hashed like every file.
        ``expected``: the SHA-256 it must have (an air-gap manifest's)."""
        if model.projector is not None:
            raise EnclaveError(f"{model.id} already has a projector ({Path(model.projector.path).name}). Detach it "
                               f"first: 'enclave models detach-projector {model.id}'.")
        info = checked_projector(path, model.n_embd, model.name)
        target = path.absolute() if mode == "in_place" else self._projector_target(model, path.name)
        made = target if mode != "in_place" else None
        if made is not None:
            _check_space(made.parent, info.size if mode == "copy" else 0)
            made.parent.mkdir(parents=True, exist_ok=True)
        advance = running_total(info.size, on_progress)
        try:
            if mode == "copy":
                assert made is not None
                sha = copy_hashed(path, made, advance, cancelled)
                info = checked_projector(made, model.n_embd, model.name)  # the copy, as it will be loaded
            else:
                if made is not None:
                    os.symlink(path.absolute(), made)
                sha = sha256_file(target, advance, cancelled)
            if expected is not None and sha != expected:
                raise EnclaveError(f"{path.name}: the projector's SHA-256 does not match what was expected; the copy "
                                   "is damaged or was changed. It was not attached.")
            self._record_projector(model, target, info, sha)
        except BaseException:
            if made is not None:
                made.unlink(missing_ok=True)
                if made.parent != model.path.parent and made.parent.exists() and not any(made.parent.iterdir()):
                    made.parent.rmdir()
            raise
        self.enforcer.record("model.projector", model=model.id, name=model.name, action="attach",
                             path=str(target), sha256=sha)
        return self.get(model.id)

    def _projector_target(self, model: Model, name: str) -> Path:
        """Where a copy (or link) of a projector goes: beside the model in Enclave's folder, else
        in a folder of the model's name there; never over another file."""
        base = (model.path.parent if self.owns(model.path)
                else self.folder / re.sub(r"[^\w.-]+", "_", model.name or model.id))
        return _free_folder(base, [name]) / name

    def _record_projector(self, model: Model, path: Path, info: ProjectorInfo, sha: str) -> None:
        with self.store.write() as db:
            db.execute("INSERT INTO model_files (model_id, position, path, size, sha256, role) "
                       "VALUES (?, ?, ?, ?, ?, 'projector')",
                       [model.id, PROJECTOR_POSITION, str(path.absolute()), info.size, sha])
            self._set_projector_summary(db, model.id, {
                "type": info.projector_type, "tokens_per_image": info.tokens_per_image,
                "tokens_estimated": info.tokens_estimated})

    @staticmethod
    def _set_projector_summary(db: Any, model_id: str, summary: dict[str, Any] | None) -> None:
        row = db.execute("SELECT info FROM models WHERE id = ?", [model_id]).fetchone()
        info = json.loads(row[0] or "{}") if row else {}
        info.pop("projector", None)
        if summary is not None:
            info["projector"] = summary
        db.execute("UPDATE models SET info = ? WHERE id = ?", [json.dumps(info), model_id])

    def detach_projector(self, model: Model) -> str | None:
        """Forget ``model``'s projector. A copy or link of it in Enclave's folder is deleted
        (never a link's target); a file elsewhere stays. Returns the path kept on disk, if any."""
        projector = model.projector
        if projector is None:
            raise EnclaveError(f"{model.id} has no projector to detach.")
        with self.store.write() as db:
            db.execute("DELETE FROM model_files WHERE model_id = ? AND role = 'projector'", [model.id])
            self._set_projector_summary(db, model.id, None)
        path = Path(projector.path)
        self.enforcer.record("model.projector", model=model.id, name=model.name, action="detach",
                             path=projector.path, sha256=projector.sha256)
        if self.owns(path):
            path.unlink(missing_ok=True)
            return None
        return str(path) if path.exists() else None

    def projector_path(self, ref: str) -> str | None:
        """The projector file of the registered model ``ref`` (None: no such model, or it has none):
        what ``Runtime`` is given as ``projectors``."""
        try:
            model = self.find(ref)
        except EnclaveError:
            return None
        return model.projector.path if model is not None and model.projector is not None else None

    def projector_size(self, ref: str) -> ProjectorSize | None:
        """The registered model ``ref``'s projector as the planner counts it (None: it has none)."""
        path = self.projector_path(ref)
        return projector_size(read_projector(path)) if path is not None else None

    def projector_info(self, model: Model) -> ProjectorInfo | None:
        """What ``model``'s projector is, read from its file (None: it has none)."""
        return read_projector(model.projector.path) if model.projector is not None else None

    # Checking and removing -------------------------------------------------------------

    def verify(self, model: Model, on_progress: Progress = lambda d, t: None) -> Verification:
        problems = []
        advance = running_total(sum(f.size for f in model.all_files), on_progress)

        for f in model.all_files:
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
        for f in model.all_files:
            path = Path(f.path)
            if delete_files and (self.owns(path) or delete_external):
                path.unlink(missing_ok=True)
            elif path.exists() or path.is_symlink():
                kept.append(str(path))
        self.enforcer.record("model.remove", model=model.id, name=model.name, deleted_files=delete_files,
                             files=[{"path": f.path, "sha256": f.sha256} for f in model.all_files])
        if delete_files:
            for parent in {Path(f.path).parent for f in model.all_files if self.owns(Path(f.path))}:
                if parent.exists() and not any(parent.iterdir()):
                    parent.rmdir()
        return kept


def checked_projector(path: Path, n_embd: int | None, model: str) -> ProjectorInfo:
    """``path`` read as a projector (validated) that fits a model ``n_embd`` wide; else an
    ``EnclaveError`` saying why, in words."""
    info = read_projector(path)
    refusal = info.refusal(n_embd or 0, model) if n_embd or not info.has_vision else None
    if refusal is not None:
        raise EnclaveError(refusal)
    return info


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
