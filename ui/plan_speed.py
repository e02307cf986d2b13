"""The speed a plan predicts, under its verdict: "About 42 tokens/s generating (35 at a
full context), 900 tokens/s reading a prompt", and the network traffic per token when
RPC hosts hold layers.

``Services.predicted_speed`` measures each device once (a few seconds, then cached), so it
runs on a pool thread. Plans change with every slider step: one computation runs at a
time, and when it ends only the newest plan asked for meanwhile is computed; an answer
for an older plan is dropped. Nothing is computed while the label is not on screen (a
page the user has not opened measures nothing); it catches up when shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QLabel, QWidget

from app.services import Services
from app.types import GGUFInfo, Machine, Plan, PredictedSpeed, format_size
from ui.tasks import TaskRunner

MEASURING = "Measuring this machine's speed…"
MEASURING_AFTER_MS = 400  # a quick answer replaces the old one without a flash of "Measuring…"


def rate(tokens_per_s: float) -> str:
    return f"{tokens_per_s:,.0f}" if tokens_per_s >= 10 else f"{tokens_per_s:.1f}"


def speed_text(speed: PredictedSpeed) -> str:
    """The prediction in a user's words."""
    text = (f"About {rate(speed.generation_tps)} tokens/s generating ({rate(speed.generation_full_tps)} at a "
            f"full context), {rate(speed.prompt_tps)} tokens/s reading a prompt.")
    traffic = [f"{format_size(n)} per token to {host}" for host, n in speed.link_bytes_per_token.items() if n]
    if traffic:
        text += " Over the network: " + ", ".join(traffic) + "."
    return text


def speed_tooltip(speed: PredictedSpeed) -> str:
    return (f"Most of a token's time: {speed.dominant}.\nPredicted from how fast each device reads memory "
            "(measured once on this machine and its hosts; published figures for simulated devices) and the "
            "bytes each token reads there, plus the network.")


@dataclass(frozen=True)
class _Ask:
    number: int
    info: GGUFInfo
    plan: Plan
    machine: Machine


class SpeedLabel(QLabel):
    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.speed: PredictedSpeed | None = None  # the one shown
        self._asked = 0  # number of the newest plan asked for
        self._wanted: _Ask | None = None  # the newest plan not computed yet
        self._running: int | None = None  # number of the plan being computed
        self._slow = QTimer(self)
        self._slow.setSingleShot(True)
        self._slow.setInterval(MEASURING_AFTER_MS)
        self._slow.timeout.connect(lambda: self._show_measuring())

    def set_plan(self, info: GGUFInfo | None, plan: Plan | None, machine: Machine | None) -> None:
        """Predict ``plan``'s speed off the GUI thread; nothing is shown without a plan."""
        self._asked += 1
        if info is None or plan is None or machine is None:
            self._wanted = None
            self._slow.stop()
            self._show(None)
            return
        self._wanted = _Ask(self._asked, info, plan, machine)
        self._start()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._start()

    def _start(self) -> None:
        if self._running is not None or self._wanted is None or not self.isVisible():
            return
        ask, self._wanted = self._wanted, None
        self._running = ask.number
        if self.speed is None:
            self._show_measuring()
        else:
            self._slow.start()
        self.tasks.run(lambda: self.services.predicted_speed(ask.info, ask.plan, ask.machine),
                       on_result=lambda speed: self._done(ask.number, speed),
                       on_error=lambda _message: self._done(ask.number, None))

    def _done(self, number: int, speed: PredictedSpeed | None) -> None:
        self._running = None
        if number == self._asked:  # a newer plan wins: an answer for an older one is dropped
            self._slow.stop()
            self._show(speed)
        self._start()

    def _show_measuring(self) -> None:
        if self._running == self._asked or self._wanted is not None:  # the plan shown is still awaited
            self.setText(MEASURING)
            self.setToolTip("Each device's speed is measured once, in a few seconds, then remembered.")

    def _show(self, speed: PredictedSpeed | None) -> None:
        self.speed = speed
        self.setText(speed_text(speed) if speed else "")
        self.setToolTip(speed_tooltip(speed) if speed else "")
