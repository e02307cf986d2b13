"""What the organisation's policy looks like in the desktop app (offscreen Qt): managed
settings greyed out and marked, download and export controls off, a policy that is not
valid a dialog at start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.policy import SET_BY
from app.services import Services
from ui import app as ui_app
from ui.models_page import ModelsPage
from ui.settings_page import SettingsPage
from ui.tasks import TaskRunner


@pytest.fixture
def managed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    policy = tmp_path / "admin" / "policy.toml"
    policy.parent.mkdir()
    policy.write_text(f'downloads = false\nexport = false\ndata_dir = "{tmp_path}/org"\n')
    monkeypatch.setenv("ENCLAVE_POLICY", str(policy))
    with Services.open() as services:
        yield services


def test_settings_managed_by_the_policy_are_greyed_out_and_never_saved(qtbot: QtBot, managed: Services) -> None:
    page = SettingsPage(managed, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    offline = page.editors["offline"]
    assert offline.isChecked() and not offline.isEnabled() and offline.toolTip() == SET_BY
    assert not page.managed_notes["offline"].isHidden() and page.managed_notes["offline"].text() == SET_BY
    assert page.managed_notes["temperature"].isHidden() and page.editors["temperature"].isEnabled()
    assert SET_BY in page.data_label.text() and str(managed.paths.data) in page.data_label.text()
    page.editors["temperature"].setValue(0.3)  # type: ignore[union-attr]
    page.save()
    saved = managed.settings.load()
    assert saved.temperature == 0.3 and saved.offline is False  # the user's own value is left alone
    assert not page.editors["offline"].isEnabled()  # still managed after the refresh


def test_export_and_download_controls_are_off(qtbot: QtBot, managed: Services, moe_model: Path) -> None:
    page = ModelsPage(managed, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    page.import_paths([moe_model])
    page.table.selectRow(0)
    assert page.verify_button.isEnabled()
    assert not page.export_button.isEnabled() and SET_BY in page.export_button.toolTip()
    tab = page.catalog_tab
    tab.machine_picker.simulate_machine(24.0, 64.0)
    assert tab.table.rowCount() > 0
    assert not any(tab.download_button(r).isEnabled() for r in range(tab.table.rowCount()))
    assert tab.download_button(0).toolTip() == f"{SET_BY}: downloads are turned off."
    assert tab.offline_note.text().startswith(f"{SET_BY}: downloads are turned off.")


def test_a_policy_that_is_not_valid_is_a_dialog_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("export = maybe\n")
    monkeypatch.setenv("ENCLAVE_POLICY", str(policy))
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(ui_app.QMessageBox, "critical", lambda parent, title, text: shown.append((title, text)))
    assert ui_app.main([]) == ui_app.EXIT_USER_ERROR
    [(title, text)] = shown
    assert title == "Enclave cannot start" and str(policy) in text and "is not valid" in text
