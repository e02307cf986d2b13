"""What a hub repository offers: its GGUF files, their quantizations and split shards, and
which of them make up the one model a user asked for."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.hub.errors import HubError

DEFAULT_QUANT = "Q4_K_M"

# llama.cpp's split naming: "<prefix>-00001-of-00003.gguf".
_SHARD = re.compile(r"-(\d{1,5})-of-(\d{1,5})\.gguf$", re.IGNORECASE)
# A quantization label as a whole token of a name: Q4_K_M, IQ4_XS, Q4_0_4_4, TQ1_0, MXFP4, BF16, F16,
# with Unsloth's "UD-" (dynamic quant) prefix kept as part of the label.
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])"
    r"((?:UD-)?(?:I?Q[1-8](?:_[A-Z0-9]{1,3})*|TQ[12]_0|MXFP4(?:_MOE)?|BF16|FP16|F16|FP32|F32|FP8))"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class HubFile:
    name: str  # path in the repository, e.g. "Q4_K_M/model-Q4_K_M-00001-of-00002.gguf"
    size: int
    sha256: str | None  # the LFS object id; None for a file the hub does not keep in LFS
    quant: str | None
    shard: tuple[int, int] | None  # (n, of) of a split model


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    revision: str  # the commit sha the listing was made at: downloads are pinned to it
    files: tuple[HubFile, ...]  # GGUF files only


@dataclass(frozen=True)
class Choice:
    files: tuple[HubFile, ...]  # one model: a single file, or every shard of a split model in order


@dataclass(frozen=True)
class Downloaded:
    repo_id: str
    revision: str
    files: tuple[tuple[Path, HubFile], ...]  # every file verified against its SHA-256


def quant_label(filename: str) -> str | None:
    """The quantization in a GGUF file's name (or, failing that, its folder's), upper-cased:
    "Qwen3-30B-A3B-Q4_K_M.gguf" → "Q4_K_M". The last label in a name wins."""
    for part in reversed(PurePosixPath(filename).parts):
        labels = _QUANT.findall(part)
        if labels:
            return labels[-1].upper()
    return None


def shard_of(filename: str) -> tuple[int, int] | None:
    """(n, of) for a split model's shard, None for a single file."""
    match = _SHARD.search(filename)
    if match is None:
        return None
    n, of = int(match.group(1)), int(match.group(2))
    return (n, of) if 1 <= n <= of else None


def hub_file(name: str, size: int, sha256: str | None) -> HubFile:
    return HubFile(name=name, size=size, sha256=sha256, quant=quant_label(name), shard=shard_of(name))


def _model_key(f: HubFile) -> tuple[str, int]:
    if f.shard is None:
        return (f.name, 0)
    return (_SHARD.sub("", f.name), f.shard[1])


def models_of(files: tuple[HubFile, ...]) -> list[tuple[HubFile, ...]]:
    """The files grouped into models: a single file alone, a split model's shards together, in order."""
    groups: dict[tuple[str, int], list[HubFile]] = {}
    for f in files:
        groups.setdefault(_model_key(f), []).append(f)
    return [tuple(sorted(g, key=lambda f: f.shard[0] if f.shard else 0)) for g in groups.values()]


def _is_projector(model: tuple[HubFile, ...]) -> bool:
    """A vision projector (mmproj) goes with a model; it is never the model to run."""
    return PurePosixPath(model[0].name).name.lower().startswith("mmproj")


def _complete(repo: HubRepo, model: tuple[HubFile, ...]) -> Choice:
    first = model[0]
    if first.shard is not None:
        present = {f.shard[0] for f in model if f.shard}
        missing = sorted(set(range(1, first.shard[1] + 1)) - present)
        if missing:
            raise HubError(f"The split model {first.name} in {repo.repo_id} lacks shard(s) "
                           f"{', '.join(map(str, missing))} of {first.shard[1]}, so it cannot be loaded. "
                           "Choose another file or quant.")
    return Choice(files=model)


def _label(model: tuple[HubFile, ...]) -> str:
    return model[0].quant or model[0].name


def _available(models: list[tuple[HubFile, ...]]) -> str:
    return ", ".join(sorted({_label(m) for m in models}))


def choose(repo: HubRepo, *, file: str | None = None, quant: str | None = None) -> Choice:
    """The model to download: by ``file`` (its exact name, or any shard's), by ``quant``
    (case-insensitive), or else Q4_K_M when there is one, else the repository's only model."""
    models = models_of(repo.files)
    if file is not None:
        for model in models:
            if any(f.name == file for f in model):
                return _complete(repo, model)
        names = ", ".join(f.name for f in repo.files) or "none"
        raise HubError(f"{repo.repo_id} has no file named {file!r}. Its GGUF files: {names}.")
    runnable = [m for m in models if not _is_projector(m)]
    if not runnable:
        raise HubError(f"{repo.repo_id} has no GGUF model files. Enclave runs GGUF models: look for a GGUF "
                       "version of this model (search for its name with GGUF).")
    wanted = (quant or DEFAULT_QUANT).strip().upper()
    matches = [m for m in runnable if m[0].quant == wanted]
    if len(matches) == 1:
        return _complete(repo, matches[0])
    if len(matches) > 1:
        names = ", ".join(m[0].name for m in matches)
        raise HubError(f"{repo.repo_id} has several {wanted} models ({names}). Choose one by its file name.")
    if quant is None and len(runnable) == 1:
        return _complete(repo, runnable[0])
    if quant is not None:
        raise HubError(f"{repo.repo_id} has no {wanted} file. Quants available: {_available(runnable)}. "
                       "Choose one of them, or a file by name.")
    raise HubError(f"{repo.repo_id} has several models and no {DEFAULT_QUANT}. Choose a quant: "
                   f"{_available(runnable)} (or a file by name).")
