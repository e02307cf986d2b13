"""Finding models other apps downloaded: fake trees of each app's layout, and the folders
``default_locations`` picks on each OS. Never reads the real home: HOME points into tmp_path
and every app's environment variable is cleared."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import app.discovery as discovery
from app.discovery import (
    GPT4ALL,
    HF,
    JAN,
    LLAMA_CPP,
    LM_STUDIO,
    OLLAMA,
    FoundModel,
    default_locations,
    discover,
)
from inference.errors import EnclaveError

APP_ENV = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME",
           "XDG_CONFIG_HOME", "LMSTUDIO_HOME", "OLLAMA_MODELS", "LLAMA_CACHE", "LOCALAPPDATA", "APPDATA",
           "USERPROFILE")
REV = "a" * 40
OLD_REV = "0" * 40  # sorts first, but no ref names it


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home, and none of the apps' variables: nothing here can reach the real one."""
    fake = tmp_path.resolve() / "home"
    fake.mkdir()
    monkeypatch.setenv("HOME", str(fake))
    for name in APP_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(discovery, "OLLAMA_SERVICE_MODELS", tmp_path / "no-ollama-service")
    return fake


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path.resolve() / "trees"


def gguf(path: Path, size: int = 64) -> Path:
    """A file that passes the magic check: b"GGUF", version 3, zeros."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(size - 8))
    return path


def decoy(path: Path, data: bytes = b"<html>Sign in to download</html>") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def link(path: Path, target: str | Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


def found(app: str, name: str, files: list[Path], source: dict[str, str], projector: Path | None = None
          ) -> FoundModel:
    return FoundModel(app, name, tuple(files), sum(f.stat().st_size for f in files), source, projector)


def only(app: str, folder: Path) -> list[FoundModel]:
    return discover({app: [folder]})


# --- Hugging Face cache ----------------------------------------------------------------------


def test_hugging_face_cache(root: Path) -> None:
    hub = root / "hub"
    repo = hub / "models--Qwen--Qwen3-30B-A3B-GGUF"
    blobs, snap = repo / "blobs", repo / "snapshots" / REV
    q4 = gguf(blobs / "1111", 100)
    q8 = [gguf(blobs / "2221", 200), gguf(blobs / "2222", 300)]
    gguf(blobs / "3331"), gguf(blobs / "3332")  # BF16 shards 1 and 2 of 3
    gguf(blobs / "4444", 50)  # the projector
    decoy(blobs / "5555")
    gguf(blobs / "6666.incomplete", 40)
    outside = gguf(root / "elsewhere" / "outside.gguf")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)

    link(snap / "Qwen3-30B-A3B-Q4_K_M.gguf", "../../blobs/1111")
    link(snap / "Q8_0" / "Qwen3-30B-A3B-Q8_0-00001-of-00002.gguf", "../../../blobs/2221")
    link(snap / "Q8_0" / "Qwen3-30B-A3B-Q8_0-00002-of-00002.gguf", "../../../blobs/2222")
    link(snap / "BF16" / "Qwen3-30B-A3B-BF16-00001-of-00003.gguf", "../../../blobs/3331")  # part 3 missing
    link(snap / "BF16" / "Qwen3-30B-A3B-BF16-00002-of-00003.gguf", "../../../blobs/3332")
    link(snap / "mmproj-F16.gguf", "../../blobs/4444")
    link(snap / "README.md", "../../blobs/5555")
    link(snap / "login-page.gguf", "../../blobs/5555")
    link(snap / "broken.gguf", "../../blobs/9999")
    link(snap / "downloading.gguf", "../../blobs/6666.incomplete")
    link(snap / "escape.gguf", outside)
    link(repo / "snapshots" / OLD_REV / "Qwen3-30B-A3B-Q4_K_M.gguf", "../../blobs/1111")  # same blob
    copy = gguf(hub / "models--TheBloke--TinyLlama-GGUF" / "snapshots" / REV / "tinyllama.Q2_K.gguf", 30)
    gguf(hub / "datasets--someone--data" / "snapshots" / REV / "data.gguf")
    gguf(hub / "models--" / "snapshots" / REV / "nameless.gguf")

    assert only(HF, hub) == [
        found(HF, "Qwen/Qwen3-30B-A3B-GGUF: Qwen3-30B-A3B-Q4_K_M", [q4],
              {"repo": "Qwen/Qwen3-30B-A3B-GGUF", "revision": REV, "file": "Qwen3-30B-A3B-Q4_K_M.gguf",
               "snapshot_file": str(snap / "Qwen3-30B-A3B-Q4_K_M.gguf")},
              snap / "mmproj-F16.gguf"),  # the projector beside it, by its snapshot link's name
        found(HF, "Qwen/Qwen3-30B-A3B-GGUF: Qwen3-30B-A3B-Q8_0", q8,
              {"repo": "Qwen/Qwen3-30B-A3B-GGUF", "revision": REV,
               "file": "Q8_0/Qwen3-30B-A3B-Q8_0-00001-of-00002.gguf",
               "snapshot_file": str(snap / "Q8_0" / "Qwen3-30B-A3B-Q8_0-00001-of-00002.gguf")}),
        found(HF, "TheBloke/TinyLlama-GGUF: tinyllama.Q2_K", [copy],
              {"repo": "TheBloke/TinyLlama-GGUF", "revision": REV, "file": "tinyllama.Q2_K.gguf",
               "snapshot_file": str(copy)}),
    ]
    assert only(HF, hub)[1].size == 500 and only(HF, hub)[1].path == q8[0]


def test_a_hugging_face_cache_reached_through_a_link_is_searched(root: Path) -> None:
    real_hub = root / "big-disk" / "hub"
    snap = real_hub / "models--org--repo" / "snapshots" / REV
    blob = gguf(real_hub / "models--org--repo" / "blobs" / "1111")
    link(snap / "m.gguf", "../../blobs/1111")
    hub = link(root / "hub", real_hub)
    assert [(m.name, m.files) for m in only(HF, hub)] == [("org/repo: m", (blob,))]


# --- LM Studio -------------------------------------------------------------------------------


def test_lm_studio(root: Path) -> None:
    models = root / "lmstudio" / "models"
    repo = models / "lmstudio-community" / "Qwen3-8B-GGUF"
    q4 = gguf(repo / "Qwen3-8B-Q4_K_M.gguf", 120)
    gguf(repo / "mmproj-Qwen3-8B-F16.gguf")
    decoy(repo / "Qwen3-8B-Q8_0.gguf", b"PK\x03\x04 a zip")
    decoy(repo / "README.md", b"GGUF but not named .gguf")
    big = [gguf(models / "unsloth" / "Big-GGUF" / f"Big-UD-Q2_K_XL-0000{i}-of-00002.gguf", 70 + i) for i in (1, 2)]
    gguf(models / "unsloth" / "Big-GGUF" / "Big-Q8_0-00001-of-00002.gguf")  # part 2 missing
    gguf(models / "stray.gguf")  # LM Studio lists only publisher/repo/file
    gguf(models / "a" / "b" / "c" / "too-deep.gguf")
    link(models / "someone" / "linked" / "outside.gguf", gguf(root / "elsewhere" / "outside.gguf"))
    link(models / "someone" / "broken" / "broken.gguf", root / "nowhere.gguf")
    link(models / "outside-folder", root / "elsewhere")

    assert only(LM_STUDIO, models) == [
        found(LM_STUDIO, "lmstudio-community/Qwen3-8B-GGUF: Qwen3-8B-Q4_K_M", [q4],
              {"repo": "lmstudio-community/Qwen3-8B-GGUF", "file": "Qwen3-8B-Q4_K_M.gguf"},
              repo / "mmproj-Qwen3-8B-F16.gguf"),
        found(LM_STUDIO, "unsloth/Big-GGUF: Big-UD-Q2_K_XL", big,
              {"repo": "unsloth/Big-GGUF", "file": "Big-UD-Q2_K_XL-00001-of-00002.gguf"}),
    ]


# --- Ollama ----------------------------------------------------------------------------------


def ollama_blob(models: Path, data: bytes) -> tuple[str, Path]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = models / "blobs" / digest.replace(":", "-")
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return digest, blob


def manifest(models: Path, name: str, *layers: tuple[str, str]) -> Path:
    path = models / "manifests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "c" * 64},
        "layers": [{"mediaType": media, "digest": digest, "size": 1} for media, digest in layers],
    }))
    return path


def test_ollama(root: Path) -> None:
    models = root / "ollama" / "models"
    model = "application/vnd.ollama.image.model"
    llama, llama_blob = ollama_blob(models, b"GGUF" + bytes(92))
    mine, mine_blob = ollama_blob(models, b"GGUF" + bytes(10))
    qwen, qwen_blob = ollama_blob(models, b"GGUF" + bytes(20))
    template, _ = ollama_blob(models, b"{{ .Prompt }}")
    weird, _ = ollama_blob(models, b"\x00\x01 not a gguf")
    manifest(models, "registry.ollama.ai/library/llama3.1/8b",
             (model, llama), ("application/vnd.ollama.image.template", template))
    manifest(models, "registry.ollama.ai/library/llama3.1/latest", (model, llama))  # the same blob
    manifest(models, "registry.ollama.ai/someone/mine/q4", (model, mine))
    manifest(models, "hf.co/bartowski/Qwen3-GGUF/Q4_K_M", (model, qwen))
    manifest(models, "registry.ollama.ai/library/gone/1b", (model, "sha256:" + "d" * 64))  # blob missing
    manifest(models, "registry.ollama.ai/library/notgguf/1b", (model, weird))
    manifest(models, "registry.ollama.ai/library/template-only/1b", (model, template))
    manifest(models, "registry.ollama.ai/library/hostile/1b", (model, "sha256:../../../../etc/passwd"))
    manifest(models, "registry.ollama.ai/library/two/1b", (model, mine), (model, qwen))
    decoy(models / "manifests" / "registry.ollama.ai" / "library" / "garbled" / "1b", b"{not json")
    decoy(models / "manifests" / "registry.ollama.ai" / "library" / "list" / "1b", b"[1, 2]")

    assert only(OLLAMA, models) == [
        found(OLLAMA, "hf.co/bartowski/Qwen3-GGUF:Q4_K_M", [qwen_blob],
              {"model": "hf.co/bartowski/Qwen3-GGUF:Q4_K_M", "digest": qwen}),
        found(OLLAMA, "llama3.1:8b", [llama_blob], {"model": "llama3.1:8b", "digest": llama}),
        found(OLLAMA, "someone/mine:q4", [mine_blob], {"model": "someone/mine:q4", "digest": mine}),
    ]
    assert only(OLLAMA, models)[1].size == 96


def test_an_ollama_blob_may_link_to_another_disk(root: Path) -> None:
    models = root / "ollama" / "models"
    data = b"GGUF" + bytes(60)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    elsewhere = decoy(root / "other-disk" / "blob", data)
    link(models / "blobs" / digest.replace(":", "-"), elsewhere)
    manifest(models, "registry.ollama.ai/library/tiny/1b", ("application/vnd.ollama.image.model", digest))
    assert only(OLLAMA, models) == [found(OLLAMA, "tiny:1b", [elsewhere], {"model": "tiny:1b", "digest": digest})]


# --- GPT4All, Jan, llama.cpp -----------------------------------------------------------------


def test_gpt4all(root: Path) -> None:
    folder = root / "GPT4All"
    llama = gguf(folder / "Llama-3.2-3B-Instruct-Q4_0.gguf", 80)
    gguf(folder / "incomplete-Phi-3-mini-4k-instruct.Q4_0.gguf")  # a download under way
    decoy(folder / "notes.gguf", b"just text")
    decoy(folder / "localdocs_v2.db", b"SQLite format 3\x00")
    gguf(folder / "sub" / "nested.gguf")  # GPT4All lists only its folder itself
    link(folder / "dangling.gguf", folder / "gone.gguf")
    assert only(GPT4ALL, folder) == [
        found(GPT4ALL, "Llama-3.2-3B-Instruct-Q4_0", [llama], {"file": "Llama-3.2-3B-Instruct-Q4_0.gguf"}),
    ]


def test_jan(root: Path) -> None:
    new = root / "Jan" / "data" / "llamacpp" / "models"
    qwen = gguf(new / "unsloth" / "Qwen3-4B-GGUF" / "model.gguf", 90)
    (new / "unsloth" / "Qwen3-4B-GGUF" / "model.yml").write_text("model_path: unsloth/Qwen3-4B-GGUF/model.gguf\n")
    gguf(new / "unsloth" / "Qwen3-4B-GGUF" / "mmproj.gguf")
    two = [gguf(new / "pair" / "pair-Q4_K_M.gguf"), gguf(new / "pair" / "pair-Q8_0.gguf", 100)]
    link(new / "loop", ".")  # a link back to the top is not walked again
    legacy = root / "home-jan" / "models"
    tiny = gguf(legacy / "tinyllama-1.1b" / "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", 40)
    (legacy / "tinyllama-1.1b" / "model.json").write_text("{}")
    decoy(legacy / "broken-download" / "model.gguf", b"")

    assert discover({JAN: [new, legacy]}) == [
        found(JAN, "pair: pair-Q4_K_M", [two[0]], {"model": "pair", "file": "pair-Q4_K_M.gguf"}),
        found(JAN, "pair: pair-Q8_0", [two[1]], {"model": "pair", "file": "pair-Q8_0.gguf"}),
        found(JAN, "tinyllama-1.1b", [tiny],
              {"model": "tinyllama-1.1b", "file": "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"}),
        found(JAN, "unsloth/Qwen3-4B-GGUF", [qwen], {"model": "unsloth/Qwen3-4B-GGUF", "file": "model.gguf"},
              qwen.with_name("mmproj.gguf")),
    ]


def test_llama_cpp_cache(root: Path) -> None:
    cache = root / "llama.cpp"
    url = "https://huggingface.co/bartowski/Qwen_Qwen3-8B-GGUF/resolve/main/Qwen_Qwen3-8B-Q4_K_M.gguf"
    qwen = gguf(cache / "bartowski_Qwen_Qwen3-8B-GGUF_Qwen_Qwen3-8B-Q4_K_M.gguf", 64)
    (cache / f"{qwen.name}.json").write_text(json.dumps({"etag": '"x"', "lastModified": "y", "url": url}))
    split_url = "https://huggingface.co/org/Big-GGUF/resolve/main/Q2/Big-Q2-{}-of-00002.gguf"
    split = [gguf(cache / f"org_Big-GGUF_Big-Q2-0000{i}-of-00002.gguf", 50 * i) for i in (1, 2)]
    for i, shard in enumerate(split, start=1):
        (cache / f"{shard.name}.json").write_text(json.dumps({"url": split_url.format(f"0000{i}")}))
    plain = gguf(cache / "my-own-model.gguf", 72)
    (cache / "my-own-model.gguf.json").write_text("{not json")
    gguf(cache / "org_repo_Half-00001-of-00002.gguf")  # part 2 missing
    decoy(cache / "org_repo_file.gguf.downloadInProgress", b"GGUF")
    decoy(cache / "manifest=org=repo=latest.json", b"{}")

    assert only(LLAMA_CPP, cache) == [
        found(LLAMA_CPP, "bartowski/Qwen_Qwen3-8B-GGUF: Qwen_Qwen3-8B-Q4_K_M", [qwen],
              {"file": qwen.name, "repo": "bartowski/Qwen_Qwen3-8B-GGUF", "url": url}),
        found(LLAMA_CPP, "my-own-model", [plain], {"file": "my-own-model.gguf"}),
        found(LLAMA_CPP, "org/Big-GGUF: Big-Q2", split,
              {"file": split[0].name, "repo": "org/Big-GGUF", "url": split_url.format("00001")}),
    ]


# --- discover as a whole ---------------------------------------------------------------------


def test_models_come_in_app_order_then_by_name_and_a_file_is_listed_once(root: Path) -> None:
    shared = gguf(root / "shared" / "b.gguf")
    gguf(root / "shared" / "A.gguf")
    gpt4all_only = gguf(root / "gpt4all" / "z.gguf")
    locations = {LLAMA_CPP: [root / "shared"], GPT4ALL: [root / "gpt4all", root / "shared"]}
    assert [(m.app, m.name) for m in discover(locations)] == [
        (GPT4ALL, "A"), (GPT4ALL, "b"), (GPT4ALL, "z"),  # the shared folder went to the first app
    ]
    assert {m.path for m in discover(locations)} == {shared, gpt4all_only, root / "shared" / "A.gguf"}


def test_missing_unreadable_and_odd_locations_are_skipped(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = gguf(root / "gpt4all" / "good.gguf")
    locked = root / "lmstudio" / "locked"
    gguf(locked / "repo" / "m.gguf")
    gguf(root / "lmstudio" / "open" / "repo" / "m.gguf", 99)
    a_file = gguf(root / "a-file.gguf")
    scandir = os.scandir

    def refusing(path: os.PathLike[str] | str = ".") -> object:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(discovery.os, "scandir", refusing)
    models = discover({
        GPT4ALL: [root / "missing", a_file, root / "gpt4all"],
        LM_STUDIO: [root / "lmstudio"],
        OLLAMA: [root / "missing-too"],
    })
    assert [(m.app, m.name, m.size) for m in models] == [
        (LM_STUDIO, "open/repo: m", 99), (GPT4ALL, "good", good.stat().st_size)]


def test_an_unknown_app_is_an_error() -> None:
    with pytest.raises(EnclaveError, match="'Kobold'"):
        discover({"Kobold": []})


def test_discover_uses_the_default_locations(home: Path) -> None:
    hub = home / ".cache" / "huggingface" / "hub" / "models--org--repo"
    blob = gguf(hub / "blobs" / "1111")
    link(hub / "snapshots" / REV / "m-Q4_K_M.gguf", "../../blobs/1111")
    models = home / ".ollama" / "models"
    digest, ollama = ollama_blob(models, b"GGUF" + bytes(12))
    manifest(models, "registry.ollama.ai/library/tiny/1b", ("application/vnd.ollama.image.model", digest))
    assert [(m.app, m.name, m.files) for m in discover()] == [
        (HF, "org/repo: m-Q4_K_M", (blob,)), (OLLAMA, "tiny:1b", (ollama,))]


def test_found_models_can_be_hashed(root: Path) -> None:
    gguf(root / "g" / "m.gguf")
    assert len(set(discover({GPT4ALL: [root / "g"]}) * 2)) == 1


# --- default_locations -----------------------------------------------------------------------


def test_default_locations_on_linux(home: Path) -> None:
    assert default_locations(system="Linux") == {
        HF: [home / ".cache/huggingface/hub"],
        LM_STUDIO: [home / ".lmstudio/models", home / ".cache/lm-studio/models"],
        OLLAMA: [home / ".ollama/models", discovery.OLLAMA_SERVICE_MODELS],
        GPT4ALL: [home / ".local/share/nomic.ai/GPT4All", home / ".cache/gpt4all"],
        JAN: [home / ".local/share/Jan/data/llamacpp/models", home / ".local/share/Jan/data/models",
              home / ".config/Jan/data/llamacpp/models", home / ".config/Jan/data/models", home / "jan/models"],
        LLAMA_CPP: [home / ".cache/llama.cpp"],
    }


def test_default_locations_honour_the_apps_variables(home: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_CACHE", "HF_HOME", "OLLAMA_MODELS", "LLAMA_CACHE", "LMSTUDIO_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xcache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdata"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xconfig"))
    places = default_locations(system="Linux")
    assert places[HF] == [tmp_path / "HF_HUB_CACHE", tmp_path / "HF_HOME/hub", tmp_path / "xcache/huggingface/hub",
                          home / ".cache/huggingface/hub"]
    assert places[OLLAMA][:2] == [tmp_path / "OLLAMA_MODELS", home / ".ollama/models"]
    assert places[LLAMA_CPP] == [tmp_path / "LLAMA_CACHE", tmp_path / "xcache/llama.cpp"]
    assert places[LM_STUDIO][0] == tmp_path / "LMSTUDIO_HOME/models"
    assert places[GPT4ALL][0] == tmp_path / "xdata/nomic.ai/GPT4All"
    assert places[JAN][:3] == [tmp_path / "xdata/Jan/data/llamacpp/models", tmp_path / "xdata/Jan/data/models",
                               tmp_path / "xconfig/Jan/data/llamacpp/models"]


def test_default_locations_read_the_apps_settings(home: Path, tmp_path: Path) -> None:
    lm_home = tmp_path / "LM Studio home"
    (home / ".lmstudio-home-pointer").write_text(f"{lm_home}\n")
    lm_home.mkdir()
    (lm_home / "settings.json").write_text(json.dumps({"downloadsFolder": str(tmp_path / "lm-downloads")}))
    (home / ".lmstudio").mkdir()
    (home / ".lmstudio" / "settings.json").write_text("{broken")
    ini = home / ".config" / "nomic.ai" / "GPT4All.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(f"[General]\nchatTheme=Dark\nmodelPath={tmp_path / 'gpt4all-models'}/\n")
    places = default_locations(system="Linux")
    assert places[LM_STUDIO] == [tmp_path / "lm-downloads", lm_home / "models", home / ".lmstudio/models",
                                 home / ".cache/lm-studio/models"]
    assert places[GPT4ALL] == [tmp_path / "gpt4all-models", home / ".local/share/nomic.ai/GPT4All",
                               home / ".cache/gpt4all"]


def test_default_locations_on_macos(tmp_path: Path) -> None:
    mac = tmp_path / "Users" / "ann"
    places = default_locations(system="Darwin", env={"HOME": str(mac)})
    support = mac / "Library/Application Support"
    assert places[GPT4ALL] == [support / "nomic.ai/GPT4All", mac / ".cache/gpt4all"]
    assert places[JAN] == [support / "Jan/data/llamacpp/models", support / "Jan/data/models", mac / "jan/models"]
    assert places[LLAMA_CPP] == [mac / "Library/Caches/llama.cpp"]
    assert places[OLLAMA] == [mac / ".ollama/models"]
    assert places[HF] == [mac / ".cache/huggingface/hub"]


def test_default_locations_on_windows(tmp_path: Path) -> None:
    user = tmp_path / "Users" / "ann"
    env = {"USERPROFILE": str(user), "LOCALAPPDATA": str(user / "AppData/Local"),
           "APPDATA": str(user / "AppData/Roaming"), "HOME": str(tmp_path / "msys-home")}
    places = default_locations(system="Windows", env=env)
    assert places[GPT4ALL] == [user / "AppData/Local/nomic.ai/GPT4All", user / ".cache/gpt4all"]
    assert places[JAN] == [user / "AppData/Roaming/Jan/data/llamacpp/models", user / "AppData/Roaming/Jan/data/models",
                           user / "jan/models"]
    assert places[LLAMA_CPP] == [user / "AppData/Local/llama.cpp"]
    assert places[LM_STUDIO] == [user / ".lmstudio/models", user / ".cache/lm-studio/models"]
    assert places[OLLAMA] == [user / ".ollama/models"]
