"""Everything a front end needs, opened once: the store, the repositories, the runtime
and the chat service. The CLI and the GUI build one ``Services`` and use only it."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from app import library_service, transfer, warming
from app.chat import ChatService
from app.conversations import ConversationRepository, ImageRef
from app.device_speeds import SpeedCache
from app.enforcement import Enforcer
from app.export import export_json, export_markdown
from app.extract import Limits
from app.extract.isolated import IsolatedExtractor
from app.hosts import HostRegistry, HostStatus
from app.hub.repos import Choice
from app.image_store import ImageStore
from app.images import SanitizedImage
from app.ingest import IngestProgress, IngestReport, ingest
from app.kv_cache import PromptCache
from app.libraries import Library, LibraryRepository
from app.library_chat import LibraryChat
from app.library_service import LibraryTokens, SizingResult
from app.models import Model, ModelRegistry, Progress
from app.paths import AppPaths, app_paths
from app.policy import Policy, PolicyRefusal, policy_in_force
from app.profiles import ModelProfile, ProfileRepository, load_request
from app.remote_backend import RemoteClient
from app.remote_chat import RemoteTurns
from app.remote_models import RemoteModel, RemoteModelRegistry
from app.remote_service import RemoteAdded, add_remote
from app.runtime import LoadOutcome, Runtime, make_plan, resolve_model
from app.settings import Settings, SettingsRepository
from app.store import Store, open_store
from app.transcription import VisionTranscriber
from app.transfer import ImportReport
from app.warming import WarmReport, Warmth
from inference.chat_formats import built_in_formats
from inference.devices import Machine, SimulatedHost, simulated_machine
from inference.errors import EnclaveError
from inference.gguf_info import GGUFInfo, inspect_gguf
from inference.planner import DraftSize, Plan, PlanRequest, draft_size
from inference.protocol import KvCacheType, default_threads
from inference.speed import PredictedSpeed, predict

ImportMode = Literal["copy", "link", "in_place"]
Cancelled = Callable[[], bool]


@dataclass(frozen=True)
class ModelRemoval:
    model: Model
    kept: list[str]  # files left on disk
    was_default: bool  # the default_model setting named it and was cleared


@dataclass
class Services:
    paths: AppPaths
    store: Store
    conversations: ConversationRepository
    settings: SettingsRepository
    libraries: LibraryRepository
    prompt_cache: PromptCache
    models: ModelRegistry
    enforcer: Enforcer = field(default_factory=Enforcer)
    _runtime: Runtime | None = field(default=None, repr=False)
    _chat: ChatService | None = field(default=None, repr=False)
    # The window asks for the runtime from pool threads: one worker, whoever asks first.
    _runtime_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Settings this process changes for itself only, never saved: a command's flags ("--no-draft")
    session_settings: dict[str, object] = field(default_factory=dict)

    @classmethod
    def open(cls, paths: AppPaths | None = None, *, readonly: bool = False) -> Services:
        """``readonly``: for commands that only read, which may run beside a running Enclave.
        The organisation's policy is read first: an invalid one, or an audit log it asks
        for that cannot be written, stops here."""
        policy = policy_in_force()  # read once, for the folders and the rules
        paths = (paths or app_paths(policy)).ensure()
        enforcer = Enforcer.in_force(paths, policy)
        store = open_store(paths.database, readonly=readonly)
        settings = SettingsRepository(store)
        cache = PromptCache(store, paths.kv_cache, lambda: int(settings.load().kv_cache_max_gb * 2**30))
        if not cache.persistent and not readonly:
            cache.clear_disk()  # states saved before the database was encrypted
        if not readonly:
            ImageStore(store).delete_unused()  # attachments never sent, of an earlier session
        return cls(paths, store, ConversationRepository(store), settings, LibraryRepository(store, enforcer), cache,
                   ModelRegistry(store, paths.models, enforcer), enforcer)

    @property
    def policy(self) -> Policy:
        return self.enforcer.policy

    @property
    def runtime(self) -> Runtime:
        """The worker process starts only when something needs a model."""
        with self._runtime_lock:
            if self._runtime is None:
                self._runtime = Runtime(self.paths, self.resolve_model, self.enforcer, hosts=self.hosts.list,
                                        projectors=self.models.projector_path)
            return self._runtime

    def machine(self, *, refresh: bool = False) -> Machine:
        """This machine's devices and free memory as a load would find them, probed in a
        child process on first use (or ``refresh``: free memory changes) and remembered for
        the session; the model in the worker counts as free, since loading replaces it."""
        return self.runtime.machine(refresh=refresh)

    def registered_model(self, ref: str) -> Model | None:
        """The registered model ``ref`` names (an id, a name, an id prefix); None for the path
        of a file that exists, which is used as it is, registered or not."""
        return self.models.find(ref) if not Path(ref).expanduser().exists() else None

    def resolve_model(self, ref: str) -> Path:
        """A registered model's id or name, or a path to a GGUF file. A remote model has no file:
        nothing loads, inspects or plans it here."""
        remote = self.remote_model(ref) if not Path(ref).expanduser().exists() else None
        if remote is not None:
            raise EnclaveError(f"{remote.name} runs on the server at {remote.where} ({remote.model_id}): it is not "
                               "loaded on this machine, so there is no file to read or plan here.")
        model = self.registered_model(ref)
        return model.path if model is not None else resolve_model(ref)

    def delete_library(self, library_id: int) -> None:
        """A library, its documents, and its saved prompt caches."""
        self.prompt_cache.clear(library_id)  # first: deleting the library unlinks its entries
        self.libraries.delete(library_id)

    @property
    def chat(self) -> ChatService:
        """The front end's chat service (made once)."""
        if self._chat is None:
            self._chat = self.new_chat()
        return self._chat

    def new_chat(self) -> ChatService:
        """A chat service of its own, for a second front end in this process (the API server
        inside the window): its turns and its Stop are its own; the worker is shared, one turn
        at a time (``Runtime.turn``)."""
        library_chat = LibraryChat(self.libraries, self.prompt_cache, self.runtime,
                                   lambda: self.current_settings().library_attention)
        return ChatService(self.conversations, self.runtime, self.current_settings, library_chat, self.profile,
                           self.remote_turns)

    # Remote models: served elsewhere, never loaded here ---------------------------------------

    @property
    def remote_models(self) -> RemoteModelRegistry:
        return RemoteModelRegistry(self.store)

    def remote_model(self, ref: str | None) -> RemoteModel | None:
        """The remote model ``ref`` names (None: a local model or file). A local model registered
        under that exact name or id, or a file of that path, wins: a name two models share must
        never send a prompt off this machine (adding or importing such a name is refused, but a
        model found or downloaded elsewhere could still bring one)."""
        remote = self.remote_models.find(ref)
        if remote is None or ref is None or self._local_answers_to(ref) or Path(ref).expanduser().is_file():
            return None
        return remote

    def _local_answers_to(self, ref: str) -> bool:
        try:
            local = self.models.find(ref)
        except EnclaveError:  # an id prefix of several models: none is named so
            return False
        return local is not None and ref in (local.id, local.name)

    def add_remote_model(self, name: str, url: str, *, key_env: str | None = None, model_id: str | None = None,
                         context: int | None = None) -> RemoteAdded:
        """``enclave models add-remote``: checked, the policy applied, the server asked once unless offline."""
        try:
            local = self.models.find(name)
        except EnclaveError:  # an id prefix of several local models
            local = next(m for m in self.models.all() if m.id.startswith(name))
        taken = f"{local.name} ({local.id})" if local is not None else None
        return add_remote(self.remote_models, self.enforcer, offline=self.offline, name=name, url=url,
                          key_env=key_env, model_id=model_id, context=context, taken=taken)

    def remove_remote_model(self, name: str) -> RemoteModel:
        removed = self.remote_models.remove(name)
        self.enforcer.record("remote.removed", name=name, host=removed.where)
        return removed

    def remote_client(self, model: RemoteModel) -> RemoteClient:
        """A client for ``model``'s server, admitted (offline, ``remote_hosts``) and audited at every request."""
        return RemoteClient(model, self.enforcer, offline=self.offline)

    def remote_turns(self, ref: str) -> RemoteTurns | None:
        """The chat service's ``TurnSource`` for a remote model (None: ``ref`` is local)."""
        model = self.remote_model(ref)
        if model is None:
            return None
        return RemoteTurns(model, self.remote_client(model), self.libraries, self.chat.history)

    # Model profiles: how each model is loaded and answers ---------------------------------

    @property
    def profiles(self) -> ProfileRepository:
        return ProfileRepository(self.store)

    def profile_key(self, ref: str) -> str:
        """What a profile is saved under: the registered model's id, else the file's path
        (a remote model's: "remote/NAME")."""
        if self.remote_model(ref) is not None:
            return f"remote/{ref}"
        model = self.models.find(ref)  # by id or name; a registered model's file shares its profile
        if model is not None:
            return model.id
        if Path(ref).expanduser().exists() or "/" in ref or ref.endswith(".gguf"):
            return str(resolve_model(ref))  # a file (loading a missing one says so)
        return self.models.get(ref).id  # raises with the message a user needs

    def profile(self, ref: str) -> ModelProfile:
        return self.profiles.get(self.profile_key(ref))

    def configure_model(self, ref: str, profile: ModelProfile | None = None, **changes: object) -> ModelProfile:
        """Save ``ref``'s profile (``profile``: all of it) or change some of it (``changes``):
        ``enclave models config`` and the Models page. Only for a model that is there."""
        key = self.profile_key(ref)
        if Path(key).is_absolute() and not Path(key).is_file():  # ids are never paths
            raise EnclaveError(f"There is no model file {key} and no registered model {ref!r}: nothing to configure. "
                               "'enclave models list' shows the registered ones.")
        if str(changes.get("draft_model") or "").strip():  # an empty one is refused by checked()
            changes["draft_model"] = self._draft_key(str(changes["draft_model"]))
        elif profile is not None and (profile.draft_model or "").strip() and "draft_model" not in changes:
            profile = replace(profile, draft_model=self._draft_key(profile.draft_model))
        if profile is not None:
            return self.profiles.save(key, replace(profile, **changes))
        return self.profiles.update(key, **changes)

    def _draft_key(self, ref: str) -> str:
        """How a profile names its draft model: the registered model's id, else the file's
        absolute path (a relative one would mean another file from another folder)."""
        if self.remote_model(ref) is not None:
            raise EnclaveError(f"{ref} is a remote model; only a model on this machine can draft.")
        key = self.profile_key(ref)
        if Path(key).is_absolute() and not Path(key).is_file():
            raise EnclaveError(f"There is no model file {key} and no registered model {ref!r} to draft with. "
                               "'enclave models list' shows the registered ones.")
        return key

    def profile_context(self, ref: str, info: GGUFInfo | None = None) -> int:
        """The context a load of ``ref`` by its profile asks for, as ``load_request`` caps it
        (a profile's 0, "the largest that fits", is shown as the trained context)."""
        info = info or self.runtime.inspect(ref)
        wanted = load_request(self.profile(ref), self.current_settings(), trained_ctx=info.context_length)
        return wanted.settings.n_ctx or info.context_length

    def profile_request(self, ref: str, info: GGUFInfo | None = None) -> PlanRequest | None:
        """The plan request ``ref``'s profile makes (None: the profile places layers by hand),
        as a load by it would ask: what the side panel proposes before the model is loaded."""
        info = info or self.runtime.inspect(ref)
        profile, settings = self.profile(ref), self.current_settings()
        return load_request(profile, settings, trained_ctx=info.context_length,
                            draft=self.runtime.draft_for(profile, settings),
                            projector=self.runtime.projector_for(ref, profile)).planned

    def draft_choices(self, ref: str) -> list[tuple[str, str]]:
        """The models that can draft for ``ref``, as (id, name): the other registered local models
        (a draft must share its vocabulary: the load refuses one that does not)."""
        own = self.profile_key(ref)
        return [(m.id, m.name) for m in self.models.all() if m.id != own]

    def draft_size(self, draft_model: str | None) -> DraftSize | None:
        """What ``draft_model`` (an id, a name or a path; None: none) adds to a plan, as
        ``PlanRequest.draft``; None when drafting is off. A draft that cannot be used raises."""
        settings = self.current_settings()
        draft = self.runtime.draft_for(ModelProfile(draft_model=draft_model), settings)
        return draft_size(draft.shape) if draft is not None else None

    def chat_formats(self) -> tuple[str, ...]:
        """The built-in chat formats a profile can choose instead of a model's own template."""
        return built_in_formats()

    def load_model(self, ref: str, profile: ModelProfile | None = None, *, n_ctx: int | None = None,
                   margin_bytes: int | None = None) -> LoadOutcome:
        """Load ``ref`` by its saved profile (or ``profile``: the saved one changed for this
        load, as ``enclave run``'s flags do). Chat and library questions load the same way."""
        return self.runtime.load_profile(ref, profile or self.profile(ref), self.current_settings(), n_ctx=n_ctx,
                                         margin_bytes=margin_bytes)

    def current_settings(self) -> Settings:
        """The saved settings, with this process's own changes (``session_settings``) and what
        the organisation's policy decides in their place."""
        return replace(self.settings.load(), **{**self.session_settings, **self.policy.managed_settings()})

    @property
    def offline(self) -> bool:
        """No download may go online now: the offline setting, the organisation's policy or ENCLAVE_OFFLINE."""
        from app.hub import offline_enabled

        return self.current_settings().offline or offline_enabled()

    def export_conversation(self, conversation_id: int, fmt: str, destination: str) -> str:
        """A conversation as Markdown (``md``) or JSON, if the policy allows exports."""
        self.enforcer.check_export("conversation", conversation=conversation_id, destination=destination)
        conversation = self.conversations.get(conversation_id)
        messages = self.conversations.messages(conversation_id, alternatives=True)
        png = ImageStore(self.store).png
        text = (export_json(conversation, messages, png) if fmt == "json"
                else export_markdown(conversation, messages, png))
        self.enforcer.record("conversation.export", conversation=conversation_id, format=fmt,
                             destination=destination, messages=len(messages))
        return text

    def pull_model(self, repo: str, *, file: str | None = None, quant: str | None = None,
                   revision: str | None = None, on_choice: Callable[[Choice], None] = lambda choice: None,
                   on_progress: Progress = lambda done, total: None,
                   on_checking: Progress | None = None, cancelled: Callable[[], bool] = lambda: False) -> Model:
        """Download a model from the hub and register it (``enclave models pull``, the GUI's
        Download buttons): list the repository at one commit, choose the file (all its
        shards), download resumably with every file's SHA-256 verified, then register with
        the hub's hashes recomputed, not trusted. Files a policy refuses to register go."""
        from app import hub

        offline = self.current_settings().offline
        hub.refuse_if_offline(offline, "list", self.enforcer)  # before the keyring is asked for a token
        token = hub.get_token(quiet=True)
        listing = hub.list_gguf(repo, revision=revision, token=token, offline=offline)
        choice = hub.choose(listing, file=file, quant=quant)
        on_choice(choice)
        got = hub.download(listing, choice, self.paths.models / repo.replace("/", "--"), token=token,
                           offline=offline, on_progress=on_progress, cancelled=cancelled, enforcer=self.enforcer)
        paths = [path for path, _ in got.files]
        try:
            return self.models.register(
                paths, origin="downloaded",
                source={"repo": got.repo_id, "revision": got.revision, "files": [f.name for _, f in got.files]},
                hashes=[f.sha256 for _, f in got.files if f.sha256] or None, on_progress=on_checking or on_progress)
        except PolicyRefusal:
            for path in paths:
                path.unlink(missing_ok=True)
            raise

    # Models: import, remove, export --------------------------------------------------

    def import_model(self, path: Path, mode: ImportMode = "copy", *, mmproj: Path | None = None,
                     on_progress: Progress = lambda done, total: None,
                     cancelled: Cancelled = lambda: False) -> ImportReport:
        """A ``.gguf`` file (with its shards; ``mmproj``: its vision projector), a folder of them
        (an ``mmproj*.gguf`` there is their projector), or a folder exported with a
        manifest (every file checked against it). A file that cannot be imported raises; in
        a folder, each refused file is listed with why and the rest goes in. A model whose name
        or id a remote model has is refused: one name must not mean two models, one of them
        elsewhere."""
        if path.is_dir() and mmproj is not None:
            raise EnclaveError(f"{path} is a folder: --mmproj goes with one model file. In a folder, an mmproj*.gguf "
                               "beside the model is its projector.")
        if path.is_dir():
            report = transfer.import_folder(self.models, path, mode, on_progress, cancelled)
            for model in list(report.imported):
                clash = self._remote_clash(model.name, model.id)
                if clash is not None:
                    self.models.remove(model, delete_files=True)  # its copy or link here; never a file in place
                    report.imported.remove(model)
                    report.refused.append((model.files[0].path if model.files else model.name, clash))
            return report
        clash = self._remote_clash(inspect_gguf(path).name)  # before a byte is copied
        if clash is not None:
            raise EnclaveError(clash)
        model = self.models.import_files([path], mode, projector=mmproj, on_progress=on_progress, cancelled=cancelled)
        clash = self._remote_clash(model.id)
        if clash is not None:
            self.models.remove(model, delete_files=True)
            raise EnclaveError(clash)
        return ImportReport(imported=[model])

    def _remote_clash(self, *names: str) -> str | None:
        """Why a local model answering to ``names`` cannot be registered: a remote model has one."""
        remote = next((r for r in map(self.remote_models.find, names) if r is not None), None)
        if remote is None:
            return None
        return (f"The remote model {remote.name!r} (on {remote.where}) already has this model's name, so it was "
                f"not imported: remove the remote one first ('enclave models remove {remote.name}') and add it "
                "again under another name; one name must never mean a model here and one elsewhere.")

    def remove_model(self, ref: str, *, delete_files: bool = False, delete_external: bool = False) -> ModelRemoval:
        """Forget a model (its files as ``ModelRegistry.remove`` says), its profile and any
        profile's use of it as a draft model. If the
        default_model setting names it, by id, name or file, the setting is cleared: a default
        that is gone would fail every new chat."""
        model = self.models.get(ref)
        was_default = self._is_default_model(model)
        kept = self.models.remove(model, delete_files=delete_files, delete_external=delete_external)
        self.profiles.delete(model.id)
        for key, profile in self.profiles.all().items():  # a draft that is gone would fail every load
            if profile.draft_model in (model.id, model.name):
                self.profiles.update(key, draft_model=None)
        if was_default:
            self.settings.set("default_model", None)
        return ModelRemoval(model, kept, was_default)

    def _is_default_model(self, model: Model) -> bool:
        default = self.settings.load().default_model
        if not default:
            return False
        try:
            named = self.models.find(default)
        except EnclaveError:  # an id prefix that matches several models
            return False
        return named is not None and named.id == model.id

    def export_model(self, ref: str, folder: Path, *, on_progress: Progress = lambda done, total: None,
                     cancelled: Cancelled = lambda: False) -> Path:
        """Copy a model and a manifest to ``folder`` for an air-gapped machine, if the policy
        allows exports. Returns the manifest's path."""
        return transfer.export_model(self.models, self.models.get(ref), folder, on_progress, cancelled)

    # Planning -------------------------------------------------------------------------

    @staticmethod
    def simulated_machine(vram_bytes: int | Sequence[int] | None, ram_bytes: int, *, unified: bool = False,
                          hosts: Sequence[SimulatedHost] = ()) -> Machine:
        """A machine we do not have, to plan for: GPUs of ``vram_bytes`` each (None: none), and
        RPC hosts."""
        return simulated_machine(vram_bytes, ram_bytes, unified=unified, hosts=hosts)

    @property
    def hosts(self) -> HostRegistry:
        """RPC hosts whose devices plans may use."""
        return HostRegistry(self.store)

    def host_statuses(self, *, refresh: bool = False) -> list[HostStatus]:
        """Each added host's devices and link, or why it does not answer."""
        return self.runtime.probe.hosts(self.hosts.list(), refresh)

    def predicted_speed(self, model: str | GGUFInfo, plan: Plan, machine: Machine) -> PredictedSpeed | None:
        """How fast ``plan`` will generate and read a prompt on ``machine``: from each device's
        speed (measured once, a few seconds each, then kept) or its published figures."""
        info = self.runtime.inspect(model) if isinstance(model, str) else model
        threads = self.current_settings().threads or default_threads()
        return predict(info.shape, plan, self.speeds.with_speeds(machine, threads))

    @functools.cached_property
    def speeds(self) -> SpeedCache:
        return SpeedCache(self.paths.cache / "device-speeds.json", self.paths.llama_log)

    def plan(self, model: str | GGUFInfo, request: PlanRequest, machine: Machine | None = None) -> Plan:
        """Where ``model`` (a reference or what ``runtime.inspect`` read) would go on
        ``machine`` (default: this one). A plan that does not fit is returned with its verdict;
        an impossible request raises ``EnclaveError``."""
        info = self.runtime.inspect(model) if isinstance(model, str) else model
        return make_plan(info, request, machine or self.machine())

    # Libraries: ingest, tokens, sizing ------------------------------------------------

    def add_to_library(self, library: int | str, paths: Iterable[Path], *, include: tuple[str, ...] = (),
                       exclude: tuple[str, ...] = (), on_progress: Callable[[IngestProgress], None] = lambda p: None,
                       cancelled: Cancelled = lambda: False) -> IngestReport:
        """Read files and folders into a library, within the size limit of the settings
        (``max_document_mb``); ``cancelled`` is asked between files."""
        target = self.libraries.get(library)
        limits = Limits(max_file_bytes=self.current_settings().max_document_mb * 2**20)
        return ingest(self.libraries, target, paths, include=include, exclude=exclude, limits=limits,
                      on_progress=on_progress, cancelled=cancelled, transcriber=self._transcriber(target))

    def library_tokens(self, library_id: int, model: str | None = None, *, load: bool = False) -> LibraryTokens:
        """The library's tokens with ``model``'s tokenizer (default: the default model), exact
        when it can be used; ``load``: load it (vocabulary only) even if another model is loaded."""
        return library_service.measure(self, library_id, model, load=load)

    def size_library(self, library_id: int, model: str | None = None, *,
                     kv_type: KvCacheType | None = None) -> SizingResult:
        """The context the whole library needs with ``model`` (default: the default model),
        counted exactly, and whether this machine holds it with the model's profile
        (``kv_type``: another KV cache type)."""
        return library_service.size(self, library_id, model, kv_type)

    def warm_library(self, library_id: int, model: str | None = None, *,
                     on_progress: Callable[[int, int], None] = lambda done, total: None,
                     cancelled: Cancelled = lambda: False) -> WarmReport:
        """Compute the library's KV prefix for ``model`` (default: the default model) before
        its first question, loading the model as that question would, and save it (not with
        an encrypted database: then it lasts while this process runs). ``on_progress(done,
        total)`` in tokens; ``cancelled`` is asked at each step and a stop leaves it cold."""
        return warming.warm(self, library_id, model, on_progress, cancelled)

    def library_warmth(self, library_id: int, model: str | None = None) -> Warmth:
        """Whether the library's next question with ``model`` (default: the default model)
        evaluates only itself: *ready* or *cold*, read from the prompt cache, nothing loaded."""
        return warming.warmth(self, library_id, model)

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
        self.store.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Images in conversations (issue 20) ------------------------------------------------

    def read_images(self, items: Iterable[Path | tuple[bytes, str]],
                    refused: Callable[[EnclaveError], None] | None = None) -> list[tuple[SanitizedImage, str]]:
        """Images read from files or pasted bytes (``(data, name)``), each with the name to
        show: decoded only in the isolated reader (a hostile file is refused there with an
        ``ExtractionError``) and re-encoded as PNG; a multi-page TIFF gives each page. Nothing
        is stored (``enclave run``). ``refused``: told of each refused item while the rest are
        read (the window's attachments); without it the first refusal is raised."""
        read: list[tuple[SanitizedImage, str]] = []
        with IsolatedExtractor() as reader:
            for item in items:
                try:
                    if isinstance(item, tuple):
                        data, name = item
                        images = reader.read_image_bytes(data, name)
                    else:
                        name, images = item.name, reader.read_image_file(item)
                except EnclaveError as exc:
                    if refused is None:
                        raise
                    refused(exc)
                    continue
                read += [(image, name + (f" (page {image.page})" if image.page is not None and len(images) > 1
                                         else "")) for image in images]
        return read

    def add_images(self, items: Iterable[Path | tuple[bytes, str]],
                   refused: Callable[[EnclaveError], None] | None = None) -> list[ImageRef]:
        """``read_images``, then kept in the database once each: what
        ``ChatService.send(..., images=)`` takes, in order."""
        store = ImageStore(self.store)
        return [ImageRef(store.add(image).sha256, name) for image, name in self.read_images(items, refused)]

    def image_png(self, sha256: str) -> bytes:
        """A stored image's PNG (a message's thumbnail); ``ImageMissingError`` if it is gone."""
        return ImageStore(self.store).png(sha256)

    # Scanned documents in libraries (issue 20) -----------------------------------------

    def vision_models(self) -> list[Model]:
        """The registered models that read images (have a projector): a library's choices."""
        return [m for m in self.models.all() if m.reads_images]

    def set_library_vision(self, library: int | str, model: str | None) -> Library:
        """Choose the model that transcribes ``library``'s scanned pages and images (None: nobody;
        they are recorded as unread). A model that reads text only is refused in words."""
        target = self.libraries.get(library)
        if model is None:
            return self.libraries.set_vision_model(target.id, None)
        found = self.models.find(model)
        if found is None:
            raise EnclaveError(f"There is no registered model {model!r}: a library's vision model must be "
                               "imported with its projector first ('enclave models import MODEL --mmproj FILE'); "
                               "'enclave models list' shows them.")
        if not found.reads_images:
            raise EnclaveError(f"{found.name} reads text only: import it with its projector ('enclave models "
                               "import MODEL --mmproj FILE') or choose a model that reads images.")
        return self.libraries.set_vision_model(target.id, found.id)

    def vision_model_name(self, library: Library) -> str | None:
        """The name of the library's vision model as the user knows it; None when it has none."""
        if not library.vision_model:
            return None
        found = self.models.find(library.vision_model)
        return found.name if found is not None else library.vision_model

    def reread_scans(self, library: int | str, *, on_progress: Callable[[IngestProgress], None] = lambda p: None,
                     cancelled: Cancelled = lambda: False) -> IngestReport:
        """Read again the documents recorded as unread for want of a vision model (after one was
        chosen): ``add_to_library`` with their paths."""
        target = self.libraries.get(library)
        paths = [Path(d.path) for d in self.libraries.unread_scans(target.id)]
        if not paths:
            return IngestReport()
        return self.add_to_library(target.id, paths, on_progress=on_progress, cancelled=cancelled)

    def _transcriber(self, library: Library) -> VisionTranscriber | None:
        if not library.vision_model:
            return None
        ref = library.vision_model
        return VisionTranscriber(lambda: self.runtime, ref, self.vision_model_name(library) or ref,
                                 lambda: self.profile(ref), self.current_settings)
