"""The app's handle on inference: one worker process and the model loaded in it.

The CLI and the GUI both go through ``Runtime``; neither talks to the worker protocol
directly. Loading a model here means: inspect the file (so llama.cpp never sees a
broken one), plan where every tensor goes on this machine, load with that plan, then
check the plan's figures against what llama.cpp reports it allocated.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from app.enforcement import Enforcer
from app.hosts import Host, with_hosts
from app.machine import MachineProbe
from app.paths import AppPaths
from app.profiles import DraftModel, LoadRequest, ModelProfile, VisionProjector, load_request
from app.settings import Settings
from inference.devices import Machine
from inference.errors import EnclaveError
from inference.gguf_info import GGUFInfo, inspect_gguf
from inference.load_report import EstimateCheck, LoadReport, parse_load_log
from inference.planner import Plan, PlanError, PlanRequest, apply_plan, check_estimates, plan, projector_size
from inference.projector_info import ProjectorInfo, read_projector
from inference.protocol import (
    BlockSaved,
    ChatMessage,
    Done,
    Event,
    Generate,
    ModelInfo,
    ModelSettings,
    Sampling,
    Segments,
    TensorOverride,
    Tokens,
)
from inference.worker import BatchSession, Worker, WorkerState

log = logging.getLogger(__name__)


def resolve_model(model: str) -> Path:
    """The model file a user named. A path for now; the model registry adds ids."""
    return Path(model).expanduser().resolve()


@dataclass(frozen=True)
class LoadOutcome:
    """A loaded model with the plan it was loaded by and how the plan's estimates held up."""

    info: ModelInfo
    gguf: GGUFInfo
    plan: Plan | None
    report: LoadReport
    checks: tuple[EstimateCheck, ...]


def freeing(machine: Machine, loaded: LoadReport | None) -> Machine:
    """``machine`` as a new load finds it: the model in the worker now is unloaded before
    the new one loads, so the memory llama.cpp said it allocated (per device: weights, KV
    cache, compute) counts as free. Mapped weights in RAM are the OS's page cache, already
    counted as available, so only allocated host buffers are added back to RAM."""
    if loaded is None:
        return machine
    held: dict[str, int] = {}
    for buffers in (loaded.model_buffers, loaded.kv_buffers, loaded.compute_buffers):
        for device, size in buffers.items():
            held[device] = held.get(device, 0) + size
    gpus = tuple(replace(g, free_bytes=min(g.total_bytes or 2**62, g.free_bytes + held.get(g.ident, 0)))
                 for g in machine.gpus)
    ram = min(machine.ram_total_bytes, machine.ram_free_bytes + held.get("CPU", 0))
    return replace(machine, gpus=gpus, ram_free_bytes=ram)


def make_plan(gguf: GGUFInfo, request: PlanRequest, machine: Machine) -> Plan:
    try:
        return plan(gguf.shape, machine, request)
    except PlanError as exc:
        raise EnclaveError(str(exc)) from exc


class Runtime:
    def __init__(self, paths: AppPaths, resolve: Callable[[str], Path] = resolve_model,
                 enforcer: Enforcer | None = None, probe: MachineProbe | None = None,
                 hosts: Callable[[], Sequence[Host]] = tuple,
                 projectors: Callable[[str], str | None] = lambda ref: None) -> None:
        """``resolve`` turns what a user calls a model (a path; with the registry, an id
        or a name too) into its file. ``enforcer``: the policy's allow-list and audit log.
        ``probe``: this machine's devices, asked again before every load that plans.
        ``hosts``: the RPC hosts whose devices plans may use. ``projectors``: a model's vision
        projector file, if it has one (the registry's ``projector_path``)."""
        self.hosts = hosts
        self.projectors = projectors
        self.paths = paths
        self.resolve = resolve
        self.enforcer = enforcer or Enforcer()
        self.probe = probe or MachineProbe(paths.llama_log)
        self.worker = Worker(paths.llama_log)
        self.worker.before_reload = self._admit_reload
        self.last_load: LoadOutcome | None = None
        self._last_request: tuple[object, ...] | None = None
        self._resident: tuple[int, str] | None = None  # (worker pid, saved prefix key) in the KV cache
        self._composed = False  # the resident prefix was composed from KV blocks
        self.evaluated_tokens = 0  # prompt and document tokens the worker evaluated, since this Runtime began
        self._inspected: dict[tuple[Path, int, int], GGUFInfo] = {}
        self.loading: Path | None = None  # the model file being loaded now (read by the GUI's status)
        # One front end's use of the worker from its first request to its last: a chat turn
        # (load, prompt, reply), a load, the API server's batch. The window and the server
        # share this runtime; without it one could load another model between the other's
        # load and its reply, or replace the KV cache its library answer relies on.
        self._turn = threading.RLock()

    @property
    def model(self) -> ModelInfo | None:
        return self.worker.info

    @property
    def state(self) -> WorkerState:
        return self.worker.state

    def inspect(self, model: str) -> GGUFInfo:
        """What ``model`` is (validated), remembered while the file is unchanged."""
        path = self.resolve(model)
        try:
            stat = path.stat()
        except OSError:
            return inspect_gguf(path)  # it raises the right error
        stamp = (path, stat.st_mtime_ns, stat.st_size)
        if stamp not in self._inspected:
            self._inspected[stamp] = inspect_gguf(path)
        return self._inspected[stamp]

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the worker for a sequence of requests that belong together (reentrant: a
        turn may load inside it). Others wait."""
        with self._turn:
            yield

    def turn_taken(self) -> bool:
        """Whether another thread holds the worker's turn now (a hint for what to say: it may
        end the next moment)."""
        if self._turn.acquire(blocking=False):
            self._turn.release()
            return False
        return True

    def load(self, model: str, settings: ModelSettings | None = None, *, planned: PlanRequest | None = None,
             extra_overrides: tuple[TensorOverride, ...] = ()) -> LoadOutcome:
        """Load ``model``. With ``planned`` (the default is a plan at the settings'
        context), the planner decides GPU layers, expert placement, KV types and flash
        attention; a plan that does not fit is refused before anything is loaded. Asking
        again for what is loaded returns at once."""
        with self._turn:
            return self._load(model, settings, planned, extra_overrides)

    def _load(self, model: str, settings: ModelSettings | None, planned: PlanRequest | None,
              extra_overrides: tuple[TensorOverride, ...]) -> LoadOutcome:
        request = self._request_key(model, settings, planned, extra_overrides)
        if self._holds(request):
            assert self.last_load is not None
            return self.last_load
        gguf = self.inspect(model)  # validates; llama.cpp never sees a broken file
        path = gguf.path  # the first shard of a split model, which llama.cpp wants
        hashes = self._admit(gguf)
        if settings is not None and settings.draft_path:  # llama.cpp reads it too: the same allow-list
            self._admit(self.inspect(settings.draft_path))
        projector_hashes: list[str] = []
        if settings is not None and settings.projector_path:  # validated and matched before libmtmd reads it
            self._projector(settings.projector_path, gguf)
            projector_hashes = self._admit_projector(settings.projector_path)  # the allow-list covers it too
        wanted = replace(settings or ModelSettings(path=str(path)), path=str(path))
        chosen: Plan | None = None
        if planned is not None:
            chosen = make_plan(gguf, planned, self.machine(refresh=True))
            if not chosen.fits:
                tips = "; ".join(chosen.suggestions)
                raise EnclaveError(f"{chosen.verdict} {'Would help: ' + tips + '.' if tips else ''}".strip())
            wanted = apply_plan(wanted, chosen, extra_overrides)
        elif extra_overrides:
            wanted = replace(wanted, tensor_overrides=extra_overrides + wanted.tensor_overrides)
        self._resident = None  # a new load starts with an empty KV cache
        self.loading = None if wanted.vocab_only else path  # a tokenizer alone is not a model to chat with
        try:
            info = self.worker.load(wanted)
        finally:
            self.loading = None
        self._confirm_unchanged(gguf, hashes, wanted.projector_path, projector_hashes)
        self.enforcer.record("model.load", name=gguf.name, path=str(path), sha256=hashes,
                             vocab_only=wanted.vocab_only,
                             **({"draft": wanted.draft_path} if wanted.draft_path else {}),
                             **({"projector": wanted.projector_path, "projector_sha256": projector_hashes}
                                if wanted.projector_path else {}))
        report = parse_load_log(info.log_lines)
        checks = check_estimates(chosen, report) if chosen is not None else ()
        for check in checks:
            (log.info if check.ok else log.warning)("plan vs llama.cpp for %s: %s", path.name, check.describe())
        self.last_load = LoadOutcome(info, gguf, chosen, report, checks)
        self._last_request = request
        return self.last_load

    def _request_key(self, model: str, settings: ModelSettings | None, planned: PlanRequest | None,
                     extra_overrides: tuple[TensorOverride, ...]) -> tuple[object, ...]:
        return (self.resolve(model), settings and replace(settings, path=""), planned, extra_overrides)

    def _holds(self, request: tuple[object, ...]) -> bool:
        """The worker holds the load ``request`` asks for, alive (a worker that died while
        idle is loaded again now, not inside the next request with no word said)."""
        return (self.last_load is not None and request == self._last_request and self.worker.info is not None
                and self.worker.pid is not None)

    def loads_anew(self, model: str, profile: ModelProfile, defaults: Settings, *, n_ctx: int | None = None) -> bool:
        """Whether ``load_profile`` with these arguments would load (the model is not in the
        worker as asked, or the worker stopped): what a front end says "Loading…" for."""
        wanted = self._profile_request(model, profile, defaults, n_ctx, None)
        return not self._holds(self._request_key(model, wanted.settings, wanted.planned, wanted.extra_overrides))

    def stopped_unexpectedly(self) -> bool:
        """The worker died — during a request (a crash it reported) or while idle (its
        process is gone though a model was loaded in it). Safe to ask from the GUI thread:
        while a request runs the worker's own thread finds out, and this says False."""
        state = self.worker.state
        if state == WorkerState.CRASHED:
            return True
        return state == WorkerState.LOADED and self.worker.info is not None and self.worker.pid is None

    def machine(self, *, refresh: bool = False) -> Machine:
        """This machine as the next load finds it: probed (``refresh``: again), with the
        devices of the RPC hosts that answer, and the memory of the model in the worker now
        counted as free, since a load replaces it."""
        loaded = self.last_load if self.last_load is not None and self.worker.info is not None else None
        holding = loaded.plan.rpc_hosts if loaded is not None and loaded.plan is not None else ()
        here = freeing(self.probe.get(refresh), loaded.report if loaded is not None else None)
        crashed = refresh and self.worker.state == WorkerState.CRASHED  # perhaps a host went away
        return with_hosts(here, self.probe.hosts(self.hosts(), refresh, holding, force=crashed))

    def load_profile(self, model: str, profile: ModelProfile, defaults: Settings, *, n_ctx: int | None = None,
                     margin_bytes: int | None = None) -> LoadOutcome:
        """Load ``model`` as its profile says (``n_ctx``: another context for this load).
        The one way a model is loaded for use: the same profile makes the same request, so
        a model already loaded by it is not loaded again."""
        wanted = self._profile_request(model, profile, defaults, n_ctx, margin_bytes)
        return self.load(model, wanted.settings, planned=wanted.planned, extra_overrides=wanted.extra_overrides)

    def _profile_request(self, model: str, profile: ModelProfile, defaults: Settings, n_ctx: int | None,
                         margin_bytes: int | None) -> LoadRequest:
        return load_request(profile, defaults, trained_ctx=self.inspect(model).context_length, n_ctx=n_ctx,
                            margin_bytes=margin_bytes, draft=self.draft_for(profile, defaults),
                            projector=self.projector_for(model, profile))

    def projector_for(self, model: str, profile: ModelProfile) -> VisionProjector | None:
        """``model``'s vision projector, read (None: it has none, or its profile loads it
        without: ``vision = False``). One that no longer fits the model is refused in words."""
        path = self.projectors(model) if profile.vision else None
        if path is None:
            return None
        info = self._projector(path, self.inspect(model))
        return VisionProjector(str(info.path), projector_size(info))

    def _projector(self, path: str, gguf: GGUFInfo) -> ProjectorInfo:
        info = read_projector(path)
        refusal = info.refusal(gguf.shape.n_embd, gguf.name)
        if refusal is not None:
            raise EnclaveError(f"{refusal} Detach it: 'enclave models detach-projector MODEL'.")
        return info

    def draft_for(self, profile: ModelProfile, defaults: Settings) -> DraftModel | None:
        """The profile's draft model, found and read (None: it names none, or drafting is off).
        Only a local GGUF file can be one; one that is not there is named in the error."""
        ref = profile.draft_model
        if not ref or not defaults.drafting:
            return None
        fix = ("Choose another ('enclave models config MODEL --draft-model OTHER', or the Models page) or clear "
               "it ('--reset draft_model').")
        try:
            path = self.resolve(ref)
        except EnclaveError as exc:
            raise EnclaveError(f"The draft model {ref!r} cannot be used: {exc} Only a model on this machine can "
                               f"draft. {fix}") from exc
        if not path.is_file():
            raise EnclaveError(f"The draft model {ref!r} is neither a registered model nor a model file here "
                               f"({path} does not exist). {fix}")
        try:
            info = self.inspect(str(path))
        except EnclaveError as exc:
            raise EnclaveError(f"The draft model {ref!r} cannot be read: {exc}") from exc
        return DraftModel(str(info.path), info.shape)

    def reload(self) -> LoadOutcome:
        """Load the last model again (after a crash), admitted by the policy as any load is."""
        if self._last_request is None:
            raise EnclaveError("No model was loaded yet, so there is none to load again. Choose a model.")
        path, settings, planned, extra_overrides = self._last_request
        self.last_load = None
        return self.load(str(path), settings, planned=planned, extra_overrides=extra_overrides)

    def _admit(self, gguf: GGUFInfo) -> list[str]:
        return self.enforcer.admit_load(gguf.name, [p for p, _ in gguf.files])

    def _admit_projector(self, path: str) -> list[str]:
        """A vision projector's SHA-256, checked against the allow-list like a model's files."""
        return self.enforcer.admit_load(Path(path).name, [Path(path)])

    def _confirm_unchanged(self, gguf: GGUFInfo, hashes: list[str], projector: str | None = None,
                           projector_hashes: list[str] | None = None) -> None:
        """The files llama.cpp just read are the ones admitted: a file swapped while it
        loaded is unloaded and refused. (Free unless an allow-list or audit log needs hashes.)"""
        try:
            if self._admit(gguf) != hashes:
                raise EnclaveError(f"{gguf.path.name} changed on disk while it was loading, so it was unloaded. "
                                   "Load it again.")
            if projector is not None and self._admit_projector(projector) != projector_hashes:
                raise EnclaveError(f"{Path(projector).name} changed on disk while it was loading, so the model was "
                                   "unloaded. Load it again.")
        except EnclaveError:
            self.unload()
            raise

    def _admit_reload(self, settings: ModelSettings) -> None:
        """The worker's check before it loads the model again after a crash: the file may
        have been replaced since it was admitted."""
        gguf = self.inspect(settings.path)
        hashes = self._admit(gguf)
        if settings.draft_path:
            self._admit(self.inspect(settings.draft_path))
        projector_hashes = self._admit_projector(settings.projector_path) if settings.projector_path else []
        self.enforcer.record("model.load", name=gguf.name, path=settings.path, sha256=hashes,
                             vocab_only=settings.vocab_only, after_crash=True,
                             **({"projector": settings.projector_path, "projector_sha256": projector_hashes}
                                if settings.projector_path else {}))

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> Tokens:
        """The loaded model's prompt for ``messages``: its text and tokens."""
        return self.worker.render_chat(tuple(messages), add_generation_prompt)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.worker.count_tokens(tuple(texts))

    def chat(self, messages: Sequence[ChatMessage], sampling: Sampling) -> Iterator[Event]:
        return self._generate(Generate(messages=tuple(messages), sampling=sampling))

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Event]:
        return self._generate(Generate(prompt=prompt, sampling=sampling))

    def render_segments(self, messages: Sequence[ChatMessage], slot: str, segments: Sequence[str]) -> Segments:
        """The loaded model's prompt for ``messages`` with ``segments`` where ``slot`` stands, in parts."""
        return self.worker.render_segments(tuple(messages), slot, tuple(segments))

    def continue_tokens(self, tokens: Sequence[int], sampling: Sampling, prefix_key: str | None = None
                        ) -> Iterator[Event]:
        """Generate after exact ``tokens``. ``prefix_key`` names the saved prefix they
        start with, which then counts as held in the worker's KV cache (composed from
        KV blocks when ``compose_blocks`` made it)."""
        composed = prefix_key is not None and self._composed and self.holds_prefix(prefix_key)
        return self._generate(Generate(tokens=tuple(tokens), sampling=sampling, composed=composed), prefix_key)

    def prefill(self, tokens: Sequence[int], prefix_key: str) -> Iterator[Event]:
        """Bring ``tokens`` into the KV cache without generating (progress events)."""
        return self._generate(Generate(tokens=tuple(tokens), sampling=Sampling(max_tokens=0)), prefix_key)

    def _generate(self, request: Generate, prefix_key: str | None = None) -> Iterator[Event]:
        self._resident = None  # whatever the KV cache held is being replaced
        last: Event | None = None
        for last in self.worker.generate(request):
            yield last
        if isinstance(last, Done):
            self.evaluated_tokens += last.stats.prompt_tokens - last.stats.cached_tokens
        whole = isinstance(last, Done) and last.stats.stop_reason != "cancelled"
        if prefix_key is not None and whole and self.worker.pid is not None:
            self._resident = (self.worker.pid, prefix_key)
            self._composed = request.composed

    def encode_block(self, head: Sequence[int], tokens: Sequence[int], path: Path) -> Iterator[Event]:
        """Encode one KV block (``Progress`` events, then ``BlockSaved`` or ``Failed``);
        the KV cache is left holding only ``head``."""
        self._resident = None
        for event in self.worker.encode_block(tuple(head), tuple(tokens), path):
            if isinstance(event, BlockSaved) and not event.cancelled:
                self.evaluated_tokens += event.n_tokens
            yield event

    def compose_blocks(self, head: Sequence[int], blocks: Sequence[tuple[Path, Sequence[int]]],
                       prefix_key: str) -> int:
        """Make the KV cache hold ``head`` then the saved blocks in order, known as ``prefix_key``."""
        self._resident = None
        n = self.worker.compose_blocks(tuple(head), tuple((str(path), tuple(tokens)) for path, tokens in blocks))
        if self.worker.pid is not None:
            self._resident, self._composed = (self.worker.pid, prefix_key), True
        return n

    # Saved prompt states ---------------------------------------------------------------

    def holds_prefix(self, key: str) -> bool:
        """Whether the worker's KV cache starts with the saved prefix ``key`` now."""
        return self._resident is not None and self._resident == (self.worker.pid, key)

    def save_state(self, path: Path) -> int:
        return self.worker.save_state(path)

    def restore_state(self, path: Path, prefix_key: str) -> int:
        n = self.worker.restore_state(path)
        self._resident = (self.worker.pid, prefix_key) if self.worker.pid is not None else None
        self._composed = False
        return n

    def open_batch(self) -> BatchSession:
        """A continuous batch over the loaded model (``Worker.open_batch``): several replies
        decoded together, for the API server. It holds the worker's turn until ``end_batch``
        (from the same thread, once the session's events have ended). The prompt cache may
        give its cells to the batch, so no saved prefix counts as held after it."""
        self._turn.acquire()
        try:
            session = self.worker.open_batch()
        except BaseException:
            self._turn.release()
            raise
        self._resident = None
        return session

    def end_batch(self) -> None:
        self._turn.release()

    def cancel(self) -> None:
        self.worker.cancel()

    def unload(self) -> None:
        self.worker.unload()
        self.last_load = None
        self._resident = None

    def close(self) -> None:
        self.worker.close()
        self.last_load = None
