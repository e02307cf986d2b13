"""A small, typed engine over llama-cpp-python's ctypes bindings.

One ``Engine`` owns one loaded model and one context. Sequence 0 is the prompt; the
engine remembers which tokens its KV cache holds, so a prompt that starts like the
previous one (the same conversation, the same library prefix) only evaluates what is new.
Sequence 1 is scratch space for KV *blocks*: a document encoded alone after a shared head,
saved, and later composed into sequence 0 at any position (see ``encode_block``). It knows
nothing of processes or pipes: the worker runs it, tests can run it in-process.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import llama_cpp

from inference.backends import init_backends
from inference.chat_formats import ChatFormatChoice, check_format_name, choose_chat_format, reply_stops
from inference.chat_template import chat_renderer
from inference.draft import DraftModel
from inference.draft_length import DraftLength
from inference.errors import EnclaveError, ModelLoadError, PromptTooLong
from inference.fingerprint import model_fingerprint
from inference.gguf_header import check_is_gguf
from inference.image_tokens import image_runs, is_image_token, run_start, text_tokens
from inference.llama_log import LlamaLog
from inference.overrides import DeviceArray, OverrideArray, split_array
from inference.protocol import (
    PARALLEL_SEQUENCES,
    ChatMessage,
    ModelInfo,
    ModelSettings,
    Progress,
    Sampling,
    Segments,
    Stats,
    Token,
)
from inference.reply import ReplyText
from inference.rpc import add_host
from inference.speculate import Proposer

if TYPE_CHECKING:
    from inference.vision import Vision

_KV_TYPES = {
    "f32": llama_cpp.GGML_TYPE_F32,
    "f16": llama_cpp.GGML_TYPE_F16,
    "bf16": 30,  # GGML_TYPE_BF16
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
    "q4_1": llama_cpp.GGML_TYPE_Q4_1,
    "q5_0": llama_cpp.GGML_TYPE_Q5_0,
    "q5_1": llama_cpp.GGML_TYPE_Q5_1,
    "iq4_nl": llama_cpp.GGML_TYPE_IQ4_NL,
}
_FLASH_ATTN = {
    None: llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    True: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    False: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}
_backend_ready = False
FIRST_SLOT_SEQUENCE = 2  # 0: the prompt cache, 1: KV block scratch
_SPECIAL = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
# Control tokens a reply may show: the reasoning markup app/reasoning.py separates from the
# answer (llama.cpp already marks gpt-oss's as user-defined, some files mark think tags as
# control). Every other control token ends the reply.
_SHOWN_CONTROL_TOKENS = frozenset({"<think>", "</think>", "<|channel|>", "<|message|>", "<|start|>",
                                   "<|constrain|>", "<|end|>"})


def _grammar_text(s: Sampling) -> str | None:
    """The GBNF grammar a reply must follow: given, or made from a JSON schema by llama-cpp-
    python's converter (llama.cpp's json-schema-to-grammar)."""
    if s.json_schema is None:
        return s.grammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(s.json_schema)
    except Exception as exc:  # the converter asserts, and fails in many ways on what it cannot do
        raise EnclaveError(f"The JSON schema cannot be turned into a grammar: {exc or type(exc).__name__}.") from None
    # llama-cpp-python's converter lets control characters into strings, which JSON forbids
    # (llama.cpp's own converter excludes them); without this a reply may not parse
    return grammar.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |')


def set_fields(params: ctypes.Structure, **values: object) -> None:
    """Set fields of a llama.cpp parameter struct. A name it does not have is an error: ctypes
    would quietly add a Python attribute llama.cpp never sees (``use_mmap`` became one when
    llama.cpp replaced it by ``load_mode``)."""
    known = {field[0] for field in type(params)._fields_}
    for name, value in values.items():
        if name not in known:
            raise AttributeError(f"{type(params).__name__} has no field {name!r}")
        setattr(params, name, value)


def _sidecar(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".json")


def _load_error(path: Path, lines: Sequence[str]) -> ModelLoadError:
    said = [ln for ln in lines if ln.strip()]
    reason = next((ln for ln in reversed(said) if re.search(r"error|failed|unknown|invalid", ln, re.I)), "")
    if not reason and said and not said[-1].startswith(("llama_model_loader", "print_info", "load")):
        reason = said[-1]
    reason = re.sub(r"^\w+: ", "", reason.strip())
    message = f"llama.cpp could not load {path.name}" + (f": {reason}" if reason else ".")
    return ModelLoadError(message, tuple(lines[-20:]))


class Engine:
    def __init__(self, settings: ModelSettings, log: LlamaLog) -> None:
        global _backend_ready
        if not _backend_ready:
            init_backends()  # llama_backend_init, after loading a backend-DL build's libraries
            _backend_ready = True
        self.settings = settings
        self._log = log
        self._tokens: list[int] = []  # what the KV cache of sequence 0 holds
        # how many of those hold what evaluating them in one pass gives: composed blocks
        # (encoded apart from each other) are reused only by a prompt that asks for them
        self._joint = 0
        self._pieces: dict[int, bytes] = {}
        self._ends_reply: dict[int, bool] = {}
        self._control_pattern: re.Pattern[str] | None = None
        self._model = None
        self._ctx = None
        self._draft_model: DraftModel | None = None
        self._vision: Vision | None = None
        self._draft_length = DraftLength()  # what checking proposals costs and yields, learnt
        started = time.perf_counter()
        mark = log.mark()
        path = Path(settings.path)
        if settings.chat_format is not None:
            check_format_name(settings.chat_format)  # before anything is loaded
        check_is_gguf(path)  # what llama.cpp should never see: a missing path, a folder, not a GGUF
        self._model = self._load_model(path)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        # vocab_only: a tokenizer, for counting a library's tokens without loading weights
        self._ctx = None if settings.vocab_only else self._create_context()
        self._memory = llama_cpp.llama_get_memory(self._ctx) if self._ctx else None
        template = self.metadata("tokenizer.chat_template")
        self.chat_format = self._choose_chat_format(template)
        self.template = chat_renderer(
            self.chat_format,
            template,
            bos_token=self.token_text(llama_cpp.llama_vocab_bos(self._vocab)),
            eos_token=self.token_text(llama_cpp.llama_vocab_eos(self._vocab)),
        )
        self.reply_stops = reply_stops(self.chat_format, self.is_special_token)
        if settings.draft_path and self._ctx is not None:
            self._draft_model = self._load_draft(Path(settings.draft_path), path.name)
        # what llama.cpp said of the model's buffers, checked against the plan; the projector's
        # own lines ("CPU compute buffer size" of its encoder) would be read as the model's
        load_lines = tuple(log.since(mark))
        if settings.projector_path and self._ctx is not None:
            self._vision = self._load_vision(Path(settings.projector_path))
        self.info = ModelInfo(
            path=str(path),
            description=self._model_desc(),
            n_ctx=llama_cpp.llama_n_ctx(self._ctx) if self._ctx else 0,
            n_ctx_train=llama_cpp.llama_model_n_ctx_train(self._model),
            n_vocab=llama_cpp.llama_vocab_n_tokens(self._vocab),
            n_params=llama_cpp.llama_model_n_params(self._model),
            size_bytes=llama_cpp.llama_model_size(self._model),
            has_chat_template=template is not None,
            load_seconds=time.perf_counter() - started,
            chat_format=self.chat_format.description,
            chat_format_guessed=self.chat_format.guessed,
            fingerprint=model_fingerprint(path),
            blocks_unmovable=self._blocks_unmovable(),
            reads_images=self._vision is not None,
            log_lines=load_lines,
        )

    # Lifetime ----------------------------------------------------------------------

    def _load_model(self, path: Path) -> ctypes.c_void_p:
        s = self.settings
        params = llama_cpp.llama_model_default_params()
        for host in s.rpc_hosts:  # its devices exist only once registered; unreachable: a clear error
            add_host(host)
        self._overrides = OverrideArray(s.tensor_overrides)  # these must outlive the load
        self._devices = DeviceArray(s.devices)
        self._split = split_array(s.tensor_split, llama_cpp.llama_max_devices()) if s.tensor_split else None
        set_fields(
            params,
            n_gpu_layers=s.n_gpu_layers,
            load_mode=llama_cpp.LLAMA_LOAD_MODE_MMAP if s.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE,
            vocab_only=s.vocab_only,
            tensor_buft_overrides=self._overrides.address,
            devices=self._devices.address,
            **({"tensor_split": self._split} if self._split is not None else {}),
        )
        mark = self._log.mark()
        model = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
        if not model:
            raise _load_error(path, self._log.since(mark))
        return model

    def _create_context(self) -> ctypes.c_void_p:
        s = self.settings
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = s.n_ctx
        params.n_batch = s.n_batch
        params.n_ubatch = min(s.n_ubatch, s.n_batch)
        params.n_threads = s.n_threads
        params.n_threads_batch = s.n_threads_batch or s.n_threads
        params.flash_attn_type = _FLASH_ATTN[s.flash_attn]
        params.type_k = _KV_TYPES[s.type_k]
        params.type_v = _KV_TYPES[s.type_v]
        params.no_perf = True
        # sequence 1 is the KV blocks' scratch space, the rest are the batch's slots
        # (inference.batch); one unified cache, so composing a block into sequence 0 or
        # sharing a prefix with a slot re-labels cells instead of copying them, and n_ctx
        # stays whole (the slots share it). Each sequence costs an output row (n_vocab floats).
        params.n_seq_max = FIRST_SLOT_SEQUENCE + PARALLEL_SEQUENCES
        params.kv_unified = True
        # Sliding-window layers keep the whole context: a cached prefix can only be reused,
        # and restored from disk, if no layer has forgotten part of it. The planner counts it so.
        params.swa_full = True
        mark = self._log.mark()
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            llama_cpp.llama_model_free(self._model)
            self._model = None
            raise _load_error(Path(s.path), self._log.since(mark))
        return ctx

    def _load_draft(self, path: Path, model_name: str) -> DraftModel:
        """The draft model beside this one; on any failure the model is freed as well."""
        s = self.settings
        draft = None
        try:
            draft = DraftModel(path, n_ctx=llama_cpp.llama_n_ctx(self._ctx), n_batch=s.n_batch, n_ubatch=s.n_ubatch,
                               n_threads=s.n_threads, n_gpu_layers=s.draft_gpu_layers, device=s.draft_device,
                               type_k=_KV_TYPES[s.type_k], type_v=_KV_TYPES[s.type_v],
                               flash_attn=_FLASH_ATTN[s.flash_attn])
            draft.check_vocabulary(self._vocab, model_name)
        except EnclaveError:
            if draft is not None:
                draft.close()
            self.close()
            raise
        return draft

    def _load_vision(self, projector: Path) -> Vision:
        """The vision projector beside this model; on any failure the model is freed as well."""
        from inference.vision import Vision  # libmtmd is loaded only for vision models

        try:
            return Vision(projector, self._model, n_threads=self.settings.n_threads,
                          use_gpu=self.settings.projector_gpu, log=self._log)
        except EnclaveError:
            self.close()
            raise

    def close(self) -> None:
        if self._vision is not None:
            self._vision.close()
            self._vision = None
        if self._draft_model is not None:
            self._draft_model.close()
            self._draft_model = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Vocabulary ----------------------------------------------------------------------

    def metadata(self, key: str) -> str | None:
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def _choose_chat_format(self, template: str | None) -> ChatFormatChoice:
        return choose_chat_format(template=template, architecture=self.metadata("general.architecture") or "",
                                  has_token=self.is_special_token, tokenizer_pre=self.metadata("tokenizer.ggml.pre"),
                                  forced=self.settings.chat_format)

    def _model_desc(self) -> str:
        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._model, buf, 256)
        return buf.value.decode(errors="replace")

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return (llama_cpp.llama_vocab_get_text(self._vocab, token) or b"").decode(errors="replace")

    def is_special_token(self, text: str) -> bool:
        """Whether ``text`` is one control or user-defined token of the vocabulary (as
        ``gguf_info`` decides from the file's token list and types)."""
        ids = self.tokenize(text, add_special=False, parse_special=True)
        return (len(ids) == 1 and self.token_text(ids[0]) == text
                and bool(llama_cpp.llama_vocab_get_attr(self._vocab, ids[0]) & _SPECIAL))

    def ends_reply(self, token: int) -> bool:
        """An end-of-generation token, or a control token other than reasoning markup: a
        model that writes one is starting another turn (a format guessed wrong, say), and its
        text must never reach the reply."""
        ends = self._ends_reply.get(token)
        if ends is None:
            control = llama_cpp.llama_vocab_get_attr(self._vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
            ends = self._ends_reply[token] = bool(
                llama_cpp.llama_vocab_is_eog(self._vocab, token)
                or (control and self.token_text(token) not in _SHOWN_CONTROL_TOKENS))
        return ends

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            out = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), out, capacity, add_special, parse_special)
            if n >= 0:
                return list(out[:n])
            capacity = -n

    def piece(self, token: int) -> bytes:
        """The bytes of one token as text. Special tokens render as their text too: a
        reasoning model's channel markup (gpt-oss) is made of them, and the app separates
        it; tokens that end a reply (``ends_reply``) never reach here in a reply."""
        cached = self._pieces.get(token)
        if cached is None:
            cached = self._pieces[token] = self._piece(token)
        return cached

    def _piece(self, token: int) -> bytes:
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, True)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The prompt for ``messages``. Text in them that spells a control token (a web
        page quoting ``<|im_end|>``, say) is defused, so content can never end its turn or
        open another: only the template's own markup becomes control tokens."""
        safe = [replace(m, content=self.defuse(m.content), reasoning=self.defuse(m.reasoning)) for m in messages]
        if self._vision is not None:  # after defusing: the image markers are the engine's own text
            safe = [self._vision.mark(m) for m in safe]
        return self.template.render(safe, add_generation_prompt)

    def defuse(self, text: str) -> str:
        if self._control_pattern is None:
            self._control_pattern = self._control_tokens_pattern()
        if not text or self._control_pattern.pattern == "(?!)":
            return text
        return self._control_pattern.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)

    def _control_tokens_pattern(self) -> re.Pattern[str]:
        texts = {self.token_text(t) for t in range(llama_cpp.llama_vocab_n_tokens(self._vocab))
                 if llama_cpp.llama_vocab_get_attr(self._vocab, t) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL}
        texts = sorted((t for t in texts if len(t) > 1), key=len, reverse=True)
        return re.compile("|".join(re.escape(t) for t in texts) or "(?!)")

    def chat_tokens(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> list[int]:
        """The prompt for ``messages`` as tokens; each image a run of its image token
        (inference/vision.py), which only ``generate`` and ``ingest`` understand."""
        images = [image for m in messages for image in m.images]
        text = self.render_chat(messages, add_generation_prompt)
        if not images:
            return self.tokenize_prompt(text)
        if self._vision is None:
            raise EnclaveError("This model reads text only: it was loaded without a vision projector. Import it "
                               "with its projector (enclave models import MODEL --mmproj FILE) or choose a vision "
                               "model.")
        bos = self.token_text(llama_cpp.llama_vocab_bos(self._vocab))
        return self._vision.tokenize(text, images, add_special=not (bos and text.startswith(bos)))

    def render_segments(self, messages: Sequence[ChatMessage], slot: str, segments: Sequence[str]) -> Segments:
        """The chat prompt for ``messages`` in parts, ``segments`` spliced in where ``slot``
        stands. Each segment is tokenized alone, as plain text (a document that spells a
        control token stays text), so its tokens do not depend on its neighbours: the
        same document is the same KV block in any library."""
        text = self.render_chat(messages)
        before, found, after = text.partition(self.defuse(slot))
        if not found or slot in after:
            raise EnclaveError("The chat template lost the library's place in the prompt.")
        parts = tuple(tuple(self.tokenize(segment, add_special=False, parse_special=False)) for segment in segments)
        return Segments(tuple(self.tokenize_prompt(before)), parts,
                        tuple(self.tokenize(after, add_special=False, parse_special=True)),
                        before + "".join(segments) + after)

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokenize a whole prompt: BOS is added as the model asks, unless the text
        (a chat template's output, say) already starts with it."""
        bos = self.token_text(llama_cpp.llama_vocab_bos(self._vocab))
        return self.tokenize(text, add_special=not (bos and text.startswith(bos)))

    # KV cache ------------------------------------------------------------------------

    @property
    def cached_tokens(self) -> tuple[int, ...]:
        return tuple(self._tokens)

    @property
    def joint_tokens(self) -> Sequence[int]:
        """The cached tokens of sequence 0 that hold what one pass over them gives (composed
        KV blocks excluded): a prefix other sequences may share."""
        return self._tokens[: self._joint]

    def forget_prompt_cache(self) -> None:
        """Free sequence 0's cells (the batch needs the room)."""
        self._truncate_cache(0)

    @property
    def context(self) -> ctypes.c_void_p:
        self._need_context()
        return self._ctx

    @property
    def memory(self) -> ctypes.c_void_p:
        self._need_context()
        return self._memory

    @property
    def cells_shareable(self) -> bool:
        """Whether sequences may share a prefix's cells (a recurrent state cannot be split)."""
        return not (llama_cpp.llama_model_is_recurrent(self._model) or llama_cpp.llama_model_is_hybrid(self._model))

    def sampler(self, s: Sampling, history: Sequence[int]) -> ctypes.c_void_p:
        """A new sampler chain (the caller frees it with ``llama_sampler_free``)."""
        return self._sampler(s, history)

    def check_prompt(self, prompt: Sequence[int]) -> None:
        """Refuse an empty prompt, or one the context cannot hold with room for a reply."""
        n_ctx = llama_cpp.llama_n_ctx(self.context)
        if not prompt:
            raise EnclaveError("The prompt is empty.")
        if len(prompt) >= n_ctx:
            raise PromptTooLong(
                f"The prompt is {len(prompt):,} tokens but the context holds {n_ctx:,}. "
                "Load the model with a longer context or shorten the prompt."
            )

    def _truncate_cache(self, keep: int) -> None:
        """Drop cached tokens from ``keep`` on. A recurrent model's state cannot be cut
        part way (llama.cpp says so by returning false): then all of it goes. So does a
        sliding-window layer's, when it has reused cells that the token at ``keep`` would
        attend to (it overwrites cells that fell out of the window of the sequence's end)."""
        cutting = keep < len(self._tokens) or keep == 0
        if cutting and not llama_cpp.llama_memory_seq_rm(self._memory, 0, keep, -1):
            llama_cpp.llama_memory_seq_rm(self._memory, 0, 0, -1)
            keep = 0
        if keep and self._window_lost(keep):
            llama_cpp.llama_memory_seq_rm(self._memory, 0, 0, -1)
            keep = 0
        del self._tokens[keep:]
        self._joint = min(self._joint, keep)

    def _window_lost(self, keep: int) -> bool:
        """Whether sequence 0's sliding-window cells no longer reach back as far as the
        token at position ``keep`` looks (llama.cpp's server applies the same test)."""
        window = llama_cpp.llama_model_n_swa(self._model) if self._memory is not None else 0
        if window <= 0:
            return False
        first = llama_cpp.llama_memory_seq_pos_min(self._memory, 0)  # the sliding layers' oldest cell
        return first < 0 or first > max(0, keep - window)

    def _decode(self, tokens: Sequence[int]) -> None:
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        rc = llama_cpp.llama_decode(self._ctx, llama_cpp.llama_batch_get_one(array, len(tokens)))
        if rc != 0:
            self._truncate_cache(len(self._tokens))
            raise EnclaveError(f"llama.cpp could not evaluate the prompt (llama_decode returned {rc}).")
        self._hold(tokens)

    def _hold(self, tokens: Sequence[int]) -> None:
        """Sequence 0 now holds ``tokens`` after what it held, evaluated in one pass with it."""
        if self._joint == len(self._tokens):
            self._joint += len(tokens)
        self._tokens.extend(tokens)

    def _need_context(self) -> None:
        if self._ctx is None:
            raise EnclaveError("This model was opened for its tokenizer only; load it fully to generate.")

    def ingest(
        self, prompt: Sequence[int], cancelled: Callable[[], bool] = lambda: False, *, composed: bool = False
    ) -> Iterator[Progress]:
        """Bring the KV cache to hold exactly ``prompt``, reusing the longest common
        prefix, in batches of ``n_batch``; yields progress after each batch. The last
        prompt token is always evaluated again so that its logits are fresh. Composed
        blocks count as held only when ``composed``: the prompt continues them."""
        common = 0
        for cached, new in zip(self._tokens if composed else self._tokens[: self._joint], prompt, strict=False):
            if cached != new:
                break
            common += 1
        runs = image_runs(prompt, self._vision.lengths) if self._vision is not None else {}
        self._truncate_cache(run_start(runs, min(common, len(prompt) - 1)))  # whole images only
        total = len(prompt)
        yield self._progress(total, runs, prompt)
        step = self.settings.n_batch
        while len(self._tokens) < total:
            if cancelled():
                return
            start = len(self._tokens)
            if is_image_token(prompt[start]):
                self._decode_image(prompt[start], runs[start])
            else:
                end = min(start + step, next((i for i in runs if i > start), total))
                self._decode(prompt[start:end])
            yield self._progress(total, runs, prompt)

    def _progress(self, total: int, runs: dict[int, int], prompt: Sequence[int]) -> Progress:
        """How much of ``prompt`` is held; an image (all its tiles' runs) counts once."""
        if not runs:
            return Progress(len(self._tokens), total)
        assert self._vision is not None
        held = len(self._tokens)
        waiting = {self._vision.image_of.get(prompt[i]) for i, n in runs.items() if i + n > held}
        images = {self._vision.image_of.get(prompt[i]) for i in runs}
        return Progress(held, total, images=len(images), images_done=len(images - waiting))

    def _decode_image(self, token: int, length: int) -> None:
        """Evaluate one image's run of ``length`` positions after what sequence 0 holds."""
        assert self._vision is not None  # image tokens come only from its tokenize
        first = len(self._tokens)
        try:
            taken = self._vision.evaluate(self._ctx, token, first, self.settings.n_batch)
        except EnclaveError:
            self._truncate_cache(first)
            raise
        if taken != length:
            self._truncate_cache(first)
            raise EnclaveError(f"An image took {taken} positions where {length} were expected.")
        self._hold([token] * length)

    def state_fingerprint(self) -> dict[str, object]:
        """What a saved KV state is only valid for: these exact weights (llama.cpp checks
        only the shapes, so a state from a fine-tune of the same base would load and
        quietly give wrong answers) and this KV cache type."""
        return {"model": self.info.fingerprint, "type_k": self.settings.type_k, "type_v": self.settings.type_v,
                "flash_attn": self.settings.flash_attn}

    def save_state(self, path: Path, n_tokens: int | None = None) -> int:
        """Save the KV cache of the first ``n_tokens`` cached tokens (all by default),
        with a ``.json`` sidecar saying which model and cache type it belongs to."""
        self._need_context()
        if n_tokens is not None and n_tokens < len(self._tokens):
            self._truncate_cache(n_tokens)
        tokens = (llama_cpp.llama_token * len(self._tokens))(*self._tokens)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = llama_cpp.llama_state_seq_save_file(self._ctx, os.fsencode(path), 0, tokens, len(self._tokens))
        if written == 0:
            raise EnclaveError(f"Could not save the prompt cache to {path}.")
        _sidecar(path).write_text(json.dumps(self.state_fingerprint()))
        return len(self._tokens)

    def _check_sidecar(self, path: Path, **extra: object) -> None:
        """Refuse a saved state (or KV block) made for other weights or another cache type."""
        if not path.is_file():
            raise EnclaveError(f"No saved prompt cache at {path}.")
        try:
            saved_for = json.loads(_sidecar(path).read_text())
        except (OSError, ValueError):
            saved_for = None
        if saved_for != {**self.state_fingerprint(), **extra}:
            raise EnclaveError(
                f"The prompt cache {path.name} does not fit this model or cache type; it will be rebuilt."
            )

    def restore_state(self, path: Path) -> int:
        self._need_context()
        self._check_sidecar(path)
        self._truncate_cache(0)
        capacity = llama_cpp.llama_n_ctx(self._ctx)
        tokens = (llama_cpp.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        read = llama_cpp.llama_state_seq_load_file(
            self._ctx, os.fsencode(path), 0, tokens, capacity, ctypes.byref(count)
        )
        if read == 0:
            self._truncate_cache(0)
            raise EnclaveError(
                f"The prompt cache {path.name} does not fit this model or context size; it will be rebuilt."
            )
        self._tokens = list(tokens[: count.value])
        self._joint = len(self._tokens)
        return len(self._tokens)

    # KV blocks -----------------------------------------------------------------------

    def _blocks_unmovable(self) -> str:
        """Why a KV block encoded at one position cannot be composed at another with this
        model ("" when it can): moving means rotating its keys to new RoPE positions."""
        if llama_cpp.llama_model_is_recurrent(self._model) or llama_cpp.llama_model_is_hybrid(self._model):
            return "it has recurrent layers, whose state cannot be split into documents"
        if llama_cpp.llama_model_rope_type(self._model) == llama_cpp.LLAMA_ROPE_TYPE_NONE:
            return "it does not use RoPE positions, so a document's cache cannot be moved"
        if self._memory is not None and not llama_cpp.llama_memory_can_shift(self._memory):
            return "llama.cpp cannot move positions in its KV cache"
        if self.settings.type_k not in ("f16", "f32"):  # llama.cpp's CPU K-shift crashes on the others
            return f"its keys are kept quantized ({self.settings.type_k}), which llama.cpp cannot move; use f16"
        return ""

    def _need_movable_blocks(self) -> None:
        self._need_context()
        if self.info.blocks_unmovable:
            raise EnclaveError(f"This model cannot compose KV blocks: {self.info.blocks_unmovable}.")

    def encode_block(self, head: Sequence[int], tokens: Sequence[int], path: Path,
                     cancelled: Callable[[], bool] = lambda: False) -> Iterator[Progress]:
        """Encode ``tokens`` right after ``head``, attending to the head and to themselves
        only, and save their KV cells to ``path`` (with a sidecar like ``save_state``);
        yields progress over ``tokens``. Sequence 0 is left holding just the head, so the
        block's attention covers no other cell. Returns False when cancelled (nothing saved)."""
        self._need_movable_blocks()
        if not tokens:
            raise EnclaveError("A KV block needs at least one token.")
        if len(head) + len(tokens) >= llama_cpp.llama_n_ctx(self._ctx):
            raise EnclaveError(f"A document of {len(tokens):,} tokens does not fit the context of "
                               f"{llama_cpp.llama_n_ctx(self._ctx):,}.")
        for _ in self.ingest(head):  # the head is the same for every block: evaluated once
            pass
        if len(head) > len(self._tokens):  # ingest keeps the last token to evaluate; head is whole now
            raise EnclaveError("Could not evaluate the library's head.")
        llama_cpp.llama_memory_seq_rm(self._memory, 1, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, 0, 1, 0, len(head))
        try:
            step, done = self.settings.n_batch, 0
            yield Progress(0, len(tokens))
            while done < len(tokens):
                if cancelled():
                    return False
                chunk = tokens[done : done + step]
                self._decode_at(1, chunk, len(head) + done)
                done += len(chunk)
                yield Progress(done, len(tokens))
            llama_cpp.llama_memory_seq_rm(self._memory, 1, 0, len(head))  # the block alone
            array = (llama_cpp.llama_token * len(tokens))(*tokens)
            path.parent.mkdir(parents=True, exist_ok=True)
            if llama_cpp.llama_state_seq_save_file(self._ctx, os.fsencode(path), 1, array, len(tokens)) == 0:
                raise EnclaveError(f"Could not save the KV block to {path}.")
            _sidecar(path).write_text(json.dumps({**self.state_fingerprint(), "head": len(head)}))
            return True
        finally:
            llama_cpp.llama_memory_seq_rm(self._memory, 1, -1, -1)

    def _decode_at(self, seq: int, tokens: Sequence[int], first_pos: int, *, all_logits: bool = False) -> None:
        batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
        try:
            batch.n_tokens = len(tokens)
            for i, token in enumerate(tokens):
                batch.token[i] = token
                batch.pos[i] = first_pos + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = all_logits or i == len(tokens) - 1
            rc = llama_cpp.llama_decode(self._ctx, batch)
        finally:
            llama_cpp.llama_batch_free(batch)
        if rc != 0:
            llama_cpp.llama_memory_seq_rm(self._memory, seq, first_pos, -1)
            raise EnclaveError(f"llama.cpp could not evaluate {len(tokens)} tokens (llama_decode returned {rc}).")

    def compose(self, head: Sequence[int], blocks: Sequence[tuple[Path, Sequence[int]]]) -> int:
        """Make sequence 0 hold ``head`` then each block (saved by ``encode_block`` after
        the same head) in order: its cells loaded into sequence 1, moved to their place
        (llama.cpp rotates the keys at the next decode) and handed to sequence 0. Nothing
        is evaluated. Returns the tokens held; a prompt that continues them passes
        ``composed`` to ``generate``."""
        self._need_movable_blocks()
        for _ in self.ingest(head):
            pass
        if len(head) > len(self._tokens):
            raise EnclaveError("Could not evaluate the library's head.")
        self._truncate_cache(len(head))
        capacity = llama_cpp.llama_n_ctx(self._ctx)
        for path, expected in blocks:
            self._check_sidecar(path, head=len(head))
            if len(self._tokens) + len(expected) >= capacity:
                raise EnclaveError(f"The library's KV blocks need more than the context of {capacity:,} tokens.")
            out = (llama_cpp.llama_token * len(expected))()
            count = ctypes.c_size_t(0)
            read = llama_cpp.llama_state_seq_load_file(self._ctx, os.fsencode(path), 1, out, len(expected),
                                                       ctypes.byref(count))
            if read == 0 or list(out[: count.value]) != list(expected):
                llama_cpp.llama_memory_seq_rm(self._memory, 1, -1, -1)
                raise EnclaveError(f"The KV block {path.name} does not hold the document it should; "
                                   "it will be encoded again.")
            shift = len(self._tokens) - len(head)
            if shift:
                llama_cpp.llama_memory_seq_add(self._memory, 1, -1, -1, shift)
            llama_cpp.llama_memory_seq_cp(self._memory, 1, 0, -1, -1)
            llama_cpp.llama_memory_seq_rm(self._memory, 1, -1, -1)
            self._tokens.extend(expected)
        return len(self._tokens)

    # Generation ----------------------------------------------------------------------

    def generate(
        self,
        prompt: Sequence[int],
        sampling: Sampling,
        cancelled: Callable[[], bool] = lambda: False,
        composed: bool = False,
    ) -> Iterator[Progress | Token | Stats]:
        """Stream ``Progress`` while the prompt is evaluated, then ``Token`` events,
        then the final ``Stats`` (yielded last, as a plain value). ``composed``: the
        prompt continues the KV blocks ``compose`` put in the cache."""
        self.check_prompt(prompt)
        n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        started = time.perf_counter()
        cached_before: int | None = None
        for progress in self.ingest(prompt, cancelled, composed=composed):
            if cached_before is None:
                cached_before = progress.done
            yield progress
        cached_before = cached_before or 0
        prompt_done = time.perf_counter()
        if len(self._tokens) < len(prompt):  # cancelled while evaluating the prompt
            yield Stats(len(prompt), cached_before, 0, prompt_done - started, 0.0, "cancelled")
            return

        sampler = self._sampler(sampling, text_tokens(self._tokens))
        reply = ReplyText(self, sampling, n_ctx)
        proposer = self._proposer(text_tokens(prompt), sampling)
        try:
            yield from self._reply(sampler, reply, proposer, cancelled, n_ctx)
        finally:
            llama_cpp.llama_sampler_free(sampler)
        if (tail := reply.tail()) is not None:
            yield tail
        yield Stats(
            prompt_tokens=len(prompt),
            cached_tokens=cached_before,
            generated_tokens=reply.generated,
            prompt_seconds=prompt_done - started,
            generation_seconds=time.perf_counter() - prompt_done,
            stop_reason=reply.reason,
            drafted_tokens=proposer.drafted if proposer else 0,
            accepted_tokens=proposer.accepted if proposer else 0,
        )

    def _proposer(self, prompt: Sequence[int], sampling: Sampling) -> Proposer | None:
        """Where this reply's proposals come from; None: plain decoding (drafting turned
        off, or a recurrent model, whose state cannot drop the rejected tokens)."""
        if not sampling.draft or not self.cells_shareable:
            return None
        return Proposer(prompt, self._draft_length, self._draft_model)

    def _reply(self, sampler: ctypes.c_void_p, reply: ReplyText, proposer: Proposer | None,
               cancelled: Callable[[], bool], n_ctx: int) -> Iterator[Token]:
        """Sample the reply's tokens into ``reply``. Each step decodes the token just taken,
        with the tokens proposed to follow it when there are any worth checking."""
        if reply.ended:  # max_tokens 0: nothing to sample
            return
        token = llama_cpp.llama_sampler_sample(sampler, self._ctx, -1)
        while True:
            if cancelled():
                reply.end("cancelled")
                return
            event = reply.take(token)
            if event is not None:
                yield event
            if reply.ended:
                return
            if len(self._tokens) + 1 >= n_ctx:
                reply.end("context")
                return
            draft = None
            if proposer is not None:
                proposer.add(token)
                room = min(n_ctx - len(self._tokens) - 2, reply.limit - reply.generated - 1)
                draft = proposer.propose(room)
            checked = self._check(token, draft.tokens, sampler) if draft is not None else None
            if checked is None:  # nothing proposed, or llama.cpp found no room for the batch
                started = time.perf_counter()
                self._decode([token])
                llama_cpp.llama_synchronize(self._ctx)  # a GPU's decode returns before it is done
                self._draft_length.record_decode(1, time.perf_counter() - started)
                token = llama_cpp.llama_sampler_sample(sampler, self._ctx, -1)
                continue
            assert proposer is not None and draft is not None
            kept = checked[:-1]  # proposals the model agreed with; the last is its own next token
            proposer.checked(draft, len(kept))
            for taken, accepted in enumerate(kept):  # already decoded: the cache holds them
                if cancelled():
                    reply.end("cancelled")
                elif (event := reply.take(accepted)) is not None:
                    yield event
                if reply.ended:  # as plain decoding: what ended the reply is not in the cache
                    self._rollback(len(self._tokens) - (len(kept) - taken))
                    return
                proposer.add(accepted)
            token = checked[-1]

    def _check(self, token: int, proposed: Sequence[int], sampler: ctypes.c_void_p) -> list[int] | None:
        """Decode ``token`` and the ``proposed`` ones after it in one batch and sample each
        position in turn while the sample equals the proposal. Returns the proposals kept
        and then the sampled token that follows them; the cache keeps ``token`` and the
        kept proposals, the rest of the batch is removed from it. None: llama.cpp could not
        evaluate the batch (no room for it in the cache), which is then left as it was."""
        batch = [token, *proposed]
        first = len(self._tokens)
        started = time.perf_counter()
        try:
            self._decode_at(0, batch, first, all_logits=True)
        except EnclaveError:
            return None
        llama_cpp.llama_synchronize(self._ctx)
        self._draft_length.record_decode(len(batch), time.perf_counter() - started)
        self._hold(batch)
        sampled = [llama_cpp.llama_sampler_sample(sampler, self._ctx, 0)]
        for position, proposal in enumerate(proposed, start=1):
            if sampled[-1] != proposal:
                break
            sampled.append(llama_cpp.llama_sampler_sample(sampler, self._ctx, position))
        self._rollback(first + len(sampled))
        return sampled

    def _rollback(self, keep: int) -> None:
        """Remove the cells of tokens from ``keep`` on: tokens decoded ahead of the reply
        (rejected proposals). Sliding-window layers keep the whole context (``swa_full``),
        so nothing the kept tokens attend to was dropped."""
        if keep < len(self._tokens):
            if not llama_cpp.llama_memory_seq_rm(self._memory, 0, keep, -1):
                raise EnclaveError("llama.cpp could not remove rejected draft tokens from the cache.")
            del self._tokens[keep:]
            self._joint = min(self._joint, keep)

    def _sampler(self, s: Sampling, history: Sequence[int]) -> ctypes.c_void_p:
        """A sampler chain for ``s``; ``history``: the tokens before the reply (the repeat
        penalty's window)."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

        def add(sampler: ctypes.c_void_p) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        if s.repeat_penalty != 1.0:
            n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
            add(llama_cpp.llama_sampler_init_penalties(n_vocab, s.repeat_last_n, s.repeat_penalty, 0.0, 0.0))
            for token in history[-s.repeat_last_n :]:
                llama_cpp.llama_sampler_accept(chain, token)
        # after the history is accepted: a grammar sampler fed the prompt's tokens would throw
        grammar = _grammar_text(s)
        if grammar is not None:
            sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
            if not sampler:
                llama_cpp.llama_sampler_free(chain)
                raise EnclaveError("The grammar (or JSON schema) could not be used: llama.cpp rejected it; check "
                                   "its syntax.")
            add(sampler)
        if s.greedy:
            add(llama_cpp.llama_sampler_init_greedy())
            return chain
        add(llama_cpp.llama_sampler_init_top_k(s.top_k))
        add(llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        add(llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(s.temperature))
        seed = s.seed if s.seed is not None else self.settings.seed
        add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

