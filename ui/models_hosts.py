"""The Models page's "Devices" card: this machine's GPUs and RAM, then each RPC host (another
computer running ``enclave host``) with its devices and free memory, the link's speed, or
why it did not answer; a field to add a host and a Remove button on each.

Adding and removing go through ``Services.hosts`` on a pool thread; ``hostsChanged`` then
asks the machine picker to detect the machine again, so the plan uses the hosts as they
are. Each host is described in the words of ``enclave hosts`` (``describe_host``).
"""

from __future__ import annotations

import html
from dataclasses import replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.hosts import Host, HostStatus, describe_host
from app.services import Services
from app.types import Machine, format_size
from ui.tasks import TaskRunner
from ui.theme import SPACE, colors, error_color, font, icon

MAX_WIDTH = 760
CAPTION = ("Hosts are other computers running “enclave host”: their devices take layers of a model too big for "
           "this one. The connection is not encrypted, so add hosts only on a network you trust.")


def local_text(machine: Machine) -> str:
    """This machine's own devices, in the words of ``Machine.describe``."""
    return f"This machine: {replace(machine, gpus=machine.local_gpus).describe()}"


def host_lines(status: HostStatus) -> tuple[str, list[str]]:
    """(the host and its link, or why it is not reachable; one line per device)."""
    head = describe_host(status)[0]
    devices = status.report.devices if status.report else ()
    return head, [f"{d.id.split('[')[0]} — {format_size(d.free_bytes)} free of {format_size(d.total_bytes)}"
                  for d in devices]


def _wrapping_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class HostRow(QWidget):
    """One host: its address, link and devices (or the reason it is not reachable), and Remove."""

    def __init__(self, status: HostStatus, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.endpoint = status.host.endpoint
        head, devices = host_lines(status)
        self.head = _wrapping_label(head)
        endpoint = html.escape(self.endpoint)
        rest = html.escape(head[len(self.endpoint):]) if head.startswith(self.endpoint) else html.escape(head)
        self.head.setText(f"<b>{endpoint}</b>{rest}")
        self.devices = _wrapping_label("\n".join(devices))
        self.devices.setVisible(bool(devices))
        self.devices.setContentsMargins(SPACE.L, 0, 0, 0)
        if status.report is None:
            self.head.setStyleSheet(f"color: {colors().warning};")
        self.remove_button = QPushButton(icon("trash", size=16), "Remove")
        self.remove_button.setToolTip(f"Stop using {self.endpoint}: plans no longer place layers there.")
        text = QVBoxLayout()
        text.setSpacing(SPACE.XS)
        text.addWidget(self.head)
        text.addWidget(self.devices)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addLayout(text, 1)
        row.addWidget(self.remove_button, 0, Qt.AlignmentFlag.AlignTop)


class DevicesCard(QGroupBox):
    hostsChanged = Signal()  # a host was added or removed: detect the machine again

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__("Devices", parent)
        self.services = services
        self.tasks = tasks
        self.here = _wrapping_label("Detecting this machine…")
        self.rows: list[HostRow] = []
        self.rows_box = QVBoxLayout()
        self.rows_box.setContentsMargins(0, 0, 0, 0)
        self.rows_box.setSpacing(SPACE.S)
        self.address = QLineEdit()
        self.address.setPlaceholderText("address:port, e.g. 192.168.1.20:50052")
        self.address.setToolTip("Where “enclave host” runs on the other computer (port 50052 unless given).")
        self.address.setClearButtonEnabled(True)
        self.add_button = QPushButton("Add host")
        self.check_button = QPushButton("Check again")
        self.check_button.setToolTip("Detect this machine's free memory and ask every host again.")
        self.status = _wrapping_label()
        self.status.hide()
        caption = _wrapping_label(CAPTION)
        caption.setFont(font("small"))
        caption.setStyleSheet(f"color: {colors().muted};")
        self.caption = caption

        add_row = QHBoxLayout()
        add_row.addWidget(self.address, 1)
        add_row.addWidget(self.add_button)
        add_row.addSpacing(SPACE.M)
        add_row.addWidget(self.check_button)
        content = QWidget()  # at a readable width: Remove stays beside its host on a wide screen
        content.setMaximumWidth(MAX_WIDTH)
        column = QVBoxLayout(content)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(SPACE.S)
        column.addWidget(self.here)
        column.addLayout(self.rows_box)
        column.addLayout(add_row)
        column.addWidget(self.status)
        column.addWidget(caption)
        layout = QHBoxLayout(self)
        layout.addWidget(content, 1)
        layout.addStretch(0)

        self.add_button.clicked.connect(lambda: self.add_host())
        self.address.returnPressed.connect(lambda: self.add_host())
        self.check_button.clicked.connect(self.hostsChanged.emit)

    # What the machine picker shows -----------------------------------------------------

    def show_detecting(self) -> None:
        self._set_busy(True)
        if self.rows:
            self._say("Asking the hosts…")

    def show_machine(self, machine: Machine, statuses: list[HostStatus]) -> None:
        self.here.setStyleSheet("")
        self.here.setText(local_text(machine))
        for row in self.rows:
            self.rows_box.removeWidget(row)
            row.deleteLater()
        self.rows = [HostRow(status) for status in statuses]
        for row in self.rows:
            self.rows_box.addWidget(row)
            row.remove_button.clicked.connect(lambda _=False, e=row.endpoint: self.remove_host(e))
        self._set_busy(False)
        if not self.status.styleSheet():  # a failure stays until the next action
            self._say("")

    def show_failure(self, message: str) -> None:
        self.here.setStyleSheet(f"color: {error_color()};")
        self.here.setText(f"Could not detect this machine: {message}")
        self._set_busy(False)

    # Adding and removing ---------------------------------------------------------------

    def add_host(self, address: str | None = None) -> None:
        """Add the host at ``address`` (by default what the field holds), then detect again."""
        text = (self.address.text() if address is None else address).strip()
        if not text:
            self._say("Type the address of a computer running “enclave host”, e.g. 192.168.1.20:50052.", error=True)
            return
        self._set_busy(True)
        self._say(f"Adding {text}…")
        self.tasks.run(lambda: self.services.hosts.add(text), on_result=self._added, on_error=self._refused)

    def _added(self, host: Host) -> None:
        self.address.clear()
        self._say(f"Added {host.endpoint}; asking it for its devices…")
        self.hostsChanged.emit()

    def remove_host(self, endpoint: str) -> None:
        self._set_busy(True)
        self._say(f"Removing {endpoint}…")
        self.tasks.run(lambda: self.services.hosts.remove(endpoint), on_result=lambda _host: self.hostsChanged.emit(),
                       on_error=self._refused)

    def _refused(self, message: str) -> None:
        self._set_busy(False)
        self._say(message, error=True)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setStyleSheet(f"color: {error_color()};" if error else "")
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def _set_busy(self, busy: bool) -> None:
        for button in (self.add_button, self.check_button, *(row.remove_button for row in self.rows)):
            button.setEnabled(not busy)
