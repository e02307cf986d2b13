"""What the memory planner needs to know about a model, as plain data.

``gguf_info`` fills these from a GGUF file; tests and benchmarks build them from
published model configurations without any file. Sizes are bytes; tensor shapes are in
ggml order (the fastest-varying dimension first), as llama.cpp logs them.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass


class TensorRole(enum.Enum):
    EMBEDDING = "embedding"  # token_embd: llama.cpp keeps it in host memory
    OUTPUT = "output"  # output head and final norm: on the GPU with the last "layer"
    ATTENTION = "attention"  # attn_* and the layer's norms
    ROUTER = "router"  # ffn_gate_inp: small, runs every token
    DENSE_FFN = "dense_ffn"  # ffn_up/gate/down of dense layers
    EXPERTS = "experts"  # ffn_{up,gate,down}_exps: the big, sparsely used part
    SHARED_EXPERTS = "shared_experts"  # ffn_*_shexp: used by every token
    OTHER = "other"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: str  # ggml type name: "F16", "Q8_0", "Q4_K", ...
    n_bytes: int
    role: TensorRole
    layer: int | None = None


@dataclass(frozen=True)
class LayerShape:
    index: int
    tensors: tuple[TensorInfo, ...]
    n_head_kv: int  # 0: this layer keeps no KV cache (a recurrent layer)
    sliding_window: bool = False  # attends to the last ``ModelShape.sliding_window`` tokens only

    def bytes_of(self, *roles: TensorRole) -> int:
        return sum(t.n_bytes for t in self.tensors if t.role in roles)

    @property
    def expert_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(t for t in self.tensors if t.role is TensorRole.EXPERTS)

    @functools.cached_property  # a layer's sizes are asked for at every step of a plan
    def expert_bytes(self) -> int:
        return self.bytes_of(TensorRole.EXPERTS)

    @functools.cached_property
    def non_expert_bytes(self) -> int:
        """Attention, norms, router, dense FFN and shared experts: what runs every token."""
        return sum(t.n_bytes for t in self.tensors if t.role is not TensorRole.EXPERTS)

    @functools.cached_property
    def total_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


@dataclass(frozen=True)
class ModelShape:
    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int  # the largest over layers
    key_length: int  # per head
    value_length: int  # per head
    context_length: int  # trained context
    n_vocab: int
    layers: tuple[LayerShape, ...]
    global_tensors: tuple[TensorInfo, ...]  # embeddings, output head, final norm
    expert_count: int = 0
    expert_used_count: int = 0
    expert_shared_count: int = 0
    sliding_window: int = 0  # 0: no sliding-window layers
    n_ff: int = 0  # dense FFN width, or an expert's width in Mixtral-style models
    n_ff_expert: int = 0
    name: str = ""

    @property
    def is_moe(self) -> bool:
        return self.expert_count > 0

    @property
    def embedding_bytes(self) -> int:
        return sum(t.n_bytes for t in self.global_tensors if t.role is TensorRole.EMBEDDING)

    @property
    def output_bytes(self) -> int:
        return sum(t.n_bytes for t in self.global_tensors if t.role is not TensorRole.EMBEDDING)

    @property
    def tied_embeddings(self) -> bool:
        """No output matrix of its own: the output head multiplies by the token embeddings."""
        return not any(t.name == "output.weight" for t in self.global_tensors)

    @property
    def output_head_bytes(self) -> int:
        """What the output head takes on the device holding it. With tied embeddings llama.cpp
        loads a second copy of ``token_embd`` there (the first stays in RAM for the lookup)."""
        return self.output_bytes + (self.embedding_bytes if self.tied_embeddings else 0)

    @property
    def expert_bytes(self) -> int:
        return sum(layer.expert_bytes for layer in self.layers)

    @property
    def total_bytes(self) -> int:
        return sum(t.n_bytes for t in self.global_tensors) + sum(layer.total_bytes for layer in self.layers)

    def kv_elements_per_token(self, layer: LayerShape) -> tuple[int, int]:
        """K and V elements one token adds to one layer's cache."""
        return layer.n_head_kv * self.key_length, layer.n_head_kv * self.value_length
