"""Real models' shapes as planner input, built from their published configurations
(tests/data/model_shapes.json, derived from shared/model-shapes.json) without any file.

Tensor sizes assume a Q4_K_M-like mix: expert and embedding weights at 4.5 bits (Q4_K),
attention, shared and dense weights at 5.5, the output head at 6.5625 (Q6_K), norms f32.
That lands within about 10% of published Q4_K_M file sizes, which is all the planner's
property tests need.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inference.model_shape import LayerShape, ModelShape, TensorInfo, TensorRole

DATA = Path(__file__).parent / "data" / "model_shapes.json"
EXPERT_BITS, OTHER_BITS, OUTPUT_BITS, EMBED_BITS = 4.5, 5.5, 6.5625, 4.5


def published() -> dict[str, dict[str, Any]]:
    return {m["model"]: m for m in json.loads(DATA.read_text())["models"]}


def _tensor(name: str, shape: tuple[int, ...], bits: float, role: TensorRole, layer: int | None,
            type_name: str = "Q4_K") -> TensorInfo:
    elements = 1
    for dim in shape:
        elements *= dim
    return TensorInfo(name, shape, type_name, int(elements * bits / 8), role, layer)


def build_shape(m: dict[str, Any]) -> ModelShape:
    n_embd, n_head, n_kv = m["n_embd"], m["n_head"], m["n_head_kv"]
    k_len, v_len = m["key_length"], m["value_length"]
    mla = m.get("mla")
    layers = []
    for i in range(m["n_layer"]):
        blk = f"blk.{i}"
        t = [
            _tensor(f"{blk}.attn_norm.weight", (n_embd,), 32, TensorRole.ATTENTION, i, "F32"),
            _tensor(f"{blk}.attn_q.weight", (n_embd, n_head * k_len), OTHER_BITS, TensorRole.ATTENTION, i),
            _tensor(f"{blk}.attn_k.weight", (n_embd, n_kv * k_len), OTHER_BITS, TensorRole.ATTENTION, i),
            _tensor(f"{blk}.attn_v.weight", (n_embd, n_kv * v_len), OTHER_BITS, TensorRole.ATTENTION, i),
            _tensor(f"{blk}.attn_output.weight", (n_head * v_len, n_embd), OTHER_BITS, TensorRole.ATTENTION, i),
            _tensor(f"{blk}.ffn_norm.weight", (n_embd,), 32, TensorRole.ATTENTION, i, "F32"),
        ]
        dense = m["dense_layers"] == "all" or i in m["dense_layers"] or not m["expert_count"]
        if dense:
            ff = m["n_ff"]
            t += [_tensor(f"{blk}.ffn_{p}.weight", (n_embd, ff) if p != "down" else (ff, n_embd), OTHER_BITS,
                          TensorRole.DENSE_FFN, i) for p in ("gate", "up", "down")]
        else:
            n_exp, ff = m["expert_count"], m["n_ff_expert"]
            t.append(_tensor(f"{blk}.ffn_gate_inp.weight", (n_embd, n_exp), 32, TensorRole.ROUTER, i, "F32"))
            t += [_tensor(f"{blk}.ffn_{p}_exps.weight", (n_embd, ff, n_exp) if p != "down" else (ff, n_embd, n_exp),
                          EXPERT_BITS, TensorRole.EXPERTS, i) for p in ("gate", "up", "down")]
            if m["expert_shared_count"]:
                sff = m["n_ff_shared"] * m["expert_shared_count"]
                t += [_tensor(f"{blk}.ffn_{p}_shexp.weight", (n_embd, sff) if p != "down" else (sff, n_embd),
                              OTHER_BITS, TensorRole.SHARED_EXPERTS, i) for p in ("gate", "up", "down")]
        swa = bool(m["sliding_window"]) and i % 2 == 0  # gpt-oss: sliding window on every other layer
        layers.append(LayerShape(i, tuple(t), n_head_kv=1 if mla else n_kv, sliding_window=swa))
    globals_ = (
        _tensor("token_embd.weight", (n_embd, m["n_vocab"]), EMBED_BITS, TensorRole.EMBEDDING, None),
        _tensor("output_norm.weight", (n_embd,), 32, TensorRole.OUTPUT, None, "F32"),
        _tensor("output.weight", (n_embd, m["n_vocab"]), OUTPUT_BITS, TensorRole.OUTPUT, None, "Q6_K"),
    )
    return ModelShape(
        architecture=m["llama_cpp_arch"], name=m["model"], n_layer=m["n_layer"], n_embd=n_embd, n_head=n_head,
        n_head_kv=1 if mla else n_kv, key_length=mla["key_length"] if mla else k_len,
        value_length=mla["value_length"] if mla else v_len, context_length=m["context_length"],
        n_vocab=m["n_vocab"], layers=tuple(layers), global_tensors=globals_, expert_count=m["expert_count"],
        expert_used_count=m["expert_used_count"], expert_shared_count=m["expert_shared_count"],
        sliding_window=m["sliding_window"], n_ff=m["n_ff"], n_ff_expert=m["n_ff_expert"],
    )


def real_shapes() -> dict[str, ModelShape]:
    return {name: build_shape(m) for name, m in published().items()}
