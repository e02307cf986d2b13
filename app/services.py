"""Everything a front end needs, opened once: the store, the repositories, the runtime
and the chat service. The CLI and the GUI build one ``Services`` and use only it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from app.chat import ChatService
from app.conversations import ConversationRepository
from app.enforcement import Enforcer
from app.export import export_json, export_markdown
from app.hub.repos import Choice
from app.kv_cache import PromptCache
from app.libraries import LibraryRepository
from app.library_chat import LibraryChat
from app.models import Model, ModelRegistry, Progress
from app.paths import AppPaths, app_paths
from app.policy import Policy, PolicyRefusal, policy_in_force
from app.runtime import Runtime, resolve_model
from app.settings import Settings, SettingsRepository
from app.store import Store, open_store


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
        return cls(paths, store, ConversationRepository(store), settings, LibraryRepository(store, enforcer), cache,
                   ModelRegistry(store, paths.models, enforcer), enforcer)

    @property
    def policy(self) -> Policy:
        return self.enforcer.policy

    @property
    def runtime(self) -> Runtime:
        """The worker process starts only when something needs a model."""
        if self._runtime is None:
            self._runtime = Runtime(self.paths, self.resolve_model, self.enforcer)
        return self._runtime

    def registered_model(self, ref: str) -> Model | None:
        """The registered model ``ref`` names (an id, a name, an id prefix); None for the path
        of a file that exists, which is used as it is, registered or not."""
        return self.models.find(ref) if not Path(ref).expanduser().exists() else None

    def resolve_model(self, ref: str) -> Path:
        """A registered model's id or name, or a path to a GGUF file."""
        model = self.registered_model(ref)
        return model.path if model is not None else resolve_model(ref)

    def delete_library(self, library_id: int) -> None:
        """A library, its documents, and its saved prompt caches."""
        self.prompt_cache.clear(library_id)  # first: deleting the library unlinks its entries
        self.libraries.delete(library_id)

    @property
    def chat(self) -> ChatService:
        if self._chat is None:
            library_chat = LibraryChat(self.libraries, self.prompt_cache, self.runtime)
            self._chat = ChatService(self.conversations, self.runtime, self.current_settings, library_chat)
        return self._chat

    def current_settings(self) -> Settings:
        """The saved settings, with what the organisation's policy decides in their place."""
        return replace(self.settings.load(), **self.policy.managed_settings())

    @property
    def offline(self) -> bool:
        """No download may go online now: the offline setting, the organisation's policy or ENCLAVE_OFFLINE."""
        from app.hub import offline_enabled

        return self.current_settings().offline or offline_enabled()

    def export_conversation(self, conversation_id: int, fmt: str, destination: str) -> str:
        """A conversation as Markdown (``md``) or JSON, if the policy allows exports."""
        self.enforcer.check_export("conversation", conversation=conversation_id, destination=destination)
        conversation = self.conversations.get(conversation_id)
        messages = self.conversations.messages(conversation_id)
        text = export_json(conversation, messages) if fmt == "json" else export_markdown(conversation, messages)
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

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
        self.store.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
