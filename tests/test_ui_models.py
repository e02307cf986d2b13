"""The models page and the memory plan view, on the tiny real models (offscreen Qt)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.catalog import CATALOG, load_catalog
from app.services import Services
from inference.planner import Plan
from ui.models_catalog import CatalogTab
from ui.models_page import ModelsPage
from ui.models_table import COLUMNS
from ui.plan_view import PlanView, context_steps
from ui.tasks import TaskRunner


@pytest.fixture
def page(qtbot: QtBot, services: Services) -> ModelsPage:
    widget = ModelsPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(widget)
    widget.resize(1100, 900)
    return widget


def cell(page: ModelsPage, row: int, column: str) -> str:
    return page.table_model.index(row, COLUMNS.index(column)).data()


def import_moe(page: ModelsPage, moe_model: Path) -> str:
    page.import_paths([moe_model])
    assert page.table_model.rowCount() == 1, page.jobs.status.text()
    return page.table_model.model_at(0).id  # type: ignore[union-attr]


# The registry ---------------------------------------------------------------------------


def test_import_copies_the_model_and_shows_what_it_is(qtbot: QtBot, page: ModelsPage, services: Services,
                                                      moe_model: Path) -> None:
    with qtbot.waitSignal(page.modelsChanged):
        page.import_paths([moe_model])
    assert page.table_model.rowCount() == 1
    assert cell(page, 0, "Architecture") == "llama"
    assert cell(page, 0, "Experts") == "8 (2 used)"
    assert cell(page, 0, "Trained context") == "4,096"
    assert cell(page, 0, "Origin") == "copied in"
    model = services.models.all()[0]
    assert model.origin == "copied" and services.models.owns(model.path)  # copy is the default
    assert "Imported tiny-moe" in page.jobs.status.text()
    assert page.selected_model() is not None and page.selected_model().id == model.id  # type: ignore[union-attr]


def test_dense_model_in_place_and_errors_shown_inline(page: ModelsPage, services: Services, dense_model: Path,
                                                      tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf at all")
    page.import_paths([dense_model, broken, tmp_path / "notes.txt"], mode="in_place")
    assert page.table_model.rowCount() == 1
    assert cell(page, 0, "Experts") == "—" and cell(page, 0, "Origin") == "in place"
    assert services.models.all()[0].path == dense_model.absolute()
    status = page.jobs.status.text()
    assert "Not imported: broken.gguf:" in status and "notes.txt: not a .gguf" in status
    assert "Unexpected error" not in status
    page.import_paths([dense_model], mode="in_place")  # twice: refused with the reason
    assert "already registered" in page.jobs.status.text()
    assert page.table_model.rowCount() == 1


def test_verify_reports_ok_then_a_changed_file(page: ModelsPage, moe_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "mine.gguf"
    shutil.copy(moe_model, copy)
    page.import_paths([copy], mode="in_place")
    model_id = page.table_model.model_at(0).id  # type: ignore[union-attr]
    page.verify(model_id)
    assert "ok" in page.jobs.status.text() and "every SHA-256 matches" in page.jobs.status.text()
    with copy.open("r+b") as f:
        f.seek(-10, 2)
        f.write(b"0123456789")
    page.verify(model_id)
    assert "FAILED" in page.jobs.status.text() and "changed or damaged" in page.jobs.status.text()


def test_remove_with_its_files(page: ModelsPage, services: Services, moe_model: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    model_id = import_moe(page, moe_model)
    copied = services.models.get(model_id).path
    page.set_default(model_id)
    assert services.current_settings().default_model == model_id
    assert "(default)" in cell(page, 0, "Name")
    monkeypatch.setattr(page, "ask_remove", lambda model: (False, True))
    page.remove_selected()  # cancelled: nothing happens
    assert page.table_model.rowCount() == 1 and copied.exists()
    monkeypatch.setattr(page, "ask_remove", lambda model: (True, True))
    page.remove_selected()
    assert page.table_model.rowCount() == 0 and services.models.all() == []
    assert not copied.exists() and moe_model.exists()  # its copy went, the original stays
    assert services.current_settings().default_model is None
    assert "Removed tiny-moe" in page.jobs.status.text()
    assert page.plan_view.plan is None and not page.remove_button.isEnabled()


def test_export_then_import_the_folder(page: ModelsPage, services: Services, moe_model: Path, tmp_path: Path) -> None:
    model_id = import_moe(page, moe_model)
    usb = tmp_path / "usb"
    page.export(model_id, usb)
    assert (usb / "enclave-manifest.json").exists() and (usb / moe_model.name).exists()
    services.models.remove(services.models.get(model_id), delete_files=True)
    page.refresh()
    assert page.table_model.rowCount() == 0
    page.import_folder(usb, mode="in_place")
    assert page.table_model.rowCount() == 1, page.jobs.status.text()
    assert services.models.all()[0].source["manifest"] == str(usb / "enclave-manifest.json")


def test_discovery_lists_another_apps_model_and_adds_it(page: ModelsPage, services: Services, moe_model: Path,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "llama-cache"
    cache.mkdir()
    shutil.copy(moe_model, cache / "someone_tiny-moe.gguf")
    page.discover_tab.locations = {"llama.cpp": [cache]}
    page.discover_tab.search()
    table = page.discover_tab.table
    assert table.rowCount() == 1 and table.item(0, 0).text() == "llama.cpp"
    button = page.discover_tab.add_button(0)
    assert button is not None
    button.click()
    assert page.discover_tab.add_button(0) is None and "added as" in table.item(0, 4).text()
    assert page.table_model.rowCount() == 1 and cell(page, 0, "Origin") == "other app"
    assert services.models.all()[0].path == (cache / "someone_tiny-moe.gguf").resolve()


# The memory plan ------------------------------------------------------------------------


def plan_of(view: PlanView) -> Plan:
    assert view.plan is not None, view.error or view.verdict.text()
    return view.plan


def segment_widths(view: PlanView) -> dict[tuple[str, str], float]:
    return {(row.use.device, s.part): s.rect.width() for row in view.bars.rows() for s in row.segments}


@pytest.fixture
def plan_page(page: ModelsPage, moe_model: Path) -> PlanView:
    import_moe(page, moe_model)
    view = page.plan_view
    assert view.model_id == page.table_model.model_at(0).id  # type: ignore[union-attr]
    return view


def test_context_slider_grows_the_kv_cache_and_its_bar(qtbot: QtBot, plan_page: PlanView) -> None:
    view = plan_page
    view.machine_picker.simulate_machine(1.05, 8.0)  # ~50 MiB of VRAM after the 1 GiB margin
    assert view.ctx_slider.maximum() == len(context_steps(4096)) - 1
    view.set_context(512)
    small, small_widths = plan_of(view), segment_widths(view)
    assert small.n_ctx == 512 and small.gpu is not None and small.fits
    with qtbot.waitSignal(view.planChanged) as signal:
        view.ctx_slider.setValue(view.ctx_slider.maximum())
    large = signal.args[0]
    assert large is view.plan and large.n_ctx == 4096
    assert large.kv_bytes == 8 * small.kv_bytes and large.gpu.kv_bytes > small.gpu.kv_bytes  # type: ignore[union-attr]
    widths = segment_widths(view)
    assert widths[("GPU0", "kv")] > small_widths[("GPU0", "kv")]
    assert widths[("GPU0", "compute")] > small_widths[("GPU0", "compute")]
    assert "4,096 tokens" in view.ctx_label.text() and view.verdict.text().startswith("Fits:")
    assert not view.bars.grab(view.bars.rect()).isNull()  # the painter runs
    kv = next(s for r in view.bars.rows() if r.use.device == "GPU0" for s in r.segments if s.part == "kv")
    assert view.bars.segment_at(kv.rect.center()) == (view.bars.rows()[0], kv)  # what the tooltip names


def test_quantized_kv_shrinks_it_and_impossible_requests_say_why(plan_page: PlanView) -> None:
    view = plan_page
    view.set_context(4096)
    f16 = plan_of(view).kv_bytes
    view.kv_combo.setCurrentText("q8_0")
    assert plan_of(view).type_k == "q8_0" and plan_of(view).kv_bytes < f16 * 0.6
    view.kv_combo.setCurrentText("q4_0")
    assert plan_of(view).kv_bytes < f16 * 0.3
    view.flash.setChecked(False)  # a quantized V cache needs flash attention: the planner's PlanError
    assert view.plan is None and "flash attention" in view.error and view.verdict.text() == view.error
    assert view.bars.rows() == [] and not view.load_button.isEnabled()
    view.kv_combo.setCurrentText("f16")
    assert plan_of(view).kv_bytes == f16 and view.error == ""


def test_expert_slider_moves_experts_to_ram_on_a_gpu(plan_page: PlanView) -> None:
    view = plan_page
    view.machine_picker.simulate_machine(2.0, 8.0)
    auto = plan_of(view)
    assert view.experts_label.text() == "auto" and auto.ram.experts_bytes == 0
    assert auto.gpu is not None and auto.gpu.experts_bytes > 0
    view.set_cpu_moe_layers(2)
    half = plan_of(view)
    assert half.cpu_expert_layers == (0, 1) and view.experts_label.text() == "first 2 of 4"
    assert half.ram.experts_bytes == half.gpu.experts_bytes == auto.gpu.experts_bytes // 2  # type: ignore[union-attr]
    view.set_cpu_moe_layers(4)
    assert plan_of(view).gpu.experts_bytes == 0  # type: ignore[union-attr]
    widths = segment_widths(view)
    assert widths[("GPU0", "experts")] == 0 and widths[("RAM", "experts")] > 0
    assert "all 4 layers on the GPU, all experts in RAM" in view.verdict.text()


def test_a_machine_too_small_is_drawn_over_budget_with_suggestions(plan_page: PlanView) -> None:
    view = plan_page
    view.machine_picker.simulate_machine(None, 1.01)  # CPU only, ~10 MiB usable after the 1 GiB margin
    view.set_context(4096)
    p = plan_of(view)
    assert not p.fits and p.gpu is None
    (row,) = view.bars.rows()
    assert row.over is not None and row.over.width() > 0 and row.budget_x < row.bar.right()
    assert "over" in row.title
    assert view.verdict.text().startswith("Does not fit") and "Would help:" in view.verdict.text()
    assert any(tip.startswith("a context of ") for tip in p.suggestions)
    assert not view.load_button.isEnabled()


def test_load_with_this_plan_shows_estimate_against_actual(qtbot: QtBot, page: ModelsPage, plan_page: PlanView,
                                                           services: Services) -> None:
    view = plan_page
    view.set_context(1024)
    assert view.load_button.isEnabled()  # this machine (the test machine has room for a tiny model)
    with qtbot.waitSignal(view.loaded, timeout=60_000) as signal:
        view.load_button.click()
    outcome = signal.args[0]
    assert outcome.info.n_ctx == 1024 and services.runtime.model is not None
    assert {c.what for c in outcome.checks} == {"model", "kv", "compute"}
    text = view.load_status.text()
    assert text.startswith("Loaded tiny-moe") and "llama.cpp" not in text  # the comparison is behind Details
    assert "layers on the CPU" not in text and ("Runs on the CPU." in text or "on the GPU" in text)
    assert view.details_button.isVisibleTo(page) and not view.details_button.isChecked()
    assert not view.details.isVisibleTo(page) and "Memory plan against llama.cpp — kv: estimated" in view.details.text()
    view.details_button.click()
    assert view.details.isVisibleTo(page)


def test_the_plan_view_alone_needs_a_model(qtbot: QtBot, services: Services) -> None:
    view = PlanView(services, TaskRunner(synchronous=True))
    qtbot.addWidget(view)
    view.set_model(None)
    assert view.plan is None and not view.ctx_slider.isEnabled() and not view.load_button.isEnabled()
    view.set_model("no-such-model")
    assert view.plan is None and "Cannot read this model" in view.title.text()


def test_context_steps_run_from_512_to_the_trained_context() -> None:
    steps = context_steps(131072)
    assert steps[0] == 512 and steps[-1] == 131072 and steps == sorted(set(steps))
    assert steps[1] - steps[0] == 256 and 9216 in steps and len(steps) < 120
    assert context_steps(512) == [512] and context_steps(1000)[-1] == 1000


# The catalog ----------------------------------------------------------------------------


def test_catalog_verdicts_for_a_simulated_machine(page: ModelsPage) -> None:
    tab = page.catalog_tab
    names = [e.name for e in load_catalog()]
    tab.machine_picker.simulate_machine(24.0, 64.0)
    assert tab.table.rowCount() == len(names)
    verdicts = {tab.table.item(r, 0).text(): tab.table.item(r, 3).text() for r in range(tab.table.rowCount())}
    assert set(verdicts) == set(names)
    assert verdicts["Qwen3-30B-A3B"].startswith("fits (up to ") and verdicts["Qwen3-30B-A3B"].endswith(" tokens)")
    assert verdicts["Qwen3-235B-A22B"].startswith("does not fit: needs ") and verdicts["Qwen3-235B-A22B"].endswith(
        " more RAM")
    assert "(simulated)" in tab.summary.text()
    tab.machine_picker.simulate_machine(None, 8.0)  # a small CPU-only machine
    small = {tab.table.item(r, 0).text(): tab.table.item(r, 3).text() for r in range(tab.table.rowCount())}
    assert small["Qwen3-30B-A3B"].startswith("does not fit") and small["OLMoE-1B-7B-0924"].startswith("fits")
    size = tab.table.item(names.index("Qwen3-30B-A3B"), 2).text()
    assert size == "17.3 GiB"  # a published size; estimates start with "~"
    assert tab.table.item(names.index("Qwen3-235B-A22B"), 2).text().startswith("~")


def test_download_buttons_off_when_offline(qtbot: QtBot, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_OFFLINE", "1")
    offline = ModelsPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(offline)
    tab = offline.catalog_tab
    tab.machine_picker.simulate_machine(24.0, 64.0)
    assert tab.table.rowCount() > 0
    assert not any(tab.download_button(r).isEnabled() for r in range(tab.table.rowCount()))
    assert "offline" in tab.offline_note.text()
    monkeypatch.delenv("ENCLAVE_OFFLINE")
    offline.refresh()
    fitting = [r for r in range(tab.table.rowCount()) if tab.fits[r].default.fits]
    assert fitting and all(tab.download_button(r).isEnabled() for r in fitting)
    services.settings.set("offline", True)  # the setting alone is enough too
    offline.refresh()
    assert not tab.download_button(0).isEnabled()


def test_page_draws(page: ModelsPage, moe_model: Path) -> None:
    import_moe(page, moe_model)
    page.show()
    for index in range(page.tabs.count()):
        page.tabs.setCurrentIndex(index)
        assert not page.grab().isNull()
    bars = page.plan_view.bars
    assert bars.sizeHint().height() > bars.fontMetrics().height() * 4  # a bar with its lines, and the legend


def test_with_real_threads_progress_and_results_come_back(qtbot: QtBot, services: Services, moe_model: Path) -> None:
    tasks = TaskRunner()
    page = ModelsPage(services, tasks)
    qtbot.addWidget(page)
    seen: list[int] = []
    page.jobs.progress.valueChanged.connect(seen.append)
    page.import_paths([moe_model])
    assert page.jobs.busy and page.jobs.cancel_button.isVisibleTo(page)
    qtbot.waitUntil(lambda: page.table_model.rowCount() == 1 and not page.jobs.busy, timeout=20_000)
    assert seen and seen[-1] == 1000  # hashing progress reached the bar, on the GUI thread
    qtbot.waitUntil(lambda: page.plan_view.plan is not None, timeout=20_000)  # inspect + detect ran off-thread
    assert page.plan_view.plan.n_ctx == 4096  # type: ignore[union-attr]
    assert tasks.wait()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, moe_model: Path) -> Iterator[str]:
    """A hub on 127.0.0.1 serving the tiny MoE model as org/Tiny-GGUF (as tests/test_hub.py)."""
    from huggingface_hub.utils import close_session

    import app.hub
    from tests.fake_hub import FakeHub, FakeRepo, point_huggingface_hub_at

    with FakeHub() as fake:
        point_huggingface_hub_at(fake.url, monkeypatch)
        monkeypatch.setattr(app.hub, "get_token", lambda quiet=False: None)  # never the machine's keyring
        fake.add(FakeRepo("org/Tiny-GGUF", {"tiny-moe-Q8_0.gguf": moe_model.read_bytes()}))
        yield fake.url
    close_session()


def test_catalog_download_registers_the_model(qtbot: QtBot, services: Services, fake_hub: str, tmp_path: Path,
                                              moe_model: Path) -> None:
    entry = json.loads(CATALOG.read_text())["models"][-1]
    entry.update(name="Tiny", repo="org/Tiny-GGUF", files=["tiny-moe-Q8_0.gguf"], quant="Q8_0",
                 size_bytes=moe_model.stat().st_size)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": [entry]}))
    tab = CatalogTab(services, TaskRunner(synchronous=True), catalog=catalog)
    qtbot.addWidget(tab)
    tab.machine_picker.simulate_machine(None, 8.0)
    assert tab.table.item(0, 0).text() == "Tiny" and tab.table.item(0, 3).text() == "fits (up to 4,096 tokens)"
    assert tab.download_button(0).isEnabled()
    with qtbot.waitSignal(tab.modelAdded) as signal:
        tab.download_button(0).click()
    model = signal.args[0]
    assert model.origin == "downloaded" and model.source["repo"] == "org/Tiny-GGUF"
    assert model.path.read_bytes() == moe_model.read_bytes()
    assert [m.id for m in services.models.all()] == [model.id]
    assert "Downloaded and verified" in tab.jobs.status.text() and tab.download_button(0).isEnabled()
    tab.download_button(0).click()  # again: the hub's file is there, the registry refuses a second copy
    assert "was not downloaded" in tab.jobs.status.text() and "already registered" in tab.jobs.status.text()


# The draft model ------------------------------------------------------------------------


@pytest.fixture
def draft_page(page: ModelsPage, services: Services, moe_model: Path, dense_model: Path) -> tuple[PlanView, str]:
    """The plan of the tiny MoE model, with the tiny dense one registered: a draft it can choose."""
    dense = services.models.import_files([dense_model], "in_place")
    page.import_paths([moe_model])
    moe = next(m for m in services.models.all() if m.id != dense.id)
    page.select_model(moe.id)
    assert page.plan_view.model_id == moe.id
    return page.plan_view, dense.id


def test_the_draft_model_is_chosen_planned_and_saved_in_the_profile(draft_page: tuple[PlanView, str],
                                                                    services: Services) -> None:
    view, dense_id = draft_page
    combo = view.draft_combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["None (prompt lookup only)", "tiny-dense"]
    assert combo.currentIndex() == 0 and plan_of(view).draft_device is None
    view.machine_picker.simulate_machine(2.0, 8.0)
    alone = plan_of(view)
    combo.setCurrentIndex(combo.findData(dense_id))
    drafted = plan_of(view)
    assert drafted.draft_on_gpu and drafted.draft_bytes > 0 and "draft model on GPU0" in view.verdict.text()
    assert drafted.gpu.total_bytes == alone.gpu.total_bytes - alone.gpu.experts_bytes + drafted.gpu.experts_bytes \
        + drafted.draft_bytes  # type: ignore[union-attr]
    widths = segment_widths(view)
    assert widths[("GPU0", "draft")] > 0 and widths[("RAM", "draft")] == 0
    assert "Draft model" in view.bars.rows()[0].detail
    view.save_profile()
    assert services.profile(view.model_id).draft_model == dense_id  # type: ignore[arg-type]
    combo.setCurrentIndex(0)
    assert plan_of(view).draft_device is None and "draft" not in view.verdict.text()
    view.save_profile()
    assert services.profile(view.model_id).draft_model is None  # type: ignore[arg-type]


def test_a_draft_model_that_is_gone_is_said_and_not_loaded(page: ModelsPage, services: Services, moe_model: Path,
                                                           tmp_path: Path) -> None:
    gone = tmp_path / "gone.gguf"
    services.profiles.update(services.profile_key(str(moe_model)), draft_model=str(gone))  # deleted since saved
    view = page.plan_view
    view.set_model(str(moe_model))
    assert view.draft_combo.currentText() == "gone.gguf" and view.draft_model == str(gone)
    assert "The draft model" in view.draft_problem and "gone.gguf" in view.verdict.text()
    assert not view.load_button.isEnabled()
