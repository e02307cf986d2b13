"""Which machine a plan is made for: this one (``Services.machine``: probed in a child
process, off the GUI thread), or a simulated one from VRAM and RAM spin boxes."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QDoubleSpinBox, QGroupBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.services import Services
from app.types import GiB, Machine
from ui.tasks import TaskRunner


def _gib_box(value: float, maximum: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(2)
    box.setRange(0.0, maximum)
    box.setSingleStep(1.0)
    box.setValue(value)
    box.setSuffix(" GiB")
    box.setKeyboardTracking(False)  # typing "24" plans once, not for "2" then "24"
    return box


class MachinePicker(QWidget):
    machineChanged = Signal()

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.detected: Machine | None = None
        self.here = QLabel("Detecting this machine…")
        self.here.setWordWrap(True)
        self.simulate = QGroupBox("Simulate another machine")
        self.simulate.setCheckable(True)
        self.simulate.setChecked(False)
        self.vram = _gib_box(24.0, 4096.0)
        self.vram.setSpecialValueText("no GPU")
        self.vram.setToolTip("The GPU's free memory; 0: a CPU-only machine. 1 GiB of it is kept as a margin.")
        self.ram = _gib_box(64.0, 16384.0)
        self.ram.setMinimum(1.0)
        self.unified = QCheckBox("Unified memory")
        row = QHBoxLayout(self.simulate)
        for label, box in (("VRAM", self.vram), ("RAM", self.ram)):
            row.addWidget(QLabel(label))
            box.setMinimumWidth(110)
            row.addWidget(box)
            row.addSpacing(12)
        row.addWidget(self.unified)
        row.addStretch(1)
        self.unified.setToolTip("Apple silicon: the GPU's memory is the RAM, one pool.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.here)
        layout.addWidget(self.simulate)
        self.simulate.toggled.connect(self._changed)
        self.vram.valueChanged.connect(self._changed)
        self.ram.valueChanged.connect(self._changed)
        self.unified.toggled.connect(self._changed)
        self.detect()

    def detect(self) -> None:
        """Probe this machine again (free memory changes as other programs run)."""
        self.tasks.run(lambda: self.services.machine(refresh=True), on_result=self._detected, on_error=self._failed)

    def machine(self) -> Machine | None:
        """The machine to plan for; None until this one has been detected."""
        if self.simulate.isChecked():
            vram = int(self.vram.value() * GiB) or None
            return self.services.simulated_machine(vram, int(self.ram.value() * GiB),
                                                   unified=self.unified.isChecked())
        return self.detected

    def simulate_machine(self, vram_gib: float | None, ram_gib: float, *, unified: bool = False) -> None:
        """Switch to a simulated machine (one plan update, not one per box)."""
        self.blockSignals(True)
        self.vram.setValue(vram_gib or 0.0)
        self.ram.setValue(ram_gib)
        self.unified.setChecked(unified)
        self.simulate.setChecked(True)
        self.blockSignals(False)
        self.machineChanged.emit()

    def _detected(self, machine: Machine) -> None:
        self.detected = machine
        self.here.setText(f"This machine: {machine.describe()}")
        self._changed()

    def _failed(self, message: str) -> None:
        self.here.setText(f"Could not detect this machine: {message}")

    def _changed(self, *_: object) -> None:
        self.machineChanged.emit()
