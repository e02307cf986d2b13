"""Which chat format a model gets: its own template, or one of llama.cpp's built-in formats.

A GGUF usually carries its Jinja chat template; some (gemma-3-270m as published) carry none.
Those get the built-in format llama.cpp knows for them, found first by the special tokens in
the vocabulary (they name the format: ``<start_of_turn>`` is gemma, ``<|start_header_id|>`` is
llama3) and then by ``general.architecture``. The ``llama`` architecture alone decides nothing:
llama2, Mistral, Vicuna, Zephyr and ChatML fine-tunes all share it. When nothing matches,
the format is ChatML, and the choice says it is a guess so the front ends can tell the user.

Pure functions over metadata: the worker (``Engine``) and ``enclave inspect`` (``gguf_info``,
without llama.cpp) call ``choose_chat_format`` with the same inputs, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from inference.errors import EnclaveError

# llama.cpp's built-in formats (``llama_chat_builtin_templates``, src/llama-chat.cpp), as the
# bundled llama.cpp names them; tests/test_chat_formats.py checks that each one renders.
BUILT_IN_FORMATS: tuple[str, ...] = (
    "bailing", "bailing-think", "bailing2", "chatglm3", "chatglm4", "chatml", "command-r", "deepseek",
    "deepseek-ocr", "deepseek2", "deepseek3", "exaone-moe", "exaone3", "exaone4", "falcon3", "gemma", "gigachat",
    "glmedge", "gpt-oss", "granite", "granite-4.0", "granite-4.1", "grok-2", "hunyuan-dense", "hunyuan-moe",
    "hunyuan-vl", "kimi-k2", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", "llama3", "llama4",
    "megrez", "minicpm", "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7", "mistral-v7-tekken",
    "monarch", "openchat", "orion", "pangu-embedded", "phi3", "phi4", "rwkv-world", "seed_oss", "smolvlm",
    "solar-open", "vicuna", "vicuna-orca", "yandex", "zephyr",
)

FALLBACK_FORMAT = "chatml"

# The special tokens that mark a format, most specific first: a vocabulary that has all of
# one entry's tokens gets that format. They are also the format's turn markup, which a reply
# must never show (see ``reply_stops``).
FORMAT_TOKENS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kimi-k2", ("<|im_assistant|>", "<|im_middle|>")),
    ("phi4", ("<|im_start|>", "<|im_sep|>")),
    ("smolvlm", ("<|im_start|>", "<end_of_utterance>")),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
    ("llama3", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    ("llama4", ("<|header_start|>", "<|header_end|>", "<|eot|>")),
    ("gemma", ("<start_of_turn>", "<end_of_turn>")),
    ("command-r", ("<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>")),
    ("granite", ("<|start_of_role|>", "<|end_of_role|>")),
    ("deepseek3", ("<｜User｜>", "<｜Assistant｜>")),
    ("gpt-oss", ("<|start|>", "<|channel|>", "<|message|>")),
    ("seed_oss", ("<seed:bos>", "<seed:eos>")),
    ("megrez", ("<|role_start|>", "<|role_end|>", "<|turn_end|>")),
    ("mistral-v7", ("[SYSTEM_PROMPT]", "[INST]", "[/INST]")),
    ("mistral-v3", ("[INST]", "[/INST]")),
    ("phi3", ("<|user|>", "<|assistant|>", "<|end|>")),
)
MARKER_TOKENS: frozenset[str] = frozenset(token for _, tokens in FORMAT_TOKENS for token in tokens)
_TEKKEN = {"mistral-v3": "mistral-v3-tekken", "mistral-v7": "mistral-v7-tekken"}  # no spaces around [INST]

# Architectures whose format is known without looking at the vocabulary.
FORMAT_BY_ARCHITECTURE: dict[str, str] = {
    "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3n": "gemma",
    "qwen": "chatml", "qwen2": "chatml", "qwen2moe": "chatml", "qwen3": "chatml", "qwen3moe": "chatml",
    "qwen3next": "chatml",
    "phi3": "phi3", "phimoe": "phi3",
    "command-r": "command-r", "cohere2": "command-r",
    "deepseek2": "deepseek2",
    "llama4": "llama4",
    "granite": "granite", "granitemoe": "granite", "granitehybrid": "granite",
    "exaone": "exaone3", "exaone4": "exaone4",
    "glm4": "chatglm4",
    "gpt-oss": "gpt-oss",
    "seed_oss": "seed_oss",
    "hunyuan-moe": "hunyuan-moe", "hunyuan-dense": "hunyuan-dense",
    "bailingmoe": "bailing", "bailingmoe2": "bailing2",
    "grok": "grok-2",
}


@dataclass(frozen=True)
class ChatFormatChoice:
    """The format a model's prompts are written in. ``name``: a built-in format, or None for
    the model's own template. ``description``: what is used and why, for a user to read.
    ``guessed``: nothing known matched; the user should be told and offered a choice."""

    name: str | None
    description: str
    guessed: bool = False


def built_in_formats() -> tuple[str, ...]:
    """The names a user can choose (``--chat-format``, the Models page), sorted."""
    return BUILT_IN_FORMATS


def check_format_name(name: str) -> str:
    if name not in BUILT_IN_FORMATS:
        raise EnclaveError(f"There is no built-in chat format called {name!r}. "
                           f"Choose one of: {', '.join(BUILT_IN_FORMATS)}.")
    return name


def choose_chat_format(*, template: str | None, architecture: str, has_token: Callable[[str], bool],
                       tokenizer_pre: str | None = None, forced: str | None = None) -> ChatFormatChoice:
    """The format for a model: ``forced`` (a built-in name from the user's settings) wins;
    then the model's own ``template``; then the format its special tokens (``has_token``:
    is this text one special token of the vocabulary?) or its architecture name."""
    if forced is not None:
        return ChatFormatChoice(check_format_name(forced), f"{forced} (built in, chosen in the model's settings)")
    if template:
        return ChatFormatChoice(None, "the model's own template")
    for name, tokens in FORMAT_TOKENS:
        if all(has_token(token) for token in tokens):
            name = _TEKKEN.get(name, name) if tokenizer_pre == "tekken" else name
            return ChatFormatChoice(name, f"{name} (built in, chosen for the tokens {' '.join(tokens)} "
                                          "in its vocabulary)")
    if architecture in FORMAT_BY_ARCHITECTURE:
        name = FORMAT_BY_ARCHITECTURE[architecture]
        return ChatFormatChoice(name, f"{name} (built in, chosen for architecture {architecture})")
    return ChatFormatChoice(FALLBACK_FORMAT, "ChatML (a guess: this model has no template)", guessed=True)


def reply_stops(choice: ChatFormatChoice, has_token: Callable[[str], bool]) -> tuple[str, ...]:
    """Turn markup of the built-in format in use that the vocabulary can only spell as plain
    text (ChatML guessed for a gemma model, say): the reply stops there instead of showing it.
    Markup that is a special token ends the reply as a token already."""
    tokens = dict(FORMAT_TOKENS).get((choice.name or "").removesuffix("-tekken"), ())
    return tuple(token for token in tokens if not has_token(token))
