"""Find GGUF models that other apps already downloaded, so Enclave can use them where they lie.

Nothing is copied and nothing is fetched: discovery lists folders, reads small JSON files
(Ollama manifests, llama.cpp's download sidecars, a few app settings) and the first four bytes
of each candidate file, which must be the GGUF magic.

Rules every layout follows:

- a model is one ``.gguf`` file, or every shard of a split model (``name-00001-of-00003.gguf``,
  first shard first), reported only when all its shards are there and are GGUF files;
- vision projectors (``mmproj*.gguf``) are not models on their own: where an app keeps one
  beside its model (LM Studio, a Hugging Face snapshot, Jan: the same folder; Ollama: the
  manifest's projector layer) it is the model's ``projector`` (of several, the f16 one first);
- symbolic links are resolved, but a link whose target leaves the folder searched is skipped,
  except Ollama's blobs (its store may be spread over disks with links); the Hugging Face
  cache's snapshot links point into its own ``blobs/`` and so stay inside;
- unreadable folders, broken links, unreadable or malformed files are skipped, never raised;
- a file found twice (two Ollama tags, two revisions, two folders) is reported once, the first
  time it is met in the order of ``APPS`` and of each app's folders;
- the result is sorted by app (in the order of ``APPS``), then by name.
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from inference.errors import EnclaveError
from inference.gguf_info import SHARD_NAME  # llama.cpp's split names

HF = "Hugging Face cache"
LM_STUDIO = "LM Studio"
OLLAMA = "Ollama"
GPT4ALL = "GPT4All"
JAN = "Jan"
LLAMA_CPP = "llama.cpp"
APPS = (HF, LM_STUDIO, OLLAMA, GPT4ALL, JAN, LLAMA_CPP)

GGUF_MAGIC = b"GGUF"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_PROJECTOR_LAYER = "application/vnd.ollama.image.projector"
OLLAMA_REGISTRY = "registry.ollama.ai"
OLLAMA_SERVICE_MODELS = Path("/usr/share/ollama/.ollama/models")  # Linux install script's service user

_OLLAMA_DIGEST = re.compile(r"^sha256:(?P<hex>[0-9a-f]{64})$")
_MAX_JSON_BYTES = 1 << 20  # manifests and sidecars are a few KB; anything bigger is not one
_MAX_DEPTH = 6  # how deep Jan and a Hugging Face snapshot are searched

PathFilter = Callable[[Path], Path | None]


@dataclass(frozen=True)
class FoundModel:
    """A model another app downloaded: enough to list it and to load it in place."""

    app: str  # one of APPS
    name: str  # readable: "Qwen/Qwen3-30B-A3B-GGUF: Qwen3-30B-A3B-Q4_K_M", "llama3.1:8b", ...
    files: tuple[Path, ...]  # the GGUF file, or every shard (first shard first); real paths
    size: int  # bytes, all files
    source: dict[str, str] = field(hash=False)  # what is known of its origin (see each scanner)
    projector: Path | None = None  # its vision projector (mmproj), where the app keeps one

    @property
    def path(self) -> Path:
        """The file to open: the model, or its first shard."""
        return self.files[0]

    @property
    def load_files(self) -> list[Path]:
        """What to register and load: the files, or for the HF cache the snapshot link of the
        first (its blobs have hash names, so llama.cpp finds a split model's other shards only
        beside the link)."""
        first = self.source.get("snapshot_file")
        return [Path(first)] if first else list(self.files)


# --- where to look ---------------------------------------------------------------------------


def default_locations(*, system: str | None = None, env: Mapping[str, str] | None = None,
                      home: Path | None = None) -> dict[str, list[Path]]:
    """Per app, the folders its models are in on this machine, most likely first.

    ``system`` ("Linux", "Darwin", "Windows"; default: this one), ``env`` (default:
    ``os.environ``) and ``home`` (default: ``USERPROFILE`` on Windows, else ``HOME``, else
    ``Path.home()``) exist for tests. Folders need not exist; ``discover`` skips missing ones.
    When an app's environment variable is set, its folder comes first and the default still
    follows: models downloaded before it was set (or by a shell without it) stay there, and
    Enclave started from a desktop launcher may not see the variable the app ran with.

    Assumptions, from each app's documentation or source where public:

    - Hugging Face cache (``huggingface_hub``): ``HF_HUB_CACHE`` (legacy
      ``HUGGINGFACE_HUB_CACHE``), else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``,
      else ``~/.cache/huggingface/hub`` -- the same on every OS.
    - LM Studio: models under ``<LM Studio home>/models``, the home being the path written in
      ``~/.lmstudio-home-pointer`` if any, else ``~/.lmstudio`` (0.3+); older releases used
      ``~/.cache/lm-studio/models``. A custom models folder is the ``downloadsFolder`` key of the
      home's ``settings.json``. ``LMSTUDIO_HOME`` is honoured first, though LM Studio does not
      document it (a guess that costs nothing when unset).
    - Ollama: ``OLLAMA_MODELS``, else ``~/.ollama/models`` (macOS, Windows, Linux user
      installs); Linux installs by the official script run as the ``ollama`` user with models in
      ``/usr/share/ollama/.ollama/models``.
    - GPT4All: the desktop app's download folder is Qt's app-local data folder:
      ``$XDG_DATA_HOME`` or ``~/.local/share/nomic.ai/GPT4All`` (Linux),
      ``~/Library/Application Support/nomic.ai/GPT4All`` (macOS),
      ``%LOCALAPPDATA%\\nomic.ai\\GPT4All`` (Windows). A changed folder is read from
      ``modelPath`` in ``~/.config/nomic.ai/GPT4All.ini`` on Linux only (macOS keeps it in a
      binary plist, Windows in the registry: not read). The Python SDK's ``~/.cache/gpt4all``
      is searched too.
    - Jan: releases before 0.6 kept ``~/jan/models/<id>/``; later ones a data folder:
      ``~/Library/Application Support/Jan/data`` (macOS), ``%APPDATA%\\Jan\\data`` (Windows),
      and on Linux both ``$XDG_DATA_HOME`` or ``~/.local/share/Jan/data`` and the documented
      ``$XDG_CONFIG_HOME`` or ``~/.config/Jan/data``. In a data folder, models are in
      ``llamacpp/models/<id>/`` (0.6+, ``<id>`` may hold a slash) and ``models/`` (older). A
      data folder moved in Jan's settings is not followed.
    - llama.cpp (``-hf`` downloads): ``LLAMA_CACHE``, else ``$XDG_CACHE_HOME/llama.cpp`` or
      ``~/.cache/llama.cpp`` (Linux), ``~/Library/Caches/llama.cpp`` (macOS),
      ``%LOCALAPPDATA%\\llama.cpp`` (Windows), as llama.cpp's ``fs_get_cache_directory``.
    """
    system = system or platform.system()
    env = os.environ if env is None else env
    home = home or _home(env, system)
    found = {
        HF: _hf_locations(env, home),
        LM_STUDIO: _lm_studio_locations(env, home),
        OLLAMA: _ollama_locations(env, home, system),
        GPT4ALL: _gpt4all_locations(env, home, system),
        JAN: _jan_locations(env, home, system),
        LLAMA_CPP: _llama_cpp_locations(env, home, system),
    }
    return {app: _unique(folders) for app, folders in found.items()}


def _home(env: Mapping[str, str], system: str) -> Path:
    value = env.get("USERPROFILE") if system == "Windows" else None
    value = value or env.get("HOME")
    return Path(value) if value else Path.home()


def _env_path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value).expanduser() if value else None


def _unique(folders: Iterable[Path | None]) -> list[Path]:
    out: list[Path] = []
    for folder in folders:
        if folder is not None and folder not in out:
            out.append(folder)
    return out


def _xdg(env: Mapping[str, str], name: str, fallback: Path) -> Path:
    return _env_path(env, name) or fallback


def _hf_locations(env: Mapping[str, str], home: Path) -> list[Path | None]:
    hf_home = _env_path(env, "HF_HOME")
    return [
        _env_path(env, "HF_HUB_CACHE"),
        _env_path(env, "HUGGINGFACE_HUB_CACHE"),
        hf_home / "hub" if hf_home else None,
        _xdg(env, "XDG_CACHE_HOME", home / ".cache") / "huggingface" / "hub",
        home / ".cache" / "huggingface" / "hub",
    ]


def _lm_studio_locations(env: Mapping[str, str], home: Path) -> list[Path | None]:
    homes = [_env_path(env, "LMSTUDIO_HOME"), _read_pointer(home / ".lmstudio-home-pointer"),
             home / ".lmstudio", home / ".cache" / "lm-studio"]
    folders: list[Path | None] = []
    for lm_home in homes:
        if lm_home is not None:
            folders += [_json_path(lm_home / "settings.json", "downloadsFolder"), lm_home / "models"]
    return folders


def _ollama_locations(env: Mapping[str, str], home: Path, system: str) -> list[Path | None]:
    service = OLLAMA_SERVICE_MODELS if system == "Linux" else None
    return [_env_path(env, "OLLAMA_MODELS"), home / ".ollama" / "models", service]


def _gpt4all_locations(env: Mapping[str, str], home: Path, system: str) -> list[Path | None]:
    setting = None
    if system == "Darwin":
        app_data = home / "Library" / "Application Support"
    elif system == "Windows":
        app_data = _xdg(env, "LOCALAPPDATA", home / "AppData" / "Local")
    else:
        app_data = _xdg(env, "XDG_DATA_HOME", home / ".local" / "share")
        config = _xdg(env, "XDG_CONFIG_HOME", home / ".config")
        setting = _ini_path(config / "nomic.ai" / "GPT4All.ini", "modelPath")
    return [setting, app_data / "nomic.ai" / "GPT4All", home / ".cache" / "gpt4all"]


def _jan_locations(env: Mapping[str, str], home: Path, system: str) -> list[Path | None]:
    if system == "Darwin":
        data = [home / "Library" / "Application Support" / "Jan" / "data"]
    elif system == "Windows":
        data = [_xdg(env, "APPDATA", home / "AppData" / "Roaming") / "Jan" / "data"]
    else:
        data = [_xdg(env, "XDG_DATA_HOME", home / ".local" / "share") / "Jan" / "data",
                _xdg(env, "XDG_CONFIG_HOME", home / ".config") / "Jan" / "data"]
    folders: list[Path | None] = []
    for folder in data:
        folders += [folder / "llamacpp" / "models", folder / "models"]
    return [*folders, home / "jan" / "models"]


def _llama_cpp_locations(env: Mapping[str, str], home: Path, system: str) -> list[Path | None]:
    if system == "Darwin":
        default = home / "Library" / "Caches" / "llama.cpp"
    elif system == "Windows":
        default = _xdg(env, "LOCALAPPDATA", home / "AppData" / "Local") / "llama.cpp"
    else:
        default = _xdg(env, "XDG_CACHE_HOME", home / ".cache") / "llama.cpp"
    return [_env_path(env, "LLAMA_CACHE"), default]


def _read_pointer(path: Path) -> Path | None:
    """LM Studio's ``~/.lmstudio-home-pointer``: one line, the path of its home."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return Path(text).expanduser() if text and "\n" not in text else None


def _json_path(path: Path, key: str) -> Path | None:
    value = _read_json(path)
    value = value.get(key) if isinstance(value, dict) else None
    return Path(value).expanduser() if isinstance(value, str) and value.strip() else None


def _ini_path(path: Path, key: str) -> Path | None:
    """``key=value`` from a QSettings INI file (configparser chokes on QSettings' own syntax)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            value = value.strip().strip('"')
            return Path(value).expanduser() if value else None
    return None


# --- discovery -------------------------------------------------------------------------------


def discover(locations: dict[str, list[Path]] | None = None) -> list[FoundModel]:
    """Every GGUF model in ``locations`` (default: ``default_locations()``), sorted by app and name."""
    locations = default_locations() if locations is None else locations
    unknown = sorted(set(locations) - set(APPS))
    if unknown:
        raise EnclaveError(f"Cannot search for models of {', '.join(map(repr, unknown))}: Enclave knows the "
                           f"folders of {', '.join(APPS)}.")
    found: list[FoundModel] = []
    seen: set[tuple[Path, ...]] = set()
    for app in APPS:
        for folder in locations.get(app, ()):
            root = _root(Path(folder))
            if root is None:
                continue
            for model in _SCANNERS[app](root):
                if model.files not in seen:
                    seen.add(model.files)
                    found.append(model)
    return sorted(found, key=lambda m: (APPS.index(m.app), m.name.casefold(), m.name, m.files))


def _root(folder: Path) -> Path | None:
    try:
        root = folder.expanduser().resolve(strict=True)
        return root if root.is_dir() else None
    except (OSError, RuntimeError):
        return None


# --- file-system helpers ---------------------------------------------------------------------


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as listing:
            return sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return []


def _inside(path: Path, root: Path) -> Path | None:
    """``path``'s real path when it exists and stays inside ``root`` (itself a real path)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # broken link, loop (RuntimeError before Python 3.13), no access
        return None
    return real if real.is_relative_to(root) else None


def _subdirs(folder: Path, root: Path) -> list[Path]:
    """Folders in ``folder``, hidden ones and links leaving ``root`` left out."""
    out = []
    for entry in _entries(folder):
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir and not entry.name.startswith(".") and _inside(Path(entry.path), root) is not None:
            out.append(Path(entry.path))
    return out


def _file_names(folder: Path) -> list[str]:
    """Names of what is not a folder in ``folder``: files, and links (broken ones too)."""
    out = []
    for entry in _entries(folder):
        try:
            if not entry.is_dir():
                out.append(entry.name)
        except OSError:
            continue
    return out


def _walk(top: Path, root: Path, depth: int, seen: set[Path] | None = None) -> Iterator[Path]:
    """``top`` and the folders under it, ``depth`` levels at most, each real folder once (a
    link to a folder already seen, such as a parent, is not entered again)."""
    seen = set() if seen is None else seen
    real = _inside(top, root)
    if real is None or real in seen:
        return
    seen.add(real)
    yield top
    if depth > 0:
        for sub in _subdirs(top, root):
            yield from _walk(sub, root, depth - 1, seen)


def _regular_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _is_gguf(path: Path) -> bool:
    """Regular file starting with the GGUF magic (never opens a pipe or device named .gguf)."""
    if not _regular_file(path):
        return False
    try:
        with path.open("rb") as file:
            return file.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except OSError:
        return False


def _size(paths: Iterable[Path]) -> int | None:
    try:
        return sum(path.stat().st_size for path in paths)
    except OSError:
        return None


def _read_json(path: Path) -> object:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_JSON_BYTES + 1)
        if len(data) > _MAX_JSON_BYTES:
            return None
        return json.loads(data)
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def _is_projector(name: str) -> bool:
    return name.lower().startswith("mmproj")


def _projector_in(folder: Path, names: Iterable[str], real: PathFilter, *, listed: bool = False) -> Path | None:
    """The vision projector kept in ``folder`` beside its models: an ``mmproj*.gguf`` (of
    several, an f16 one first, then by name). ``listed``: its path as the app lists it (a
    Hugging Face snapshot's link, whose name says what it is), else the real file."""
    candidates = sorted((n for n in names if _is_projector(n) and n.endswith(".gguf")),
                        key=lambda n: ("f16" not in n.lower() or "bf16" in n.lower(), n))
    for name in candidates:
        file = real(folder / name)
        if file is not None and _is_gguf(file):
            return folder / name if listed else file
    return None


# --- GGUF files and split models in one folder -----------------------------------------------


@dataclass(frozen=True)
class _Group:
    stem: str  # the file name without ".gguf" and the shard suffix
    listed: tuple[Path, ...]  # where the app lists the files (links not resolved)
    files: tuple[Path, ...]  # real paths
    size: int


def _gguf_groups(folder: Path, names: Iterable[str], real: PathFilter) -> list[_Group]:
    """The models among ``names`` in ``folder``: single files and complete split models.

    ``real`` maps a listed path to the real file to use, or None to skip it.
    """
    members: list[tuple[str, list[str]]] = []
    shards: dict[tuple[str, int], dict[int, str]] = {}
    for name in names:
        if not name.endswith(".gguf") or _is_projector(name):
            continue
        match = SHARD_NAME.match(name)
        if match is None:
            members.append((name[: -len(".gguf")], [name]))
        else:
            shards.setdefault((match["prefix"], int(match["count"])), {})[int(match["no"])] = name
    for (prefix, count), parts in shards.items():
        if count >= 1 and sorted(parts) == list(range(1, count + 1)):  # a missing shard: skip it all
            members.append((prefix, [parts[number] for number in range(1, count + 1)]))
    groups = (_group(folder, stem, files, real) for stem, files in members)
    return sorted((group for group in groups if group is not None), key=lambda group: group.listed)


def _group(folder: Path, stem: str, names: list[str], real: PathFilter) -> _Group | None:
    listed = tuple(folder / name for name in names)
    files = []
    for path in listed:
        file = real(path)
        if file is None or not _is_gguf(file):
            return None
        files.append(file)
    size = _size(files)
    return None if size is None else _Group(stem, listed, tuple(files), size)


def _within(root: Path) -> PathFilter:
    return lambda path: _inside(path, root)


# --- Hugging Face cache ----------------------------------------------------------------------


def _scan_hf(root: Path, app: str = HF) -> Iterator[FoundModel]:
    """``models--{org}--{name}/snapshots/{revision}/{path}.gguf``, links into ``blobs/``.

    Source: ``repo``, ``revision``, ``file`` (its path in the repo, first shard) and
    ``snapshot_file`` (the snapshot link of that file: a split model's blobs have hash names,
    so llama.cpp must be given this path to find the other shards beside it).
    """
    real = _hf_real(root)
    for repo_dir in _subdirs(root, root):
        if not repo_dir.name.startswith("models--") or repo_dir.name == "models--":
            continue
        repo = repo_dir.name[len("models--"):].replace("--", "/")
        for snapshot in _hf_snapshots(repo_dir, root):
            for folder in _walk(snapshot, root, _MAX_DEPTH):
                names = _file_names(folder)
                projector = _projector_in(folder, names, real, listed=True)
                for group in _gguf_groups(folder, names, real):
                    source = {"repo": repo, "revision": snapshot.name,
                              "file": group.listed[0].relative_to(snapshot).as_posix(),
                              "snapshot_file": str(group.listed[0])}
                    yield FoundModel(app, f"{repo}: {group.stem}", group.files, group.size, source, projector)


def _hf_real(root: Path) -> PathFilter:
    """Snapshot files: links into the cache's blobs, or copies (Windows without symlinks);
    never a blob still downloading."""
    def real(path: Path) -> Path | None:
        file = _inside(path, root)
        return None if file is None or file.name.endswith(".incomplete") else file
    return real


def _hf_snapshots(repo_dir: Path, root: Path) -> list[Path]:
    """Revisions a ref (``main`` first) points to come first, so they win when two revisions
    share a blob."""
    refs: dict[str, str] = {}
    for ref in ("main", *_file_names(repo_dir / "refs")):
        try:
            refs.setdefault((repo_dir / "refs" / ref).read_text(encoding="ascii").strip(), ref)
        except (OSError, UnicodeDecodeError):
            continue
    snapshots = _subdirs(repo_dir / "snapshots", root)
    return sorted(snapshots, key=lambda snap: (snap.name not in refs, refs.get(snap.name) != "main", snap.name))


# --- LM Studio -------------------------------------------------------------------------------


def _scan_lm_studio(root: Path) -> Iterator[FoundModel]:
    """``{publisher}/{repo}/{file}.gguf``, exactly two levels down. Source: ``repo``, ``file``."""
    for publisher in _subdirs(root, root):
        for repo_dir in _subdirs(publisher, root):
            repo = f"{publisher.name}/{repo_dir.name}"
            names = _file_names(repo_dir)
            projector = _projector_in(repo_dir, names, _within(root))
            for group in _gguf_groups(repo_dir, names, _within(root)):
                yield FoundModel(LM_STUDIO, f"{repo}: {group.stem}", group.files, group.size,
                                 {"repo": repo, "file": group.listed[0].name}, projector)


# --- Ollama ----------------------------------------------------------------------------------


def _scan_ollama(root: Path) -> Iterator[FoundModel]:
    """``manifests/{host}/{namespace}/{model}/{tag}`` (JSON) naming ``blobs/sha256-{hex}``.

    Source: ``model`` (as ``ollama run`` takes it) and ``digest`` of the model layer.
    """
    manifests = root / "manifests"
    for host in _subdirs(manifests, root):
        for namespace in _subdirs(host, root):
            for model in _subdirs(namespace, root):
                for tag in _file_names(model):
                    found = _ollama_model(root, model / tag, _ollama_name(host.name, namespace.name, model.name, tag))
                    if found is not None:
                        yield found


def _ollama_name(host: str, namespace: str, model: str, tag: str) -> str:
    if host != OLLAMA_REGISTRY:
        return f"{host}/{namespace}/{model}:{tag}"
    return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"


def _ollama_model(root: Path, manifest: Path, name: str) -> FoundModel | None:
    path = _inside(manifest, root)
    data = _read_json(path) if path is not None else None
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        return None
    digests = [layer.get("digest") for layer in layers
               if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER]
    if len(digests) != 1:  # several weight blobs cannot be loaded as one split model: skip
        return None
    blob = _ollama_blob(root, digests[0])
    size = _size([blob]) if blob is not None else None
    if blob is None or size is None or not _is_gguf(blob):
        return None
    projectors = [layer.get("digest") for layer in layers
                  if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_PROJECTOR_LAYER]
    projector = _ollama_blob(root, projectors[0]) if len(projectors) == 1 else None
    return FoundModel(OLLAMA, name, (blob,), size, {"model": name, "digest": digests[0]},
                      projector if projector is not None and _is_gguf(projector) else None)


def _ollama_blob(root: Path, digest: object) -> Path | None:
    """The blob a manifest's digest names, followed to its real path (None: none, or not a digest)."""
    match = _OLLAMA_DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:  # also keeps a hostile digest from naming a path outside blobs/
        return None
    try:  # a blob may be a link to another disk: followed wherever it goes
        return (root / "blobs" / f"sha256-{match['hex']}").resolve(strict=True)
    except (OSError, RuntimeError):
        return None


# --- GPT4All ---------------------------------------------------------------------------------


def _scan_gpt4all(root: Path) -> Iterator[FoundModel]:
    """``*.gguf`` directly in the folder; ``incomplete-*`` files are downloads under way.
    Source: ``file``."""
    names = [name for name in _file_names(root) if not name.startswith("incomplete-")]
    for group in _gguf_groups(root, names, _within(root)):
        yield FoundModel(GPT4ALL, group.stem, group.files, group.size, {"file": group.listed[0].name})


# --- Jan -------------------------------------------------------------------------------------


def _scan_jan(root: Path) -> Iterator[FoundModel]:
    """``{id}/*.gguf`` under a models folder, ``{id}`` one or more folders deep.

    Named by ``{id}`` when its folder holds one model (often ``model.gguf``), else
    ``{id}: {file}``. Source: ``model`` (the id), ``file``.
    """
    for folder in _walk(root, root, _MAX_DEPTH):
        names = _file_names(folder)
        groups = _gguf_groups(folder, names, _within(root))
        projector = _projector_in(folder, names, _within(root)) if folder != root else None
        for group in groups:
            model_id = folder.relative_to(root).as_posix() if folder != root else group.stem
            name = model_id if len(groups) == 1 or folder == root else f"{model_id}: {group.stem}"
            yield FoundModel(JAN, name, group.files, group.size, {"model": model_id, "file": group.listed[0].name},
                             projector)


# --- llama.cpp -------------------------------------------------------------------------------


def _scan_llama_cpp(root: Path) -> Iterator[FoundModel]:
    """``*.gguf`` directly in the cache, named ``{org}_{repo}_{file}.gguf`` by ``-hf``.

    Each download has a sidecar ``{file}.gguf.json`` with the URL it came from; when it is
    readable the model is named ``{org}/{repo}: {file}``, else by its file name. Source:
    ``file`` (the cached file's name), and ``repo`` and ``url`` from the sidecar. Folders in the
    Hugging Face cache layout (``models--*``) are searched as such too.
    """
    for group in _gguf_groups(root, _file_names(root), _within(root)):
        source = {"file": group.listed[0].name}
        name = group.stem
        origin = _llama_cpp_origin(group.listed[0])
        if origin is not None:
            repo, remote_file, url = origin
            source |= {"repo": repo, "url": url}
            remote = SHARD_NAME.match(remote_file)
            name = f"{repo}: {remote['prefix'] if remote else remote_file.removesuffix('.gguf')}"
        yield FoundModel(LLAMA_CPP, name, group.files, group.size, source)
    yield from _scan_hf(root, LLAMA_CPP)


def _llama_cpp_origin(file: Path) -> tuple[str, str, str] | None:
    """(repo, file name in the repo, url) from the sidecar's ``.../{org}/{repo}/resolve/{rev}/{path}`` URL."""
    data = _read_json(file.with_name(file.name + ".json"))
    url = data.get("url") if isinstance(data, dict) else None
    if not isinstance(url, str):
        return None
    parts = [unquote(part) for part in urlsplit(url).path.strip("/").split("/")]
    if len(parts) < 5 or parts[2] != "resolve" or not all(parts):
        return None
    return f"{parts[0]}/{parts[1]}", parts[-1], url


_SCANNERS: dict[str, Callable[[Path], Iterable[FoundModel]]] = {
    HF: _scan_hf,
    LM_STUDIO: _scan_lm_studio,
    OLLAMA: _scan_ollama,
    GPT4ALL: _scan_gpt4all,
    JAN: _scan_jan,
    LLAMA_CPP: _scan_llama_cpp,
}
