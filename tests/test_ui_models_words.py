"""The models page in a user's words: placement sentences, the expert controls only for
MoE models, estimate checks behind Details, job progress with percent, bytes and speed,
and a catalog that offers small models to a CPU-only machine (offscreen Qt)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.services import Services
from app.types import GiB
from ui.models_jobs import JobBar, progress_text
from ui.models_page import ModelsPage
from ui.tasks import TaskRunner

MiB = 1 << 20


@pytest.fixture
def page(qtbot: QtBot, services: Services) -> ModelsPage:
    widget = ModelsPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(widget)
    widget.resize(1024, 700)
    return widget


def test_expert_controls_only_for_a_mixture_of_experts_model(page: ModelsPage, dense_model: Path,
                                                             moe_model: Path) -> None:
    view = page.plan_view
    page.import_paths([dense_model], mode="in_place")
    assert view.shape is not None and not view.shape.is_moe
    assert not view.form.isRowVisible(view.experts_row)
    page.import_paths([moe_model], mode="in_place")
    assert view.shape is not None and view.shape.is_moe
    assert view.form.isRowVisible(view.experts_row) and view.experts_slider.isEnabled()


def test_a_gpu_too_small_for_the_model_says_it_runs_on_the_cpu(page: ModelsPage, dense_model: Path) -> None:
    view = page.plan_view
    page.import_paths([dense_model], mode="in_place")
    view.machine_picker.simulate_machine(0.15, 8.0)
    plan = view.plan
    assert plan is not None and plan.fits and plan.n_gpu_layers == 0
    text = view.verdict.text()
    assert text.startswith("Fits: runs on the CPU") and "too little free memory" in text
    assert "-" not in text and "smaller quant" not in text and "0 of" not in text
    assert plan.gpu is not None and plan.gpu.budget_bytes == 0
    (gpu_row, _ram_row) = view.bars.rows()
    assert gpu_row.title == "GPU0: not used — too little free memory"


def test_a_cpu_only_machine_gets_a_plain_sentence(page: ModelsPage, dense_model: Path) -> None:
    view = page.plan_view
    page.import_paths([dense_model], mode="in_place")
    view.machine_picker.simulate_machine(None, 8.0)
    assert view.verdict.text().startswith("Fits: runs on the CPU, using ")
    assert view.plan is not None and view.plan.placement == "runs on the CPU"


def test_job_progress_shows_percent_bytes_and_speed(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:
    total = 28 * GiB // 10
    assert progress_text(-(-total * 43 // 100), total) == "43 % · 1.2 GiB of 2.8 GiB"
    assert progress_text(5 * MiB, 10 * MiB, 310.0 * MiB) == "50 % · 5 MiB of 10 MiB · 310 MiB/s"
    bar = JobBar()
    qtbot.addWidget(bar)
    clock = iter([100.0, 101.0])
    monkeypatch.setattr("ui.models_jobs.time.monotonic", lambda: next(clock))
    bar.start("Importing big.gguf…")
    bar._show_progress(100 * MiB, 1000 * MiB)
    assert bar.status.text() == "Importing big.gguf… 10 % · 100 MiB of 1000 MiB"
    bar._show_progress(400 * MiB, 1000 * MiB)  # a second later: 300 MiB more
    assert bar.status.text() == "Importing big.gguf… 40 % · 400 MiB of 1000 MiB · 300 MiB/s"
    assert bar.progress.value() == 400 and bar.progress.text() == "40 %"


def test_catalog_offers_small_models_to_a_cpu_only_machine(page: ModelsPage) -> None:
    tab = page.catalog_tab
    tab.machine_picker.simulate_machine(None, 8.0)
    rows = {tab.table.item(r, 0).text(): r for r in range(tab.table.rowCount())}
    small = [name for name in ("Qwen3-0.6B", "Qwen3-1.7B", "gemma-3-1b-it") if name in rows]
    assert len(small) == 3
    for name in small:
        row = rows[name]
        assert tab.fits[row].default.fits and tab.table.item(row, 3).text().startswith("fits")
        assert tab.fits[row].entry.size_bytes < 2 * GiB


def test_catalog_disables_download_where_the_model_does_not_fit(page: ModelsPage) -> None:
    tab = page.catalog_tab
    tab.machine_picker.simulate_machine(None, 8.0)
    rows = {tab.table.item(r, 0).text(): r for r in range(tab.table.rowCount())}
    big = rows["Qwen3-235B-A22B"]
    assert tab.table.item(big, 3).text().startswith("does not fit: needs ")
    button = tab.download_button(big)
    assert not button.isEnabled() and button.toolTip().startswith("Not offered: Does not fit")
    tab.download(big)
    assert not tab.jobs.busy  # nothing started
    fitting = rows["Qwen3-0.6B"]
    assert tab.download_button(fitting).isEnabled() == (not page.services.offline)


def test_catalog_names_are_never_clipped(page: ModelsPage) -> None:
    tab = page.catalog_tab
    tab.machine_picker.simulate_machine(None, 8.0)
    page.show()
    page.tabs.setCurrentWidget(tab)
    metrics = tab.table.fontMetrics()
    for row in range(tab.table.rowCount()):
        item = tab.table.item(row, 0)
        assert tab.table.columnWidth(0) >= metrics.horizontalAdvance(item.text())
        assert item.toolTip().startswith(item.text() + ":")
