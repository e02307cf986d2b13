"""The settings page (offscreen Qt): a control that fits each value, saved through the
command line's own check; errors in plain words; a tooltip on every control."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLabel, QPlainTextEdit, QSpinBox
from pytestqt.qtbot import QtBot

from app.services import Services
from app.settings import DESCRIPTIONS, parse_value
from app.types import EnclaveError
from tests.shown import shown
from ui.settings_fields import ALL_CORES, GROUPS, SliderSpin
from ui.settings_page import SettingsPage
from ui.tasks import TaskRunner


@pytest.fixture
def services() -> Iterator[Services]:
    with Services.open() as opened:
        yield opened


@pytest.fixture
def page(qtbot: QtBot, services: Services) -> SettingsPage:
    return shown(qtbot, SettingsPage(services, TaskRunner(synchronous=True)), (1024, 700))


def test_each_value_has_the_control_it_needs(page: SettingsPage) -> None:
    kinds = {name: type(editor) for name, editor in page.editors.items()}
    assert kinds["context_length"] is QSpinBox and kinds["max_document_mb"] is QSpinBox
    assert kinds["kv_cache_max_gb"] is QDoubleSpinBox and kinds["repeat_penalty"] is QDoubleSpinBox
    assert {kinds[n] for n in ("temperature", "top_p", "min_p")} == {SliderSpin}
    assert kinds["offline"] is QCheckBox and kinds["show_reasoning"] is QCheckBox
    assert kinds["library_attention"] is QComboBox and kinds["default_model"] is QComboBox
    assert kinds["system_prompt"] is QPlainTextEdit
    # one unit family: MiB and GiB, never MB or GB
    assert page.editors["max_document_mb"].suffix() == " MiB"  # type: ignore[union-attr]
    assert page.editors["kv_cache_max_gb"].suffix() == " GiB"  # type: ignore[union-attr]
    shown = " ".join(label.text() for label in page.findChildren(QLabel))
    assert " MB" not in shown and " GB" not in shown


def test_every_setting_sits_under_a_heading_once(page: SettingsPage) -> None:
    grouped = [name for group in GROUPS for name in group.fields]
    assert sorted(grouped) == sorted(page.editors) and len(grouped) == len(set(grouped))
    headings = {label.text() for label in page.findChildren(QLabel)}
    assert {"Model defaults", "Sampling", "Libraries", "Storage & privacy"} <= headings


def test_every_control_explains_itself(page: SettingsPage) -> None:
    for name, editor in page.editors.items():
        assert len(editor.toolTip()) > 40, name
    assert "likeliest" in page.editors["top_k"].toolTip()
    assert "5%" in page.editors["min_p"].toolTip()
    assert "re-reads only that one" in page.editors["library_attention"].toolTip()
    slider = page.editors["temperature"]
    assert isinstance(slider, SliderSpin) and slider.slider.toolTip() == slider.spin.toolTip() != ""


def test_sizes_in_mib_and_gib_round_trip(page: SettingsPage, services: Services) -> None:
    page.editors["max_document_mb"].setValue(200)  # type: ignore[union-attr]
    page.editors["kv_cache_max_gb"].setValue(2.5)  # type: ignore[union-attr]
    page.save()
    saved = services.settings.load()
    assert (saved.max_document_mb, saved.kv_cache_max_gb) == (200, 2.5)
    page.refresh()
    assert page.editors["max_document_mb"].text() == "200 MiB"  # type: ignore[union-attr]
    assert page.editors["kv_cache_max_gb"].text() == "2.5 GiB"  # type: ignore[union-attr]


def test_slider_and_spin_box_move_together_and_save(page: SettingsPage, services: Services) -> None:
    temperature = page.editors["temperature"]
    assert isinstance(temperature, SliderSpin)
    temperature.slider.setValue(25)
    assert temperature.spin.value() == 0.25
    min_p = page.editors["min_p"]
    assert isinstance(min_p, SliderSpin)
    min_p.spin.setValue(0.12)
    assert min_p.slider.value() == 12
    page.editors["top_k"].setValue(0)  # type: ignore[union-attr]
    assert page.editors["top_k"].text() == "Off"  # type: ignore[union-attr]
    page.save()
    saved = services.settings.load()
    assert (saved.temperature, saved.min_p, saved.top_k) == (0.25, 0.12, 0)
    assert page.status.text() == "Saved."


def test_threads_all_cores_is_none(page: SettingsPage, services: Services) -> None:
    threads = page.editors["threads"]
    assert isinstance(threads, QSpinBox) and threads.text() == ALL_CORES
    threads.setValue(3)
    page.save()
    assert services.settings.load().threads == 3
    threads.setValue(threads.minimum())
    page.save()
    assert services.settings.load().threads is None


def test_checkbox_and_choice_are_saved(page: SettingsPage, services: Services) -> None:
    page.editors["offline"].setChecked(True)  # type: ignore[union-attr]
    attention = page.editors["library_attention"]
    assert isinstance(attention, QComboBox) and attention.currentData() == "isolated"
    attention.setCurrentIndex(attention.findData("joint"))
    page.editors["system_prompt"].setPlainText("Answer in French.")  # type: ignore[union-attr]
    page.save()
    saved = services.settings.load()
    assert (saved.offline, saved.library_attention, saved.system_prompt) == (True, "joint", "Answer in French.")


def test_a_number_typed_out_of_range_is_said_in_plain_words(page: SettingsPage, services: Services,
                                                            qtbot: QtBot) -> None:
    context = page.editors["context_length"]
    assert isinstance(context, QSpinBox)
    context.setFocus()
    context.lineEdit().selectAll()
    qtbot.keyClicks(context.lineEdit(), "100")
    page.save_button.setFocus()  # what clicking Save does first: the spin box corrects the number
    assert context.value() == 512
    page.save()
    error = page.errors["context_length"]
    assert not error.isHidden()
    assert error.text() == ("Context length must be a whole number between 512 and 10,485,760 tokens; "
                            "“100” is not.")
    assert "Nothing was saved" in page.status.text()
    assert services.settings.load().context_length == 8192  # nothing half-applied
    page.save()  # the corrected value, now seen, is what a second Save takes
    assert services.settings.load().context_length == 512 and page.errors["context_length"].isHidden()


def test_drafting_is_on_by_default_explained_saved_and_sent_with_every_reply(page: SettingsPage,
                                                                          services: Services) -> None:
    assert services.settings.load().drafting is True and services.settings.load().sampling().draft is True
    box = page.editors["drafting"]
    assert isinstance(box, QCheckBox) and box.isChecked()
    assert "so the reply says the same" in box.toolTip()
    assert "draft model's memory" in DESCRIPTIONS["drafting"]
    box.setChecked(False)
    page.save()
    saved = services.settings.load()
    assert saved.drafting is False and saved.sampling().draft is False  # no drafting for any reply
    assert parse_value("drafting", "on") is True


def test_the_command_line_check_speaks_plainly() -> None:
    with pytest.raises(EnclaveError, match=r"^temperature must be a number between 0 and 5, not 'warm'\.$"):
        parse_value("temperature", "warm")
    with pytest.raises(EnclaveError, match=r"^max_document_mb must be between 1 and 100,000 MiB, not 0\.$"):
        parse_value("max_document_mb", "0")
    with pytest.raises(EnclaveError, match="offline is on or off"):
        parse_value("offline", "maybe")


def test_the_default_model_list_names_models(qtbot: QtBot, services: Services, moe_model: Path) -> None:
    model = services.models.import_files([moe_model], "in_place")
    services.settings.set("default_model", model.id)
    page = SettingsPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    combo = page.editors["default_model"]
    assert isinstance(combo, QComboBox)
    assert combo.currentData() == model.id and combo.currentText() == model.name
    assert model.id in combo.itemData(combo.currentIndex(), Qt.ItemDataRole.ToolTipRole)
    assert combo.findData(None) == 0


@pytest.mark.parametrize("size", [(1024, 700), (1920, 1080)])
def test_no_control_is_clipped(qtbot: QtBot, services: Services, size: tuple[int, int]) -> None:
    page = SettingsPage(services, TaskRunner(synchronous=True))
    shown(qtbot, page, size)
    for name, editor in page.editors.items():
        assert editor.width() >= editor.minimumSizeHint().width(), name
        assert editor.width() <= 900, name  # no 1,500 px spin boxes at 1920
    assert page.save_button.isVisible() and page.save_button.mapTo(page, page.save_button.rect().bottomLeft()).y() \
        <= page.height()
