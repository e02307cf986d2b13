"""The organisation's policy: the file read (and refused when it is not valid), where it is
found, and each rule enforced through the services and through the ``enclave`` command."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from app import hub
from app.audit import os_user
from app.enforcement import Enforcer
from app.hashing import sha256_file
from app.ingest import ingest
from app.paths import app_paths
from app.policy import Policy, PolicyError, PolicyRefusal, load_policy, policy_in_force
from app.services import Services
from app.transfer import export_model
from inference.errors import EnclaveError
from inference.protocol import Failed, ModelSettings, Tokenize
from tests.cli import enclave as run_enclave
from tests.cli import one_error_line

OTHER_HASH = "ab" * 32


def write_policy(folder: Path, text: str, name: str = "policy.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def use_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put a policy in force through ENCLAVE_POLICY (what a deployment without a system folder does)."""
    def use(text: str) -> Path:
        path = write_policy(tmp_path / "admin", text)
        monkeypatch.setenv("ENCLAVE_POLICY", str(path))
        return path
    return use


def enclave(*args: str, home: Path, policy: Path | None) -> subprocess.CompletedProcess[str]:
    return run_enclave(*args, home=home, env={"ENCLAVE_POLICY": str(policy) if policy is not None else None})


# Reading the file ---------------------------------------------------------------------------------


def test_every_key_is_read(tmp_path: Path) -> None:
    path = write_policy(tmp_path, f"""
downloads = false
export = false
allowed_models = ["{'AB' * 32}", "{'cd' * 32}"]
data_dir = "/srv/enclave/{{user}}"
max_library_mb = 2.5
audit_log = "/var/log/enclave/audit.jsonl"
""")
    policy = load_policy(path)
    assert policy == Policy(source=path.absolute(), downloads=False, export=False,
                            allowed_models=frozenset({"ab" * 32, "cd" * 32}),
                            data_dir=Path(f"/srv/enclave/{os_user()}"), max_library_mb=2.5,
                            audit_log=Path("/var/log/enclave/audit.jsonl"))
    assert policy.managed_settings() == {"offline": True}
    assert dict(policy.rules())["allowed_models"] == "only 2 listed file hashes"


def test_an_empty_file_is_a_policy_that_allows_everything(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "# nothing decided yet\n"))
    assert policy.in_force and policy.downloads and policy.export and policy.allowed_models is None
    assert policy.managed_settings() == {} and policy.audit_path(tmp_path) is None
    assert load_policy(write_policy(tmp_path, "audit_log = true\n")).audit_path(tmp_path) == tmp_path / "audit.jsonl"


@pytest.mark.parametrize(("text", "problem"), [
    ("downloads = no", "Invalid value"),
    ("downloadz = false", "unknown key 'downloadz'"),
    ("[models]\nallowed = []", "unknown key 'models'"),
    ('downloads = "false"', "downloads: must be true or false"),
    ('allowed_models = ["1234"]', "allowed_models: '1234' is not a SHA-256 hash"),
    ('allowed_models = "' + "ab" * 32 + '"', "allowed_models: must be a list"),
    ('data_dir = "enclave-data"', "data_dir: 'enclave-data' must be an absolute path"),
    ("max_library_mb = 0", "max_library_mb: must be a positive number"),
    ("max_library_mb = true", "max_library_mb: must be a positive number"),
    ("audit_log = 1", "audit_log: must be true, false or a path"),
])
def test_a_file_that_is_not_valid_is_refused_naming_the_file_and_the_problem(tmp_path: Path, text: str,
                                                                            problem: str) -> None:
    path = write_policy(tmp_path, text)
    with pytest.raises(PolicyError, match="Enclave does not start") as caught:
        load_policy(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_an_unreadable_or_missing_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyError, match=r"binary\.toml is not valid"):
        load_policy(tmp_path / "binary.toml")
    monkeypatch.setenv("ENCLAVE_POLICY", str(tmp_path / "missing.toml"))  # named, so meant: fail closed
    with pytest.raises(PolicyError, match=r"missing\.toml is not valid"):
        policy_in_force()


# Which file is in force ---------------------------------------------------------------------------


def test_the_system_file_wins_and_enclave_policy_cannot_replace_it(tmp_path: Path, no_system_policy: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert not policy_in_force().in_force
    mine = write_policy(tmp_path / "user", "downloads = true\n")
    monkeypatch.setenv("ENCLAVE_POLICY", str(mine))
    assert policy_in_force().source == mine.absolute()  # no system file: the named one is in force
    write_policy(no_system_policy.parent, "downloads = false\n")
    assert policy_in_force().source == no_system_policy.absolute() and not policy_in_force().downloads
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "user"))  # no escape through the XDG variable
    assert policy_in_force().source == no_system_policy.absolute()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="needs root to give files away")
def test_a_system_policy_a_user_could_have_written_is_refused(no_system_policy: Path) -> None:
    path = write_policy(no_system_policy.parent, "downloads = true\n")
    path.chmod(0o644)
    no_system_policy.parent.chmod(0o755)
    assert policy_in_force().source == path.absolute()  # root's, and only root can change it
    for make_unsafe, undo, found in (
        (lambda: path.chmod(0o666), lambda: path.chmod(0o644), "writable by every user"),
        (lambda: os.chown(path, 65534, 65534), lambda: os.chown(path, 0, 0), "owned by user id 65534"),
        (lambda: os.chown(path.parent, 65534, 65534), lambda: os.chown(path.parent, 0, 0), "owned by user id"),
    ):
        make_unsafe()
        with pytest.raises(PolicyError, match=f"cannot be trusted: .*{found}"):
            policy_in_force()
        undo()
    assert policy_in_force().source == path.absolute()


def test_data_dir_wins_over_enclave_home(tmp_path: Path, use_policy, enclave_home: Path) -> None:
    assert app_paths().data == enclave_home.resolve() / "data"
    use_policy(f'data_dir = "{tmp_path}/org/{{user}}"\n')
    paths = app_paths()
    assert paths.data == (tmp_path / "org" / os_user()).resolve() / "data"
    assert paths.database.is_relative_to(tmp_path / "org")


# Each rule, through the services ------------------------------------------------------------------


def test_allow_list_refuses_import_and_load_of_other_models(use_policy, moe_model: Path, tmp_path: Path) -> None:
    use_policy(f'allowed_models = ["{OTHER_HASH}"]\n')
    with Services.open() as services:
        with pytest.raises(PolicyRefusal, match="not on your organisation's list of allowed models"):
            services.models.import_files([moe_model], "copy")
        assert services.models.all() == [] and not any(services.paths.models.rglob("*.gguf"))
        with pytest.raises(PolicyRefusal, match=f"SHA-256 {sha256_file(moe_model)} is not listed"):
            services.runtime.load(str(moe_model), ModelSettings(path=str(moe_model), vocab_only=True))
        assert services.runtime.worker.pid is None  # llama.cpp never saw it


def test_allow_listed_model_imports_and_loads(use_policy, moe_model: Path) -> None:
    use_policy(f'allowed_models = ["{sha256_file(moe_model)}"]\n')
    with Services.open() as services:
        model = services.models.import_files([moe_model], "in_place")
        outcome = services.runtime.load(model.id, ModelSettings(path=model.id, vocab_only=True))
        assert outcome.info.n_vocab > 0


def test_a_model_swapped_after_it_was_admitted_is_not_loaded_again(use_policy, moe_model: Path, dense_model: Path,
                                                                    tmp_path: Path) -> None:
    """The worker's reload after a crash, and the GUI's "Reload model", admit the file again."""
    path = tmp_path / "model.gguf"
    path.write_bytes(moe_model.read_bytes())
    use_policy(f'allowed_models = ["{sha256_file(moe_model)}"]\n')
    with Services.open() as services:
        runtime = services.runtime
        runtime.load(str(path), ModelSettings(path=str(path), vocab_only=True))
        path.write_bytes(dense_model.read_bytes())  # not on the list
        os.kill(runtime.worker.pid, signal.SIGKILL)
        events = list(runtime.worker.request(Tokenize("hello")))
        assert len(events) == 1 and isinstance(events[0], Failed) and events[0].kind == "error"
        assert "not on your organisation's list of allowed models" in events[0].message
        assert runtime.worker.pid is None and runtime.worker.settings is None  # llama.cpp never saw it
        with pytest.raises(PolicyRefusal):
            runtime.reload()


def test_a_model_swapped_while_it_loads_is_unloaded(use_policy, moe_model: Path, dense_model: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(moe_model.read_bytes())
    use_policy(f'allowed_models = ["{sha256_file(moe_model)}", "{sha256_file(dense_model)}"]\n')
    with Services.open() as services:
        runtime = services.runtime
        load = runtime.worker.load

        def swapped_during_load(settings: ModelSettings) -> object:
            info = load(settings)
            path.write_bytes(dense_model.read_bytes())
            return info

        monkeypatch.setattr(runtime.worker, "load", swapped_during_load)
        with pytest.raises(EnclaveError, match="changed on disk while it was loading"):
            runtime.load(str(path), ModelSettings(path=str(path), vocab_only=True))
        assert runtime.model is None and runtime.worker.pid is None


def test_every_shard_must_be_listed() -> None:
    enforcer = Enforcer(Policy(source=Path("p.toml"), allowed_models=frozenset({"aa" * 32})))
    enforcer.check_model("one", ["aa" * 32], "load")
    with pytest.raises(PolicyRefusal, match="bb"):
        enforcer.check_model("split", ["aa" * 32, "bb" * 32], "load")


def test_exports_refused(use_policy, moe_model: Path, tmp_path: Path) -> None:
    use_policy("export = false\n")
    with Services.open() as services:
        conversation = services.conversations.create(title="t", model=None)
        with pytest.raises(PolicyRefusal, match=r"Exporting \(conversation\) is turned off by your organisation"):
            services.export_conversation(conversation.id, "md", "stdout")
        model = services.models.import_files([moe_model], "in_place")
        with pytest.raises(PolicyRefusal, match=r"Exporting \(model\)"):
            export_model(services.models, model, tmp_path / "stick")
        assert not (tmp_path / "stick").exists()


def test_library_size_limit(use_policy, tmp_path: Path) -> None:
    use_policy("max_library_mb = 0.0001\n")  # 100 characters
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("a" * 60)
    (folder / "b.txt").write_text("b" * 60)
    (folder / "c.txt").write_text("c" * 30)
    with Services.open() as services:
        library = services.libraries.create("small")
        report = ingest(services.libraries, library, [folder])
        assert report.added == [str(folder / "a.txt"), str(folder / "c.txt")]
        assert [(Path(p).name, reason) for p, reason, _ in report.failed] == [("b.txt", "policy")]
        assert "past 0.0001 million characters of text" in report.failed[0][2]
        assert services.libraries.get("small").chars == 90


def test_downloads_refused_before_any_connection(use_policy) -> None:
    use_policy("downloads = false\n")
    with Services.open() as services:
        assert services.current_settings().offline  # every 'may I go online?' in the app says no
        assert not services.settings.load().offline  # the user's own setting is left as it was
    for attempt in (lambda: hub.search("qwen"), lambda: hub.list_gguf("a/b")):
        with pytest.raises(PolicyRefusal, match="Downloads are turned off by your organisation"):
            attempt()


# Through the command ------------------------------------------------------------------------------


def test_cli_refuses_to_start_under_a_policy_that_is_not_valid(tmp_path: Path, enclave_home: Path) -> None:
    bad = write_policy(tmp_path, "downloads = false\nexports = false\n")
    line = one_error_line(enclave("history", "list", home=enclave_home, policy=bad))
    assert str(bad) in line and "unknown key 'exports'" in line
    assert str(bad) in one_error_line(enclave("policy", "check", str(bad), home=enclave_home, policy=None))
    good = write_policy(tmp_path, "export = false\n", "draft.toml")
    checked = enclave("policy", "check", str(good), home=enclave_home, policy=bad)  # works beside a broken one
    assert checked.returncode == 0 and "export          turned off" in checked.stdout


def test_cli_doctor_and_policy_show_the_policy(tmp_path: Path, enclave_home: Path) -> None:
    shown = enclave("policy", home=enclave_home, policy=None)
    assert shown.returncode == 0 and shown.stdout.startswith("no policy")
    policy = write_policy(tmp_path, f'downloads = false\ndata_dir = "{tmp_path}/org"\n')
    doctor = enclave("doctor", home=enclave_home, policy=policy)
    assert doctor.returncode == 0, doctor.stderr
    assert f"Policy: from {policy}" in doctor.stdout and "downloads       turned off" in doctor.stdout
    assert f"database  {tmp_path}/org/data/enclave.db" in doctor.stdout


def test_cli_enforces_each_rule(tmp_path: Path, enclave_home: Path, moe_model: Path) -> None:
    policy = write_policy(tmp_path, f'downloads = false\nexport = false\nmax_library_mb = 0.00005\n'
                                    f'allowed_models = ["{OTHER_HASH}"]\n')
    for command in (("models", "pull", "org/repo"), ("models", "search", "qwen")):
        assert "Downloads are turned off by your organisation" in one_error_line(
            enclave(*command, home=enclave_home, policy=policy))
    assert "offline is set by your organisation's policy" in one_error_line(
        enclave("settings", "set", "offline", "false", home=enclave_home, policy=policy))
    ran = one_error_line(enclave("run", str(moe_model), "hi", home=enclave_home, policy=policy))
    assert "not on your organisation's list of allowed models" in ran and str(policy) in ran
    assert "not on your organisation's list" in one_error_line(
        enclave("models", "import", str(moe_model), "--in-place", home=enclave_home, policy=policy))
    assert "Exporting (conversation)" in one_error_line(
        enclave("history", "export", "1", home=enclave_home, policy=policy))
    (tmp_path / "long.txt").write_text("x" * 80)
    added = enclave("library", "add", "L", str(tmp_path / "long.txt"), "--create", home=enclave_home, policy=policy)
    assert added.returncode == 0 and "1 could not be read" in added.stdout
    assert "the most your organisation allows" in added.stdout


def test_the_allow_list_covers_a_vision_models_projector(use_policy, dense_model: Path, projector: Path) -> None:
    """libmtmd parses the projector as llama.cpp parses the model: it must be listed too."""
    settings = ModelSettings(path=str(dense_model), n_ctx=256, projector_path=str(projector), projector_gpu=False)
    use_policy(f'allowed_models = ["{sha256_file(dense_model)}"]\n')
    with Services.open() as services:
        with pytest.raises(PolicyRefusal, match=f"SHA-256 {sha256_file(projector)} is not listed"):
            services.runtime.load(str(dense_model), settings)
        assert services.runtime.worker.pid is None  # llama.cpp never saw either file
    use_policy(f'allowed_models = ["{sha256_file(dense_model)}", "{sha256_file(projector)}"]\n')
    with Services.open() as services:
        assert services.runtime.load(str(dense_model), settings).info.reads_images
