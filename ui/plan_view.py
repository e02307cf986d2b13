"""The memory plan of the selected model, live: where weights, experts, KV cache and
compute buffers go on this (or a simulated) machine as the context, the KV cache type
and the expert layers kept in RAM change, and a button to load the model by that plan.

The planner is a pure function that takes well under 50 ms, so it runs on the GUI thread
on every slider move; reading the model's shape (``Runtime.inspect``) and its draft
model's and its vision projector's, the predicted speed under the verdict (``plan_speed``: it may measure the devices
first) and loading go through the task runner.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.runtime import LoadOutcome
from app.services import DraftSize, Services
from app.types import EnclaveError, GGUFInfo, Machine, ModelShape, Plan, PlanRequest
from ui.models_machine import MachinePicker
from ui.models_plan_bars import PlanBars
from ui.plan_speed import SpeedLabel
from ui.profile_form import ProfileForm
from ui.tasks import TaskRunner
from ui.theme import error_color

KV_TYPES = ("f16", "q8_0", "q4_0")
MIN_CTX = 512
AUTO = -1  # the expert slider's "auto" end: the planner fills VRAM itself
NO_DRAFT = "None (prompt lookup only)"


def context_steps(trained: int) -> list[int]:
    """Context lengths the slider stops at: 256 apart up to 8K, 1024 up to 32K, then
    coarser, so the slider feels roughly logarithmic; the trained context is the last."""
    steps, n = [], MIN_CTX
    while n < trained:
        steps.append(n)
        n += 256 if n < 8192 else 1024 if n < 32768 else 4096 if n < 131072 else 16384
    return [*steps, max(trained, MIN_CTX)]


class PlanView(QWidget):
    planChanged = Signal(object)  # the new Plan, or None (no model, or an impossible request)
    loaded = Signal(object)  # LoadOutcome

    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.model_id: str | None = None
        self.info: GGUFInfo | None = None
        self._infos: dict[str, GGUFInfo] = {}
        self._plan: Plan | None = None
        self.error = ""  # the planner's PlanError message, if any
        # a draft model's size, why it cannot draft, or None: drafting is off in the settings
        self._drafts: dict[str, DraftSize | str | None] = {}
        # a model's vision projector as the plan counts it (ProjectorSize), why it cannot be read, or None
        self._projectors: dict[str, Any] = {}
        self._steps = context_steps(4096)
        self._build()

    # Widgets ---------------------------------------------------------------------------

    def _build(self) -> None:
        self.title = QLabel("Select a model to see where it goes in memory.")
        self.title.setWordWrap(True)
        self.ctx_slider = QSlider(Qt.Orientation.Horizontal)
        self.ctx_label = QLabel()
        self.ctx_label.setMinimumWidth(110)
        self.kv_combo = QComboBox()
        self.kv_combo.addItems(KV_TYPES)
        self.kv_combo.setToolTip("q8_0 halves the KV cache, q4_0 quarters it, at a small cost in quality.")
        self.flash = QCheckBox("Flash attention")
        self.flash.setChecked(True)
        self.flash.setToolTip("Needed for a quantized V cache; on by default.")
        self.experts_slider = QSlider(Qt.Orientation.Horizontal)
        self.experts_slider.setRange(AUTO, 0)
        self.experts_label = QLabel()
        self.experts_label.setMinimumWidth(110)
        self.experts_slider.setToolTip("Keep the experts of the first N layers in RAM (llama.cpp's --n-cpu-moe); "
                                       "at the left end the planner fills the GPU by itself.")
        self.draft_combo = QComboBox()
        self.draft_combo.setToolTip(
            "A small model of the same family that guesses the next words for this one to check, several at "
            "once: faster replies, the same words. It needs memory of its own, shown in the plan. Without one, "
            "words are still drafted from the prompt (answers that quote documents).")
        self.draft_combo.setMinimumContentsLength(24)
        self.draft_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.vision = QCheckBox("Read images")
        self.vision.setChecked(True)
        self.vision.setToolTip("Load the model's vision projector with it, so messages can carry images. Off: "
                               "text only, and the projector's memory stays free.")
        self.machine_picker = MachinePicker(self.services, self.tasks, devices=True)
        self.bars = PlanBars()
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.speed = SpeedLabel(self.services, self.tasks)
        self.load_button = QPushButton("Load with this plan")
        self.load_button.setToolTip("Saves these settings as the model's profile, then loads it: chats and "
                                    "library questions use the same plan.")
        self.load_status = QLabel()
        self.load_status.setWordWrap(True)
        self.load_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_button = QToolButton()
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setArrowType(Qt.ArrowType.RightArrow)
        self.details_button.setAutoRaise(True)
        self.details_button.setToolTip("How close the memory plan came to what llama.cpp actually used.")
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_button.toggled.connect(self._show_details)
        self._show_details(False)
        self.details_button.hide()

        self.form = QFormLayout()
        self.form.addRow("Context", _pair(self.ctx_slider, self.ctx_label))
        self.form.addRow("KV cache", _pair(self.kv_combo, self.flash))
        self.experts_row = _pair(self.experts_slider, self.experts_label)
        self.form.addRow("Expert layers in RAM", self.experts_row)
        self.form.setRowVisible(self.experts_row, False)  # only a mixture-of-experts model has experts
        self.form.addRow("Draft model", self.draft_combo)
        self.form.addRow("Images", self.vision)
        self.form.setRowVisible(self.vision, False)  # only a model with a projector reads images
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(self.form)
        layout.addWidget(self.machine_picker)
        layout.addWidget(self.bars)
        self.footer = QWidget()  # the verdict and the load button: the models page keeps them in sight
        footer = QVBoxLayout(self.footer)
        footer.setContentsMargins(0, 0, 0, 0)
        footer.addWidget(self.verdict)
        footer.addWidget(self.speed)
        footer.addWidget(_pair(self.load_button, self.load_status, stretch_second=True))
        footer.addWidget(self.details_button, 0, Qt.AlignmentFlag.AlignLeft)
        footer.addWidget(self.details)
        layout.addWidget(self.footer)
        self.profile_form = ProfileForm(self.services)
        layout.addWidget(self.profile_form)
        layout.addStretch(1)

        self.ctx_slider.valueChanged.connect(self._replan)
        self.kv_combo.currentIndexChanged.connect(self._replan)
        self.flash.toggled.connect(self._replan)
        self.experts_slider.valueChanged.connect(self._replan)
        self.draft_combo.currentIndexChanged.connect(self._draft_chosen)
        self.vision.toggled.connect(self._replan)
        self.machine_picker.machineChanged.connect(self._replan)
        self.load_button.clicked.connect(self.load)
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        for w in (self.ctx_slider, self.kv_combo, self.flash, self.experts_slider, self.draft_combo, self.vision):
            w.setEnabled(on)
        self.load_button.setEnabled(False)

    # The model -------------------------------------------------------------------------

    def set_model(self, model_id: str | None) -> None:
        """Plan for ``model_id`` (its shape is read once, off the GUI thread, then kept)."""
        if model_id == self.model_id and (self.info is not None or model_id is None):
            return
        self.model_id, self.info = model_id, None
        self.load_status.clear()
        self._set_details([])
        self.form.setRowVisible(self.experts_row, False)
        self.form.setRowVisible(self.vision, False)
        self.profile_form.set_model(model_id)
        if model_id is None:
            self.title.setText("Select a model to see where it goes in memory.")
            self._set_enabled(False)
            self._replan()
            return
        if model_id in self._infos:
            self._show_model(model_id, self._infos[model_id])
            return
        self.title.setText("Reading the model…")
        self._set_enabled(False)
        self._replan()
        self.tasks.run(lambda: self.services.runtime.inspect(model_id),
                       on_result=lambda info: self._inspected(model_id, info),
                       on_error=lambda message: self._inspect_failed(model_id, message))

    def _inspected(self, model_id: str, info: GGUFInfo) -> None:
        self._infos[model_id] = info
        if model_id == self.model_id:  # not a stale answer for a model no longer selected
            self._show_model(model_id, info)

    def _inspect_failed(self, model_id: str, message: str) -> None:
        if model_id == self.model_id:
            self.title.setText(f"Cannot read this model: {message}")
            self.title.setStyleSheet(f"color: {error_color()};")

    def _show_model(self, model_id: str, info: GGUFInfo) -> None:
        self.info = info
        shape = info.shape
        self.title.setStyleSheet("")
        kind = f"{shape.expert_count} experts, {shape.expert_used_count} used" if shape.is_moe else "dense"
        registered = self.services.models.find(model_id)
        images = (f"<br>{escape(registered.projector.describe()[0].upper() + registered.projector.describe()[1:])}"
                  if registered is not None and registered.projector is not None else "")
        self.title.setText(f"<b>{escape(info.name)}</b> — {info.architecture}, {shape.n_layer} layers, {kind}, "
                           f"trained context {info.context_length:,}{images}")
        self._steps = context_steps(shape.context_length)
        profile = self.services.profile(model_id)  # the sliders show the saved profile
        wanted = profile.context(self.services.current_settings()) or shape.context_length
        controls = (self.ctx_slider, self.experts_slider, self.kv_combo, self.flash, self.draft_combo, self.vision)
        for w in controls:
            w.blockSignals(True)
        self._fill_drafts(model_id, profile.draft_model)
        self.ctx_slider.setRange(0, len(self._steps) - 1)
        self.ctx_slider.setValue(self._nearest_step(min(wanted, shape.context_length)))
        self.experts_slider.setRange(AUTO, shape.n_layer)
        self.experts_slider.setValue(AUTO if profile.cpu_moe_layers is None else profile.cpu_moe_layers)
        self.kv_combo.setCurrentText(profile.type_k if profile.type_k in KV_TYPES else KV_TYPES[0])
        self.flash.setChecked(profile.flash_attn is not False)
        self.vision.setChecked(profile.vision)
        for w in controls:
            w.blockSignals(False)
        self._set_enabled(True)
        self.form.setRowVisible(self.experts_row, shape.is_moe)
        if profile.n_gpu_layers is not None:  # set by hand ('enclave models config --gpu-layers')
            self.load_status.setText(f"Its profile places layers by hand ({profile.n_gpu_layers} on the GPU, no "
                                     "plan). Loading with this plan replaces that.")
        self._read_projector(model_id)
        self._draft_chosen()

    # The vision projector --------------------------------------------------------------

    def _read_projector(self, model_id: str) -> None:
        """Read the model's projector once (off the GUI thread), then plan with it."""
        if model_id in self._projectors:
            self._projector_read(model_id, self._projectors[model_id])
            return
        self.tasks.run(lambda: self.services.models.projector_size(model_id),
                       on_result=lambda size: self._projector_read(model_id, size),
                       on_error=lambda message: self._projector_read(model_id, message))

    def _projector_read(self, model_id: str, size: Any) -> None:
        self._projectors[model_id] = size
        if model_id == self.model_id:
            self.form.setRowVisible(self.vision, size is not None)
            self._replan()

    @property
    def projector_problem(self) -> str:
        """Why the model's projector cannot be read ("" when it can, or it has none)."""
        size = self._projectors.get(self.model_id or "")
        return f"Its projector cannot be read: {size}" if isinstance(size, str) and self.vision.isChecked() else ""

    # The draft model -------------------------------------------------------------------

    def _fill_drafts(self, model_id: str, saved: str | None) -> None:
        """The draft model choices: none, the other registered models, and the profile's own
        choice when it is a file (or a model no longer registered)."""
        self.draft_combo.clear()
        self.draft_combo.addItem(NO_DRAFT, None)
        for ident, name in self.services.draft_choices(model_id):
            self.draft_combo.addItem(name, ident)
        index = 0
        if saved:  # saved by id, by name, or a file's path
            index = max(self.draft_combo.findData(saved), self.draft_combo.findText(saved))
            if index < 0:
                self.draft_combo.addItem(Path(saved).name, saved)
                index = self.draft_combo.count() - 1
        self.draft_combo.setCurrentIndex(index)

    @property
    def draft_model(self) -> str | None:
        """The draft model chosen (an id or a path; None: prompt lookup only)."""
        return self.draft_combo.currentData()

    def _draft_chosen(self, *_: object) -> None:
        """Read the chosen draft model's size once (off the GUI thread), then plan with it."""
        ref = self.draft_model
        if ref is None or ref in self._drafts:
            self._replan()
            return
        self._replan()  # without it until it is read
        self.tasks.run(lambda: self.services.draft_size(ref),
                       on_result=lambda size: self._draft_read(ref, size),
                       on_error=lambda message: self._draft_read(ref, message))

    def _draft_read(self, ref: str, size: DraftSize | str | None) -> None:
        self._drafts[ref] = size
        if ref == self.draft_model:
            self._replan()

    def _nearest_step(self, n_ctx: int) -> int:
        return min(range(len(self._steps)), key=lambda i: abs(self._steps[i] - n_ctx))

    # Controls a test or the window can set ---------------------------------------------

    @property
    def shape(self) -> ModelShape | None:
        return self.info.shape if self.info else None

    @property
    def plan(self) -> Plan | None:
        return self._plan

    @property
    def n_ctx(self) -> int:
        return self._steps[self.ctx_slider.value()]

    def set_context(self, n_ctx: int) -> None:
        """Move the context slider to the step nearest ``n_ctx``."""
        self.ctx_slider.setValue(self._nearest_step(n_ctx))

    def set_cpu_moe_layers(self, n: int | None) -> None:
        self.experts_slider.setValue(AUTO if n is None else n)

    def machine(self) -> Machine | None:
        return self.machine_picker.machine()

    def request(self) -> PlanRequest:
        kv = self.kv_combo.currentText()
        layers = self.experts_slider.value()
        draft = self._drafts.get(self.draft_model or "")
        projector = self._projectors.get(self.model_id or "")
        return PlanRequest(n_ctx=self.n_ctx, type_k=kv, type_v=kv,  # type: ignore[arg-type]
                           flash_attn=self.flash.isChecked(), cpu_moe_layers=None if layers == AUTO else layers,
                           draft=draft if isinstance(draft, DraftSize) else None,
                           projector=projector if self.vision.isChecked() and not isinstance(projector, str) else None)

    @property
    def draft_problem(self) -> str:
        """Why the chosen draft model cannot draft ("" when it can, or none is chosen)."""
        draft = self._drafts.get(self.draft_model or "", "")
        return draft if isinstance(draft, str) else ""

    def _draft_note(self) -> str:
        """What the verdict adds about the chosen draft model ("" when the plan says it all)."""
        ref = self.draft_model
        if ref is None:
            return ""
        if ref not in self._drafts:
            return "Reading the draft model…"
        if self._drafts[ref] is None:
            return "Drafting is off in Settings, so the draft model is not loaded."
        return self.draft_problem

    # Planning --------------------------------------------------------------------------

    def _replan(self, *_: object) -> None:
        shape, machine = self.shape, self.machine()
        self.ctx_label.setText(f"{self.n_ctx:,} tokens" if shape else "")
        layers = self.experts_slider.value()
        self.experts_label.setText(
            "auto" if layers == AUTO else f"first {layers} of {shape.n_layer}" if shape else "")
        self.error = ""
        result: Plan | None = None
        if shape is not None and machine is not None:
            try:
                result = self.services.plan(self.info, self.request(), machine)
            except EnclaveError as exc:
                self.error = str(exc)
        self._plan = result
        self.bars.set_plan(result)
        self._show_verdict(result, machine)
        self.speed.set_plan(self.info, result if result is not None and result.fits else None, machine)
        simulated = machine is not None and machine.simulated
        self.load_button.setEnabled(result is not None and result.fits and not simulated and self.model_id is not None
                                    and not self.draft_problem)
        self.load_button.setToolTip("Turn off the simulation to load on this machine." if simulated else "")
        self.planChanged.emit(result)

    def _show_verdict(self, result: Plan | None, machine: Machine | None) -> None:
        if self.error:
            self.verdict.setStyleSheet(f"color: {error_color()};")
            self.verdict.setText(self.error)
            return
        if result is None:
            self.verdict.setText("" if self.shape is None or machine is not None else "Detecting this machine…")
            return
        self.verdict.setStyleSheet("" if result.fits and not self.draft_problem else f"color: {error_color()};")
        lines = [result.verdict]
        if result.suggestions:
            lines.append("Would help: " + "; ".join(result.suggestions) + ".")
        if result.projector is not None:
            lines.append(f"{result.projector_words()}; {result.image_words()}." if result.image_words()
                         else f"{result.projector_words()}.")
        if self._draft_note():
            lines.append(self._draft_note())
        if self.projector_problem:
            lines.append(self.projector_problem)
        self.verdict.setText("\n".join(lines))

    # Loading ---------------------------------------------------------------------------

    def save_profile(self) -> None:
        """Save what the sliders describe as the model's profile: chat, library questions
        and ``enclave run`` load it so from now on."""
        if self.model_id is None:
            return
        request = self.request()
        self.services.configure_model(self.model_id, n_ctx=request.n_ctx, type_k=request.type_k,
                                      type_v=request.type_v, flash_attn=request.flash_attn,
                                      cpu_moe_layers=request.cpu_moe_layers, n_gpu_layers=None,
                                      draft_model=self.draft_model, vision=self.vision.isChecked())

    def load(self) -> None:
        """Save the sliders as the model's profile and load the model by it. The runtime
        plans again on this machine (free memory may have changed) and refuses a plan that
        does not fit."""
        if self.model_id is None or self._plan is None:
            return
        model_id, n_ctx = self.model_id, self.n_ctx
        try:
            self.save_profile()
        except EnclaveError as exc:
            self._load_failed(str(exc))
            return
        self.load_button.setEnabled(False)
        self.load_status.setStyleSheet("")
        self.load_status.setText(f"Loading with a context of {n_ctx:,} tokens…")
        self.tasks.run(lambda: self.services.load_model(model_id),
                       on_result=self._loaded, on_error=self._load_failed, serial=True)

    def _loaded(self, outcome: LoadOutcome) -> None:
        info = outcome.info
        lines = [f"Loaded {outcome.gguf.name}: context {info.n_ctx:,} tokens, in {info.load_seconds:.1f} s."]
        if outcome.plan is not None and outcome.plan.placement:
            placement = outcome.plan.placement
            lines.append(placement[0].upper() + placement[1:] + ".")
        self.load_status.setStyleSheet("")
        self.load_status.setText("\n".join(lines))
        self._set_details([f"Memory plan against llama.cpp — {c.describe()}" for c in outcome.checks])
        self._replan()
        self.loaded.emit(outcome)

    def _set_details(self, lines: list[str]) -> None:
        """The plan-against-llama.cpp figures, behind a collapsed "Details" button."""
        self.details.setText("\n".join(lines))
        self.details_button.setChecked(False)
        self.details_button.setVisible(bool(lines))

    def _show_details(self, shown: bool) -> None:
        self.details.setVisible(shown)
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _load_failed(self, message: str) -> None:
        self.load_status.setStyleSheet(f"color: {error_color()};")
        self.load_status.setText(f"Not loaded: {message}")
        self._set_details([])
        self._replan()


def _pair(first: QWidget, second: QWidget, *, stretch_second: bool = False) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(first, 0 if stretch_second else 1)
    row.addWidget(second, 1 if stretch_second else 0)
    return box
