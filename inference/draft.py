"""A draft model: a small model of the same vocabulary that guesses the next tokens.

For answers that do not quote their prompt, prompt lookup has nothing to offer; a small
model of the same family (a 0.6B beside a 30B-A3B) guesses well most of the time, for
a fraction of the big model's cost per token. It keeps its own context, holding the same
text as the big model's sequence 0, and drafts greedily until it is unsure.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Sequence
from pathlib import Path

import llama_cpp
import numpy as np

from inference.errors import EnclaveError
from inference.gguf_header import check_is_gguf
from inference.lookup import TokenText
from inference.overrides import DeviceArray
from inference.protocol import DRAFT_MAX_CONTEXT

CONFIDENT = 0.6  # the draft's own probability for its guess below which it stops guessing
# A prompt the draft model has not read costs it one pass; a library of 200K tokens would
# take minutes even for a small model, so longer unread prompts are left to prompt lookup.
READ_LIMIT = 8192
_VOCAB_SLACK = 128  # llama.cpp allows padded vocabularies to differ by this many ids


class DraftModel:
    """The draft model's weights and context. ``propose`` brings its context to the
    given text (reusing what it holds) and guesses up to ``limit`` tokens."""

    def __init__(self, path: Path, *, n_ctx: int, n_batch: int, n_ubatch: int, n_threads: int, n_gpu_layers: int,
                 device: str | None, type_k: int, type_v: int, flash_attn: int) -> None:
        """``device``: the one device its offloaded layers go on (None: llama.cpp's choice,
        which spreads them over every GPU and RPC host); ``type_k``/``type_v``/``flash_attn``:
        llama.cpp's values, the model's own (the planner counts the draft's KV cache so)."""
        check_is_gguf(path)
        self.path = path
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self._devices = DeviceArray((device,) if device else None)  # must outlive the load
        params.devices = self._devices.address
        self._model = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
        if not self._model:
            raise EnclaveError(f"llama.cpp could not load the draft model {path.name}; check the file "
                               "(enclave models verify) or choose another draft model.")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        if llama_cpp.llama_model_is_recurrent(self._model) or llama_cpp.llama_model_is_hybrid(self._model):
            llama_cpp.llama_model_free(self._model)
            raise EnclaveError(f"{path.name} cannot be a draft model: its state is recurrent and cannot take back "
                               "a rejected guess. Choose a transformer model of the same family.")
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = min(n_ctx, DRAFT_MAX_CONTEXT)
        ctx_params.n_batch = n_batch
        ctx_params.n_ubatch = min(n_ubatch, n_batch)
        ctx_params.n_threads = n_threads
        ctx_params.n_threads_batch = n_threads
        ctx_params.type_k = type_k
        ctx_params.type_v = type_v
        ctx_params.flash_attn_type = flash_attn
        ctx_params.no_perf = True
        ctx_params.swa_full = True  # its cells are cut back after every rejected guess
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise EnclaveError(f"llama.cpp could not make a context for the draft model {path.name} "
                               f"({n_ctx:,} tokens); there may not be enough memory for it.")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._n_batch = n_batch
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._n_guessable = self._n_vocab  # ids both models have (check_vocabulary)
        self._tokens = TokenText()
        self.token_seconds: float | None = None  # one drafted token, measured

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def check_vocabulary(self, vocab: ctypes.c_void_p, model_name: str) -> None:
        """Refuse a draft whose token ids mean other text than the model's: its guesses
        would be other tokens than it thinks, and almost never accepted."""
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        why = ""
        if llama_cpp.llama_vocab_type(vocab) != llama_cpp.llama_vocab_type(self._vocab):
            why = "their tokenizers are of different kinds"
        elif abs(n_vocab - self._n_vocab) > _VOCAB_SLACK:
            why = f"{model_name} has {n_vocab:,} tokens and the draft {self._n_vocab:,}"
        elif llama_cpp.llama_vocab_bos(vocab) != llama_cpp.llama_vocab_bos(self._vocab) or \
                llama_cpp.llama_vocab_eos(vocab) != llama_cpp.llama_vocab_eos(self._vocab):
            why = "their begin/end-of-text tokens differ"
        else:
            for token in range(min(n_vocab, self._n_vocab)):
                ours = llama_cpp.llama_vocab_get_text(self._vocab, token)
                theirs = llama_cpp.llama_vocab_get_text(vocab, token)
                if ours != theirs:
                    why = (f"token {token} is {theirs.decode(errors='replace')!r} in {model_name} and "
                           f"{ours.decode(errors='replace')!r} in the draft")
                    break
        self._n_guessable = min(n_vocab, self._n_vocab)
        if why:
            raise EnclaveError(f"{self.path.name} cannot draft for {model_name}: their vocabularies differ ({why}). "
                               "Choose a draft model of the same family, or none (prompt lookup still works).")

    def can_read(self, text: np.ndarray) -> bool:
        """Whether ``text`` fits its context and bringing the context to it costs at most
        ``READ_LIMIT`` tokens."""
        fits = len(text) < llama_cpp.llama_n_ctx(self._ctx) - 1
        return fits and len(text) - self._tokens.common_prefix(text) <= READ_LIMIT

    def propose(self, text: np.ndarray, limit: int) -> list[int]:
        """Up to ``limit`` greedy guesses of what follows ``text``, stopping early where
        the draft is unsure (its top token below ``CONFIDENT``) or its context is full."""
        self._read(text)
        guesses: list[int] = []
        n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        while len(guesses) < limit and len(self._tokens) < n_ctx - 1:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, -1),
                                           shape=(self._n_vocab,))[: self._n_guessable]
            token = int(np.argmax(logits))
            probabilities = np.exp(logits - logits[token])
            if 1.0 / float(probabilities.sum()) < CONFIDENT:
                break
            guesses.append(token)
            if len(guesses) < limit:
                started = time.perf_counter()
                self._decode([token])
                llama_cpp.llama_synchronize(self._ctx)  # a GPU's decode returns before it is done
                self.token_seconds = time.perf_counter() - started
        return guesses

    def _read(self, text: np.ndarray) -> None:
        keep = min(self._tokens.common_prefix(text), len(text) - 1)  # the last token again, for its logits
        if not llama_cpp.llama_memory_seq_rm(self._memory, 0, keep, -1):
            llama_cpp.llama_memory_seq_rm(self._memory, 0, -1, -1)
            keep = 0
        self._tokens.truncate(keep)
        while len(self._tokens) < len(text):
            self._decode(text[len(self._tokens) : len(self._tokens) + self._n_batch].tolist())

    def _decode(self, tokens: Sequence[int]) -> None:
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        rc = llama_cpp.llama_decode(self._ctx, llama_cpp.llama_batch_get_one(array, len(tokens)))
        if rc != 0:
            llama_cpp.llama_memory_seq_rm(self._memory, 0, len(self._tokens), -1)
            raise EnclaveError(f"The draft model could not evaluate its text (llama_decode returned {rc}).")
        self._tokens.extend(tokens)
