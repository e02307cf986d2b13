"""``inspect_gguf`` against real GGUF files: the tiny models, files written here with
``gguf.GGUFWriter`` (split, sliding-window, per-layer keys) and damaged copies."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import inference.gguf_info as gguf_info
from inference.gguf_info import GGUFError, GGUFInfo, inspect_gguf, tensor_role
from inference.model_shape import TensorInfo, TensorRole
from tests.fuzzing import case, fuzz_settings
from tests.tiny_models import CHATML_TEMPLATE, DENSE, MOE, TinySpec, vocabulary

Q8_0_BLOCK = (32, 34)  # values per block, bytes per block


def spec_tensors(spec: TinySpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor ``write_tiny_model`` writes: ggml shape (ne0 first) and type."""
    n_vocab = len(vocabulary()[0])
    kv = spec.n_head_kv * (spec.n_embd // spec.n_head)
    e, ff = spec.n_embd, spec.n_ff
    tensors = {"token_embd.weight": ((e, n_vocab), "F16"), "output_norm.weight": ((e,), "F32"),
               "output.weight": ((e, n_vocab), "F16")}
    for i in range(spec.n_layer):
        blk = f"blk.{i}"
        tensors |= {f"{blk}.attn_norm.weight": ((e,), "F32"), f"{blk}.attn_q.weight": ((e, e), "F16"),
                    f"{blk}.attn_k.weight": ((e, kv), "F16"), f"{blk}.attn_v.weight": ((e, kv), "F16"),
                    f"{blk}.attn_output.weight": ((e, e), "F16"), f"{blk}.ffn_norm.weight": ((e,), "F32")}
        if spec.is_moe:
            n = spec.n_expert
            tensors |= {f"{blk}.ffn_gate_inp.weight": ((e, n), "F32"),
                        f"{blk}.ffn_gate_exps.weight": ((e, ff, n), "Q8_0"),
                        f"{blk}.ffn_up_exps.weight": ((e, ff, n), "Q8_0"),
                        f"{blk}.ffn_down_exps.weight": ((ff, e, n), "Q8_0")}
        else:
            tensors |= {f"{blk}.ffn_gate.weight": ((e, ff), "F16"), f"{blk}.ffn_up.weight": ((e, ff), "F16"),
                        f"{blk}.ffn_down.weight": ((ff, e), "F16")}
    return tensors


def expected_bytes(shape: tuple[int, ...], ggml_type: str) -> int:
    n = int(np.prod(shape))
    return {"F32": 4 * n, "F16": 2 * n, "Q8_0": n // Q8_0_BLOCK[0] * Q8_0_BLOCK[1]}[ggml_type]


def all_tensors(info: GGUFInfo) -> list[TensorInfo]:
    return [*info.shape.global_tensors, *(t for layer in info.shape.layers for t in layer.tensors)]


# --- the tiny models ---------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "spec"), [("moe_model", MOE), ("dense_model", DENSE)])
def test_tiny_model_is_described_exactly(request: pytest.FixtureRequest, fixture: str, spec: TinySpec) -> None:
    path: Path = request.getfixturevalue(fixture)
    info = inspect_gguf(path)
    shape = info.shape

    assert info.path == path
    assert info.files == ((path, path.stat().st_size),)
    assert info.version == 3
    assert (info.architecture, shape.architecture) == ("llama", "llama")
    assert info.name == shape.name == spec.name
    assert shape.n_layer == spec.n_layer == len(shape.layers)
    assert [layer.index for layer in shape.layers] == list(range(spec.n_layer))
    assert (shape.n_embd, shape.n_head, shape.n_head_kv) == (spec.n_embd, spec.n_head, spec.n_head_kv)
    assert shape.key_length == shape.value_length == spec.n_embd // spec.n_head
    assert all(layer.n_head_kv == spec.n_head_kv for layer in shape.layers)
    assert info.context_length == shape.context_length == spec.context_length
    assert (shape.expert_count, shape.expert_used_count) == (spec.n_expert, spec.n_expert_used)
    assert shape.is_moe is spec.is_moe
    assert shape.expert_shared_count == 0
    assert shape.n_ff == spec.n_ff
    assert shape.sliding_window == 0 and not any(layer.sliding_window for layer in shape.layers)
    assert info.chat_template == spec.chat_template == CHATML_TEMPLATE
    assert info.license is None
    assert shape.n_vocab == len(vocabulary()[0])
    assert info.file_type == "F16"  # what general.file_type says, though the experts are Q8_0


@pytest.mark.parametrize(("fixture", "spec"), [("moe_model", MOE), ("dense_model", DENSE)])
def test_every_tensor_has_its_shape_type_size_and_role(
    request: pytest.FixtureRequest, fixture: str, spec: TinySpec
) -> None:
    path: Path = request.getfixturevalue(fixture)
    info = inspect_gguf(path)
    written = spec_tensors(spec)

    seen = {t.name: (t.shape, t.type) for t in all_tensors(info)}
    assert seen == written
    for tensor in all_tensors(info):
        assert tensor.n_bytes == expected_bytes(tensor.shape, tensor.type), tensor.name

    assert info.total_bytes == sum(expected_bytes(*v) for v in written.values())
    assert info.total_bytes == sum(t.n_bytes for t in all_tensors(info))
    assert info.total_bytes < path.stat().st_size
    assert info.parameter_count == sum(int(np.prod(shape)) for shape, _ in written.values())

    roles = {t.name: t.role for t in info.shape.global_tensors}
    assert roles == {"token_embd.weight": TensorRole.EMBEDDING, "output_norm.weight": TensorRole.OUTPUT,
                     "output.weight": TensorRole.OUTPUT}
    assert all(t.layer is None for t in info.shape.global_tensors)


def test_moe_layers_hold_three_expert_tensors(moe_model: Path) -> None:
    shape = inspect_gguf(moe_model).shape
    e, ff, n = MOE.n_embd, MOE.n_ff, MOE.n_expert
    for layer in shape.layers:
        experts = {t.name.split(".")[2]: t for t in layer.expert_tensors}
        assert sorted(experts) == ["ffn_down_exps", "ffn_gate_exps", "ffn_up_exps"]
        assert experts["ffn_gate_exps"].shape == experts["ffn_up_exps"].shape == (e, ff, n)
        assert experts["ffn_down_exps"].shape == (ff, e, n)
        assert {t.type for t in experts.values()} == {"Q8_0"}
        assert all(t.layer == layer.index for t in layer.tensors)
        routers = [t.name for t in layer.tensors if t.role is TensorRole.ROUTER]
        assert routers == [f"blk.{layer.index}.ffn_gate_inp.weight"]
        assert not [t for t in layer.tensors if t.role is TensorRole.DENSE_FFN]
        assert len([t for t in layer.tensors if t.role is TensorRole.ATTENTION]) == 6  # q k v o + 2 norms
        assert layer.expert_bytes == 3 * n * ff * e // 32 * 34
        assert layer.non_expert_bytes + layer.expert_bytes == layer.total_bytes
    assert shape.expert_bytes == MOE.n_layer * 3 * n * ff * e // 32 * 34


def test_dense_layers_have_a_dense_ffn_and_no_experts(dense_model: Path) -> None:
    shape = inspect_gguf(dense_model).shape
    for layer in shape.layers:
        assert layer.expert_tensors == ()
        dense = sorted(t.name.split(".")[2] for t in layer.tensors if t.role is TensorRole.DENSE_FFN)
        assert dense == ["ffn_down", "ffn_gate", "ffn_up"]
        assert layer.bytes_of(TensorRole.DENSE_FFN) == 3 * DENSE.n_ff * DENSE.n_embd * 2
        assert not [t for t in layer.tensors if t.role is TensorRole.ROUTER]
    assert shape.expert_bytes == 0


def test_as_dict_is_json_and_adds_up(moe_model: Path) -> None:
    info = inspect_gguf(moe_model)
    data = json.loads(json.dumps(info.as_dict(), allow_nan=False))
    assert data["path"] == str(moe_model)
    assert data["files"] == [{"path": str(moe_model), "bytes": moe_model.stat().st_size}]
    assert (data["architecture"], data["quant"], data["n_layer"]) == ("llama", "F16", MOE.n_layer)
    assert (data["expert_count"], data["expert_used_count"], data["expert_shared_count"]) == (8, 2, 0)
    assert (data["n_head"], data["n_head_kv"], data["key_length"], data["value_length"]) == (4, 2, 32, 32)
    assert (data["trained_context"], data["sliding_window"], data["sliding_window_layers"]) == (4096, 0, [])
    assert data["parameters"] == info.parameter_count
    layer_sum = sum(sum(layer["bytes"].values()) for layer in data["layers"])
    assert layer_sum + data["embedding_bytes"] + data["output_bytes"] == data["size_bytes"] == info.total_bytes
    assert data["layers"][0]["bytes"]["experts"] == info.shape.layers[0].expert_bytes > 0
    assert data["layers"][0]["bytes"]["router"] == MOE.n_expert * MOE.n_embd * 4
    assert data["metadata"]["llama.expert_count"] == 8
    assert "tokenizer.ggml.tokens" not in data["metadata"]  # arrays are left out


# --- files written here ------------------------------------------------------------------

Extra = Callable[[gguf.GGUFWriter], None]


def write_model(path: Path, arch: str = "llama", n_layer: int = 2, extra: Extra | None = None,
                split_max_tensors: int = 0) -> Path:
    """A small model with attention-only layers (no tokenizer: the vocabulary comes from token_embd)."""
    n_embd = 32
    writer = gguf.GGUFWriter(str(path), arch=arch, split_max_tensors=split_max_tensors)
    writer.add_block_count(n_layer)
    writer.add_embedding_length(n_embd)
    writer.add_head_count(4)
    writer.add_context_length(2048)
    if extra is not None:
        extra(writer)
    writer.add_tensor("token_embd.weight", np.zeros((50, n_embd), dtype=np.float32))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((n_embd, n_embd), dtype=np.float16))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_without_tokenizer_or_file_type_the_tensors_decide(tmp_path: Path) -> None:
    info = inspect_gguf(write_model(tmp_path / "bare.gguf"))
    assert info.shape.n_vocab == 50  # token_embd's second dimension
    assert info.file_type == "F32"  # most bytes: token_embd, F32
    assert info.chat_template is None
    assert info.shape.n_head_kv == 4  # defaults to head_count
    assert info.shape.key_length == 8  # n_embd / n_head


def test_file_type_comes_from_general_file_type(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
        w.add_license("apache-2.0")
        w.add_name("Named")

    info = inspect_gguf(write_model(tmp_path / "q4.gguf", extra=extra))
    assert (info.file_type, info.license, info.name) == ("Q4_K_M", "apache-2.0", "Named")


def test_per_layer_kv_heads_and_empty_layers(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_head_count_kv([2, 0, 1, 2])
        w.add_key_length(16)
        w.add_value_length(8)

    # Layers 2 and 3 have no tensors at all, and still get a LayerShape.
    path = write_model(tmp_path / "hybrid.gguf", n_layer=2, extra=extra)
    patched = patch_u32_value(path, b"llama.block_count", 4)
    shape = inspect_gguf(patched).shape
    assert [layer.n_head_kv for layer in shape.layers] == [2, 0, 1, 2]
    assert shape.n_head_kv == 2
    assert (shape.key_length, shape.value_length) == (16, 8)
    assert [len(layer.tensors) for layer in shape.layers] == [2, 2, 0, 0]


@pytest.mark.parametrize(
    ("arch", "window", "pattern", "expected"),
    [
        ("gpt-oss", 128, None, [True, False, True, False, True, False]),  # llama.cpp: set_swa_pattern(2)
        ("gemma3", 512, None, [True, True, True, True, True, False]),  # 5 sliding, 1 full
        ("cohere2", 4096, None, [True, True, True, False, True, True]),
        ("llama", 4096, 3, [True, True, False, True, True, False]),  # an int period from the file
        ("llama", 4096, [False, True, True, False, False, True], [False, True, True, False, False, True]),
        ("phi3", 2047, None, [False] * 6),  # llama.cpp ignores Phi-3's window: full attention
        ("gpt-oss", 0, None, [False] * 6),
    ],
)
def test_sliding_window_layers(tmp_path: Path, arch: str, window: int, pattern: int | list[bool] | None,
                               expected: list[bool]) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_sliding_window(window)
        if pattern is not None:
            w.add_sliding_window_pattern(pattern)

    shape = inspect_gguf(write_model(tmp_path / "swa.gguf", arch=arch, n_layer=6, extra=extra)).shape
    assert [layer.sliding_window for layer in shape.layers] == expected
    assert shape.sliding_window == (window if any(expected) else 0)


def test_gemma2_slides_every_other_layer_with_its_default_window(tmp_path: Path) -> None:
    shape = inspect_gguf(write_model(tmp_path / "g2.gguf", arch="gemma2", n_layer=4)).shape
    assert [layer.sliding_window for layer in shape.layers] == [True, False, True, False]
    assert shape.sliding_window == 4096


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("token_embd.weight", TensorRole.EMBEDDING),
        ("output.weight", TensorRole.OUTPUT),
        ("output_norm.bias", TensorRole.OUTPUT),
        ("rope_freqs.weight", TensorRole.OTHER),
        ("blk.7.ffn_gate_exps.weight", TensorRole.EXPERTS),
        ("blk.7.ffn_down_exps.bias", TensorRole.EXPERTS),
        ("blk.7.ffn_gate_up_exps.weight", TensorRole.EXPERTS),
        ("blk.7.ffn_gate_inp.weight", TensorRole.ROUTER),
        ("blk.7.exp_probs_b.bias", TensorRole.ROUTER),
        ("blk.7.ffn_gate_inp_shexp.weight", TensorRole.SHARED_EXPERTS),
        ("blk.7.ffn_up_shexp.weight", TensorRole.SHARED_EXPERTS),
        ("blk.7.ffn_down.weight", TensorRole.DENSE_FFN),
        ("blk.7.attn_sinks.weight", TensorRole.ATTENTION),
        ("blk.7.ffn_norm.weight", TensorRole.ATTENTION),
        ("blk.7.post_ffw_norm.weight", TensorRole.ATTENTION),
        ("blk.7.ssm_conv1d.weight", TensorRole.OTHER),
    ],
)
def test_tensor_roles(name: str, role: TensorRole) -> None:
    assert tensor_role(name) is role


# --- split models ------------------------------------------------------------------------


@pytest.fixture
def split_model(tmp_path: Path) -> list[Path]:
    write_model(tmp_path / "split.gguf", n_layer=2, split_max_tensors=2)  # 6 tensors: 3 shards
    shards = sorted(tmp_path.glob("split-*-of-00003.gguf"))
    assert [p.name for p in shards] == [f"split-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    return shards


@pytest.mark.parametrize("given_shard", [0, 1, 2])
def test_any_shard_finds_the_whole_model(split_model: list[Path], given_shard: int) -> None:
    info = inspect_gguf(split_model[given_shard])
    assert info.path == split_model[0]
    assert info.files == tuple((p, p.stat().st_size) for p in split_model)
    assert len(all_tensors(info)) == 6
    assert info.shape.n_layer == 2 and all(len(layer.tensors) == 2 for layer in info.shape.layers)
    assert info.name == "split"  # no general.name: the file name without the shard suffix
    assert info.metadata["split.count"] == 3


def test_a_missing_shard_is_named(split_model: list[Path]) -> None:
    split_model[1].unlink()
    with pytest.raises(GGUFError, match="missing") as error:
        inspect_gguf(split_model[2])
    assert str(split_model[1]) in str(error.value)
    assert "3 files" in str(error.value)


def test_a_tensor_in_two_shards_is_refused(split_model: list[Path]) -> None:
    # Shard 3 holds blk.1.attn_q.weight and output_norm.weight; make the first a copy of shard 2's name.
    patch_bytes(split_model[2], b"blk.1.attn_q.weight", b"blk.0.attn_q.weight")
    with pytest.raises(GGUFError, match="is also in") as error:
        inspect_gguf(split_model[0])
    assert str(split_model[2]) in str(error.value) and str(split_model[1]) in str(error.value)


def test_a_renamed_shard_is_refused(split_model: list[Path], tmp_path: Path) -> None:
    alone = tmp_path / "renamed.gguf"
    split_model[0].rename(alone)
    with pytest.raises(GGUFError, match="split into 3 files") as error:
        inspect_gguf(alone)
    assert str(alone) in str(error.value)


# --- damaged files -----------------------------------------------------------------------


def damaged_copy(source: Path, target: Path, change: Callable[[bytearray], bytes | bytearray]) -> Path:
    target.write_bytes(bytes(change(bytearray(source.read_bytes()))))
    return target


def patch_bytes(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


def patch_u32_value(path: Path, key: bytes, value: int) -> Path:
    """Overwrite the UINT32 value of a metadata key (after the key comes its type, then the value)."""
    data = bytearray(path.read_bytes())
    at = data.index(key) + len(key)
    assert struct.unpack_from("<I", data, at)[0] == gguf.GGUFValueType.UINT32
    struct.pack_into("<I", data, at + 4, value)
    path.write_bytes(bytes(data))
    return path


def first_tensor_info(data: bytes, name: bytes) -> int:
    """Where the tensor's dimension count is: right after its name in the header."""
    return data.index(name) + len(name)


def expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(GGUFError) as error:
        inspect_gguf(path)
    message = str(error.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return message


def test_truncated_download(moe_model: Path, tmp_path: Path) -> None:
    half = damaged_copy(moe_model, tmp_path / "half.gguf", lambda b: b[: len(b) // 2])
    expect_error(half, "incomplete", "bytes of tensor data are missing", "Download the model again")
    short = damaged_copy(moe_model, tmp_path / "short.gguf", lambda b: b[:-1000])
    expect_error(short, "1,000 bytes of tensor data are missing")


def test_cut_inside_the_header(moe_model: Path, tmp_path: Path) -> None:
    path = damaged_copy(moe_model, tmp_path / "cut.gguf", lambda b: b[:3000])
    expect_error(path, "ends inside its header", "incomplete")


def test_not_a_gguf(moe_model: Path, tmp_path: Path) -> None:
    bad = damaged_copy(moe_model, tmp_path / "bad.gguf", lambda b: b"GGUX" + b[4:])
    expect_error(bad, "not a GGUF model file", "b'GGUX'")
    html = tmp_path / "page.gguf"
    html.write_bytes(b"<!DOCTYPE html><html><body>Sign in</body></html>")
    expect_error(html, "not a GGUF model file", "web page")


@pytest.mark.parametrize(("version", "fragment"), [(4, "newer format"), (1, "no longer loads"),
                                                   (77777, "damaged")])
def test_unsupported_version(moe_model: Path, tmp_path: Path, version: int, fragment: str) -> None:
    path = damaged_copy(moe_model, tmp_path / "v.gguf", lambda b: b[:4] + struct.pack("<I", version) + b[8:])
    expect_error(path, f"unsupported GGUF version {version}", fragment)


def test_big_endian(moe_model: Path, tmp_path: Path) -> None:
    path = damaged_copy(moe_model, tmp_path / "be.gguf", lambda b: b[:4] + struct.pack(">I", 3) + b[8:])
    expect_error(path, "big-endian")


def test_duplicate_tensor_name(moe_model: Path, tmp_path: Path) -> None:
    path = damaged_copy(moe_model, tmp_path / "dup.gguf", lambda b: b)
    patch_bytes(path, b"blk.0.attn_k.weight", b"blk.0.attn_q.weight")
    expect_error(path, "the tensor name 'blk.0.attn_q.weight' appears twice")


def test_duplicate_metadata_key(moe_model: Path, tmp_path: Path) -> None:
    path = damaged_copy(moe_model, tmp_path / "dupkey.gguf", lambda b: b)
    patch_bytes(path, b"general.file_type", b"llama.block_count")  # same length
    expect_error(path, "the metadata key 'llama.block_count' appears twice")


def test_absurd_counts(moe_model: Path, tmp_path: Path) -> None:
    tensors = damaged_copy(moe_model, tmp_path / "tensors.gguf",
                           lambda b: b[:8] + struct.pack("<Q", 2_000_000) + b[16:])
    expect_error(tensors, "2,000,000 tensors")
    keys = damaged_copy(moe_model, tmp_path / "keys.gguf", lambda b: b[:16] + struct.pack("<Q", 200_000) + b[24:])
    expect_error(keys, "200,000 metadata keys")
    layers = patch_u32_value(damaged_copy(moe_model, tmp_path / "layers.gguf", lambda b: b),
                             b"llama.block_count", 5000)
    expect_error(layers, "5000 layers")


def test_absurd_tensor_dimensions(moe_model: Path, tmp_path: Path) -> None:
    name = b"blk.0.attn_q.weight"

    def dims(value: int) -> Callable[[bytearray], bytearray]:
        def change(data: bytearray) -> bytearray:
            struct.pack_into("<I", data, first_tensor_info(data, name), value)
            return data
        return change

    def first_dim(value: int) -> Callable[[bytearray], bytearray]:
        def change(data: bytearray) -> bytearray:
            struct.pack_into("<Q", data, first_tensor_info(data, name) + 4, value)
            return data
        return change

    expect_error(damaged_copy(moe_model, tmp_path / "d5.gguf", dims(5)), "5 dimensions")
    expect_error(damaged_copy(moe_model, tmp_path / "d0.gguf", first_dim(0)), "has a dimension of 0")
    expect_error(damaged_copy(moe_model, tmp_path / "dn.gguf", first_dim(2**64 - 3)), "has a dimension of -3")


def test_missing_required_keys(moe_model: Path, tmp_path: Path) -> None:
    arch = damaged_copy(moe_model, tmp_path / "arch.gguf", lambda b: b)
    patch_bytes(arch, b"general.architecture", b"general.architectury")
    expect_error(arch, "no 'general.architecture'")
    blocks = damaged_copy(moe_model, tmp_path / "blocks.gguf", lambda b: b)
    patch_bytes(blocks, b"llama.block_count", b"llama.block_kount")
    expect_error(blocks, "no 'llama.block_count'")


def test_wrongly_typed_values(moe_model: Path, tmp_path: Path) -> None:
    def retype(path: Path, key: bytes, value_type: gguf.GGUFValueType, value: bytes) -> Path:
        data = bytearray(path.read_bytes())
        at = data.index(key) + len(key)
        data[at:at + 8] = struct.pack("<I", value_type) + value
        path.write_bytes(bytes(data))
        return path

    as_float = retype(damaged_copy(moe_model, tmp_path / "float.gguf", lambda b: b), b"llama.block_count",
                      gguf.GGUFValueType.FLOAT32, struct.pack("<f", 4.0))
    expect_error(as_float, "'llama.block_count' should be a whole number but is 4.0")
    negative = retype(damaged_copy(moe_model, tmp_path / "neg.gguf", lambda b: b), b"llama.embedding_length",
                      gguf.GGUFValueType.INT32, struct.pack("<i", -128))
    expect_error(negative, "'llama.embedding_length' is -128, outside the range")


def test_unknown_tensor_type(moe_model: Path, tmp_path: Path) -> None:
    def change(data: bytearray) -> bytearray:
        at = first_tensor_info(data, b"blk.0.attn_norm.weight") + 4 + 8  # one dimension, then the type
        assert struct.unpack_from("<I", data, at)[0] == gguf.GGMLQuantizationType.F32
        struct.pack_into("<I", data, at, 250)
        return data

    expect_error(damaged_copy(moe_model, tmp_path / "type.gguf", change), "unknown type 250")


def test_odd_metadata_is_refused(tmp_path: Path) -> None:
    nested = write_model(tmp_path / "nested.gguf", extra=lambda w: w.add_key_value(
        "odd.nested", [[1, 2], [3]], gguf.GGUFValueType.ARRAY))
    expect_error(nested, "'odd.nested' is an array of arrays")
    aligned = write_model(tmp_path / "aligned.gguf", extra=lambda w: w.add_uint32("general.alignment", 48))
    expect_error(aligned, "alignment 48 is not a power of two")


def test_a_tensor_name_longer_than_llama_cpp_allows(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_tensor("blk.0." + "x" * 60 + ".weight", np.ones(4, dtype=np.float32))

    expect_error(write_model(tmp_path / "long.gguf", extra=extra), "longer than llama.cpp allows")


def test_shards_out_of_order_are_refused(split_model: list[Path], tmp_path: Path) -> None:
    first, second = split_model[0], split_model[1]
    first.rename(tmp_path / "swap")
    second.rename(first)
    (tmp_path / "swap").rename(second)
    message = expect_error(first, "its name says it is part 1 of 3", "metadata says part 2 of 3")
    assert "Keep the parts' original names" in message


def test_missing_empty_and_folder(tmp_path: Path) -> None:
    expect_error(tmp_path / "nowhere.gguf", "does not exist")
    (tmp_path / "empty.gguf").write_bytes(b"")
    expect_error(tmp_path / "empty.gguf", "empty")
    (tmp_path / "folder.gguf").mkdir()
    expect_error(tmp_path / "folder.gguf", "folder")


@pytest.mark.parametrize("failure", [MemoryError(), IndexError("index 0 is out of bounds"), OverflowError("big"),
                                     UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")])
def test_whatever_the_reader_raises_becomes_a_gguf_error(
    moe_model: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    def broken_reader(path: Path) -> None:
        raise failure

    monkeypatch.setattr(gguf_info, "_Reader", broken_reader)
    expect_error(moe_model, "could not be read", type(failure).__name__)


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tests.tiny_models import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("fuzz") / "fuzz.gguf", DENSE).read_bytes()


@fuzz_settings(150)
@given(
    changes=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 1_100_000)),
)
def test_damage_never_escapes_as_anything_but_gguf_error(
    model_bytes: bytes, tmp_path: Path, changes: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(model_bytes)
    for at, value in changes:
        data[at] = value
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(bytes(data[:cut]))
    try:
        with case("gguf bytes"):
            info = inspect_gguf(path)
    except GGUFError as error:
        assert str(path) in str(error)
        # The validation itself found the damage: GGUFReader never had to fail on it.
        assert "could not be read" not in str(error)
    else:
        assert isinstance(info, GGUFInfo)
        json.dumps(info.as_dict())
