"""A tiny vision projector (mmproj) GGUF, so tests run llama.cpp's multimodal library for real.

It is a Gemma 3 projector (the type of Gemma 3 4B/12B/27B's mmproj files), made small: a
32×32-pixel image cut into 4×4 patches, one SigLIP-style transformer block of width 32,
the 8×8 patches average-pooled 2×2 into 16 image tokens, projected to the text model's
embedding length. The weights are random: the model "sees" nothing, but every step from
decoding the PNG to the image tokens in the KV cache runs as with a real model.

    python -m tests.tiny_projector out.gguf [TEXT_EMBD]
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np

IMAGE_SIZE = 32
PATCH_SIZE = 4
POOL = 2  # patches per side merged into one token
VISION_EMBD = 32
VISION_HEADS = 2
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE // POOL) ** 2


def write_tiny_projector(path: Path, text_model_embd: int = 128, *, seed: int = 7,
                         projector_type: str = "gemma3", image_size: int = IMAGE_SIZE,
                         patch_size: int = PATCH_SIZE, pool: int = POOL, vision_embd: int = VISION_EMBD,
                         blocks: int = 1) -> Path:
    """Write a projector whose image embeddings have ``text_model_embd`` values (the text
    model's embedding length: libmtmd refuses a projector of another size). Benchmarks
    make a bigger one (392-pixel images in 14-pixel patches pooled 2×2, 384 wide, 4 blocks:
    784 patches, 196 image tokens), so encoding an image costs something like a real one."""
    rng = np.random.default_rng(seed)
    n_patches = (image_size // patch_size) ** 2
    vision_ff = 2 * vision_embd

    def weights(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), arch="clip")
    writer.add_name("tiny-gemma3-projector")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_string("clip.projector_type", projector_type)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", vision_embd)
    writer.add_uint32("clip.vision.feed_forward_length", vision_ff)
    writer.add_uint32("clip.vision.block_count", blocks)
    writer.add_uint32("clip.vision.projection_dim", text_model_embd)
    writer.add_uint32("clip.vision.attention.head_count", VISION_HEADS)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.projector.scale_factor", pool)
    idefics3 = projector_type == "idefics3"
    if idefics3:  # SmolVLM: images larger than image_size are cut into tiles, each its own chunk
        writer.add_uint32("clip.vision.preproc_image_size", 2 * image_size)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def add_f16(name: str, data: np.ndarray) -> None:
        writer.add_tensor(name, data.astype(np.float16), raw_dtype=gguf.GGMLQuantizationType.F16)

    ones = np.ones(vision_embd, dtype=np.float32)
    zeros = np.zeros(vision_embd, dtype=np.float32)
    add_f16("v.patch_embd.weight", weights(vision_embd, 3, patch_size, patch_size))
    writer.add_tensor("v.patch_embd.bias", zeros)
    writer.add_tensor("v.position_embd.weight", weights(n_patches, vision_embd))
    for i in range(blocks):
        blk = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            add_f16(f"{blk}.{name}.weight", weights(vision_embd, vision_embd))
            writer.add_tensor(f"{blk}.{name}.bias", zeros)
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{blk}.{name}.weight", ones)
            writer.add_tensor(f"{blk}.{name}.bias", zeros)
        add_f16(f"{blk}.ffn_up.weight", weights(vision_ff, vision_embd))
        writer.add_tensor(f"{blk}.ffn_up.bias", np.zeros(vision_ff, dtype=np.float32))
        add_f16(f"{blk}.ffn_down.weight", weights(vision_embd, vision_ff))
        writer.add_tensor(f"{blk}.ffn_down.bias", zeros)
    writer.add_tensor("v.post_ln.weight", ones)
    writer.add_tensor("v.post_ln.bias", zeros)
    if idefics3:  # pixel shuffle of pool×pool patches, then one linear layer
        add_f16("mm.model.fc.weight", weights(text_model_embd, vision_embd * pool * pool))
    else:
        writer.add_tensor("mm.soft_emb_norm.weight", ones)
        add_f16("mm.input_projection.weight", weights(vision_embd, text_model_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    write_tiny_projector(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 128)
