"""Settings → "Serve on this network" (offscreen Qt): the switch serves the API on a free loopback
port, the URL and counters are right, off frees the port, errors and the policy are said inline,
and a key is shown once and listed."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from app.api_keys import ApiKeyRepository
from app.server.embedded import ServeState
from app.services import Services
from tests.shown import shown
from ui.settings_page import SettingsPage
from ui.settings_serve import ServeSection
from ui.tasks import TaskRunner

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens there, and a server could listen there again (bound as servers bind:
    the connections just closed may linger in TIME_WAIT)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def get_models(url: str, secret: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/models")
    if secret is not None:
        request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def keys_required(no_system_policy: Path) -> None:
    """An organisation that asks a key of every request, on loopback too."""
    no_system_policy.parent.mkdir(parents=True, exist_ok=True)
    no_system_policy.write_text("serve_keyless = false\n")


@pytest.fixture
def page(qtbot: QtBot, keys_required: None, services: Services, moe_model: Path) -> Iterator[SettingsPage]:
    services.import_model(moe_model, "in_place")
    services.libraries.create("notes")
    settings_page = shown(qtbot, SettingsPage(services, TaskRunner(synchronous=True)), (1024, 700))
    yield settings_page
    settings_page.serve.shutdown()


def serve_on(section: ServeSection, port: int) -> None:
    section.port.setValue(port)
    section.switch.setChecked(True)


def test_the_switch_serves_the_api_with_a_key_and_off_frees_the_port(qtbot: QtBot, page: SettingsPage,
                                                                       services: Services) -> None:
    section = page.serve
    section.keys.name_edit.setText("editor")
    section.keys.create()
    secret = section.keys.secret_edit.text()
    port = free_port()
    serve_on(section, port)

    assert section.server.status().state == ServeState.SERVING
    url = f"http://127.0.0.1:{port}/v1"
    assert section.url.text() == url and section.copy_button.isEnabled()
    assert section.state.text() == f"Serving at {url} — every request needs an API key."
    section.copy_button.click()
    assert QGuiApplication.clipboard().text() == url
    assert not section.address.isEnabled() and not section.port.isEnabled()  # fixed while serving

    assert get_models(url, None)[0] == 401
    status, body = get_models(url, secret)
    assert status == 200 and [m["id"] for m in body["data"]] == ["tiny-moe", "library/notes"]
    qtbot.waitUntil(lambda: section.counts.text() == "2 served · 0 in flight · 0 waiting", timeout=5000)

    saved = services.current_settings()  # what served is what Enclave remembers
    assert (saved.serve_host, saved.serve_port) == ("127.0.0.1", port)

    section.switch.setChecked(False)
    assert section.server.status().state == ServeState.STOPPED and port_is_free(port)
    assert section.state.text() == "Not serving." and section.url.text() == ""
    assert section.port.isEnabled() and not section.timer.isActive()


def test_a_port_in_use_is_said_inline(page: SettingsPage) -> None:
    section = page.serve
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        serve_on(section, taken.getsockname()[1])
        port = taken.getsockname()[1]
        assert section.server.status().state == ServeState.FAILED
        assert section.state.text() == (f"Not serving. Port {port} on 127.0.0.1 is already in use (by another "
                                        "program, or another Enclave); choose another port.")
        assert not section.switch.isChecked() and section.url.text() == ""
        assert "Traceback" not in section.state.text()


def test_beyond_loopback_needs_tls_or_insecure_with_its_warning(page: SettingsPage) -> None:
    section = page.serve
    section.address.setCurrentIndex(section.address.findData("0.0.0.0"))
    assert section.warning.isHidden()
    serve_on(section, free_port())
    assert section.server.status().state == ServeState.FAILED
    assert "choose a TLS certificate and key (or tick “Without TLS”" in section.state.text()
    assert "--cert" not in section.state.text()
    section.insecure.setChecked(True)
    assert section.warning.isVisibleTo(page) and "anyone on the network path" in section.warning.text()
    section.cert.setText(str(Path(page.services.paths.data) / "missing.pem"))
    section.key.setText(str(Path(page.services.paths.data) / "missing.key"))
    assert section.warning.isHidden()  # a certificate given: TLS, not the insecure path
    section.switch.setChecked(True)
    assert section.state.text().startswith("Not serving. There is no file ") and "missing.pem" in section.state.text()


def test_creating_a_key_shows_it_once_and_lists_it(qtbot: QtBot, page: SettingsPage, services: Services,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    keys = page.serve.keys
    keys.name_edit.setText("alice")
    keys.create()
    secret = keys.secret_edit.text()
    assert keys.secret_box.isVisibleTo(page) and secret.startswith("enc-")
    assert ApiKeyRepository(services.store).verify(secret) is not None
    assert keys.names() == ["alice"] and keys.table.item(0, 3).text() == "active"
    keys.copy_secret_button.click()
    assert QGuiApplication.clipboard().text() == secret
    keys.forget_secret()
    assert keys.secret_box.isHidden() and keys.secret_edit.text() == ""
    assert secret not in " ".join(keys.table.item(0, c).text() for c in range(4))  # never shown again

    keys.name_edit.setText("alice")
    keys.create()
    assert keys.error.isVisibleTo(page) and "already exists" in keys.error.text() and keys.secret_box.isHidden()

    keys.table.selectRow(0)
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.No)
    keys.revoke_selected()
    assert keys.table.item(0, 3).text() == "active"
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.Yes)
    keys.revoke_selected()
    assert keys.table.item(0, 3).text().startswith("revoked ")
    assert ApiKeyRepository(services.store).verify(secret) is None


def test_a_policy_that_forbids_serving_disables_the_controls_with_its_reason(
        qtbot: QtBot, no_system_policy: Path) -> None:
    no_system_policy.parent.mkdir(parents=True, exist_ok=True)
    no_system_policy.write_text('serve = "off"\n')
    with Services.open() as services:
        page = shown(qtbot, SettingsPage(services, TaskRunner(synchronous=True)), (1024, 700))
        section = page.serve
        assert section.policy_note.isVisibleTo(page)
        assert section.policy_note.text() == ('Serving models over HTTP is turned off by your organisation '
                                              f'(rule serve = "off"), in {no_system_policy}.')
        assert not section.switch.isEnabled() and not section.at_start.isEnabled()
        assert not any(widget.isEnabled() for widget in section.inputs) and not section.keys.isEnabled()


def test_serving_when_enclave_opens_and_closing_the_window_stops_it(qtbot: QtBot, services: Services) -> None:
    port = free_port()
    services.settings.set("serve_port", port)
    services.settings.set("serve_at_start", True)
    page = shown(qtbot, SettingsPage(services, TaskRunner(synchronous=True)), (1024, 700))
    section = page.serve
    assert section.switch.isChecked() and section.url.text() == f"http://127.0.0.1:{port}/v1"
    assert get_models(section.url.text(), None)[0] == 200  # keyless on loopback: the default policy
    page.close()
    assert section.server.status().state == ServeState.STOPPED and port_is_free(port)


def test_requests_in_flight_are_counted_and_end_properly_when_serving_stops(qtbot: QtBot, page: SettingsPage
                                                                             ) -> None:
    section = page.serve
    section.server.grace = 2  # seconds: the generation is stopped after one
    section.keys.name_edit.setText("reader")
    section.keys.create()
    secret = section.keys.secret_edit.text()
    serve_on(section, free_port())
    body = {"model": "tiny-moe", "stream": True, "max_tokens": 100_000,
            "messages": [{"role": "user", "content": "Tell a long story."}]}
    request = urllib.request.Request(f"{section.url.text()}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"})
    events: list[str] = []

    def read() -> None:
        with urllib.request.urlopen(request, timeout=120) as response:
            for line in response:
                if line.startswith(b"data: "):
                    events.append(line.decode().strip().removeprefix("data: "))

    reader = threading.Thread(target=read)
    reader.start()
    qtbot.waitUntil(lambda: len(events) > 2, timeout=60_000)  # the model loads, then the reply streams
    qtbot.waitUntil(lambda: "1 in flight" in section.counts.text(), timeout=2000)
    section.switch.setChecked(False)  # synchronous here: returns once the server has stopped
    reader.join(10)
    assert not reader.is_alive() and section.server.status().state == ServeState.STOPPED
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
    assert section.counts.text().startswith("1 served")
