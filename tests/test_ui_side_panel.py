"""The chat's side panel: the model, its memory plan (proposed, then the loaded one) and
the context in use, in the real window; hiding it is remembered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtGui import QFontMetrics

import ui.side_panel
from app.services import Services
from inference.protocol import ModelSettings
from ui.main_window import LAYOUT_FILE, MainWindow
from ui.models_plan_bars import PAD, PlanBars
from ui.side_panel import ModelFacts
from ui.tasks import TaskRunner

CONTEXT = 1024




@pytest.fixture
def with_model(services: Services, moe_model: Path) -> Services:
    model = services.models.import_files([moe_model], "in_place")
    for key, value in {"default_model": model.id, "max_tokens": 6, "temperature": 0.0,
                       "context_length": CONTEXT, "threads": 2}.items():
        services.settings.set(key, value)
    return services


@pytest.fixture
def make_window(qtbot, services: Services) -> Callable[[], MainWindow]:
    windows: list[MainWindow] = []

    def make() -> MainWindow:
        window = MainWindow(services, TaskRunner(synchronous=True))
        qtbot.addWidget(window)
        windows.append(window)
        window.resize(1400, 800)
        window.show()
        qtbot.waitExposed(window)
        return window

    return make


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model references the panel's task read."""
    seen: list[str] = []
    real = ui.side_panel.read_facts

    def counting(services: Services, ref: str) -> ModelFacts:
        seen.append(ref)
        return real(services, ref)

    monkeypatch.setattr(ui.side_panel, "read_facts", counting)
    return seen


def test_a_new_chat_shows_the_default_model_and_a_proposed_plan(with_model: Services, make_window,
                                                                 reads: list[str]) -> None:
    window = make_window()
    panel = window.side_panel
    [model] = with_model.models.all()
    assert window.current_page() == "chat" and panel.isVisible()
    assert reads and reads[-1] == model.id
    assert panel.model_name.text() == model.name
    details = panel.model_details.text()
    assert model.architecture and model.architecture in details
    assert f"{model.experts} experts, {model.experts_used} used" in details
    assert "trained context" in details
    assert not panel.loaded and "Not loaded" in panel.status.text()
    assert with_model.runtime.model is None  # showing a plan loads nothing

    assert panel.plan_source == "proposed" and panel.plan is not None
    assert panel.plan.n_ctx == CONTEXT and panel.plan.fits
    assert f"{CONTEXT:,} tokens" in panel.plan_caption.text()
    assert [row.use for row in panel.bars.rows()] == list(panel.plan.devices)
    assert panel.bars.isVisible() and panel.verdict.text() == panel.plan.verdict

    assert panel.context_bar.maximum() == CONTEXT and panel.context_bar.value() == 0
    assert panel.context_bar.text() == f"0 of {CONTEXT:,} tokens"
    assert not panel.grab().isNull()


def test_a_tokenizer_loaded_to_count_tokens_is_not_a_loaded_model(with_model: Services, make_window) -> None:
    window = make_window()
    [model] = with_model.models.all()
    with_model.runtime.load(model.id, ModelSettings(path=str(model.path), vocab_only=True))  # as libraries do
    assert with_model.runtime.model is not None and with_model.runtime.last_load is not None
    window.side_panel.refresh()
    assert not window.side_panel.loaded and "Not loaded" in window.side_panel.status.text()
    assert window.side_panel.plan_source == "proposed" and window.side_panel.plan is not None
    assert window.side_panel.context_bar.maximum() == CONTEXT


def test_after_a_reply_it_shows_the_loaded_model_its_plan_and_the_context(with_model: Services,
                                                                          make_window) -> None:
    window = make_window()
    panel = window.side_panel
    window.chat.composer.setPlainText("Hello there")
    window.chat.submit()  # synchronous: the model loads and the reply is stored here

    conversation_id = window.chat.conversation_id
    assert conversation_id is not None and panel.conversation_id == conversation_id
    reply = with_model.conversations.messages(conversation_id)[-1]
    assert reply.role == "assistant" and reply.status == "complete"
    assert reply.prompt_tokens and reply.completion_tokens
    outcome = with_model.runtime.last_load
    assert outcome is not None and outcome.plan is not None

    assert panel.loaded and panel.status.text().startswith("● Loaded")
    assert f"context of {CONTEXT:,} tokens" in panel.status.text()
    assert panel.plan_source == "loaded" and panel.plan is outcome.plan
    assert [row.use for row in panel.bars.rows()] == list(outcome.plan.devices)
    assert panel.plan_caption.text() == "The plan it was loaded by:"
    if outcome.checks:  # the estimate's accuracy is not shown to users, only on hover
        assert outcome.checks[0].describe() in panel.verdict.toolTip()
        assert "llama.cpp" not in panel.verdict.text()

    used = reply.prompt_tokens + reply.completion_tokens
    assert panel.context_bar.maximum() == with_model.runtime.model.n_ctx == CONTEXT  # type: ignore[union-attr]
    assert panel.context_bar.value() == used
    assert panel.context_bar.text() == f"{used:,} of {CONTEXT:,} tokens"
    assert f"{reply.prompt_tokens:,} tokens" in panel.context_note.text()

    window.new_chat()  # the same model, still loaded; nothing sent in this chat yet
    assert panel.conversation_id is None and panel.loaded and panel.plan is outcome.plan
    assert panel.context_bar.value() == 0
    window.open_conversation(conversation_id)
    assert panel.conversation_id == conversation_id and panel.context_bar.value() == used


def test_only_the_chat_page_has_the_panel(with_model: Services, make_window) -> None:
    window = make_window()
    assert window.side_panel.isVisible()
    for page in ("models", "libraries", "settings"):
        window.show_page(page)
        assert not window.side_panel.isVisible()
        assert window.stack.currentWidget().width() == window.stack.width()
    window.new_chat()
    assert window.side_panel.isVisible()
    assert window.side_panel.width() >= 260
    assert window.chat.width() + window.side_panel.width() <= window.stack.width()


def test_the_panel_can_be_hidden_and_the_choice_is_remembered(with_model: Services, make_window,
                                                              reads: list[str], enclave_home: Path) -> None:
    window = make_window()
    assert window.side_panel_action.isChecked()
    window.side_panel_action.trigger()  # View ▸ Show side panel
    assert not window.side_panel.isVisible() and window.chat.isVisible()
    before = len(reads)
    window.new_chat()
    assert len(reads) == before  # a hidden panel reads nothing
    window.close()
    assert "side_panel=false" in (with_model.paths.config / LAYOUT_FILE).read_text()
    assert with_model.paths.config.is_relative_to(enclave_home)

    again = make_window()
    assert not again.side_panel_action.isChecked() and not again.side_panel.isVisible()
    again.side_panel_action.trigger()
    assert again.side_panel.isVisible() and len(reads) > before  # shown: it reads the model now
    assert again.side_panel.plan is not None
    again.close()
    assert make_window().side_panel.isVisible()


def test_plan_bars_wrap_in_a_narrow_panel(qtbot, with_model: Services, make_window) -> None:
    plan = make_window().side_panel.plan
    assert plan is not None
    bars = PlanBars()
    qtbot.addWidget(bars)
    bars.set_plan(plan)
    bars.resize(900, bars.heightForWidth(900))
    wide = bars.rows()
    assert all(len(row.detail_lines) == 1 for row in wide)
    bars.resize(240, bars.heightForWidth(240))
    narrow = bars.rows()
    assert any(len(row.detail_lines) > 1 for row in narrow)
    metrics = QFontMetrics(bars.font())
    assert all(metrics.horizontalAdvance(line) <= 240 - 2 * PAD for row in narrow for line in row.detail_lines)
    assert bars.heightForWidth(240) > bars.heightForWidth(900)
    assert [row.use for row in narrow] == [row.use for row in wide]
