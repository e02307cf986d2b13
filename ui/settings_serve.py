"""Settings → "Serve on this network": the OpenAI-compatible API, served by the window itself.

Its rows join the settings page's form (the labels line up down the page): a switch, the
address and port, the TLS certificate and key (needed beyond this machine unless "Without TLS"
is ticked, which is warned about), whether to serve when Enclave opens, the state in words, the
URL to copy, requests served / in flight / waiting (a timer polls the server twice a second
while it runs), and the API keys (``settings_serve_keys``). The organisation's policy is
asked first: where it forbids serving, the controls are disabled and its reason shown.

Unlike the rest of the page these values are not saved by Save: they are saved when serving
starts with them (and the start-up choice when it is ticked). Starting and stopping run off
the GUI thread; closing the window (or quitting) stops the server, replies in flight
getting a few seconds to end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtNetwork import QAbstractSocket, QNetworkInterface
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.policy import is_loopback
from app.server.config import ServeConfig
from app.server.embedded import EmbeddedServer, ServeState, ServeStatus, window_words
from app.services import Services
from app.settings import DESCRIPTIONS
from ui.settings_serve_keys import ServeKeys
from ui.tasks import TaskRunner
from ui.theme import colors, error_color, icon
from ui.widgets import left_aligned

TITLE = "Serve on this network"
ABOUT = ("Let other programs and computers use your models and libraries through an OpenAI-compatible API "
         "(as 'enclave serve' does). Saved when serving starts.")
LOOPBACK, EVERYWHERE = "127.0.0.1", "0.0.0.0"
POLL_MS = 500
PEM_FILTER = "PEM files (*.pem *.crt *.cer *.key);;All files (*)"
Section = Callable[[QFormLayout, str, str], None]


def local_addresses() -> list[str]:
    """This computer's own IPv4 addresses beyond loopback (Qt asks the interfaces; nothing is looked up)."""
    found = {address.toString() for address in QNetworkInterface.allAddresses()
             if address.protocol() == QAbstractSocket.NetworkLayerProtocol.IPv4Protocol and not address.isLoopback()}
    return sorted(found)


def state_text(status: ServeStatus) -> str:
    if status.state == ServeState.SERVING:
        keys = "every request needs an API key" if status.keys_required else "no key needed from this computer"
        return f"Serving at {status.url} — {keys}."
    return {ServeState.STARTING: "Starting…", ServeState.STOPPING: "Stopping: replies in flight are finishing…",
            ServeState.FAILED: f"Not serving. {status.reason or ''}".strip(),
            ServeState.STOPPED: "Not serving."}[status.state]


def counts_text(status: ServeStatus) -> str:
    return f"{status.served:,} served · {status.in_flight:,} in flight · {status.waiting:,} waiting"


class ServeSection(QObject):
    def __init__(self, services: Services, tasks: TaskRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.server = EmbeddedServer(services)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self._form: QFormLayout | None = None
        self._build()
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # Layout -------------------------------------------------------------------------------

    def _build(self) -> None:
        self.policy_note = QLabel()
        self.policy_note.setWordWrap(True)
        self.policy_note.setStyleSheet(f"color: {error_color()};")
        self.switch = QCheckBox("Serve the API")
        self.switch.setToolTip("Start or stop the OpenAI-compatible API. Other programs then use "
                               "/v1/models, /v1/chat/completions and /v1/completions at the URL below.")
        self.switch.toggled.connect(self._switched)
        self.address = QComboBox()
        self.address.setToolTip(DESCRIPTIONS["serve_host"])
        self.address.currentIndexChanged.connect(self._check)
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setToolTip(DESCRIPTIONS["serve_port"])
        self.cert_row, self.cert = self._path_edit("serve_cert", "Certificate file (PEM)")
        self.key_row, self.key = self._path_edit("serve_key", "Private key file (PEM)")
        self.insecure = QCheckBox("Without TLS (insecure)")
        self.insecure.setToolTip(DESCRIPTIONS["serve_insecure"])
        self.insecure.toggled.connect(self._check)
        self.warning = QLabel()  # one line: a wrapped label in a form row is given room for four
        self.warning.setToolTip("Use it only on a network you trust, or choose a certificate and key for TLS.")
        self.warning.setStyleSheet(f"color: {colors().warning};")
        self.at_start = QCheckBox("Serve when Enclave opens")
        self.at_start.setToolTip(DESCRIPTIONS["serve_at_start"])
        self.at_start.toggled.connect(self._save_at_start)
        self.state = QLabel()
        self.state.setWordWrap(True)
        self.state.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.url = QLineEdit()
        self.url.setReadOnly(True)
        self.url.setPlaceholderText("The address to give others appears here while serving")
        self.copy_button = QPushButton(icon("copy"), "Copy")
        self.copy_button.setToolTip("Copy the API's address (the base URL OpenAI clients ask for).")
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.url.text()))
        self.counts = QLabel()
        self.counts.setToolTip("Requests answered since serving started; admitted and not finished; and in "
                               "line for the model.")
        self.keys = ServeKeys(self.services, self.tasks)
        self.inputs: tuple[QWidget, ...] = (self.address, self.port, self.cert_row, self.key_row, self.insecure)
        self._tips = {widget: widget.toolTip() for widget in self.inputs}

    def _path_edit(self, name: str, title: str) -> tuple[QWidget, QLineEdit]:
        """A file path with its Choose… button: (the row, its edit)."""
        holder = QWidget()
        edit = QLineEdit(holder)
        edit.setToolTip(DESCRIPTIONS[name])
        edit.setPlaceholderText("Needed beyond this computer, unless without TLS")
        edit.textChanged.connect(self._check)
        choose = QPushButton(icon("folder"), "Choose…")
        choose.setToolTip(f"Choose the {title.lower()}.")
        choose.clicked.connect(lambda: self._choose(edit, title))
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        row.addWidget(choose)
        return holder, edit

    def add_rows(self, form: QFormLayout, section: Section) -> None:
        """Append this section to the settings page's ``form`` (``section``: the page's heading rows)."""
        section(form, TITLE, ABOUT)
        self._form = form
        form.addRow(self.policy_note)
        form.addRow("", self.switch)
        form.addRow("Address", self.address)
        form.addRow("Port", left_aligned(self.port))
        form.addRow("TLS certificate", self.cert_row)
        form.addRow("TLS key", self.key_row)
        form.addRow("", self.insecure)
        form.addRow("", self.warning)
        form.addRow("", self.at_start)
        form.addRow("Status", self.state)
        url_row = QHBoxLayout()
        url_row.addWidget(self.url, 1)
        url_row.addWidget(self.copy_button)
        form.addRow("URL", url_row)
        form.addRow("Requests", self.counts)
        form.addRow("API keys", self.keys)
        self.load()

    # Values -------------------------------------------------------------------------------

    def load(self) -> None:
        """Show the saved choices; start serving if that is what Enclave opens with."""
        saved = self.services.current_settings()
        self._fill_addresses(saved.serve_host)
        self.port.setValue(saved.serve_port)
        self.cert.setText(saved.serve_cert or "")
        self.key.setText(saved.serve_key or "")
        self.insecure.setChecked(saved.serve_insecure)
        self.at_start.blockSignals(True)
        self.at_start.setChecked(saved.serve_at_start)
        self.at_start.blockSignals(False)
        self.show_status(self.server.status())
        if saved.serve_at_start and self.services.policy.serve_refusal(saved.serve_host) is None:
            self.switch.setChecked(True)

    def _fill_addresses(self, current: str) -> None:
        self.address.clear()
        self.address.addItem(f"This computer only ({LOOPBACK})", LOOPBACK)
        self.address.addItem(f"Every network this computer is on ({EVERYWHERE})", EVERYWHERE)
        for address in local_addresses():
            self.address.addItem(f"Only {address}", address)
        if self.address.findData(current) < 0:
            self.address.addItem(f"Only {current}", current)
        self.address.setCurrentIndex(self.address.findData(current))

    def config(self) -> ServeConfig:
        cert, key = self.cert.text().strip(), self.key.text().strip()
        return ServeConfig(str(self.address.currentData()), self.port.value(), None, Path(cert) if cert else None,
                           Path(key) if key else None, self.insecure.isChecked())

    def _save(self, config: ServeConfig) -> None:
        values = {"serve_host": config.host, "serve_port": config.port, "serve_insecure": config.insecure,
                  "serve_cert": str(config.cert) if config.cert else None,
                  "serve_key": str(config.key) if config.key else None}
        for name, value in values.items():
            self.services.settings.set(name, value)

    def _save_at_start(self, on: bool) -> None:
        self.tasks.run(lambda: self.services.settings.set("serve_at_start", on))

    def _choose(self, edit: QLineEdit, title: str) -> None:
        start = edit.text() or str(Path.home())
        chosen, _filter = QFileDialog.getOpenFileName(edit, title, start, PEM_FILTER)
        if chosen:
            edit.setText(chosen)

    # Checks -------------------------------------------------------------------------------

    def refusal(self) -> str | None:
        """The policy's word on the chosen address, in the window's words."""
        refused = self.services.policy.serve_refusal(str(self.address.currentData() or LOOPBACK))
        return window_words(f"{refused}, in {self.services.policy.source}.") if refused else None

    def _check(self) -> None:
        """Enable what may be used now and say why not; the insecure warning."""
        running = self.server.status().running
        forbidden = self.services.policy.serve == "off"
        refusal = self.refusal()
        self.policy_note.setText(refusal or "")
        self._show_row(self.policy_note, refusal is not None)
        self.switch.setEnabled(not forbidden and (running or refusal is None))
        self.at_start.setEnabled(not forbidden)
        for widget in self.inputs:
            widget.setEnabled(not forbidden and not running)
            widget.setToolTip("Turn serving off to change this." if running else self._tips[widget])
        self.keys.setEnabled(not forbidden)
        beyond = not is_loopback(str(self.address.currentData() or LOOPBACK))
        insecure = beyond and self.insecure.isChecked() and not self.cert.text().strip()
        self.warning.setText("Without TLS, anyone on the network path can read prompts, replies and API keys."
                             if insecure else "")
        self._show_row(self.warning, insecure)

    def _show_row(self, widget: QWidget, shown: bool) -> None:
        """Hidden rows take no room in the form (a hidden widget alone would leave its spacing)."""
        if self._form is not None:
            self._form.setRowVisible(widget, shown)
        else:
            widget.setVisible(shown)

    # Starting and stopping -----------------------------------------------------------------

    def _switched(self, on: bool) -> None:
        if on and not self.server.status().running:
            self.start()
        elif not on and self.server.status().running:
            self.stop()

    def start(self) -> None:
        config = self.config()
        self.show_status(ServeStatus(ServeState.STARTING))
        self.timer.start()

        def start() -> ServeStatus:
            status = self.server.start(config)
            if status.state == ServeState.SERVING:
                self._save(config)
            return status

        self.tasks.run(start, on_result=self.show_status, on_error=self._failed)

    def stop(self) -> None:
        self.show_status(ServeStatus(ServeState.STOPPING))
        self.tasks.run(self.server.stop, on_result=self.show_status, on_error=self._failed)

    def shutdown(self) -> None:
        """The window closes (its owner calls this, after stopping its own reply: the server's
        last requests may be waiting for the worker it holds), or the app quits: stop serving
        now (blocking for at most the grace)."""
        self.timer.stop()
        if self.server.status().running:
            self.server.stop()

    def _failed(self, message: str) -> None:
        self.show_status(ServeStatus(ServeState.FAILED, reason=message))

    def poll(self) -> None:
        self.show_status(self.server.status())

    def show_status(self, status: ServeStatus) -> None:
        self.state.setText(state_text(status))
        failed = status.state == ServeState.FAILED
        self.state.setStyleSheet(f"color: {error_color()};" if failed else "")
        self.url.setText(status.url if status.state == ServeState.SERVING and status.url else "")
        self.copy_button.setEnabled(bool(self.url.text()))
        self.counts.setText(counts_text(status))
        if not status.running:
            self.timer.stop()
        self.switch.blockSignals(True)
        self.switch.setChecked(status.running)
        self.switch.blockSignals(False)
        self._check()
