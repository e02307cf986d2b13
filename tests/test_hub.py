"""Downloads from the hub, against a fake hub on 127.0.0.1: nothing here reaches the internet."""

from __future__ import annotations

import itertools
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants as hf_constants
import keyring
import pytest
from huggingface_hub.utils import close_session
from keyring.backends import fail

import app.hub.fetch as fetch_module
from app.enforcement import Enforcer
from app.hub import (
    Choice,
    DownloadCancelled,
    HubError,
    HubRepo,
    OfflineError,
    choose,
    delete_token,
    download,
    get_token,
    list_gguf,
    offline_enabled,
    quant_label,
    safe_target,
    save_token,
    search,
)
from app.hub.api import require_network
from app.hub.errors import NoNetworkError
from app.hub.repos import hub_file
from app.policy import Policy, PolicyRefusal
from app.services import Services
from tests.fake_hub import COMMIT, FakeHub, FakeRepo, point_huggingface_hub_at
from tests.memory_keyring import MemoryKeyring
from tests.tiny_models import DENSE, write_tiny_model

REPO = "org/Model-GGUF"
SINGLE = "Model-Q4_K_M.gguf"
SHARDS = ("Q8_0/Model-Q8_0-00001-of-00002.gguf", "Q8_0/Model-Q8_0-00002-of-00002.gguf")
TOKEN = "hf_secret_token"

# Records name lookups and connects while a test asks for it (audit hooks cannot be removed,
# so this one is installed once and stays idle otherwise).
_SOCKET_EVENTS: list[str] = []
_RECORDING: list[bool] = []


def _record_sockets(event: str, args: tuple) -> None:
    if _RECORDING and event in ("socket.connect", "socket.getaddrinfo"):
        _SOCKET_EVENTS.append(f"{event} {args[1:]!r}" if event == "socket.connect" else f"{event} {args[0]!r}")


sys.addaudithook(_record_sockets)


def _payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="session")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_model(tmp_path_factory.mktemp("hub") / "tiny.gguf", DENSE).read_bytes()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, gguf_bytes: bytes) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        point_huggingface_hub_at(fake.url, monkeypatch)
        monkeypatch.setattr(fetch_module, "RETRY_DELAY", 0.0)
        fake.add(FakeRepo(REPO, {
            SINGLE: gguf_bytes,
            SHARDS[0]: _payload(1, 200_000),
            SHARDS[1]: _payload(2, 150_000),
            "Model-IQ4_XS.gguf": _payload(3, 120_000),
            "mmproj-Model-F16.gguf": _payload(4, 40_000),
        }, downloads=500, likes=7))
        fake.add(FakeRepo("org/Gated-GGUF", {"Gated-Q4_K_M.gguf": _payload(5, 80_000)}, token=TOKEN, downloads=90))
        fake.add(FakeRepo("org/Private-GGUF", {"Private-Q8_0.gguf": _payload(6, 50_000)}, token=TOKEN, private=True))
        yield fake
    close_session()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "models" / "org--Model-GGUF"


# -- names, listing, choice ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "label"), [
    ("Qwen3-30B-A3B-Q4_K_M.gguf", "Q4_K_M"),
    ("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
    ("IQ4_XS/model-00001-of-00003.gguf", "IQ4_XS"),
    ("llama-2-7b.Q8_0.gguf", "Q8_0"),
    ("gpt-oss-20b-mxfp4.gguf", "MXFP4"),
    ("gpt-oss-120b-MXFP4_MOE.gguf", "MXFP4_MOE"),
    ("Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("phi-4-bf16.gguf", "BF16"),
    ("Llama-3.2-1B-Instruct-f16.gguf", "F16"),
    ("gemma-3-4b-it-qat-Q4_0.gguf", "Q4_0"),
    ("model-IQ2_XXS.gguf", "IQ2_XXS"),
    ("model-TQ1_0.gguf", "TQ1_0"),
    ("Qwen2.5-7B-Instruct.gguf", None),
])
def test_quant_label(name: str, label: str | None) -> None:
    assert quant_label(name) == label


def test_list_gguf_gives_gguf_files_with_sizes_hashes_quants_and_the_commit(hub: FakeHub, gguf_bytes: bytes) -> None:
    repo = list_gguf(REPO)
    assert repo.repo_id == REPO and repo.revision == COMMIT
    names = [f.name for f in repo.files]
    assert "README.md" not in names and sorted(names) == names and len(names) == 5
    single = next(f for f in repo.files if f.name == SINGLE)
    assert single.size == len(gguf_bytes) and single.quant == "Q4_K_M" and single.shard is None
    assert single.sha256 and len(single.sha256) == 64
    shards = [f for f in repo.files if f.name in SHARDS]
    assert [f.shard for f in shards] == [(1, 2), (2, 2)] and {f.quant for f in shards} == {"Q8_0"}
    (request,) = hub.requests
    assert request.path == f"/api/models/{REPO}" and request.query.get("blobs") == ["true"]
    assert "authorization" not in request.headers


def _repo(*names: str) -> HubRepo:
    return HubRepo("org/x", COMMIT, tuple(hub_file(n, 100, None) for n in names))


ALL = ("Model-IQ4_XS.gguf", SINGLE, *SHARDS, "mmproj-Model-F16.gguf")


def test_choose_defaults_to_q4_k_m_else_the_only_model() -> None:
    assert [f.name for f in choose(_repo(*ALL)).files] == [SINGLE]
    assert [f.name for f in choose(_repo("Model-Q8_0.gguf", "mmproj-Model-F16.gguf")).files] == ["Model-Q8_0.gguf"]


def test_choose_by_quant_or_file_takes_all_shards_together() -> None:
    assert [f.name for f in choose(_repo(*ALL), quant="q8_0").files] == list(SHARDS)
    assert [f.name for f in choose(_repo(*reversed(ALL)), file=SHARDS[1]).files] == list(SHARDS)
    assert [f.name for f in choose(_repo(*ALL), file="Model-IQ4_XS.gguf").files] == ["Model-IQ4_XS.gguf"]


def test_choose_explains_what_is_available() -> None:
    with pytest.raises(HubError, match=r"no Q2_K file\. Quants available: IQ4_XS, Q4_K_M, Q8_0\. "):
        choose(_repo(*ALL), quant="Q2_K")
    with pytest.raises(HubError, match=r"several models and no Q4_K_M\. Choose a quant: IQ4_XS, Q8_0"):
        choose(_repo("Model-IQ4_XS.gguf", *SHARDS))
    with pytest.raises(HubError, match=r"no file named 'nope\.gguf'"):
        choose(_repo(*ALL), file="nope.gguf")
    with pytest.raises(HubError, match="several Q4_K_M models"):
        choose(_repo("a-Q4_K_M.gguf", "b-Q4_K_M.gguf"))
    with pytest.raises(HubError, match=r"lacks shard\(s\) 2 of 3"):
        choose(_repo("m-Q8_0-00001-of-00003.gguf", "m-Q8_0-00003-of-00003.gguf"))
    with pytest.raises(HubError, match="no GGUF model files"):
        choose(_repo())


# -- downloads ----------------------------------------------------------------------------


def test_download_reports_progress_and_verifies(hub: FakeHub, dest: Path, gguf_bytes: bytes) -> None:
    repo = list_gguf(REPO)
    calls: list[tuple[int, int]] = []
    got = download(repo, choose(repo), dest, on_progress=lambda done, total: calls.append((done, total)))
    (path, f), = got.files
    assert path == dest.resolve() / SINGLE and path.read_bytes() == gguf_bytes and f.name == SINGLE
    assert (got.repo_id, got.revision) == (REPO, COMMIT)
    assert calls[-1] == (len(gguf_bytes), len(gguf_bytes)) and len(calls) > 1
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    assert not (dest / ".enclave-partial").exists()
    assert all(f"/resolve/{COMMIT}/" in r.path for r in hub.requests if "/resolve/" in r.path)  # pinned
    assert not any("agent-harnesses" in r.path for r in hub.requests)  # telemetry stays off
    assert hf_constants.HF_HUB_DISABLE_TELEMETRY is True
    assert all("enclave/" in r.headers["user-agent"] for r in hub.requests)

    again: list[tuple[int, int]] = []
    download(repo, choose(repo), dest, on_progress=lambda done, total: again.append((done, total)))
    assert len(hub.gets(SINGLE)) == 1 and again[-1] == (len(gguf_bytes), len(gguf_bytes))  # checked, not fetched


def test_a_model_off_the_allow_list_is_refused_before_a_byte_comes_down(
        hub: FakeHub, dest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'allowed_models = ["{"ab" * 32}"]\n')
    monkeypatch.setenv("ENCLAVE_POLICY", str(policy))
    repo = list_gguf(REPO)
    with pytest.raises(PolicyRefusal, match="not on your organisation's list of allowed models"):
        download(repo, choose(repo), dest)
    assert hub.gets() == [] and not dest.exists()


def test_pull_model_registers_and_a_refused_registration_leaves_no_files(
        hub: FakeHub, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with Services.open() as services:
        chosen: list[str] = []
        model = services.pull_model(REPO, file=SINGLE, on_choice=lambda c: chosen.extend(f.name for f in c.files))
        assert chosen == [SINGLE] and model.origin == "downloaded" and model.source["revision"] == COMMIT
        assert Path(model.files[0].path).read_bytes() == gguf_bytes
        services.models.remove(model, delete_files=True)
        # the hub's hash passed (or the hub gave none); the bytes' own check at registration refuses
        services.models.enforcer = Enforcer(Policy(allowed_models=frozenset({"ab" * 32})))
        with pytest.raises(PolicyRefusal):
            services.pull_model(REPO, file=SINGLE)
        assert services.models.all() == [] and not any(services.paths.models.rglob("*.gguf"))


def test_split_model_shards_download_together(hub: FakeHub, dest: Path) -> None:
    repo = list_gguf(REPO)
    got = download(repo, choose(repo, quant="Q8_0"), dest)
    assert [f.name for _, f in got.files] == list(SHARDS)
    data = hub.repos[REPO].files
    assert all(path == dest.resolve() / f.name and path.read_bytes() == data[f.name] for path, f in got.files)


def test_a_dropped_connection_resumes_with_a_range_request(hub: FakeHub, dest: Path, gguf_bytes: bytes) -> None:
    repo = list_gguf(REPO)
    hub.drops = [100_000]
    (path, _), = download(repo, choose(repo), dest).files
    assert path.read_bytes() == gguf_bytes
    first, second = hub.gets(SINGLE)
    assert "range" not in first.headers and second.headers["range"] == "bytes=100000-"


def test_a_failed_download_keeps_its_bytes_for_the_next_call(hub: FakeHub, dest: Path, gguf_bytes: bytes) -> None:
    repo = list_gguf(REPO)
    hub.drops = [100_000] + [0] * fetch_module.ATTEMPTS  # some bytes, then ATTEMPTS tries that bring none
    with pytest.raises(HubError, match="run the download again to resume"):
        download(repo, choose(repo), dest)
    assert hub.drops == [] and len(hub.gets(SINGLE)) == 1 + fetch_module.ATTEMPTS
    assert not (dest / SINGLE).exists()
    (partial,) = (dest / ".enclave-partial").iterdir()
    assert partial.stat().st_size == 100_000
    (path, _), = download(repo, choose(repo), dest).files
    assert path.read_bytes() == gguf_bytes and hub.gets(SINGLE)[-1].headers["range"] == "bytes=100000-"
    assert not (dest / ".enclave-partial").exists()


def test_cancel_keeps_no_half_file_and_resumes_later(hub: FakeHub, dest: Path, gguf_bytes: bytes) -> None:
    repo = list_gguf(REPO)
    calls: list[int] = []
    with pytest.raises(DownloadCancelled, match="cancelled"):
        download(repo, choose(repo), dest, on_progress=lambda done, total: calls.append(done),
                 cancelled=lambda: bool(calls))
    assert not (dest / SINGLE).exists()
    (partial,) = (dest / ".enclave-partial").iterdir()
    kept = partial.stat().st_size
    assert 0 < kept < len(gguf_bytes)
    (path, _), = download(repo, choose(repo), dest).files
    assert path.read_bytes() == gguf_bytes and hub.gets(SINGLE)[-1].headers["range"] == f"bytes={kept}-"


def test_a_server_that_ignores_range_sends_the_file_again(hub: FakeHub, dest: Path, gguf_bytes: bytes) -> None:
    repo = list_gguf(REPO)
    calls: list[int] = []
    with pytest.raises(DownloadCancelled):
        download(repo, choose(repo), dest, on_progress=lambda done, total: calls.append(done),
                 cancelled=lambda: bool(calls))
    hub.ignore_range = True
    seen: list[int] = []
    (path, _), = download(repo, choose(repo), dest, on_progress=lambda done, total: seen.append(done)).files
    assert path.read_bytes() == gguf_bytes and "range" in hub.gets(SINGLE)[-1].headers
    assert seen[-1] == len(gguf_bytes)


def test_a_hash_mismatch_is_refused_and_the_bytes_deleted(hub: FakeHub, dest: Path) -> None:
    repo = list_gguf(REPO)
    hub.corrupt.add(SINGLE)
    with pytest.raises(HubError, match="corrupt or tampered with"):
        download(repo, choose(repo), dest)
    assert not (dest / SINGLE).exists()
    assert not any((dest / ".enclave-partial").glob("*"))


def test_path_traversal_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(FakeRepo("org/Evil-GGUF", {"../../evil.gguf": b"GGUF" * 100}))
    repo = list_gguf("org/Evil-GGUF")
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(HubError, match=r"Refusing to download '\.\./\.\./evil\.gguf'"):
        download(repo, choose(repo, file="../../evil.gguf"), dest)
    assert not any("/resolve/" in r.path for r in hub.requests)
    assert not list(tmp_path.rglob("evil.gguf")) and not dest.exists()


@pytest.mark.parametrize("name", ["/etc/evil.gguf", "a\\..\\evil.gguf", "C:evil.gguf", "a/../../evil.gguf", "..",
                                  "a//b.gguf", "./a.gguf", "evil\x00.gguf", ".enclave-partial/x.gguf"])
def test_safe_target_refuses_names_that_leave_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(HubError, match="Refusing to download"):
        safe_target(tmp_path, name)


def test_safe_target_refuses_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "link").symlink_to(tmp_path)
    with pytest.raises(HubError):
        safe_target(tmp_path / "dest", "link/evil.gguf")
    assert safe_target(tmp_path / "dest", "Q4/m.gguf") == (tmp_path / "dest").resolve() / "Q4" / "m.gguf"


def test_not_enough_disk_space_is_refused_before_downloading(hub: FakeHub, dest: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    repo = list_gguf(REPO)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 1000))
    with pytest.raises(HubError, match=r"Not enough disk space .* needs 0\.001 GiB and 0\.000 GiB is free"):
        download(repo, choose(repo), dest)
    assert not any("/resolve/" in r.path for r in hub.requests)


# -- gated and private repositories, tokens ------------------------------------------------


def test_a_gated_repo_needs_the_token_from_the_keyring(hub: FakeHub, dest: Path) -> None:
    repo = list_gguf("org/Gated-GGUF")  # a gated repo's listing is public, its files are not
    with pytest.raises(HubError) as refused:
        download(repo, choose(repo), dest)
    message = str(refused.value)
    assert "gated or private" in message and "enclave auth login" in message
    assert "huggingface.co/settings/tokens" in message and "accept the model's terms" in message
    save_token("hf_wrong")
    with pytest.raises(HubError, match="refused the saved token"):
        download(repo, choose(repo), dest)
    save_token(TOKEN)
    (path, _), = download(repo, choose(repo), dest).files
    assert path.read_bytes() == hub.repos["org/Gated-GGUF"].files["Gated-Q4_K_M.gguf"]
    assert hub.gets()[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_a_private_repo_cannot_be_listed_without_a_token(hub: FakeHub) -> None:
    with pytest.raises(HubError, match=r"gated or private.*HTTP 401.*enclave auth login"):
        list_gguf("org/Private-GGUF")
    assert [f.name for f in list_gguf("org/Private-GGUF", token=TOKEN).files] == ["Private-Q8_0.gguf"]


def test_no_token_is_sent_that_enclave_did_not_give(hub: FakeHub, dest: Path, monkeypatch: pytest.MonkeyPatch,
                                                    gguf_bytes: bytes) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    repo = list_gguf(REPO)
    download(repo, choose(repo), dest)
    assert not any("authorization" in r.headers for r in hub.requests)


def test_unknown_repo_and_revision(hub: FakeHub) -> None:
    with pytest.raises(HubError, match=r"gated or private.*check the name too"):  # the hub answers 401 to both
        list_gguf("org/Missing-GGUF")
    with pytest.raises(HubError, match="no such revision"):
        list_gguf(REPO, revision="v9")
    with pytest.raises(HubError, match="not a valid repository name"):
        list_gguf("not a repo/../x")


def test_tokens_live_in_the_keyring(memory_keyring: MemoryKeyring) -> None:
    assert get_token() is None
    save_token("  hf_abc  ")
    assert get_token() == "hf_abc" and memory_keyring.passwords == {("enclave", "huggingface"): "hf_abc"}
    delete_token()
    delete_token()  # forgetting twice is fine
    assert get_token() is None
    with pytest.raises(HubError, match="not a Hugging Face token"):
        save_token("   ")


def test_without_a_keyring_tokens_are_refused_plainly(hub: FakeHub, dest: Path) -> None:
    keyring.set_keyring(fail.Keyring())
    for action in (lambda: save_token("hf_abc"), get_token, delete_token):
        with pytest.raises(HubError, match=r"no usable keyring.*never writes tokens to a file"):
            action()
    assert get_token(quiet=True) is None
    repo = list_gguf(REPO)  # a public download needs no keyring
    assert download(repo, choose(repo, quant="IQ4_XS"), dest).files


# -- offline ------------------------------------------------------------------------------


def _offline_calls(repo: HubRepo, dest: Path, offline: bool) -> list:
    return [lambda: list_gguf(REPO, offline=offline), lambda: search("model", offline=offline),
            lambda: download(repo, Choice(repo.files), dest, offline=offline)]


@pytest.mark.parametrize("how", ["setting", "ENCLAVE_OFFLINE"])
def test_offline_refuses_before_opening_any_socket(hub: FakeHub, dest: Path, monkeypatch: pytest.MonkeyPatch,
                                                   how: str) -> None:
    if how == "ENCLAVE_OFFLINE":
        monkeypatch.setenv("ENCLAVE_OFFLINE", "1")
    repo = HubRepo(REPO, COMMIT, (hub_file(SINGLE, 1000, "0" * 64),))
    _SOCKET_EVENTS.clear()
    _RECORDING.append(True)
    try:
        for call in _offline_calls(repo, dest, offline=how == "setting"):
            with pytest.raises(OfflineError, match="Enclave is set to work offline"):
                call()
    finally:
        _RECORDING.clear()
    assert _SOCKET_EVENTS == [] and hub.requests == [] and not dest.exists()


@pytest.mark.parametrize(("value", "on"), [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)])
def test_offline_enabled(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    monkeypatch.setenv("ENCLAVE_OFFLINE", value)
    assert offline_enabled() is on


def test_huggingface_hub_offline_mode_is_an_offline_error(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        list_gguf(REPO)
    assert hub.requests == []


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A machine without network: every name lookup fails, as in a network namespace."""
    looked_up: list[str] = []

    def fail_lookup(host: str, *args: object, **kwargs: object) -> None:
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", fail_lookup)
    return looked_up


@pytest.mark.parametrize("call", [lambda: list_gguf(REPO), lambda: search("GGUF")], ids=["list", "search"])
def test_no_network_is_one_plain_error_at_once_without_retries(hub: FakeHub, no_dns: list[str], call) -> None:
    with pytest.raises(NoNetworkError, match=r"^No network: 127\.0\.0\.1 cannot be found \(Temporary failure in "
                                             r"name resolution\).*enclave models import PATH"):
        call()
    assert no_dns == ["127.0.0.1"] and hub.requests == []


def test_behind_a_proxy_names_are_left_to_the_proxy(no_dns: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    require_network()
    assert no_dns == []


def test_importing_enclave_loads_no_http_stack() -> None:
    code = ("import sys, os, app.hub\n"
            "assert not {'huggingface_hub', 'httpx2', 'keyring'} & set(sys.modules), sys.modules.keys()\n"
            "assert os.environ['HF_HUB_DISABLE_TELEMETRY'] == '1'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- search -------------------------------------------------------------------------------


def test_search_with_a_refused_token_says_what_to_do(hub: FakeHub) -> None:
    save_token("hf_expired")
    with pytest.raises(HubError, match=r"refused the saved token while searching.*enclave auth login"):
        search("GGUF")


def test_search_lists_gguf_repos_most_downloaded_first(hub: FakeHub) -> None:
    hub.add(FakeRepo("org/Model-safetensors", {}, downloads=10_000, gguf=False))
    hub.add(FakeRepo("org/Popular-GGUF", {"Popular-Q4_K_M.gguf": _payload(7, 1_000)}, downloads=5_000))
    found = search("GGUF", limit=5)  # the fake hub answers unsorted: 500, 90, 5,000 downloads
    assert [r["id"] for r in found] == ["org/Popular-GGUF", REPO, "org/Gated-GGUF"]
    assert found[1] == {"id": REPO, "downloads": 500, "likes": 7, "last_modified": "2025-05-01T12:00:00+00:00",
                        "gated": False}
    assert found[2]["gated"] is True
    (request,) = hub.requests
    assert request.query["search"] == ["GGUF"] and request.query["filter"] == ["gguf"]
    assert request.query["limit"] == ["5"] and request.query["sort"] == ["downloads"]  # the hub's top 5, too
