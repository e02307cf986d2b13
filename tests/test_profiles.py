"""Model profiles: one saved configuration per model, and every front end loads by it.

The plan a user picks on the Models page is the plan chat, library questions and
``enclave run`` load, asserted on what the worker loaded and on llama.cpp's own log.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.chat import ContextRaised, LibraryContextNeed, ReplyDelta
from app.cli.run import describe_stats
from app.ingest import ingest
from app.profiles import DraftModel, ModelProfile, load_request
from app.services import Services
from app.settings import Settings
from inference.errors import EnclaveError
from inference.gguf_info import inspect_gguf
from inference.planner import draft_size
from inference.protocol import Done, Stats, TensorOverride
from tests.cli import enclave, one_error_line
from ui.chat_view import ChatPage
from ui.models_page import ModelsPage
from ui.tasks import TaskRunner

# Profile values and the loads they make ------------------------------------------------------


def test_a_profile_round_trips_through_json_and_keeps_only_what_is_set() -> None:
    profile = ModelProfile(n_ctx=2048, type_k="q8_0", type_v="q8_0", cpu_moe_layers=3, temperature=0.0,
                           tensor_overrides=(TensorOverride(r"blk\.0\..*", "CPU"),), system_prompt="Be brief.")
    assert ModelProfile.from_json(profile.to_json()) == profile
    assert set(profile.changes()) == {"n_ctx", "type_k", "type_v", "cpu_moe_layers", "temperature",
                                      "tensor_overrides", "system_prompt"}
    assert ModelProfile.from_json("{}") == ModelProfile()


def test_the_same_profile_makes_the_same_load_request() -> None:
    settings = Settings(context_length=8192, threads=3)
    profile = ModelProfile(n_ctx=4096, type_k="q4_0", cpu_moe_layers=2, flash_attn=None)
    first = load_request(profile, settings, trained_ctx=32768)
    assert first == load_request(ModelProfile.from_json(profile.to_json()), settings, trained_ctx=32768)
    assert first.planned is not None
    assert (first.planned.n_ctx, first.planned.type_k, first.planned.type_v) == (4096, "q4_0", "q4_0")
    assert first.planned.cpu_moe_layers == 2 and first.planned.flash_attn is True
    assert first.settings.n_threads == 3


def test_unset_fields_follow_the_settings_and_the_trained_context_caps() -> None:
    settings = Settings(context_length=8192)
    assert load_request(ModelProfile(), settings, trained_ctx=32768).planned.n_ctx == 8192  # type: ignore[union-attr]
    assert load_request(ModelProfile(), settings, trained_ctx=4096).planned.n_ctx == 4096  # type: ignore[union-attr]
    assert load_request(ModelProfile(n_ctx=0), settings).planned.n_ctx is None  # type: ignore[union-attr]
    assert load_request(ModelProfile(n_ctx=2048), settings, n_ctx=6144).settings.n_ctx == 6144


def test_gpu_layers_by_hand_load_without_a_plan() -> None:
    manual = load_request(ModelProfile(n_gpu_layers=-1, type_k="q8_0",
                                       tensor_overrides=(TensorOverride("exps", "CPU"),)), Settings())
    assert manual.planned is None
    assert manual.settings.n_gpu_layers == -1 and manual.settings.flash_attn is True  # quantized V needs it
    assert manual.settings.tensor_overrides == (TensorOverride("exps", "CPU"),)


@pytest.mark.parametrize("bad", [{"n_ctx": 100}, {"temperature": 9.0}, {"type_k": "q2_k"}, {"threads": 0}])
def test_values_out_of_range_are_refused_with_the_setting_named(services: Services, moe_model: Path,
                                                                bad: dict) -> None:
    with pytest.raises(EnclaveError, match=next(iter(bad))):
        services.configure_model(str(moe_model), **bad)
    assert services.profiles.all() == {}


def test_a_registered_model_has_one_profile_by_id_name_or_file(services: Services, moe_model: Path) -> None:
    model = services.models.import_files([moe_model], "in_place")
    services.configure_model(model.id, n_ctx=2048)
    assert services.profile_key(str(moe_model)) == services.profile_key(model.name) == model.id
    assert services.profile(str(moe_model)).n_ctx == 2048
    assert list(services.profiles.all()) == [model.id]
    services.remove_model(model.id)  # a removed model's profile goes with it
    assert services.profiles.all() == {}


# The CLI -------------------------------------------------------------------------------------


def test_models_config_shows_sets_and_resets_the_profile(enclave_home: Path, moe_model: Path) -> None:
    shown = enclave("models", "config", str(moe_model), "--ctx", "2048", "--kv-type", "q8_0", "--temperature", "0",
                    "-ot", r"blk\.0\.ffn_.*_exps=CPU", home=enclave_home)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"n_ctx\s+2048", shown.stdout) and re.search(r"type_v\s+q8_0", shown.stdout)
    with Services.open() as services:
        saved = services.profile(str(moe_model))
    assert saved == ModelProfile(n_ctx=2048, type_k="q8_0", type_v="q8_0", temperature=0.0,
                                 tensor_overrides=(TensorOverride(r"blk\.0\.ffn_.*_exps", "CPU"),))
    reset = enclave("models", "config", str(moe_model), "--reset", "n_ctx", home=enclave_home)
    assert re.search(r"n_ctx\s+\(default\)", reset.stdout), reset.stdout
    with Services.open() as services:
        assert services.profile(str(moe_model)).n_ctx is None and services.profile(str(moe_model)).type_k == "q8_0"
    assert "no setting ctx" in enclave("models", "config", str(moe_model), "--reset", "ctx", home=enclave_home).stderr
    assert "n_ctx" in one_error_line(enclave("models", "config", str(moe_model), "--ctx", "100", home=enclave_home))


# One plan, every front end -------------------------------------------------------------------


def worker_logged(log: str) -> tuple[int, str, str]:
    """The context and KV cache types llama.cpp reports for the last context it made."""
    cells, k, v = re.findall(r"llama_kv_cache: size = .*?(\d+) cells.*K \((\w+)\):.*V \((\w+)\):", log)[-1]
    return int(cells), k, v


@pytest.fixture
def library_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, topic in enumerate(["apples", "the planner"]):
        (folder / f"{i}.txt").write_text(f"Document {i} is about {topic}. " * 2)  # fits 1,536 tokens, counted exactly
    return folder


def test_the_plan_picked_on_the_models_page_is_what_chat_library_and_run_load(
        qtbot: QtBot, services: Services, moe_model: Path, enclave_home: Path, library_folder: Path) -> None:
    services.settings.set("threads", 2)
    page = ModelsPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    page.import_paths([moe_model], mode="in_place")
    model_id = page.table_model.model_at(0).id  # type: ignore[union-attr]
    services.settings.set("default_model", model_id)
    view = page.plan_view
    qtbot.waitUntil(lambda: view.plan is not None, timeout=30_000)
    view.set_context(1536)
    view.kv_combo.setCurrentText("q8_0")
    view.set_cpu_moe_layers(2)
    with qtbot.waitSignal(view.loaded, timeout=60_000):
        view.load_button.click()
    picked = services.runtime.worker.settings
    assert picked is not None and (picked.n_ctx, picked.type_k, picked.type_v) == (1536, "q8_0", "q8_0")
    plan = services.runtime.last_load.plan  # type: ignore[union-attr]
    assert plan is not None and plan.n_ctx == 1536 and plan.type_k == "q8_0"
    assert services.profile(model_id) == ModelProfile(n_ctx=1536, type_k="q8_0", type_v="q8_0", flash_attn=True,
                                                      cpu_moe_layers=2)
    services.configure_model(model_id, max_tokens=6, temperature=0.0)  # sampling is the profile's too
    pid = services.runtime.worker.pid

    chat = ChatPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(chat)
    chat.composer.setPlainText("hello")
    chat.submit()
    reply = services.conversations.messages(chat.conversation_id)[-1]  # type: ignore[arg-type]
    assert reply.status == "complete" and reply.completion_tokens == 6  # the profile's max_tokens
    assert services.runtime.worker.settings == picked and services.runtime.worker.pid == pid  # not loaded again

    library = services.libraries.create("notes")
    ingest(services.libraries, library, [library_folder])
    chat.new_conversation(library.id)
    chat.ask_library_context = lambda need: pytest.fail(f"asked about {need}")  # type: ignore[method-assign]
    chat.composer.setPlainText("What is document 1 about?")
    chat.submit()
    answer = services.conversations.messages(chat.conversation_id)[-1]  # type: ignore[arg-type]
    assert answer.status == "complete" and (answer.context_note or "").startswith(
        "Read the whole library: 2 documents")
    assert services.runtime.worker.settings == picked and services.runtime.worker.pid == pid

    log = enclave_home / "logs" / "llama.log"
    before = log.stat().st_size
    ran = enclave("run", model_id, "hello", "--stats", home=enclave_home)
    assert ran.returncode == 0, ran.stderr
    assert worker_logged(log.read_text(errors="replace")[before:]) == (1536, "q8_0", "q8_0")
    assert re.search(r"generated: 6 tokens", ran.stderr), ran.stderr  # the profile's max_tokens

    before = log.stat().st_size
    once = enclave("run", model_id, "hello", "--ctx", "1024", "--kv-type", "f16", home=enclave_home)
    assert once.returncode == 0, once.stderr
    assert worker_logged(log.read_text(errors="replace")[before:]) == (1024, "f16", "f16")
    assert services.profile(model_id).n_ctx == 1536  # a run's flags change that run only


def test_a_library_longer_than_the_profile_is_asked_about_in_the_window(
        qtbot: QtBot, services: Services, moe_model: Path, library_folder: Path) -> None:
    model = services.models.import_files([moe_model], "in_place")
    for key, value in {"default_model": model.id, "threads": 2, "max_tokens": 4, "temperature": 0.0}.items():
        services.settings.set(key, value)
    services.configure_model(model.id, n_ctx=512)
    library = services.libraries.create("notes")
    ingest(services.libraries, library, [library_folder])
    asked: list[LibraryContextNeed] = []

    def page_answering(answer: str) -> ChatPage:
        page = ChatPage(services, TaskRunner(synchronous=True))
        qtbot.addWidget(page)
        page.ask_library_context = lambda need: asked.append(need) or answer  # type: ignore[method-assign]
        page.new_conversation(library.id)
        page.composer.setPlainText("What is document 0 about?")
        page.submit()
        return page

    page_answering("keep")
    assert asked[-1].profile_ctx == 512 and asked[-1].needed > 512
    assert services.runtime.worker.settings.n_ctx == 512  # type: ignore[union-attr]
    assert services.profile(model.id).n_ctx == 512

    page_answering("raise")
    needed = asked[-1].needed
    assert services.profile(model.id).n_ctx == needed
    assert services.runtime.worker.settings.n_ctx == needed  # type: ignore[union-attr]
    assert len(asked) == 2


def test_the_cli_says_when_a_library_gets_more_context_than_the_profile(
        enclave_home: Path, moe_model: Path, library_folder: Path) -> None:
    with Services.open() as services:
        for key, value in {"threads": 2, "max_tokens": 4, "temperature": 0.0}.items():
            services.settings.set(key, value)
        services.configure_model(str(moe_model), n_ctx=512)
        ingest(services.libraries, services.libraries.create("notes"), [library_folder])
        conversation = services.chat.start(model=str(moe_model), library_id=services.libraries.get("notes").id)
        events = list(services.chat.send(conversation.id, "What is document 0 about?"))
        raised = next(e for e in events if isinstance(e, ContextRaised))
        assert raised.profile_ctx == 512 and services.runtime.worker.settings.n_ctx == raised.n_ctx > 512  # type: ignore[union-attr]
        assert any(isinstance(e, ReplyDelta) for e in events)
    asked = enclave("ask", "What is document 1 about?", "--library", "notes", "--model", str(moe_model),
                    home=enclave_home)
    assert asked.returncode == 0, asked.stderr
    said = re.search(r"This library needs a context of ([\d,]+) tokens; the profile of \S+ asks for 512", asked.stderr)
    assert said is not None, asked.stderr
    used = int(said.group(1).replace(",", ""))
    assert used > 512 and f"enclave models config {moe_model} --ctx {used}" in asked.stderr
    assert f"(context {used:,})" in asked.stderr  # what the answer was given is what was said


def test_run_reads_a_database_made_before_profiles(enclave_home: Path, moe_model: Path) -> None:
    with Services.open() as services:
        database = services.paths.database
    with sqlite3.connect(database) as db:  # as an older Enclave left it: no profiles table
        db.execute("DROP TABLE model_profiles")
        db.execute("DELETE FROM _sqlite_migrations WHERE name = '0007_model_profiles'")
    ran = enclave("run", str(moe_model), "hello", "--max-tokens", "3", "--temperature", "0", "--ctx", "512",
                  home=enclave_home)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip()  # it answered


def test_what_cannot_be_a_profile_is_refused_in_one_line(enclave_home: Path, moe_model: Path,
                                                          tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    assert "no model file" in one_error_line(enclave("models", "config", str(missing), "--ctx", "2048",
                                                     home=enclave_home))
    assert "n_ctx" in one_error_line(enclave("run", str(moe_model), "hello", "--ctx", "100", home=enclave_home))
    both = enclave("run", str(moe_model), "hello", "--plan", "auto", "--gpu-layers", "2", home=enclave_home)
    assert both.returncode == 2 and "--gpu-layers places layers by hand" in both.stderr
    with Services.open() as services:
        assert services.profiles.all() == {}


# The draft model (speculative decoding) ------------------------------------------------------


def test_a_draft_model_is_a_profile_field_that_round_trips() -> None:
    profile = ModelProfile(draft_model="qwen3-0.6b", n_ctx=2048)
    assert ModelProfile.from_json(profile.to_json()) == profile
    assert profile.changes() == {"draft_model": "qwen3-0.6b", "n_ctx": 2048}
    assert ModelProfile.from_json("{}").draft_model is None


def test_a_profiles_draft_goes_into_the_load_and_the_plan(dense_model: Path) -> None:
    shape = inspect_gguf(dense_model).shape
    draft = DraftModel(str(dense_model), shape)
    planned = load_request(ModelProfile(draft_model="d"), Settings(), draft=draft)
    assert planned.settings.draft_path == str(dense_model)
    assert planned.planned is not None and planned.planned.draft == draft_size(shape)
    manual = load_request(ModelProfile(draft_model="d", n_gpu_layers=-1), Settings(), draft=draft)
    assert manual.settings.draft_path == str(dense_model) and manual.settings.draft_gpu_layers == -1
    on_cpu = load_request(ModelProfile(draft_model="d", n_gpu_layers=0), Settings(), draft=draft)
    assert on_cpu.settings.draft_gpu_layers == 0
    off = load_request(ModelProfile(draft_model="d"), Settings(drafting=False), draft=draft)
    assert off.settings.draft_path is None and off.planned is not None and off.planned.draft is None
    assert load_request(ModelProfile(), Settings()).settings.draft_path is None


def test_a_draft_is_found_by_name_or_path_and_its_size_planned(services: Services, moe_model: Path,
                                                              dense_model: Path) -> None:
    registered = services.models.import_files([dense_model], "in_place")
    services.configure_model(str(moe_model), draft_model=registered.name)
    request = services.profile_request(str(moe_model))
    assert request is not None and request.draft == draft_size(inspect_gguf(dense_model).shape)
    loaded = services.runtime.draft_for(services.profile(str(moe_model)), services.current_settings())
    assert loaded is not None and Path(loaded.path) == dense_model.resolve()
    by_path = services.runtime.draft_for(ModelProfile(draft_model=str(dense_model)), services.current_settings())
    assert by_path is not None and by_path.path == loaded.path
    assert [name for _, name in services.draft_choices(str(moe_model))] == [registered.name]
    assert services.draft_choices(registered.id) == []  # a model does not draft for itself
    services.session_settings["drafting"] = False  # --no-draft: no draft model read, planned or loaded
    assert services.profile_request(str(moe_model)).draft is None  # type: ignore[union-attr]
    assert services.current_settings().sampling().draft is False


def test_a_draft_model_that_is_not_there_is_named_in_a_clear_error(services: Services, moe_model: Path,
                                                                   tmp_path: Path) -> None:
    with pytest.raises(EnclaveError, match=r"No model 'no-such-model' is registered"):
        services.configure_model(str(moe_model), draft_model="no-such-model")  # refused when saved
    services.profiles.update(services.profile_key(str(moe_model)), draft_model="no-such-model")  # deleted since
    with pytest.raises(EnclaveError, match=r"^The draft model 'no-such-model' is neither a registered model nor "
                                           r"a model file here .*--reset draft_model"):
        services.profile_request(str(moe_model))
    with pytest.raises(EnclaveError, match="The draft model 'no-such-model'"):
        services.load_model(str(moe_model))  # refused before anything is loaded
    assert services.runtime.model is None
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf at all")
    with pytest.raises(EnclaveError, match=r"^The draft model '.*broken.gguf' cannot be read: "):
        services.runtime.draft_for(ModelProfile(draft_model=str(broken)), services.current_settings())
    with pytest.raises(EnclaveError, match="draft_model is empty"):
        services.configure_model(str(moe_model), draft_model=" ")


def test_a_draft_is_saved_by_id_or_absolute_path_and_forgotten_with_its_model(
        services: Services, moe_model: Path, dense_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(dense_model.parent)
    services.configure_model(str(moe_model), draft_model=dense_model.name)  # relative to this folder
    assert services.profile(str(moe_model)).draft_model == str(dense_model.resolve())
    registered = services.models.import_files([dense_model], "in_place")
    services.configure_model(str(moe_model), draft_model=registered.name)
    assert services.profile(str(moe_model)).draft_model == registered.id
    services.remove_model(registered.id)
    assert services.profile(str(moe_model)).draft_model is None  # its loads go on, without a draft
    assert services.profile_request(str(moe_model)).draft is None  # type: ignore[union-attr]


def test_models_config_sets_and_clears_the_draft_model(enclave_home: Path, moe_model: Path,
                                                       dense_model: Path) -> None:
    shown = enclave("models", "config", str(moe_model), "--draft-model", str(dense_model), home=enclave_home)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"draft_model\s+{re.escape(str(dense_model))}", shown.stdout), shown.stdout
    with Services.open() as services:
        assert services.profile(str(moe_model)).draft_model == str(dense_model)
    cleared = enclave("models", "config", str(moe_model), "--reset", "draft_model", home=enclave_home)
    assert re.search(r"draft_model\s+\(default\)", cleared.stdout), cleared.stdout
    for command in (("run",), ("chat",), ("ask",)):
        assert "--no-draft" in enclave(*command, "--help", home=enclave_home).stdout


def test_stats_say_how_many_tokens_were_drafted_and_accepted() -> None:
    stats = Stats(prompt_tokens=100, cached_tokens=0, generated_tokens=60, prompt_seconds=1.0,
                  generation_seconds=2.0, stop_reason="eog", drafted_tokens=52, accepted_tokens=39)
    assert "drafted: 52 tokens, 39 accepted (75%); stopped: eog" in describe_stats(Done(stats))
    plain = describe_stats(Done(replace(stats, drafted_tokens=0, accepted_tokens=0)))
    assert "drafted" not in plain and plain.endswith("generated: 60 tokens, 30.0 tokens/s; stopped: eog")
