"""Separates a reasoning model's thinking from its answer while the text streams in.

Models emit their reasoning before the answer, wrapped in markup that depends on the family:

* ``think``: ``<think>`` reasoning ``</think>`` answer (DeepSeek-R1, Qwen3, QwQ). Some chat
  templates end the prompt with ``<think>\\n``, so the output starts inside the reasoning and
  only the closing tag shows up (``starts_in_reasoning=True``).
* ``harmony`` (gpt-oss): ``<|channel|>analysis<|message|>`` reasoning ``<|end|>``
  ``<|start|>assistant<|channel|>final<|message|>`` answer ``<|return|>``. Every channel other
  than ``final`` (``analysis``, ``commentary`` tool preambles and calls) is reasoning; text
  outside any channel is answer. Markup never reaches either output.
* ``none``: everything is answer.
* ``auto``: both families are recognised until one of them shows up; plain text passes through.

Text arrives in arbitrary pieces and a marker can be cut anywhere, so the splitter holds back
only the longest tail that is still the beginning of a marker it is looking for, and releases
everything else at once. Every decision depends only on the characters seen so far, so any
cutting of a stream releases exactly what a single ``push`` of the whole stream releases.

Rules beyond the markup itself:

* Whitespace before the first marker is held back: dropped if a marker follows, released as
  answer if plain text follows.
* ``<think>`` opens the reasoning only at the very start of the stream (after whitespace); later
  it is ordinary text, and so is every think tag after it, so an answer that talks about the tags
  keeps them. There is one reasoning block per stream: after ``</think>`` no think markup is
  recognised any more.
* Leading whitespace of the reasoning and of the answer after ``</think>`` is dropped.
* A ``</think>`` that arrives before any ``<think>`` (the prompt opened the reasoning but the
  caller did not say so) ends the reasoning all the same. The text before it was reasoning, but
  it had already been released as answer and a stream cannot take text back; the splitter
  reports it as ``misfiled_reasoning`` so whoever stores the message can move it. The live view
  shows it as answer until then, which is why callers should pass ``starts_in_reasoning`` when
  the prompt ends with ``<think>`` (see ``prompt_opens_reasoning``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

STYLES = ("auto", "think", "harmony", "none")

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

CHANNEL = "<|channel|>"
MESSAGE = "<|message|>"
START = "<|start|>"
CONSTRAIN = "<|constrain|>"
MESSAGE_ENDS = ("<|end|>", "<|return|>", "<|call|>")
HARMONY_MARKERS = (CHANNEL, MESSAGE, START, CONSTRAIN, *MESSAGE_ENDS)
ANSWER_CHANNEL = "final"


@dataclass(frozen=True)
class Split:
    """What one ``push`` or ``finish`` released."""

    reasoning: str = ""
    answer: str = ""


class _Mode(enum.Enum):
    START = "start"  # nothing but whitespace yet: waiting to see whether markup opens the stream
    THINK = "think"  # inside <think> ... </think>
    TEXT = "text"  # content: answer, or reasoning inside a harmony channel that is not "final"
    HEADER = "header"  # harmony channel header, between <|channel|> and <|message|>
    ROLE = "role"  # harmony role name, after <|start|>


class ReasoningSplitter:
    """Splits one streamed response into reasoning and answer. One instance per response."""

    def __init__(self, style: str = "auto", *, starts_in_reasoning: bool = False) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown reasoning style {style!r}; expected one of {', '.join(STYLES)}")
        if starts_in_reasoning and style not in ("auto", "think"):
            raise ValueError(f"starts_in_reasoning needs the 'think' or 'auto' style, not {style!r}")
        self._style = style
        self._think_on = style in ("auto", "think")
        self._harmony_on = style in ("auto", "harmony")
        self._mode = _Mode.TEXT if style == "none" else _Mode.START
        self._sink_is_reasoning = False
        self._skip_ws = False
        self._pending = ""
        self._lead = ""
        self._header = ""
        self._answer_log: list[str] = []
        self._misfiled = ""
        self._reasoning_out: list[str] = []
        self._answer_out: list[str] = []
        self._finished = False
        if starts_in_reasoning:
            self._enter_think()

    @property
    def style(self) -> str:
        return self._style

    @property
    def in_reasoning(self) -> bool:
        """Whether the text streaming now is reasoning (for a "thinking…" indicator)."""
        return self._mode is _Mode.THINK or (self._mode is _Mode.TEXT and self._sink_is_reasoning)

    @property
    def misfiled_reasoning(self) -> str:
        """Answer text released before a ``</think>`` that had no ``<think>``: it was reasoning.

        Empty unless that happened. The answer released so far starts with exactly this text, so
        a caller that stores the message moves it from the answer's start to the reasoning.
        """
        return self._misfiled

    def push(self, text: str) -> Split:
        if self._finished:
            raise RuntimeError("push() after finish(): use a new ReasoningSplitter per response")
        self._pending += text
        self._drain(final=False)
        return self._take()

    def finish(self) -> Split:
        """End of the stream: release what was held back. Later calls release nothing."""
        if self._finished:
            return Split()
        self._finished = True
        self._drain(final=True)
        if self._lead:  # the stream was whitespace only
            self._mode = _Mode.TEXT
            self._emit(self._lead)
            self._lead = ""
        return self._take()

    # --- scanning -------------------------------------------------------------------------

    def _drain(self, final: bool) -> None:
        progressing = True
        while self._pending and progressing:
            progressing = self._step_start(final) if self._mode is _Mode.START else self._step(final)

    def _step_start(self, final: bool) -> bool:
        """Hold leading whitespace until a marker (drop it) or plain text (release it) follows."""
        body = self._pending.lstrip()
        self._lead += self._pending[: len(self._pending) - len(body)]
        self._pending = body
        if not body:
            return False
        markers = self._markers()
        for marker in markers:
            if body.startswith(marker):
                self._pending = body[len(marker) :]
                self._lead = ""
                self._on_marker(marker)
                return True
        if not final and any(marker.startswith(body) for marker in markers):
            return False
        self._mode = _Mode.TEXT
        self._sink_is_reasoning = False
        lead, self._lead = self._lead, ""
        self._emit(lead)
        return True

    def _step(self, final: bool) -> bool:
        markers = self._markers()
        pos, marker = _earliest(self._pending, markers)
        if marker is None:
            cut = len(self._pending) - (0 if final else _held_tail(self._pending, markers))
            self._emit(self._pending[:cut])
            self._pending = self._pending[cut:]
            return False
        self._emit(self._pending[:pos])
        self._pending = self._pending[pos + len(marker) :]
        self._on_marker(marker)
        return True

    def _markers(self) -> tuple[str, ...]:
        """The markers that mean something in the current state."""
        if self._mode is _Mode.THINK:
            return (THINK_CLOSE,)
        markers: tuple[str, ...] = ()
        if self._think_on and self._mode in (_Mode.START, _Mode.TEXT):
            markers = (THINK_OPEN, THINK_CLOSE)
        if self._harmony_on:
            markers += HARMONY_MARKERS
        return markers

    # --- transitions ----------------------------------------------------------------------

    def _on_marker(self, marker: str) -> None:
        if marker == THINK_OPEN and self._mode is _Mode.START:
            self._enter_think()
        elif marker == THINK_OPEN:  # inside the answer: the model writes about the tags
            self._emit(marker)
            self._think_on = False
            self._answer_log = []
        elif marker == THINK_CLOSE:
            self._close_think()
        else:
            self._on_harmony(marker)

    def _enter_think(self) -> None:
        self._mode = _Mode.THINK
        self._harmony_on = False
        self._skip_ws = True

    def _close_think(self) -> None:
        if self._mode is not _Mode.THINK:  # no <think> before it: the prompt opened the reasoning
            self._misfiled = "".join(self._answer_log)
        self._answer_log = []
        self._think_on = False
        self._harmony_on = False
        self._mode = _Mode.TEXT
        self._sink_is_reasoning = False
        self._skip_ws = True

    def _on_harmony(self, marker: str) -> None:
        self._think_on = False
        self._answer_log = []
        self._skip_ws = False
        if marker == CHANNEL:
            self._mode = _Mode.HEADER
            self._header = ""
        elif marker == START:
            self._mode = _Mode.ROLE
        elif marker == MESSAGE:
            if self._mode is _Mode.HEADER:
                self._sink_is_reasoning = _is_reasoning_channel(self._header)
            elif self._mode is not _Mode.TEXT:  # "<|start|>assistant<|message|>": no channel, so answer
                self._sink_is_reasoning = False
            self._mode = _Mode.TEXT
        elif marker == CONSTRAIN:
            self._header += " "  # "final<|constrain|>json" names the channel "final", not "finaljson"
            if self._mode is _Mode.START:
                self._mode = _Mode.TEXT
        else:  # end of a message: back outside any channel
            self._mode = _Mode.TEXT
            self._sink_is_reasoning = False

    # --- output ---------------------------------------------------------------------------

    def _emit(self, text: str) -> None:
        if self._skip_ws:
            text = text.lstrip()
            self._skip_ws = not text
        if not text or self._mode is _Mode.ROLE:
            return
        if self._mode is _Mode.HEADER:
            self._header += text
        elif self._mode is _Mode.THINK or self._sink_is_reasoning:
            self._reasoning_out.append(text)
        else:
            self._answer_out.append(text)
            if self._think_on:  # a stray </think> could still show this was reasoning
                self._answer_log.append(text)

    def _take(self) -> Split:
        split = Split("".join(self._reasoning_out), "".join(self._answer_out))
        self._reasoning_out.clear()
        self._answer_out.clear()
        return split


def _earliest(text: str, markers: tuple[str, ...]) -> tuple[int, str | None]:
    """The first complete marker in ``text`` and where it starts (no marker is a prefix of another)."""
    best_pos, best = -1, None
    for marker in markers:
        pos = text.find(marker)
        if pos != -1 and (best is None or pos < best_pos):
            best_pos, best = pos, marker
    return best_pos, best


def _held_tail(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that a marker starts with (what must wait for more text)."""
    longest = max((len(marker) for marker in markers), default=0)
    for size in range(min(len(text), longest - 1), 0, -1):
        tail = text[-size:]
        if tail[0] == "<" and any(marker.startswith(tail) for marker in markers):
            return size
    return 0


def _is_reasoning_channel(header: str) -> bool:
    """Header text is the channel name, maybe followed by ``to=...`` and a constraint."""
    words = header.split()
    return bool(words) and words[0] != ANSWER_CHANNEL


def detect_style(chat_template: str | None, starts_in_reasoning: bool = False) -> str:
    """The style for a model, from its chat template (GGUF ``tokenizer.chat_template``).

    "auto" when the template says nothing: it still handles think tags if they show up.
    """
    template = chat_template or ""
    if CHANNEL in template:
        return "harmony"
    if starts_in_reasoning or THINK_OPEN in template or "reasoning_content" in template:
        return "think"
    return "auto"


def prompt_opens_reasoning(prompt: str) -> bool:
    """Whether a rendered prompt ends inside a ``<think>`` block (DeepSeek-R1 distills, QwQ).

    Then the model's output starts in the reasoning: pass ``starts_in_reasoning=True``.
    """
    return prompt.rstrip().endswith(THINK_OPEN)


def split_reasoning(text: str, style: str = "auto", *, starts_in_reasoning: bool = False) -> Split:
    """Split a whole response at once, e.g. one stored before reasoning was split out.

    Unlike a stream, a whole text can be corrected: reasoning misfiled as answer before a stray
    ``</think>`` is moved to the reasoning.
    """
    splitter = ReasoningSplitter(style, starts_in_reasoning=starts_in_reasoning)
    first, last = splitter.push(text), splitter.finish()
    reasoning, answer = first.reasoning + last.reasoning, first.answer + last.answer
    misfiled = splitter.misfiled_reasoning
    return Split(misfiled + reasoning, answer[len(misfiled) :])
