"""The Models page beside RPC hosts: the Devices card (this machine, each host's devices and
link, or why it is not reachable; add and remove), a simulated machine with GPUs and a host,
one bar per device in llama.cpp's order, and the predicted speed under the verdict, computed
off the GUI thread with a newer plan winning (offscreen Qt)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtGui import QFontMetrics
from pytestqt.qtbot import QtBot

from app.hosts import Host, HostStatus
from app.services import Services
from app.types import GiB, PlanRequest
from inference.device_speed import LinkSpeed
from inference.devices import GpuDevice, Machine, SimulatedHost, simulated_machine
from inference.ggml_backend import BackendDevice
from inference.probe import HostReport
from ui.models_page import ModelsPage
from ui.models_plan_bars import PAD, PlanBars, device_name
from ui.plan_speed import MEASURING, SpeedLabel, rate, speed_text
from ui.plan_view import PlanView
from ui.tasks import TaskRunner
from ui.theme import colors

HERE = "10.0.0.5:50052"
DOWN = "10.0.0.9:50052"


def rpc_device(number: int, endpoint: str, free_gib: float, total_gib: float) -> BackendDevice:
    ident = f"RPC{number}[{endpoint}]"
    return BackendDevice(number, f"RPC{number}", "CUDA0 on the host", "gpu", int(free_gib * GiB),
                         int(total_gib * GiB), id=ident, host=endpoint)


def reachable(endpoint: str) -> HostStatus:
    devices = (rpc_device(0, endpoint, 23.5, 24), rpc_device(1, endpoint, 10, 24))
    return HostStatus(Host(endpoint), HostReport(endpoint, devices, LinkSpeed(endpoint, 1.175e9, 0.00025)))


def statuses_of(services: Services) -> list[HostStatus]:
    """What the probe would say of the added hosts: HERE answers, any other does not."""
    return [reachable(h.endpoint) if h.endpoint == HERE else HostStatus(h, None, "connection refused (time-out 3 s)")
            for h in services.hosts.list()]


def machine_with(statuses: list[HostStatus]) -> Machine:
    local = (GpuDevice("CUDA0", "RTX 4090", 20 * GiB, 24 * GiB),)
    remote = tuple(GpuDevice(d.name, d.description, d.free_bytes, d.total_bytes, host=s.host.endpoint, ident=d.id)
                   for s in statuses if s.report for d in s.report.devices)
    return Machine(gpus=local + remote, ram_free_bytes=60 * GiB, ram_total_bytes=64 * GiB,
                   links=tuple(s.report.link for s in statuses if s.report),
                   unreachable=tuple((s.host.endpoint, s.error or "") for s in statuses if s.report is None))


@pytest.fixture
def fake_hosts(services: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    """Services whose machine and host statuses come from the added hosts, no probe run."""
    monkeypatch.setattr(services, "host_statuses", lambda refresh=False: statuses_of(services))
    monkeypatch.setattr(services, "machine", lambda refresh=False: machine_with(statuses_of(services)))
    monkeypatch.setattr(services.speeds, "with_speeds", lambda machine, threads: machine)  # no measuring
    return services


@pytest.fixture
def page(qtbot: QtBot, fake_hosts: Services) -> ModelsPage:
    widget = ModelsPage(fake_hosts, TaskRunner(synchronous=True))
    qtbot.addWidget(widget)
    widget.resize(1024, 700)
    return widget


def with_moe(page: ModelsPage, moe_model: Path) -> PlanView:
    page.import_paths([moe_model], mode="in_place")
    assert page.plan_view.shape is not None and page.plan_view.shape.is_moe
    return page.plan_view


# The Devices card -----------------------------------------------------------------------


def test_hosts_are_listed_beside_this_machine(page: ModelsPage, fake_hosts: Services) -> None:
    fake_hosts.hosts.add(HERE)
    fake_hosts.hosts.add(DOWN)
    picker = page.plan_view.machine_picker
    picker.detect()
    card = picker.card
    assert card is not None
    assert card.here.text() == "This machine: CUDA0 20.0 GiB free; 60.0 GiB RAM free of 64.0 GiB"
    up, down = card.rows
    assert up.endpoint == HERE and down.endpoint == DOWN
    assert up.head.text() == f"<b>{HERE}</b>: link 9.4 Gbit/s, 0.25 ms round trip"
    assert up.devices.text() == "RPC0 — 23.5 GiB free of 24.0 GiB\nRPC1 — 10.0 GiB free of 24.0 GiB"
    assert down.head.text() == f"<b>{DOWN}</b>: not reachable: connection refused (time-out 3 s)"
    assert colors().warning in down.head.styleSheet() and not up.head.styleSheet()
    assert down.devices.isHidden()
    machine = picker.machine()  # the plan is made for this machine and the host that answered
    assert machine is not None and [g.label for g in machine.gpus] == ["CUDA0", f"RPC0 on {HERE}", f"RPC1 on {HERE}"]
    assert "not encrypted" in card.caption.text() and "enclave host" in card.caption.text()


def test_add_and_remove_a_host_through_the_card(page: ModelsPage, fake_hosts: Services, moe_model: Path) -> None:
    view = with_moe(page, moe_model)
    card = view.machine_picker.card
    assert card is not None and card.rows == []
    plans: list[object] = []
    view.planChanged.connect(plans.append)

    card.address.setText(HERE)
    card.add_button.click()
    assert [h.endpoint for h in fake_hosts.hosts.list()] == [HERE]
    assert card.address.text() == "" and [row.endpoint for row in card.rows] == [HERE]
    assert plans, "adding a host detects the machine again and plans again"
    assert any(use.host == HERE for use in view.plan.devices)  # type: ignore[union-attr]

    card.address.setText("10.0.0.9")  # the default port is added
    card.address.returnPressed.emit()
    assert [row.endpoint for row in card.rows] == [HERE, DOWN]
    assert "not reachable" in card.rows[1].head.text()

    card.rows[0].remove_button.click()
    assert [h.endpoint for h in fake_hosts.hosts.list()] == [DOWN]
    assert [row.endpoint for row in card.rows] == [DOWN]
    assert not any(use.host for use in view.plan.devices)  # type: ignore[union-attr]


def test_a_bad_address_is_said_in_one_line(page: ModelsPage, fake_hosts: Services) -> None:
    card = page.plan_view.machine_picker.card
    assert card is not None
    card.add_host("10.0.0.5:99999")
    assert card.status.text() == "'10.0.0.5:99999' is not a host address: the port must be between 1 and 65535."
    assert "color" in card.status.styleSheet() and fake_hosts.hosts.list() == []
    card.add_host("")
    assert card.status.text().startswith("Type the address of a computer running")
    assert card.add_button.isEnabled()


# A simulated machine with GPUs and a host; one bar per device ----------------------------


def test_a_simulated_host_gets_the_first_bars(page: ModelsPage, moe_model: Path) -> None:
    view = with_moe(page, moe_model)
    picker = view.machine_picker
    picker.simulate_machine(1.0, 64.0, gpus=2, host=(2, 80.0, 25.0))  # no room on the GPUs (1 GiB margin)
    machine = picker.machine()
    assert machine is not None and machine.simulated
    assert [g.label for g in machine.gpus] == ["GPU0", "GPU1", "RPC0 on sim-host-1:50052", "RPC1 on sim-host-1:50052"]
    assert machine.links[0].bytes_per_s == 25e9 / 8
    plan = view.plan
    assert plan is not None and plan.fits
    labels = [device_name(row.use) for row in view.bars.rows()]
    # the host's two GPUs share the layers by free memory (the output head with the last)
    assert labels == ["RPC0 on sim-host-1:50052 · 2 layers", "RPC1 on sim-host-1:50052 · 2 layers", "GPU0", "GPU1",
                      "RAM"]
    rows = view.bars.rows()
    assert rows[0].title.startswith("RPC0 on sim-host-1:50052 · 2 layers: ") and rows[0].title.endswith("usable")
    assert rows[1].title.startswith("RPC1 on sim-host-1:50052 · 2 layers: ")
    assert rows[2].title == "GPU0: not used — too little free memory"
    assert all(a.bar.bottom() < b.title_y for a, b in itertools.pairwise(rows))  # no overlap

    picker.sim_host.setChecked(False)  # off: the plan is this machine's alone
    assert [device_name(row.use).split(" ·")[0] for row in view.bars.rows()] == ["GPU0", "GPU1", "RAM"]
    picker.gpu_count.setValue(3)
    assert [row.use.label for row in view.bars.rows()] == ["GPU0", "GPU1", "GPU2", "RAM"]


@pytest.mark.parametrize("gpus", [1, 3, 10])
def test_bars_stay_readable_with_many_devices(qtbot: QtBot, services: Services, moe_model: Path, gpus: int) -> None:
    info = services.runtime.inspect(str(moe_model))
    hosts = [SimulatedHost(gpus - 1, 80 * GiB, 10e9)] if gpus > 1 else []  # long labels: "RPC0 on sim-host-1…"
    plan = services.plan(info, PlanRequest(n_ctx=512), simulated_machine(24 * GiB, 8 * GiB, hosts=hosts))
    assert len(plan.devices) == gpus + 1
    bars = PlanBars()
    qtbot.addWidget(bars)
    bars.set_plan(plan)
    metrics = QFontMetrics(bars.font())
    for width in (240, 700):
        bars.resize(width, bars.heightForWidth(width))
        rows = bars.rows()
        assert len(rows) == gpus + 1 and rows[-1].use.device == "RAM"
        assert all(metrics.horizontalAdvance(line) <= width - 2 * PAD
                   for row in rows for line in (*row.title_lines, *row.detail_lines))
        last = rows[-1]
        assert last.bar.bottom() + len(last.detail_lines) * metrics.height() < bars.height()  # nothing cut off


def test_a_long_host_label_wraps_then_elides_in_a_narrow_panel(qtbot: QtBot, services: Services,
                                                             moe_model: Path) -> None:
    info = services.runtime.inspect(str(moe_model))
    endpoint = "gpu-box-in-the-basement.internal.example.org:50052"
    machine = Machine(gpus=(GpuDevice("RPC0", "host GPU", 8 * GiB, 8 * GiB, host=endpoint,
                                      ident=f"RPC0[{endpoint}]"),), ram_free_bytes=8 * GiB, ram_total_bytes=8 * GiB)
    plan = services.plan(info, PlanRequest(n_ctx=512), machine)
    bars = PlanBars()
    qtbot.addWidget(bars)
    bars.set_plan(plan)
    bars.resize(240, bars.heightForWidth(240))
    first = bars.rows()[0]
    assert first.title.startswith(f"RPC0 on {endpoint} · 4 layers: ")
    assert len(first.title_lines) == 2 and "…" in first.title_lines[0]  # the name elided, its use on line two
    assert first.title_lines[1].endswith("usable")
    bars.resize(900, bars.heightForWidth(900))
    assert bars.rows()[0].title_lines == (first.title,)


# The predicted speed ----------------------------------------------------------------------


def test_the_predicted_speed_shows_under_the_verdict(qtbot: QtBot, page: ModelsPage, fake_hosts: Services,
                                                     moe_model: Path) -> None:
    view = with_moe(page, moe_model)
    view.machine_picker.simulate_machine(1.0, 64.0, gpus=2, host=(8, 80.0, 25.0))
    assert view.speed.text() == "", "a page not on screen measures nothing"
    page.show()
    qtbot.waitExposed(page)
    plan, machine = view.plan, view.machine()
    assert plan is not None and machine is not None and view.info is not None
    expected = fake_hosts.predicted_speed(view.info, plan, machine)
    assert expected is not None and expected.link_bytes_per_token
    text = view.speed.text()
    assert text == speed_text(expected)
    assert text.startswith(f"About {rate(expected.generation_tps)} tokens/s generating "
                           f"({rate(expected.generation_full_tps)} at a full context), "
                           f"{rate(expected.prompt_tps)} tokens/s reading a prompt.")
    assert re.search(r"Over the network: [\d.]+ (B|KiB|MiB) per token to sim-host-1:50052\.$", text), text
    assert "Most of a token's time" in view.speed.toolTip()

    view.machine_picker.sim_host.setChecked(False)  # no host: no network line
    assert view.speed.text().startswith("About ") and "network" not in view.speed.text()
    view.machine_picker.simulate_machine(None, 0.5)  # does not fit: no speed
    assert view.plan is not None and not view.plan.fits and view.speed.text() == ""


class HeldTasks(TaskRunner):
    """A runner that holds each job until the test finishes it."""

    def __init__(self) -> None:
        super().__init__(synchronous=True)
        self.held: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

    def run(self, fn: Callable[[], Any], *, on_result: Any = None, on_error: Any = None, serial: bool = False) -> Any:
        self.held.append((fn, on_result))

    def finish(self) -> None:
        fn, on_result = self.held.pop(0)
        on_result(fn())


def test_a_newer_plan_wins_and_measuring_is_said(qtbot: QtBot, fake_hosts: Services, moe_model: Path) -> None:
    info = fake_hosts.runtime.inspect(str(moe_model))
    machine = simulated_machine(24 * GiB, 64 * GiB)
    short, long = (fake_hosts.plan(info, PlanRequest(n_ctx=n), machine) for n in (512, 4096))
    tasks = HeldTasks()
    label = SpeedLabel(fake_hosts, tasks)
    qtbot.addWidget(label)
    label.show()
    label.set_plan(info, short, machine)
    assert label.text() == MEASURING and len(tasks.held) == 1
    label.set_plan(info, long, machine)  # while the first runs: waits, the first is not repeated
    assert len(tasks.held) == 1
    tasks.finish()  # the first plan's answer: dropped, the newest is computed
    assert label.text() == MEASURING and len(tasks.held) == 1
    tasks.finish()
    assert label.text() == speed_text(fake_hosts.predicted_speed(info, long, machine))  # type: ignore[arg-type]
    label.set_plan(info, None, machine)
    assert label.text() == "" and tasks.held == []
