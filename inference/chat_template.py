"""Render chat messages with the model's own template, safely.

The template comes from the GGUF file, so it is untrusted input: it runs in jinja2's
immutable sandbox (through llama-cpp-python's formatter, the same one its ``Llama``
uses), and anything it raises, a ``SecurityError`` included, becomes a
``ChatTemplateError`` with a message a user can act on.
"""

from __future__ import annotations

from collections.abc import Sequence

import jinja2
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from inference.errors import ChatTemplateError
from inference.protocol import ChatMessage

# Used when a model ships no template at all: ChatML, the most common format.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


REASONING_KEYS = ("reasoning_content", "thinking")  # Qwen3 / DeepSeek style, gpt-oss


class ChatTemplate:
    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        self.is_fallback = not template
        self.source = template or FALLBACK_TEMPLATE
        self._bos_token = bos_token
        self._eos_token = eos_token
        self._formatters: dict[bool, Jinja2ChatFormatter] = {}

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        try:
            formatter = self._formatter(add_generation_prompt)
            rendered = formatter(messages=[self._as_dict(m) for m in messages])
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
        return rendered.prompt

    def _as_dict(self, message: ChatMessage) -> dict[str, str]:
        """Earlier reasoning goes back into the prompt only when the template uses it
        (under the name it uses); otherwise it is left out, as models are trained."""
        item = {"role": message.role, "content": message.content}
        if message.reasoning:
            for key in REASONING_KEYS:
                if key in self.source:
                    item[key] = message.reasoning
        return item

    def _formatter(self, add_generation_prompt: bool) -> Jinja2ChatFormatter:
        if add_generation_prompt not in self._formatters:
            self._formatters[add_generation_prompt] = Jinja2ChatFormatter(
                template=self.source,
                eos_token=self._eos_token,
                bos_token=self._bos_token,
                add_generation_prompt=add_generation_prompt,
            )
        return self._formatters[add_generation_prompt]
