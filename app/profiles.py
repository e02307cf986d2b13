"""Model profiles: one saved configuration per model, the one every load goes through.

A profile holds how a model is loaded (context, KV cache types, flash attention, expert
layers kept in RAM or the user's own tensor overrides, GPU layers, threads, chat format,
the draft model that speeds up its replies, whether a vision model's projector is loaded with
it) and how it answers (sampling defaults, system
prompt). Every field may be unset (None): then the app's settings or the planner decide.
The Models page's plan view and ``enclave models config`` edit it; chat, library
questions, ``enclave run`` and the Models page's "Load with this plan" all load through
``load_request``, so the same profile always makes the same request and a loaded model is
never loaded again for it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, get_args

from app.conversations import now
from app.settings import Settings
from app.store import Store
from inference.chat_formats import check_format_name
from inference.errors import EnclaveError
from inference.model_shape import ModelShape
from inference.planner import PlanRequest, ProjectorSize, draft_size
from inference.protocol import KvCacheType, ModelSettings, TensorOverride

KV_CACHE_TYPES: tuple[str, ...] = get_args(KvCacheType)
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens")


@dataclass(frozen=True)
class ModelProfile:
    # Loading. None everywhere: the settings' context, the planner's placement.
    n_ctx: int | None = None  # None: the settings' context length; 0: the largest that fits
    type_k: KvCacheType | None = None  # None: f16
    type_v: KvCacheType | None = None
    flash_attn: bool | None = None  # None: on where the planner plans (a quantized V cache needs it)
    cpu_moe_layers: int | None = None  # the experts of the first N layers stay in RAM; None: the planner fills VRAM
    n_gpu_layers: int | None = None  # a number: no plan, this many layers on the GPU (-1: all); None: planned
    tensor_overrides: tuple[TensorOverride, ...] = ()  # the user's own rules, before the plan's
    threads: int | None = None  # None: the settings' threads, else all cores but one
    chat_format: str | None = None  # a built-in format's name; None: the model's own template
    # a small local model of the same vocabulary (a registered model's id or name, or a GGUF path)
    # that proposes tokens for this one to check; None: drafting from the prompt only
    draft_model: str | None = None
    # a vision model's projector loaded with it (False: text only, and its memory saved)
    vision: bool = True
    # Answering. None: the settings' value.
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    max_tokens: int | None = None
    system_prompt: str | None = None

    def context(self, defaults: Settings) -> int:
        """The context length asked for: 0 means the largest that fits."""
        return defaults.context_length if self.n_ctx is None else self.n_ctx

    def sampling_overrides(self) -> dict[str, Any]:
        """The sampling values this profile sets (the others come from the settings)."""
        return {name: getattr(self, name) for name in SAMPLING_FIELDS if getattr(self, name) is not None}

    def changes(self) -> dict[str, Any]:
        """The fields set, by name: what ``enclave models config`` shows."""
        default = ModelProfile()
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) != getattr(default, f.name)}

    def to_json(self) -> str:
        values = self.changes()
        if "tensor_overrides" in values:
            values["tensor_overrides"] = [[o.pattern, o.device] for o in self.tensor_overrides]
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelProfile:
        values = {k: v for k, v in json.loads(text or "{}").items() if k in PROFILE_FIELDS}
        if "tensor_overrides" in values:
            values["tensor_overrides"] = tuple(TensorOverride(p, d) for p, d in values["tensor_overrides"])
        return cls(**values)


PROFILE_FIELDS = {f.name for f in fields(ModelProfile)}
RANGES: dict[str, tuple[float, float]] = {
    "n_ctx": (0, 10_485_760), "cpu_moe_layers": (0, 100_000), "n_gpu_layers": (-1, 100_000), "threads": (1, 1024),
    "temperature": (0, 5), "top_k": (0, 100_000), "top_p": (0, 1), "min_p": (0, 1), "repeat_penalty": (0.1, 10),
    "max_tokens": (1, 10_485_760),
}
MIN_CTX = 512


def checked(profile: ModelProfile) -> ModelProfile:
    """``profile``, or an ``EnclaveError`` naming the first value out of range."""
    for name, (low, high) in RANGES.items():
        value = getattr(profile, name)
        if value is not None and not low <= value <= high:
            raise EnclaveError(f"{name} must be between {low:g} and {high:g}, not {value}.")
    if profile.n_ctx is not None and 0 < profile.n_ctx < MIN_CTX:
        raise EnclaveError(f"n_ctx (the context) of {profile.n_ctx} tokens is too small: use at least {MIN_CTX}, "
                           "or 0 for the largest that fits.")
    if profile.chat_format is not None:
        check_format_name(profile.chat_format)
    if profile.draft_model is not None and not profile.draft_model.strip():
        raise EnclaveError("draft_model is empty: name a registered model or a GGUF file, or clear it "
                           "(--reset draft_model).")
    for name in ("type_k", "type_v"):
        if getattr(profile, name) not in (None, *KV_CACHE_TYPES):
            raise EnclaveError(f"{name} must be one of {', '.join(KV_CACHE_TYPES)}, not {getattr(profile, name)!r}.")
    return profile


@dataclass(frozen=True)
class DraftModel:
    """A profile's draft model as a load needs it: its file and its shape (for the plan)."""

    path: str
    shape: ModelShape


@dataclass(frozen=True)
class VisionProjector:
    """A registered model's projector as a load needs it: its file and its size (for the plan)."""

    path: str
    size: ProjectorSize


@dataclass(frozen=True)
class LoadRequest:
    """What ``Runtime.load`` is given: base settings, the plan to make (None: no plan) and
    the user's own tensor overrides."""

    settings: ModelSettings
    planned: PlanRequest | None
    extra_overrides: tuple[TensorOverride, ...]


def load_request(profile: ModelProfile, defaults: Settings, *, trained_ctx: int = 0, n_ctx: int | None = None,
                 margin_bytes: int | None = None, draft: DraftModel | None = None,
                 projector: VisionProjector | None = None) -> LoadRequest:
    """The load that carries out ``profile``. ``n_ctx`` replaces the profile's context for
    this load (a library that needs more); a model is never given more than its trained
    context, past which it only produces noise. ``draft``: the profile's draft model, read
    (``Runtime.draft_for``); it is left out when the drafting setting is off. ``projector``:
    the model's vision projector (``Runtime.projector_for``), left out when the profile says
    ``vision = False``; on a GPU when the plan puts anything on one."""
    draft = draft if defaults.drafting else None
    projector = projector if profile.vision else None
    ctx = profile.context(defaults) if n_ctx is None else n_ctx
    if trained_ctx:
        ctx = min(ctx, trained_ctx) if ctx else ctx
    type_k, type_v = profile.type_k or "f16", profile.type_v or profile.type_k or "f16"
    threads = profile.threads or defaults.threads
    base = ModelSettings(path="", n_ctx=ctx, type_k=type_k, type_v=type_v, chat_format=profile.chat_format,
                         draft_path=draft.path if draft else None,
                         projector_path=projector.path if projector else None,
                         **({"n_threads": threads} if threads else {}))
    if profile.n_gpu_layers is not None:  # placed by hand: llama.cpp's own defaults, no planner
        flash = profile.flash_attn if profile.flash_attn is not None else (None if type_v == "f16" else True)
        manual = replace(base, n_gpu_layers=profile.n_gpu_layers, flash_attn=flash,
                         tensor_overrides=profile.tensor_overrides,
                         draft_gpu_layers=-1 if draft and profile.n_gpu_layers != 0 else 0,
                         projector_gpu=profile.n_gpu_layers != 0)
        return LoadRequest(manual, None, ())
    planned = PlanRequest(n_ctx=ctx or None, type_k=type_k, type_v=type_v,
                          flash_attn=True if profile.flash_attn is None else profile.flash_attn,
                          cpu_moe_layers=profile.cpu_moe_layers, draft=draft_size(draft.shape) if draft else None,
                          projector=projector.size if projector else None,
                          **({"margin_bytes": margin_bytes} if margin_bytes is not None else {}))
    return LoadRequest(base, planned, profile.tensor_overrides)


class ProfileRepository:
    """The saved profiles: the only SQL for them. ``key`` is a registered model's id, or
    the absolute path of a file used without registering it (``Services.profile_key``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _none_saved(self) -> bool:
        """A read-only command (``enclave run``) may open a database made before profiles
        existed, whose migrations only the next writable open runs: no table, no profile."""
        return self.store.readonly and not self.store.read()["model_profiles"].exists()

    def get(self, key: str) -> ModelProfile:
        if self._none_saved():
            return ModelProfile()
        row = self.store.read().execute("SELECT profile FROM model_profiles WHERE model = ?", [key]).fetchone()
        return ModelProfile.from_json(row[0]) if row else ModelProfile()

    def save(self, key: str, profile: ModelProfile) -> ModelProfile:
        checked(profile)
        with self.store.write() as db:
            db.execute("INSERT INTO model_profiles (model, profile, updated_at) VALUES (?, ?, ?) "
                       "ON CONFLICT(model) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at",
                       [key, profile.to_json(), now()])
        return profile

    def update(self, key: str, **changes: Any) -> ModelProfile:
        unknown = set(changes) - PROFILE_FIELDS
        if unknown:
            raise EnclaveError(f"A model profile has no setting {', '.join(sorted(unknown))}. "
                               f"Settings: {', '.join(sorted(PROFILE_FIELDS))}.")
        return self.save(key, replace(self.get(key), **changes))

    def delete(self, key: str) -> None:
        with self.store.write() as db:
            db.execute("DELETE FROM model_profiles WHERE model = ?", [key])

    def all(self) -> dict[str, ModelProfile]:
        if self._none_saved():
            return {}
        rows = self.store.read().execute("SELECT model, profile FROM model_profiles ORDER BY model")
        return {key: ModelProfile.from_json(text) for key, text in rows}


def describe(profile: ModelProfile) -> list[str]:
    """The profile as ``name value`` lines for people; '(default)' where nothing is set."""
    values = asdict(profile)
    values["tensor_overrides"] = ", ".join(f"{o.pattern}={o.device}" for o in profile.tensor_overrides) or None
    return [f"{name:<17}{'(default)' if value is None else value}" for name, value in values.items()]
