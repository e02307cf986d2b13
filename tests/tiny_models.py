"""Tiny but real GGUF models, written with the `gguf` package.

The tests (and the benchmarks, through ``python -m tests.tiny_models``) load these
with the real llama.cpp loader, so every code path from file to token runs on a real
file. Weights are random but seeded, so every run writes the same bytes.

Two shapes, both of llama.cpp's ``llama`` architecture with an SPM tokenizer:

* ``moe``: 8 experts, 2 used per token (Mixtral-style ``ffn_*_exps`` tensors, Q8_0).
* ``dense``: a plain feed-forward model.

A spec can also ask for the ``gemma3`` architecture (dense only, with its extra norms; ``sliding``
is one with an 8-token sliding window, as gemma-3 and gpt-oss layers have), the
``mpt`` architecture (dense, ALiBi positions instead of RoPE: its KV cache cannot be moved),
other control tokens (the markup of another chat format) and fixed output logits.

The output rows of the control tokens are zero, so greedy decoding never picks an
end-of-generation token: generation runs exactly ``max_tokens`` tokens, which keeps
the tests deterministic.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CONTROL_TOKENS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
LLAMA3_TOKENS = ("<unk>", "<s>", "</s>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
GEMMA_TOKENS = ("<unk>", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>")
WORDS = (
    "hello", "world", "the", "model", "local", "enclave", "answer", "question",
    "document", "library", "expert", "memory", "token", "context", "secure", "offline",
)


@dataclass(frozen=True)
class TinySpec:
    """The shape of a tiny model. Defaults give the MoE model."""

    name: str = "tiny-moe"
    n_layer: int = 4
    n_embd: int = 128  # head size 32: quantized KV cache types need a multiple of 32
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 64
    n_expert: int = 8
    n_expert_used: int = 2
    context_length: int = 4096
    seed: int = 1234
    chat_template: str | None = CHATML_TEMPLATE
    expert_type: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.Q8_0
    architecture: str = "llama"  # or "gemma3" or "mpt" (dense)
    sliding_window: int = 0  # gemma3: its sliding-window layers' window (0: the whole context)
    control_tokens: tuple[str, ...] = CONTROL_TOKENS  # the first is <unk>, the last is EOS
    pieces: tuple[str, ...] = ()  # more normal tokens (a vision projector's "\n\n", say)
    # token -> logit for every input; all other tokens -1. Makes what is generated predictable.
    fixed_logits: tuple[tuple[str, float], ...] = ()

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0


MOE = TinySpec()
DENSE = TinySpec(name="tiny-dense", n_ff=128, n_expert=0, n_expert_used=0)
ALIBI = replace(DENSE, name="tiny-alibi", architecture="mpt")
# gemma3 makes five of every six layers sliding-window: six layers, one of them global
SLIDING = replace(DENSE, name="tiny-sliding", architecture="gemma3", n_layer=6, sliding_window=8)
# Big enough that a token takes milliseconds, as with real models: for benchmarks only.
BENCH = TinySpec(name="bench-moe", n_layer=6, n_embd=1024, n_head=16, n_head_kv=4, n_ff=1024)
# A language model for an Idefics3 (SmolVLM) projector: the tokens it marks image tiles with
IDEFICS3_TEXT = replace(DENSE, name="tiny-idefics3-text",
                        control_tokens=("<unk>", "<s>", "</s>", "<fake_token_around_image>", "<global-img>",
                                        "<|im_start|>", "<|im_end|>"), pieces=("\n\n",))
KINDS = {"moe": MOE, "dense": DENSE, "alibi": ALIBI, "sliding": SLIDING, "bench": BENCH}


def vocabulary(control_tokens: tuple[str, ...] = CONTROL_TOKENS,
               extra: tuple[str, ...] = ()) -> tuple[list[str], list[float], list[int]]:
    """Control tokens, the 256 byte-fallback tokens, single characters and a few words."""
    tokens: list[str] = list(control_tokens)
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * (len(control_tokens) - 1)
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = ["▁"] + [chr(c) for c in range(33, 127)] + ["▁" + w for w in WORDS] + list(extra)
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    # SPM merges prefer higher scores: longer pieces score higher.
    scores = [0.0] * (len(control_tokens) + 256) + [float(len(p)) for p in pieces]
    return tokens, scores, [int(t) for t in types]


def write_tiny_model(path: Path, spec: TinySpec = MOE) -> Path:
    """Write the model described by ``spec`` to ``path`` and return the path."""
    rng = np.random.default_rng(spec.seed)
    tokens, scores, types = vocabulary(spec.control_tokens, spec.pieces)
    n_vocab = len(tokens)
    head_dim = spec.n_embd // spec.n_head
    gemma = spec.architecture == "gemma3"
    mpt = spec.architecture == "mpt"

    writer = gguf.GGUFWriter(str(path), arch=spec.architecture)
    writer.add_name(spec.name)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    if mpt:
        writer.add_layer_norm_eps(1e-5)
        writer.add_max_alibi_bias(8.0)
    else:
        writer.add_rope_dimension_count(head_dim)
        writer.add_layer_norm_rms_eps(1e-5)
    if gemma:
        writer.add_sliding_window(spec.sliding_window or spec.context_length)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if spec.is_moe:
        writer.add_expert_count(spec.n_expert)
        writer.add_expert_used_count(spec.n_expert_used)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(len(spec.control_tokens) - 1)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    if spec.chat_template is not None:
        writer.add_chat_template(spec.chat_template)

    def weights(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def add_f16(name: str, data: np.ndarray) -> None:
        writer.add_tensor(name, data.astype(np.float16), raw_dtype=gguf.GGMLQuantizationType.F16)

    # fixed logits: every input embeds as ones and the layers add nothing, so the last hidden
    # state is all ones and each token's logit is the sum of its output row
    fixed = bool(spec.fixed_logits)
    keep = 0.0 if fixed else 1.0
    add_f16("token_embd.weight", np.ones((n_vocab, spec.n_embd)) if fixed else weights(n_vocab, spec.n_embd))
    for i in range(spec.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        if mpt:  # one fused projection
            add_f16(f"{blk}.attn_qkv.weight", weights(spec.n_embd + 2 * spec.n_head_kv * head_dim, spec.n_embd))
        else:
            for name, rows in (("attn_q", spec.n_embd), ("attn_k", spec.n_head_kv * head_dim),
                               ("attn_v", spec.n_head_kv * head_dim)):
                add_f16(f"{blk}.{name}.weight", weights(rows, spec.n_embd))
        add_f16(f"{blk}.attn_output.weight", weights(spec.n_embd, spec.n_embd) * keep)
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        if gemma:
            for name, size in (("attn_q_norm", head_dim), ("attn_k_norm", head_dim),
                               ("post_attention_norm", spec.n_embd), ("post_ffw_norm", spec.n_embd)):
                writer.add_tensor(f"{blk}.{name}.weight", np.ones(size, dtype=np.float32))
        if spec.is_moe:
            writer.add_tensor(f"{blk}.ffn_gate_inp.weight", weights(spec.n_expert, spec.n_embd))
            for name, shape in (("ffn_gate_exps", (spec.n_expert, spec.n_ff, spec.n_embd)),
                                ("ffn_up_exps", (spec.n_expert, spec.n_ff, spec.n_embd)),
                                ("ffn_down_exps", (spec.n_expert, spec.n_embd, spec.n_ff))):
                data = gguf.quants.quantize(weights(*shape), spec.expert_type)
                writer.add_tensor(f"{blk}.{name}.weight", data, raw_dtype=spec.expert_type)
        else:
            if not mpt:  # MPT's feed-forward is up, GELU, down
                add_f16(f"{blk}.ffn_gate.weight", weights(spec.n_ff, spec.n_embd))
            add_f16(f"{blk}.ffn_up.weight", weights(spec.n_ff, spec.n_embd))
            add_f16(f"{blk}.ffn_down.weight", weights(spec.n_embd, spec.n_ff) * keep)
    writer.add_tensor("output_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
    add_f16("output.weight", _fixed_output(spec, tokens) if fixed else _random_output(spec, n_vocab, weights))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _random_output(spec: TinySpec, n_vocab: int, weights: Callable[..., np.ndarray]) -> np.ndarray:
    output = weights(n_vocab, spec.n_embd, scale=1.0)
    output[: len(spec.control_tokens)] = 0.0  # never an end-of-generation token under greedy
    return output


def _fixed_output(spec: TinySpec, tokens: list[str]) -> np.ndarray:
    logits = np.full(len(tokens), -1.0)
    for token, logit in spec.fixed_logits:
        logits[tokens.index(token)] = logit
    return np.repeat((logits / spec.n_embd)[:, None], spec.n_embd, axis=1)


def write_aborting_model(path: Path) -> Path:
    """A GGUF that llama.cpp accepts as a file but aborts on (GGML_ASSERT) while loading:
    it claims more experts used per token than it has."""
    return write_tiny_model(path, replace(MOE, name="tiny-abort", n_expert=2, n_expert_used=4))


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny test GGUF model.")
    parser.add_argument("path", type=Path)
    parser.add_argument("--kind", choices=sorted(KINDS), default="moe")
    args = parser.parse_args()
    write_tiny_model(args.path, KINDS[args.kind])
    print(args.path)


if __name__ == "__main__":
    main()
