"""The catalog: a few good quantized models (MoE models for a GPU, small dense ones that
suit a CPU-only machine), shipped in assets/catalog.json, so that Enclave can say which
fit this machine and at what context without a network.

Entries carry their published architecture; ``shape_from_config`` turns it into the
planner's ``ModelShape`` with tensor sizes for the quantization (scaled to the real file
size where it is known).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from inference.devices import Machine
from inference.model_shape import LayerShape, ModelShape, TensorInfo, TensorRole
from inference.planner import Plan, PlanRequest, plan

CATALOG = Path(__file__).resolve().parent.parent / "assets" / "catalog.json"


@dataclass(frozen=True)
class Bits:
    """Bits per weight by part: a Q4_K_M-like mix by default."""

    experts: float = 4.5
    other: float = 5.5
    output: float = 6.5625
    embedding: float = 4.5


QUANT_BITS = {
    "Q4_K_M": Bits(),
    "Q4_0": Bits(4.5, 4.5, 4.5, 4.5),
    "Q8_0": Bits(8.5, 8.5, 8.5, 8.5),
    "MXFP4": Bits(experts=4.25, other=8.5, output=8.5, embedding=8.5),
}


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    repo: str
    files: tuple[str, ...] | None  # None: the repo holds several; 'pull --quant' picks
    quant: str
    size_bytes: int  # the file size, or the estimate from the shape
    size_known: bool
    license: str
    about: str
    shape: ModelShape


@dataclass(frozen=True)
class Fit:
    entry: CatalogEntry
    default: Plan  # at the default context
    largest: Plan  # the largest context that fits


def _tensor(name: str, shape: tuple[int, ...], bits: float, role: TensorRole, layer: int | None,
            type_name: str = "Q4_K") -> TensorInfo:
    elements = 1
    for dim in shape:
        elements *= dim
    return TensorInfo(name, shape, type_name, int(elements * bits / 8), role, layer)


def shape_from_config(m: dict[str, Any], bits: Bits | None = None) -> ModelShape:
    """A ``ModelShape`` from a published configuration (the keys of assets/catalog.json's
    ``shape``), tensor sizes at ``bits`` per weight."""
    bits = bits or Bits()
    n_embd, n_head, n_kv = m["n_embd"], m["n_head"], m["n_head_kv"]
    k_len, v_len = m["key_length"], m["value_length"]
    mla = m.get("mla")
    layers = []
    for i in range(m["n_layer"]):
        blk = f"blk.{i}"
        t = [
            _tensor(f"{blk}.attn_norm.weight", (n_embd,), 32, TensorRole.ATTENTION, i, "F32"),
            _tensor(f"{blk}.attn_q.weight", (n_embd, n_head * k_len), bits.other, TensorRole.ATTENTION, i),
            _tensor(f"{blk}.attn_k.weight", (n_embd, n_kv * k_len), bits.other, TensorRole.ATTENTION, i),
            _tensor(f"{blk}.attn_v.weight", (n_embd, n_kv * v_len), bits.other, TensorRole.ATTENTION, i),
            _tensor(f"{blk}.attn_output.weight", (n_head * v_len, n_embd), bits.other, TensorRole.ATTENTION, i),
            _tensor(f"{blk}.ffn_norm.weight", (n_embd,), 32, TensorRole.ATTENTION, i, "F32"),
        ]
        dense = m["dense_layers"] == "all" or i in m["dense_layers"] or not m["expert_count"]
        if dense:
            ff = m["n_ff"]
            t += [_tensor(f"{blk}.ffn_{p}.weight", (n_embd, ff) if p != "down" else (ff, n_embd), bits.other,
                          TensorRole.DENSE_FFN, i) for p in ("gate", "up", "down")]
        else:
            n_exp, ff = m["expert_count"], m["n_ff_expert"]
            t.append(_tensor(f"{blk}.ffn_gate_inp.weight", (n_embd, n_exp), 32, TensorRole.ROUTER, i, "F32"))
            t += [_tensor(f"{blk}.ffn_{p}_exps.weight", (n_embd, ff, n_exp) if p != "down" else (ff, n_embd, n_exp),
                          bits.experts, TensorRole.EXPERTS, i) for p in ("gate", "up", "down")]
            if m["expert_shared_count"]:
                sff = m["n_ff_shared"] * m["expert_shared_count"]
                t += [_tensor(f"{blk}.ffn_{p}_shexp.weight", (n_embd, sff) if p != "down" else (sff, n_embd),
                              bits.other, TensorRole.SHARED_EXPERTS, i) for p in ("gate", "up", "down")]
        swa = bool(m["sliding_window"]) and i % 2 == 0  # gpt-oss: sliding window on every other layer
        layers.append(LayerShape(i, tuple(t), n_head_kv=1 if mla else n_kv, sliding_window=swa))
    tied = bool(m.get("tied_embeddings"))  # the output reuses the token embeddings, quantized as an output
    globals_ = (
        _tensor("token_embd.weight", (n_embd, m["n_vocab"]), bits.output if tied else bits.embedding,
                TensorRole.EMBEDDING, None),
        _tensor("output_norm.weight", (n_embd,), 32, TensorRole.OUTPUT, None, "F32"),
    )
    if not tied:
        globals_ += (_tensor("output.weight", (n_embd, m["n_vocab"]), bits.output, TensorRole.OUTPUT, None, "Q6_K"),)
    return ModelShape(
        architecture=m["llama_cpp_arch"], name=m.get("model", ""), n_layer=m["n_layer"], n_embd=n_embd, n_head=n_head,
        n_head_kv=1 if mla else n_kv, key_length=mla["key_length"] if mla else k_len,
        value_length=mla["value_length"] if mla else v_len, context_length=m["context_length"],
        n_vocab=m["n_vocab"], layers=tuple(layers), global_tensors=globals_, expert_count=m["expert_count"],
        expert_used_count=m["expert_used_count"], expert_shared_count=m["expert_shared_count"],
        sliding_window=m["sliding_window"], n_ff=m["n_ff"], n_ff_expert=m["n_ff_expert"],
    )


def load_catalog(path: Path = CATALOG) -> list[CatalogEntry]:
    entries = []
    for m in json.loads(path.read_text())["models"]:
        shape = shape_from_config(m["shape"], QUANT_BITS.get(m["quant"], Bits()))
        size = m["size_bytes"]
        if size:  # scale the estimate to the published file
            shape = _scaled(shape, size / shape.total_bytes)
        entries.append(CatalogEntry(m["name"], m["repo"], tuple(m["files"]) if m["files"] else None, m["quant"],
                                    size or shape.total_bytes, bool(size), m["license"], m["about"], shape))
    return entries


def _scaled(shape: ModelShape, factor: float) -> ModelShape:
    def scale(t: TensorInfo) -> TensorInfo:
        return replace(t, n_bytes=int(t.n_bytes * factor))

    layers = tuple(replace(layer, tensors=tuple(scale(t) for t in layer.tensors)) for layer in shape.layers)
    return replace(shape, layers=layers, global_tensors=tuple(scale(t) for t in shape.global_tensors))


def fits(entries: list[CatalogEntry], machine: Machine, n_ctx: int = 8192, kv_type: str = "f16") -> list[Fit]:
    result = []
    for entry in entries:
        request = PlanRequest(type_k=kv_type, type_v=kv_type)  # type: ignore[arg-type]
        default = plan(entry.shape, machine, replace(request, n_ctx=min(n_ctx, entry.shape.context_length)))
        result.append(Fit(entry, default, plan(entry.shape, machine, request)))
    return result
