"""GGUF files of huge MoE models that take no disk: the header and every tensor's info are
real, the tensor data is a hole (the file is extended with ``truncate``), so ``enclave
inspect`` and ``enclave plan`` read them as they would the real download.

``deepseek_v3()`` is DeepSeek-V3's published configuration (``../shared/model-shapes.json``:
61 layers, the first 3 dense, MLA attention, 256 routed experts and 1 shared, 8 used);
``with_experts`` gives the same layout with another number of routed experts. The tensors
are llama.cpp's ``deepseek2`` tensors at a Q4_K_M mix, as llama.cpp's quantizer chooses it:
Q4_K, and Q6_K for the ``ffn_down`` tensors (dense, shared and routed experts) of the layers ``use_more_bits``
picks; norms and routers F32; the output head Q6_K.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

SHARED_SHAPES = Path(__file__).resolve().parent.parent.parent / "shared" / "model-shapes.json"
# the same published config, copied into the repository's test data (a clone without shared/ has it)
TEST_SHAPES = Path(__file__).resolve().parent.parent / "tests" / "data" / "model_shapes.json"


@dataclass(frozen=True)
class MlaMoeLayout:
    """What a DeepSeek-V3-style model is made of (llama.cpp's ``deepseek2`` architecture)."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    q_lora_rank: int
    kv_lora_rank: int
    rope_dim: int  # qk_rope_head_dim
    nope_dim: int  # qk_nope_head_dim
    v_head_dim: int
    n_vocab: int
    context_length: int
    n_ff: int  # the dense layers' feed-forward width
    n_ff_expert: int
    expert_count: int
    expert_used_count: int
    expert_shared_count: int
    n_dense: int  # the first layers are dense
    expert_groups: int
    expert_groups_used: int
    routed_scale: float


def deepseek_v3(path: Path | None = None) -> MlaMoeLayout:
    """DeepSeek-V3 as its published config describes it."""
    path = path or (SHARED_SHAPES if SHARED_SHAPES.exists() else TEST_SHAPES)
    try:
        models = json.loads(path.read_text())["models"]
        m = next(m for m in models if m["model"] == "DeepSeek-V3")
        m = m.get("published_config", m)
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise SystemExit(f"{path}: the published model shapes could not be read ({exc!r}).") from None
    moe, mla = m["moe"], m["mla"]
    return MlaMoeLayout(
        name="DeepSeek-V3", n_layer=m["num_hidden_layers"], n_embd=m["hidden_size"],
        n_head=m["num_attention_heads"], q_lora_rank=mla["q_lora_rank"], kv_lora_rank=mla["kv_lora_rank"],
        rope_dim=mla["qk_rope_head_dim"], nope_dim=mla["qk_nope_head_dim"], v_head_dim=mla["v_head_dim"],
        n_vocab=m["vocab_size"], context_length=m["max_position_embeddings"],
        n_ff=m["dense_ffn"]["intermediate_size"], n_ff_expert=moe["moe_intermediate_size"],
        expert_count=moe["num_routed_experts"], expert_used_count=moe["experts_per_token"],
        expert_shared_count=moe["num_shared_experts"], n_dense=len(m["dense_ffn"]["dense_layers"]),
        expert_groups=moe["n_group"], expert_groups_used=moe["topk_group"],
        routed_scale=moe["routed_scaling_factor"])


def with_experts(layout: MlaMoeLayout, expert_count: int, name: str) -> MlaMoeLayout:
    return replace(layout, expert_count=expert_count, name=name)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order: the slowest-varying dimension first
    type: Q

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.type]
        return self.n_elements // block * size


def use_more_bits(layer: int, n_layer: int) -> bool:
    """llama.cpp's choice of the layers whose ``ffn_down`` gets Q6_K in a Q4_K_M file."""
    return layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2


def tensors(m: MlaMoeLayout) -> list[TensorSpec]:
    """Every tensor of the model, with llama.cpp's names, shapes and a Q4_K_M mix."""
    e, qk = m.n_embd, m.nope_dim + m.rope_dim
    specs = [TensorSpec("token_embd.weight", (m.n_vocab, e), Q.Q4_K)]
    for i in range(m.n_layer):
        blk = f"blk.{i}"
        down = Q.Q6_K if use_more_bits(i, m.n_layer) else Q.Q4_K
        specs += [
            TensorSpec(f"{blk}.attn_norm.weight", (e,), Q.F32),
            TensorSpec(f"{blk}.attn_q_a_norm.weight", (m.q_lora_rank,), Q.F32),
            TensorSpec(f"{blk}.attn_kv_a_norm.weight", (m.kv_lora_rank,), Q.F32),
            TensorSpec(f"{blk}.attn_q_a.weight", (m.q_lora_rank, e), Q.Q4_K),
            TensorSpec(f"{blk}.attn_q_b.weight", (m.n_head * qk, m.q_lora_rank), Q.Q4_K),
            TensorSpec(f"{blk}.attn_kv_a_mqa.weight", (m.kv_lora_rank + m.rope_dim, e), Q.Q4_K),
            TensorSpec(f"{blk}.attn_kv_b.weight", (m.n_head * (m.nope_dim + m.v_head_dim), m.kv_lora_rank), Q.Q4_K),
            TensorSpec(f"{blk}.attn_output.weight", (e, m.n_head * m.v_head_dim), Q.Q4_K),
            TensorSpec(f"{blk}.ffn_norm.weight", (e,), Q.F32),
        ]
        if i < m.n_dense:
            specs += [TensorSpec(f"{blk}.ffn_gate.weight", (m.n_ff, e), Q.Q4_K),
                      TensorSpec(f"{blk}.ffn_up.weight", (m.n_ff, e), Q.Q4_K),
                      TensorSpec(f"{blk}.ffn_down.weight", (e, m.n_ff), down)]
            continue
        n, ff, sff = m.expert_count, m.n_ff_expert, m.n_ff_expert * m.expert_shared_count
        specs += [
            TensorSpec(f"{blk}.ffn_gate_inp.weight", (n, e), Q.F32),
            TensorSpec(f"{blk}.exp_probs_b.bias", (n,), Q.F32),
            TensorSpec(f"{blk}.ffn_gate_exps.weight", (n, ff, e), Q.Q4_K),
            TensorSpec(f"{blk}.ffn_up_exps.weight", (n, ff, e), Q.Q4_K),
            TensorSpec(f"{blk}.ffn_down_exps.weight", (n, e, ff), down),
            TensorSpec(f"{blk}.ffn_gate_shexp.weight", (sff, e), Q.Q4_K),
            TensorSpec(f"{blk}.ffn_up_shexp.weight", (sff, e), Q.Q4_K),
            TensorSpec(f"{blk}.ffn_down_shexp.weight", (e, sff), down),
        ]
    specs += [TensorSpec("output_norm.weight", (e,), Q.F32), TensorSpec("output.weight", (m.n_vocab, e), Q.Q6_K)]
    return specs


def parameter_count(m: MlaMoeLayout) -> int:
    return sum(t.n_elements for t in tensors(m))


def write_sparse_gguf(path: Path, m: MlaMoeLayout) -> int:
    """Write ``m`` to ``path`` as a GGUF whose tensor data is a hole; returns the file's
    apparent size (the blocks on disk are the header's only)."""
    writer = gguf.GGUFWriter(str(path), arch="deepseek2")
    writer.add_name(m.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_context_length(m.context_length)
    writer.add_embedding_length(m.n_embd)
    writer.add_block_count(m.n_layer)
    writer.add_feed_forward_length(m.n_ff)
    writer.add_head_count(m.n_head)
    # llama.cpp's MLA layout: one KV "head" holding the compressed latent and the RoPE part
    writer.add_head_count_kv(1)
    writer.add_key_length(m.kv_lora_rank + m.rope_dim)
    writer.add_value_length(m.kv_lora_rank)
    writer.add_key_length_mla(m.nope_dim + m.rope_dim)
    writer.add_value_length_mla(m.v_head_dim)
    writer.add_q_lora_rank(m.q_lora_rank)
    writer.add_kv_lora_rank(m.kv_lora_rank)
    writer.add_rope_dimension_count(m.rope_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_leading_dense_block_count(m.n_dense)
    writer.add_expert_count(m.expert_count)
    writer.add_expert_used_count(m.expert_used_count)
    writer.add_expert_shared_count(m.expert_shared_count)
    writer.add_expert_feed_forward_length(m.n_ff_expert)
    writer.add_expert_weights_scale(m.routed_scale)
    writer.add_expert_weights_norm(True)
    writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    writer.add_expert_group_count(m.expert_groups)
    writer.add_expert_group_used_count(m.expert_groups_used)
    specs = tensors(m)
    for t in specs:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.n_bytes, raw_dtype=t.type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    alignment = writer.data_alignment
    data_start = gguf.GGUFWriter.ggml_pad(path.stat().st_size, alignment)
    size = data_start + sum(gguf.GGUFWriter.ggml_pad(t.n_bytes, alignment) for t in specs)
    os.truncate(path, size)
    return size


def bytes_per_token(m: MlaMoeLayout) -> int:
    """The weights one generated token reads: everything but the token embeddings (a row
    each), of the routed experts only the ``expert_used_count`` the router picks."""
    share = m.expert_used_count / m.expert_count
    return int(sum(t.n_bytes * (share if "_exps." in t.name else 1.0)
                   for t in tensors(m) if t.name != "token_embd.weight"))
