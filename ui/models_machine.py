"""Which machine a plan is made for: this one (``Services.machine``: probed in a child
process, off the GUI thread, with the devices of the RPC hosts that answer), or a simulated
one: 1–8 GPUs of one size, RAM, and optionally a simulated host (its GPUs behind a link of
so many Gbit/s), so a plan across hosts can be seen without having them.

With ``devices=True`` (the plan view) this machine and its hosts are shown in a
``DevicesCard`` where hosts are added and removed; otherwise (the catalog) in one line.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.hosts import HostStatus
from app.services import Services
from app.types import GiB, Machine, SimulatedHost
from ui.models_hosts import DevicesCard
from ui.tasks import TaskRunner
from ui.theme import SPACE

MAX_GPUS = 8
MAX_HOST_GPUS = 16


def _gib_box(value: float, maximum: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(2)
    box.setRange(0.0, maximum)
    box.setSingleStep(1.0)
    box.setValue(value)
    box.setSuffix(" GiB")
    box.setKeyboardTracking(False)  # typing "24" plans once, not for "2" then "24"
    box.setMinimumWidth(110)
    return box


def _count_box(value: int, maximum: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(1, maximum)
    box.setValue(value)
    box.setKeyboardTracking(False)
    return box


def _row(*items: QWidget | str | int) -> QHBoxLayout:
    """A row of widgets; a string is a label, an int a gap."""
    row = QHBoxLayout()
    for item in items:
        if isinstance(item, int):
            row.addSpacing(item)
        else:
            row.addWidget(QLabel(item) if isinstance(item, str) else item)
    row.addStretch(1)
    return row


class MachinePicker(QWidget):
    machineChanged = Signal()

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None, *,
                 devices: bool = False) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.detected: Machine | None = None
        self.statuses: list[HostStatus] = []
        self.card = DevicesCard(services, tasks) if devices else None
        self.here = self.card.here if self.card else QLabel("Detecting this machine…")
        self.here.setWordWrap(True)
        self._build_simulation()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.card or self.here)
        layout.addWidget(self.simulate)
        if self.card is not None:
            self.card.hostsChanged.connect(self.detect)
        self.detect()

    def _build_simulation(self) -> None:
        self.simulate = QGroupBox("Simulate another machine")
        self.simulate.setCheckable(True)
        self.simulate.setChecked(False)
        self.gpu_count = _count_box(1, MAX_GPUS)
        self.gpu_count.setToolTip("How many GPUs, each with the memory on the right.")
        self.vram = _gib_box(24.0, 4096.0)
        self.vram.setSpecialValueText("no GPU")
        self.vram.setToolTip("Each GPU's free memory; 0: a CPU-only machine. 1 GiB of it is kept as a margin.")
        self.ram = _gib_box(64.0, 16384.0)
        self.ram.setMinimum(1.0)
        self.unified = QCheckBox("Unified memory")
        self.unified.setToolTip("Apple silicon: the GPU's memory is the RAM, one pool.")
        self.sim_host = QCheckBox("A host with")
        self.sim_host.setToolTip("Another computer running “enclave host”, simulated: its GPUs take layers, and "
                                 "the link's speed adds to each token's time.")
        self.host_count = _count_box(8, MAX_HOST_GPUS)
        self.host_vram = _gib_box(80.0, 4096.0)
        self.host_vram.setMinimum(1.0)
        self.host_link = QDoubleSpinBox()
        self.host_link.setRange(0.1, 1600.0)
        self.host_link.setDecimals(1)
        self.host_link.setValue(25.0)
        self.host_link.setSuffix(" Gbit/s")
        self.host_link.setKeyboardTracking(False)
        self.host_link.setToolTip("The network between this machine and the host: 10, 25, 100 Gbit/s…")
        self.host_link.setMinimumWidth(110)
        box = QVBoxLayout(self.simulate)
        box.setSpacing(SPACE.S)
        box.addLayout(_row("GPUs", self.gpu_count, "×", self.vram, SPACE.M, "RAM", self.ram, SPACE.M, self.unified))
        box.addLayout(_row(self.sim_host, self.host_count, "GPUs ×", self.host_vram, "over", self.host_link))
        for signal in (self.simulate.toggled, self.unified.toggled, self.sim_host.toggled):
            signal.connect(self._changed)
        for spin in (self.gpu_count, self.vram, self.ram, self.host_count, self.host_vram, self.host_link):
            spin.valueChanged.connect(self._changed)
        self._enable_simulation()

    def detect(self) -> None:
        """Probe this machine and ask the hosts again (free memory changes as other programs
        run; a host may have come up or gone)."""
        if self.card is not None:
            self.card.show_detecting()

        def work() -> tuple[Machine, list[HostStatus]]:
            machine = self.services.machine(refresh=True)
            return machine, self.services.host_statuses()  # what that probe found, not asked again

        self.tasks.run(work, on_result=self._detected, on_error=self._failed)

    def machine(self) -> Machine | None:
        """The machine to plan for; None until this one has been detected."""
        if self.simulate.isChecked():
            vram = int(self.vram.value() * GiB)
            gpus: int | list[int] | None = None if not vram else vram if self.gpu_count.value() == 1 else \
                [vram] * self.gpu_count.value()
            hosts = [SimulatedHost(self.host_count.value(), int(self.host_vram.value() * GiB),
                                   self.host_link.value() * 1e9)] if self.sim_host.isChecked() else []
            return self.services.simulated_machine(gpus, int(self.ram.value() * GiB),
                                                   unified=self.unified.isChecked(), hosts=hosts)
        return self.detected

    def simulate_machine(self, vram_gib: float | None, ram_gib: float, *, unified: bool = False, gpus: int = 1,
                         host: tuple[int, float, float] | None = None) -> None:
        """Switch to a simulated machine (one plan update, not one per box): ``gpus`` GPUs of
        ``vram_gib`` each (None: none), and ``host``: (GPUs, GiB each, link in Gbit/s), or none."""
        self.blockSignals(True)
        self.vram.setValue(vram_gib or 0.0)
        self.gpu_count.setValue(gpus)
        self.ram.setValue(ram_gib)
        self.unified.setChecked(unified)
        self.sim_host.setChecked(host is not None)
        if host is not None:
            self.host_count.setValue(host[0])
            self.host_vram.setValue(host[1])
            self.host_link.setValue(host[2])
        self.simulate.setChecked(True)
        self.blockSignals(False)
        self._changed()

    def _detected(self, answer: tuple[Machine, list[HostStatus]]) -> None:
        self.detected, self.statuses = answer
        if self.card is not None:
            self.card.show_machine(*answer)
        else:
            self.here.setText(f"This machine: {self.detected.describe()}")
        self._changed()

    def _failed(self, message: str) -> None:
        if self.card is not None:
            self.card.show_failure(message)
        else:
            self.here.setText(f"Could not detect this machine: {message}")

    def _enable_simulation(self) -> None:
        self.gpu_count.setEnabled(self.vram.value() > 0 and not self.unified.isChecked())
        for box in (self.host_count, self.host_vram, self.host_link):
            box.setEnabled(self.sim_host.isChecked())

    def _changed(self, *_: object) -> None:
        self._enable_simulation()
        self.machineChanged.emit()
