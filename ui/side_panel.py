"""The chat's side panel: the conversation's model, its memory plan and the context in use.

What the model is (``ModelRegistry.find`` and ``Runtime.inspect``) and the machine it
would run on (``Services.machine``, probed in a child process) are read in one task;
the rest is cheap and happens on the GUI thread: the last reply's token counts (a few
rows), whether that model is the one loaded now (``Runtime.model`` / ``last_load``) and,
when it is not, the plan the planner proposes at the settings' context (well under 50 ms).
A hidden panel does nothing until it is shown again.

The status says what is true in the worker now: loading (``Runtime.loading``), loaded, another
model loaded, or stopped — a worker that died while idle is noticed by a liveness check every
``LIVENESS_MS`` (``Runtime.stopped_unexpectedly``), not only at the next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont, QHideEvent, QShowEvent
from PySide6.QtWidgets import QLabel, QProgressBar, QSizePolicy, QVBoxLayout, QWidget

from app.conversations import Message
from app.models import Model
from app.runtime import LoadOutcome
from app.services import Services
from app.types import EnclaveError, GGUFInfo, Machine, ModelInfo, Plan, format_size
from ui.models_plan_bars import PlanBars
from ui.tasks import TaskRunner
from ui.theme import SPACE, error_color, font

RECENT_MESSAGES = 4  # the last reply is among these (a failed turn may end with the user's message)
LIVENESS_MS = 1500  # how often a shown panel checks that the worker it says is loaded still lives
STOPPED = "○ Not loaded — the model stopped unexpectedly. It loads again with the next message."


@dataclass(frozen=True)
class ModelFacts:
    """What the task reads: the registered model (None: a file not registered), the file's
    shape and this machine."""

    ref: str
    model: Model | None
    info: GGUFInfo
    machine: Machine


def read_facts(services: Services, ref: str) -> ModelFacts:
    """Off the GUI thread: the model, its file and the machine."""
    registered = services.registered_model(ref)
    return ModelFacts(ref, registered, services.runtime.inspect(ref), services.machine())


def describe_model(facts: ModelFacts) -> str:
    """'qwen3moe · 8 experts, 2 used · Q4_K_M · 12 MiB · trained context 4,096'."""
    info, shape = facts.info, facts.info.shape
    experts = f"{shape.expert_count} experts, {shape.expert_used_count} used" if shape.is_moe else "dense"
    quant = (facts.model.quantization if facts.model else None) or info.file_type
    return " · ".join([info.architecture, experts, quant, format_size(info.file_bytes),
                       f"trained context {info.context_length:,}"])


def last_reply(messages: list[Message]) -> Message | None:
    return next((m for m in reversed(messages) if m.role == "assistant" and m.prompt_tokens is not None), None)


def section(title: str) -> QLabel:
    """A section's title (a font, not a style sheet: a style sheet would keep the palette of
    the moment it was applied when the system switches between light and dark)."""
    label = QLabel(title)
    bold = font("body")
    bold.setWeight(QFont.Weight.DemiBold)
    label.setFont(bold)
    label.setContentsMargins(0, SPACE.S, 0, 0)
    return label


def wrapped(selectable: bool = False) -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class SidePanel(QWidget):
    def __init__(self, services: Services, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.tasks = tasks
        self.conversation_id: int | None = None
        self.model_hint: str | None = None  # the model chosen for a chat not created yet
        self.model_ref: str | None = None  # the model shown
        self.facts: ModelFacts | None = None
        self.plan: Plan | None = None  # what the bars show
        self.plan_source: str | None = None  # "loaded" (last_load.plan) or "proposed"
        self.loaded = False
        self._recent: list[Message] = []  # the conversation's last few messages
        self._asked = 0  # which refresh a task's answer belongs to
        self.stopped = False  # the status says the worker stopped unexpectedly
        self._worker_shown = (False, False, False)  # the worker's state the status was made from
        self._liveness = QTimer(self, interval=LIVENESS_MS, timeout=self._check_liveness)
        self._build()

    def _build(self) -> None:
        self.setMinimumWidth(260)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.model_name = QLabel()
        self.model_name.setFont(font("heading"))
        self.model_name.setWordWrap(True)
        self.model_details = wrapped(selectable=True)
        self.status = wrapped()
        self.plan_caption = wrapped()
        self.bars = PlanBars()
        self.verdict = wrapped(selectable=True)
        self.context_bar = QProgressBar()
        self.context_bar.setTextVisible(True)
        self.context_note = wrapped()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(SPACE.M, SPACE.S, SPACE.S, SPACE.S)
        layout.addWidget(section("Model"))
        for widget in (self.model_name, self.model_details, self.status):
            layout.addWidget(widget)
        layout.addWidget(section("Memory plan"))
        for widget in (self.plan_caption, self.bars, self.verdict):
            layout.addWidget(widget)
        layout.addWidget(section("Context in use"))
        layout.addWidget(self.context_bar)
        layout.addWidget(self.context_note)
        layout.addStretch(1)

    # What the window calls -------------------------------------------------------------------

    def show_conversation(self, conversation_id: int | None, model: str | None = None) -> None:
        """Show ``conversation_id`` (None: a chat not created yet, whose ``model`` is the one
        chosen for it, or the default)."""
        self.conversation_id, self.model_hint = conversation_id, model
        self.refresh()

    def refresh(self) -> None:
        """Read everything again (a reply finished, a model was loaded, the settings changed)."""
        if not self.isVisible():
            return  # showEvent refreshes
        self._asked += 1
        asked = self._asked
        model, self._recent = self._read_conversation()
        ref = model or self.model_hint or self.services.settings.load().default_model
        if ref != self.model_ref:
            self.facts = None
        self.model_ref = ref
        self._show()
        if ref is None or self.services.remote_model(ref) is not None:
            return
        self.tasks.run(lambda: read_facts(self.services, ref),
                       on_result=lambda facts: self._read(asked, facts),
                       on_error=lambda message: self._failed(asked, message))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._liveness.start()
        self.refresh()  # a model may have been loaded on the models page meanwhile

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._liveness.stop()

    def _worker_state(self) -> tuple[bool, bool, bool]:
        """What the status depends on in the worker: stopped unexpectedly, loading, holding a model."""
        runtime = self.services.runtime
        return runtime.stopped_unexpectedly(), runtime.loading is not None, self._in_worker() is not None

    def _check_liveness(self) -> None:
        """Show the status again when the worker's life changed (it died while idle, or a
        request started a new one) or a load began or ended."""
        if self._worker_state() != self._worker_shown:
            self._show()

    # Reading --------------------------------------------------------------------------------

    def _read_conversation(self) -> tuple[str | None, list[Message]]:
        """The conversation's model and last few messages: two small reads."""
        if self.conversation_id is None:
            return None, []
        try:
            conversation = self.services.conversations.get(self.conversation_id)
        except EnclaveError:  # deleted meanwhile
            return None, []
        return conversation.model, self.services.conversations.messages(conversation.id, limit=RECENT_MESSAGES)

    def _read(self, asked: int, facts: ModelFacts) -> None:
        if asked == self._asked:  # not the answer to an older question
            self.facts = facts
            self._show()

    def _failed(self, asked: int, message: str) -> None:
        if asked == self._asked:
            self.facts = None
            self.model_details.setText(f"Cannot read this model: {message}")
            self.model_details.setStyleSheet(f"color: {error_color()};")

    # Showing -------------------------------------------------------------------------------

    def _in_worker(self) -> ModelInfo | None:
        """The model loaded for chatting now, in a worker that lives; a tokenizer alone
        (``vocab_only``, loaded to count a library's tokens) does not count."""
        runtime = self.services.runtime
        settings, info = runtime.worker.settings, runtime.model
        if info is None or info.n_ctx <= 0 or (settings is not None and settings.vocab_only):
            return None
        return None if runtime.stopped_unexpectedly() else info

    def _loaded_outcome(self) -> LoadOutcome | None:
        """The last load, if it is of the shown model and that model is in the worker now."""
        outcome, info = self.services.runtime.last_load, self._in_worker()
        if self.facts is None or outcome is None or info is None:
            return None
        same = outcome.gguf.path == self.facts.info.path and Path(info.path) == self.facts.info.path
        return outcome if same else None

    def _show(self) -> None:
        self._worker_shown = self._worker_state()
        remote = self.services.remote_model(self.model_ref)
        if remote is not None:  # served elsewhere: where, and its context; nothing here to plan
            self.stopped = self.loaded = False
            self.model_name.setText(remote.name)
            self.model_details.setStyleSheet("")
            self.model_details.setText(f"{remote.model_id}, served by {remote.where}")
            self.status.setText(f"● Runs on {remote.where}; nothing is loaded on this machine.")
            self._show_plan(None, remote.context_length)
            self.plan_caption.setText("No memory plan here: the server places the model.")
            self._show_context(last_reply(self._recent), remote.context_length)
            return
        self.stopped = self._worker_shown[0]
        profile_ctx = self._profile_context()
        outcome = self._loaded_outcome()
        self.loaded = outcome is not None
        n_ctx = outcome.info.n_ctx if outcome is not None else profile_ctx
        self._show_model(outcome)
        self._show_plan(outcome, profile_ctx)
        self._show_context(last_reply(self._recent), n_ctx)

    def _profile_context(self) -> int:
        """The context the shown model's profile loads it with; the settings' until the
        model has been read, or when it is no longer registered."""
        if self.model_ref is None or self.facts is None:
            return self.services.current_settings().context_length
        try:
            return self.services.profile_context(self.model_ref, self.facts.info)
        except EnclaveError:
            return self.services.current_settings().context_length

    def _show_model(self, outcome: LoadOutcome | None) -> None:
        self.model_details.setStyleSheet("")
        if self.model_ref is None:
            self.model_name.setText("No model")
            self.model_details.setText("Choose a model for this chat, or set a default in the settings.")
            self.status.clear()
            return
        facts = self.facts
        if facts is None:
            self.model_name.setText(Path(self.model_ref).name)
            self.model_details.setText("Reading the model…")
            self.status.clear()
            return
        self.model_name.setText(facts.model.name if facts.model else facts.info.name)
        self.model_details.setText(describe_model(facts))
        self.status.setText(self._status(facts, outcome))

    def _status(self, facts: ModelFacts, outcome: LoadOutcome | None) -> str:
        """One true sentence about the shown model in the worker now."""
        runtime = self.services.runtime
        if runtime.loading is not None:
            if runtime.loading == facts.info.path:
                return "◌ Loading… it answers as soon as it is in memory."
            return f"○ Not loaded; {runtime.loading.name} is being loaded now."
        if outcome is not None:
            return (f"● Loaded, with a context of {outcome.info.n_ctx:,} tokens "
                    f"({outcome.info.load_seconds:.1f} s to load).")
        if self.stopped:
            return STOPPED
        other = self._in_worker()
        if other is not None:
            return f"○ Not loaded; {Path(other.path).name} is in memory now. This one loads with the next message."
        return "○ Not loaded; it loads with the next message."

    def _show_plan(self, outcome: LoadOutcome | None, n_ctx: int) -> None:
        shown: Plan | None = None
        error, checks = "", ""
        if outcome is not None:
            shown, self.plan_source = outcome.plan, "loaded"
            self.plan_caption.setText("The plan it was loaded by:" if shown else "Loaded without a memory plan.")
            # how close the plan came to what llama.cpp allocated: for the curious, on hover only
            checks = "\n".join("Memory plan against llama.cpp — " + c.describe() for c in outcome.checks)
        elif self.facts is not None and self.model_ref is not None:
            self.plan_source = "proposed"
            try:
                request = self.services.profile_request(self.model_ref, self.facts.info)
                if request is None:
                    self.plan_caption.setText("Its profile places layers by hand: no memory plan.")
                else:
                    self.plan_caption.setText(f"Its profile's plan, for a context of {request.n_ctx or n_ctx:,} "
                                              "tokens on this machine:")
                    shown = self.services.plan(self.facts.info, request, self.facts.machine)
            except EnclaveError as exc:
                error = str(exc)
        else:
            self.plan_source = None
            self.plan_caption.clear()
        self.plan = shown
        self.bars.set_plan(shown)
        self.bars.setVisible(shown is not None)
        self.verdict.setText(shown.verdict if shown else error)
        self.verdict.setStyleSheet(f"color: {error_color()};" if error or (shown and not shown.fits) else "")
        self.verdict.setToolTip(checks)

    def _show_context(self, reply: Message | None, n_ctx: int) -> None:
        """The context the last turn used, never above the whole: a conversation longer than
        the context had its oldest turns left out of the prompt."""
        used = (reply.prompt_tokens or 0) + (reply.completion_tokens or 0) if reply else 0
        full = used >= n_ctx > 0
        self.context_bar.setRange(0, max(n_ctx, 1))
        self.context_bar.setValue(min(used, n_ctx))
        self.context_bar.setFormat(f"{n_ctx:,} of {n_ctx:,} tokens (full)" if full else f"{used:,} of {n_ctx:,} tokens")
        if reply is None:
            self.context_note.setText("Nothing sent yet.")
        elif full:
            self.context_note.setText("The conversation is longer than the context: the oldest turns were dropped "
                                      "from the prompt.")
        else:
            self.context_note.setText(f"The last prompt was {reply.prompt_tokens or 0:,} tokens, "
                                      f"its reply {reply.completion_tokens or 0:,}.")
