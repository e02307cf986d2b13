"""The typed request/response protocol between the app and the worker process.

Every value here is a frozen dataclass of plain data, pickled across the pipe. A request
goes in; one or more events come back, the last of which is terminal (``Done``,
``Loaded``, ``Tokens``, ``Segments``, ``StateSaved``, ``StateRestored``, ``BlockSaved``,
``Composed``, ``Unloaded`` or ``Failed``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

KvCacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"]


def default_threads() -> int:
    """All cores but one on bigger machines; llama.cpp scales poorly onto SMT siblings."""
    cores = os.cpu_count() or 1
    return cores if cores <= 4 else cores - 1


PARALLEL_SEQUENCES = 8  # replies one context can decode together (inference.batch)


@dataclass(frozen=True)
class TensorOverride:
    """Tensors whose name matches ``pattern`` (a regex, like llama.cpp's ``-ot``) go to
    the buffer type of ``device`` ("CPU" keeps them in host RAM)."""

    pattern: str
    device: str = "CPU"


@dataclass(frozen=True)
class ModelSettings:
    """Everything that decides how a model is loaded and its context created."""

    path: str
    n_ctx: int = 4096  # 0: the model's trained context
    n_threads: int = field(default_factory=default_threads)
    n_threads_batch: int | None = None  # None: same as n_threads
    n_gpu_layers: int = 0  # -1: all layers
    flash_attn: bool | None = None  # None: llama.cpp decides
    type_k: KvCacheType = "f16"
    type_v: KvCacheType = "f16"
    n_batch: int = 512
    n_ubatch: int = 512
    seed: int = 0xE4C1A7E
    use_mmap: bool = True
    vocab_only: bool = False  # only the tokenizer: for counting tokens, no weights, no context
    tensor_overrides: tuple[TensorOverride, ...] = ()
    # RPC hosts ("address:port") registered before the load, so their devices can be named below
    rpc_hosts: tuple[str, ...] = ()
    # the devices layers are offloaded to, by stable id, in order ("RPC0[10.0.0.5:50052]", "CUDA0");
    # None: llama.cpp's default (every GPU); (): none. tensor_split: each one's share of the offloaded layers
    devices: tuple[str, ...] | None = None
    tensor_split: tuple[float, ...] = ()
    # None: the model's own chat template, or without one the built-in format for its
    # vocabulary or architecture (inference/chat_formats.py); a built-in name forces that format
    chat_format: str | None = None
    # a small model of the same vocabulary that proposes tokens for this one to check
    # (speculative decoding); None: prompt lookup only. Its layers on the GPU: -1 all, 0 none
    draft_path: str | None = None
    draft_gpu_layers: int = 0
    draft_device: str | None = None  # the one device it goes on (None: llama.cpp's choice)
    # a vision model's projector (mmproj-*.gguf): images in messages are encoded by it through
    # llama.cpp's multimodal library (inference/vision.py); None: the model reads text only
    projector_path: str | None = None
    projector_gpu: bool = True  # its image encoder on the first GPU (False, or no GPU: the CPU)


# A draft model's context: it drafts for chats, not whole libraries (those are left to prompt
# lookup), and its KV cache at a 128K-token context would outweigh a small model many times
DRAFT_MAX_CONTEXT = 32_768


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. ``temperature <= 0`` is greedy."""

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    max_tokens: int | None = None  # None: until end of generation or a full context
    seed: int | None = None  # None: the model settings' seed
    stop: tuple[str, ...] = ()
    # only tokens this GBNF grammar allows; json_schema (a JSON Schema, as JSON text) is turned
    # into one by llama.cpp's own converter in the worker
    grammar: str | None = None
    json_schema: str | None = None
    # propose tokens (from the prompt, or the draft model) and check several in one batch;
    # the reply is the same either way, only faster when proposals are accepted
    draft: bool = True

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class ImageInput:
    """An image for a vision model: a PNG Enclave wrote itself (app/images.py decodes the
    user's file with Pillow in the isolated reader and re-encodes it), never a file as given."""

    png: bytes
    sha256: str  # of ``png``: which image it is, for reusing its cells in the KV cache


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    reasoning: str = ""  # an assistant turn's thinking: given to templates that ask for it
    images: tuple[ImageInput, ...] = ()  # shown to the model before the content, in order


# Requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    settings: ModelSettings


@dataclass(frozen=True)
class Tokenize:
    text: str
    add_special: bool = True
    parse_special: bool = True


@dataclass(frozen=True)
class CountTokens:
    """How many tokens each text is, as plain text (no special tokens added or parsed)."""

    texts: tuple[str, ...]


@dataclass(frozen=True)
class RenderChat:
    """Render messages with the model's chat template and tokenize the result."""

    messages: tuple[ChatMessage, ...]
    add_generation_prompt: bool = True


@dataclass(frozen=True)
class RenderSegments:
    """Render ``messages`` (one of which holds ``slot`` once) and tokenize the prompt in
    parts: what comes before the slot (``head``), each of ``segments`` alone as plain text
    (the slot's content: documents, tokenized apart so each is a KV block), then the rest."""

    messages: tuple[ChatMessage, ...]
    slot: str
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Generate:
    """Continue a prompt given as chat ``messages`` (rendered with the model's template),
    raw ``prompt`` text, or exact ``tokens``: one of the three. With
    ``sampling.max_tokens == 0`` it only brings the prompt into the KV cache (a prefill).
    ``composed``: the tokens continue the KV blocks the last ``ComposeBlocks`` laid out."""

    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    tokens: tuple[int, ...] | None = None
    sampling: Sampling = Sampling()
    composed: bool = False


@dataclass(frozen=True)
class EncodeBlock:
    """Encode ``tokens`` after ``head``, attending to nothing else, and save their KV
    cells (a block) to ``path``: progress over ``tokens``, then ``BlockSaved``."""

    head: tuple[int, ...]
    tokens: tuple[int, ...]
    path: str


@dataclass(frozen=True)
class ComposeBlocks:
    """Make the KV cache hold ``head`` then each saved block, moved into place, in order:
    nothing is evaluated but the head (when not already held)."""

    head: tuple[int, ...]
    blocks: tuple[tuple[str, tuple[int, ...]], ...]  # (path, the block's tokens)


@dataclass(frozen=True)
class SaveState:
    """Save the KV cache of the first ``n_tokens`` of the current sequence (all if None)."""

    path: str
    n_tokens: int | None = None


@dataclass(frozen=True)
class RestoreState:
    path: str


@dataclass(frozen=True)
class Unload:
    pass


@dataclass(frozen=True)
class OpenBatch:
    """Start a continuous batch (``inference.batch``): until ``CloseBatch`` the child takes
    ``Submit`` and ``Withdraw`` messages at any time and answers each with ``BatchEvent``s;
    no other request is read. Answered by ``BatchOpened``."""


@dataclass(frozen=True)
class Submit:
    """A reply to decode in the open batch, alongside the others. ``id``: the caller's."""

    id: int
    request: Generate


@dataclass(frozen=True)
class Withdraw:
    """Stop reply ``id`` (its client left): it ends with ``Done(stop_reason="cancelled")``."""

    id: int


@dataclass(frozen=True)
class CloseBatch:
    """End the batch once no reply is left (those still decoding are withdrawn); answered
    by ``BatchClosed``."""


Request: TypeAlias = (Load | Tokenize | CountTokens | RenderChat | RenderSegments | Generate | SaveState | RestoreState
                      | EncodeBlock | ComposeBlocks | Unload | OpenBatch)


# Events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What the worker knows about the loaded model after load."""

    path: str
    description: str
    n_ctx: int
    n_ctx_train: int
    n_vocab: int
    n_params: int
    size_bytes: int
    has_chat_template: bool
    load_seconds: float
    chat_format: str = "the model's own template"  # what renders prompts, in words a user reads
    chat_format_guessed: bool = False  # no template and nothing known matched: ChatML, and the user is told
    fingerprint: str = ""  # these exact weights: keys caches of token counts and KV states
    blocks_unmovable: str = ""  # why KV blocks cannot be composed at other positions ("" if they can)
    reads_images: bool = False  # a projector is loaded: messages may carry images
    log_lines: tuple[str, ...] = ()  # what llama.cpp said while loading


@dataclass(frozen=True)
class Loaded:
    info: ModelInfo


@dataclass(frozen=True)
class Tokens:
    ids: tuple[int, ...]
    text: str = ""


@dataclass(frozen=True)
class Segments:
    head: tuple[int, ...]
    parts: tuple[tuple[int, ...], ...]
    tail: tuple[int, ...]
    text: str = ""  # the whole prompt, the segments in their place

    @property
    def ids(self) -> tuple[int, ...]:
        return self.head + tuple(t for part in self.parts for t in part) + self.tail


@dataclass(frozen=True)
class TokenCounts:
    counts: tuple[int, ...]


@dataclass(frozen=True)
class Progress:
    """Prompt processing: ``done`` of ``total`` prompt tokens are in the KV cache
    (``images`` of them: an image's tokens count once its encoding is in the cache)."""

    done: int
    total: int
    images: int = 0  # how many images the prompt holds (0: none)
    images_done: int = 0


@dataclass(frozen=True)
class Token:
    id: int | None  # None: text held back until the end (a stop-string prefix), no new token
    text: str  # may be empty while a multi-byte character is incomplete
    at: float = 0.0  # time.monotonic() in the worker when the token was sampled


@dataclass(frozen=True)
class Stats:
    prompt_tokens: int
    cached_tokens: int  # prompt tokens reused from the KV cache, not evaluated again
    generated_tokens: int
    prompt_seconds: float
    generation_seconds: float
    stop_reason: Literal["eog", "length", "stop", "cancelled", "context"]
    drafted_tokens: int = 0  # proposed by prompt lookup or the draft model, then checked
    accepted_tokens: int = 0  # of those, the ones the model agreed with

    @property
    def prompt_tokens_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def generation_tokens_per_second(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0


@dataclass(frozen=True)
class Done:
    stats: Stats


@dataclass(frozen=True)
class StateSaved:
    path: str
    n_tokens: int


@dataclass(frozen=True)
class StateRestored:
    n_tokens: int


@dataclass(frozen=True)
class BlockSaved:
    path: str
    n_tokens: int
    cancelled: bool = False  # stopped before the end: nothing saved


@dataclass(frozen=True)
class Composed:
    n_tokens: int  # the head and the blocks


@dataclass(frozen=True)
class Unloaded:
    pass


@dataclass(frozen=True)
class BatchOpened:
    slots: int  # replies decoded together at most; more wait in the child's line


@dataclass(frozen=True)
class BatchEvent:
    """An event of reply ``id`` in the open batch: ``Progress``, ``Token``, then ``Done`` or ``Failed``."""

    id: int
    event: Progress | Token | Done | Failed


@dataclass(frozen=True)
class BatchClosed:
    pass


@dataclass(frozen=True)
class Failed:
    """A request failed. ``kind`` says how: ``error`` (a clear refusal, the worker lives
    on), ``crash`` (the worker process died), ``no_model``, ``template`` (the chat template
    failed), ``too_long`` (the prompt does not fit the context) or ``busy`` (the batch's
    shared context is full with other replies)."""

    message: str
    kind: Literal["error", "crash", "no_model", "template", "too_long", "busy"] = "error"
    log_tail: tuple[str, ...] = ()


Event: TypeAlias = (
    Loaded | Tokens | Segments | TokenCounts | Progress | Token | Done | StateSaved | StateRestored | BlockSaved
    | Composed | Unloaded | Failed | BatchOpened | BatchEvent | BatchClosed
)
TERMINAL = (Loaded, Tokens, Segments, TokenCounts, Done, StateSaved, StateRestored, BlockSaved, Composed, Unloaded,
            Failed, BatchOpened, BatchClosed)
