"""Render chat messages with the model's own template, safely.

The template comes from the GGUF file, so it is untrusted input: it runs in jinja2's
immutable sandbox, set up and called as llama-cpp-python's ``Jinja2ChatFormatter`` does
(the same extensions, ``tojson``, ``raise_exception`` and ``strftime_now``), with a size
limit on every value it builds (``template_sandbox``) and a time limit on the render.
Anything it raises, a ``SecurityError`` included, becomes a ``ChatTemplateError`` with a
message a user can act on.

A model without a template gets one of llama.cpp's built-in formats (``chat_formats``
chooses which), rendered by llama.cpp itself through ``llama_chat_apply_template``: those
formats are maintained with llama.cpp, as its own tools use them, where a Jinja copy here
would drift; and they are compiled code, so nothing from the file runs.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

import jinja2
import jinja2.ext
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from inference.chat_formats import ChatFormatChoice, check_format_name
from inference.errors import ChatTemplateError
from inference.protocol import ChatMessage
from inference.template_sandbox import BoundedSandbox, TemplateTooLarge, bounded_filter

T = TypeVar("T")

# ChatML, for ``ChatTemplate(None)``. The engine renders a model without a template with a
# built-in format instead (``BuiltInFormat``), ChatML when nothing better is known.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


REASONING_KEYS = ("reasoning_content", "thinking")  # Qwen3 / DeepSeek style, gpt-oss
RENDER_SECONDS = 10.0  # a real template renders a whole library in well under a second


class _TooSlow(Exception):
    pass


def _within_deadline(render: Callable[[], T]) -> T:
    """Run ``render`` (Jinja's compiled template code is Python) under a trace function
    that stops it after ``RENDER_SECONDS``: a template that loops without end must not
    hang the worker. Only this thread is traced, only while rendering."""
    deadline = time.monotonic() + RENDER_SECONDS

    def tracer(frame: FrameType, event: str, arg: object) -> Callable[..., object] | None:
        if time.monotonic() > deadline:
            raise _TooSlow
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        return render()
    except _TooSlow:
        raise ChatTemplateError(f"The model's chat template did not finish within {RENDER_SECONDS:g} s and was "
                                "stopped. The model file may be damaged or hostile.") from None
    finally:
        sys.settrace(previous)


def _sandbox() -> BoundedSandbox:
    environment = BoundedSandbox(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = bounded_filter("tojson", Jinja2ChatFormatter.tojson)
    return environment


def _raise_exception(message: str) -> None:
    raise ValueError(message)


class ChatTemplate:
    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        self.is_fallback = not template
        self.source = template or FALLBACK_TEMPLATE
        self._bos_token = bos_token
        self._eos_token = eos_token
        self._compiled: jinja2.Template | None = None

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        try:
            return _within_deadline(lambda: self._render(messages, add_generation_prompt))
        except ChatTemplateError:
            raise
        except TemplateTooLarge as exc:
            raise ChatTemplateError(
                f"The model's chat template was stopped: {exc}, far larger than any prompt. "
                "Use a model file from a source you trust."
            ) from None
        except jinja2.exceptions.SecurityError as exc:
            raise ChatTemplateError(
                "The model's chat template tried something unsafe and was stopped "
                f"({exc}). Use a model file from a source you trust."
            ) from exc
        except Exception as exc:  # a broken template can raise anything at all
            raise ChatTemplateError(
                f"The model's chat template failed: {type(exc).__name__}: {exc}. "
                "The model file may be damaged or made for another program."
            ) from exc

    def _render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool) -> str:
        if self._compiled is None:
            self._compiled = _sandbox().from_string(self.source)
        return self._compiled.render(  # BoundedSandbox.concat stops the output at the limit
            messages=[self._as_dict(m) for m in messages],
            eos_token=self._eos_token,
            bos_token=self._bos_token,
            raise_exception=_raise_exception,
            add_generation_prompt=add_generation_prompt,
            functions=None,
            function_call=None,
            tools=None,
            tool_choice=None,
            strftime_now=Jinja2ChatFormatter.strftime_now,
        )

    def _as_dict(self, message: ChatMessage) -> dict[str, str]:
        """Earlier reasoning goes back into the prompt only when the template uses it
        (under the name it uses); otherwise it is left out, as models are trained."""
        item = {"role": message.role, "content": message.content}
        if message.reasoning:
            for key in REASONING_KEYS:
                if key in self.source:
                    item[key] = message.reasoning
        return item


class BuiltInFormat:
    """One of llama.cpp's built-in chat formats, by name. Reasoning of earlier turns is left
    out, as the built-in formats have no place for it."""

    def __init__(self, name: str) -> None:
        self.name = check_format_name(name)

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        # C strings end at NUL: a NUL in the text would cut the message short
        chat = (llama_cpp.llama_chat_message * len(messages))(*(
            llama_cpp.llama_chat_message(m.role.replace("\0", "").encode(), m.content.replace("\0", "").encode())
            for m in messages))
        size = 1024 + sum(len(m.content.encode()) + len(m.role) for m in messages) * 2
        while True:
            buffer = ctypes.create_string_buffer(size)
            needed = llama_cpp.llama_chat_apply_template(self.name.encode(), chat, len(messages),
                                                         add_generation_prompt, buffer, size)
            if needed < 0:
                raise ChatTemplateError(f"llama.cpp cannot render the built-in chat format {self.name!r}. "
                                        "Choose another chat format for this model.")
            if needed <= size:
                return buffer.raw[:needed].decode("utf-8", errors="replace")
            size = needed + 1


def chat_renderer(choice: ChatFormatChoice, template: str | None, bos_token: str,
                  eos_token: str) -> ChatTemplate | BuiltInFormat:
    """What renders prompts in the format ``choice`` names: the model's own template or a
    built-in format."""
    if choice.name is None:
        return ChatTemplate(template, bos_token, eos_token)
    return BuiltInFormat(choice.name)
