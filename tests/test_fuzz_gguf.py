"""The GGUF inspector against files whose fields were changed one by one: metadata values,
their types and counts, keys, and the tensor table (names, dimensions, types, offsets, counts),
starting from the real tiny models. Whatever the change, ``inspect_gguf`` returns a description
or raises ``GGUFError`` naming the file; it never raises anything else, hangs or takes memory
out of proportion to the file. (``test_gguf_info`` flips random bytes; this changes fields.)"""

from __future__ import annotations

import copy
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest
from gguf import GGUFValueType
from hypothesis import given
from hypothesis import strategies as st

from inference.gguf_info import GGUFError, GGUFInfo, inspect_gguf
from inference.protocol import Failed, Generate, Load, Loaded, Sampling, Token
from inference.worker import Worker
from tests.conftest import settings_for
from tests.fuzzing import case, fuzz_settings
from tests.gguf_layout import Layout, Tensor, Value, encode, parse
from tests.tiny_models import DENSE, MOE, write_tiny_model

MAX_TRACED_BYTES = 64 * 2**20  # the inspector's own allocations; a tiny model needs a few MB

EDGE_INTS = [0, 1, 2, 3, 4, 7, 8, 31, 32, 33, 63, 64, 255, 256, 4096, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1,
             2**32, 4_000_001, 2**53, 2**63 - 1, 2**63, 2**64 - 1]
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(0, 2**64 - 1))
value_types = st.one_of(st.sampled_from([int(t) for t in GGUFValueType]), st.integers(0, 2**32 - 1))
tensor_types = st.one_of(st.sampled_from([int(t) for t in gguf.GGMLQuantizationType]), st.integers(0, 2**32 - 1))
IMPORTANT_KEYS = [b"general.architecture", b"general.alignment", b"general.file_type", b"general.name",
                  b"llama.block_count", b"llama.embedding_length", b"llama.context_length",
                  b"llama.attention.head_count", b"llama.attention.head_count_kv", b"llama.expert_count",
                  b"llama.expert_used_count", b"llama.feed_forward_length", b"llama.attention.sliding_window",
                  b"llama.attention.sliding_window_pattern", b"tokenizer.ggml.tokens", b"tokenizer.chat_template",
                  b"split.count", b"split.no", b"split.tensors.count"]
ODD_NAMES = [b"", b"\xff\xfe", b"x" * 64, b"x" * 100_000, b"blk.4.attn_q.weight", b"blk.999999999.attn_q.weight",
             b"blk.-1.attn_q.weight", b"blk.0.ffn_gate_exps.weight", b"token_embd.weight", b"output.weight",
             b"blk.0", b"blk..weight", b"\x00"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fuzz-gguf")
    return {spec.name: write_tiny_model(folder / f"{spec.name}.gguf", spec).read_bytes() for spec in (MOE, DENSE)}


def test_the_layout_round_trips(layouts: dict[str, bytes]) -> None:
    for data in layouts.values():
        assert parse(data).to_bytes() == data


Mutation = Callable[[Layout], None]


@st.composite
def value_mutation(draw: st.DrawFn, layout: Layout) -> Mutation:
    index = draw(st.integers(0, len(layout.values) - 1))
    kind = draw(st.sampled_from(["retype", "payload", "count", "item_type", "length", "key", "drop", "twice",
                                 "set"]))
    new_type, number, raw = draw(value_types), draw(ints), draw(st.binary(max_size=48))
    key = draw(st.one_of(st.sampled_from(IMPORTANT_KEYS + ODD_NAMES), st.binary(max_size=40)))
    set_type = draw(st.sampled_from([int(t) for t in GGUFValueType if t != GGUFValueType.ARRAY]))
    array_items = draw(st.lists(ints, max_size=8))

    def mutate(layout: Layout) -> None:
        value = layout.values[index]
        if kind == "retype":
            value.type = new_type
        elif kind == "payload":
            value.payload = raw
        elif kind == "count" and value.type == GGUFValueType.ARRAY:
            value.payload = value.payload[:4] + encode(GGUFValueType.UINT64, number) + value.payload[12:]
        elif kind == "item_type" and value.type == GGUFValueType.ARRAY:
            value.payload = encode(GGUFValueType.UINT32, new_type) + value.payload[4:]
        elif kind in ("length", "count", "item_type") and value.type == GGUFValueType.STRING:
            value.payload = encode(GGUFValueType.UINT64, number) + value.payload[8:]
        elif kind == "key":
            value.key = key
        elif kind == "drop":
            del layout.values[index]
        elif kind == "twice":
            layout.values.insert(index, copy.deepcopy(value))
        elif kind == "set":  # an important key with a value of any type
            target = next((v for v in layout.values if v.key == key), None) or value
            target.type = set_type
            target.payload = encode(set_type, key if set_type == GGUFValueType.STRING else number)
        else:  # an array of numbers where a number or string was
            target = next((v for v in layout.values if v.key == key), None) or value
            target.type = GGUFValueType.ARRAY
            target.payload = encode(GGUFValueType.UINT32, GGUFValueType.UINT32) + encode(
                GGUFValueType.UINT64, len(array_items)) + b"".join(encode(GGUFValueType.UINT32, n) for n in array_items)

    return mutate


@st.composite
def tensor_mutation(draw: st.DrawFn, layout: Layout) -> Mutation:
    index = draw(st.integers(0, len(layout.tensors) - 1))
    kind = draw(st.sampled_from(["name", "dims", "dim", "type", "offset", "offset_of", "drop", "twice"]))
    name = draw(st.one_of(st.sampled_from(ODD_NAMES + [t.name for t in layout.tensors]), st.binary(max_size=70)))
    dims = draw(st.lists(ints, max_size=6))
    dim_index, number = draw(st.integers(0, 3)), draw(ints)
    tensor_type = draw(tensor_types)
    other = draw(st.integers(0, len(layout.tensors) - 1))
    offset = draw(st.one_of(ints, st.integers(0, len(layout.data) + 64)))

    def mutate(layout: Layout) -> None:
        tensor = layout.tensors[index]
        if kind == "name":
            tensor.name = name
        elif kind == "dims":
            tensor.dims = dims
        elif kind == "dim" and dim_index < len(tensor.dims):
            tensor.dims[dim_index] = number
        elif kind == "type":
            tensor.type = tensor_type
        elif kind == "offset":
            tensor.offset = offset
        elif kind == "offset_of":  # two tensors over the same bytes
            tensor.offset = layout.tensors[other % len(layout.tensors)].offset
        elif kind == "drop":
            del layout.tensors[index]
        elif kind == "twice":
            layout.tensors.insert(index, copy.deepcopy(tensor))

    return mutate


@st.composite
def header_mutation(draw: st.DrawFn, layout: Layout) -> Mutation:
    kind = draw(st.sampled_from(["tensor_count", "value_count", "cut", "version", "extra"]))
    delta = draw(st.one_of(st.integers(-3, 3), ints))
    cut = draw(st.integers(0, len(layout.data)))
    version = draw(st.sampled_from([0, 1, 2, 3, 4, 2**32 - 1]))
    extra = draw(st.binary(max_size=64))

    def mutate(layout: Layout) -> None:
        if kind == "tensor_count":
            layout.tensor_count = max(len(layout.tensors) + delta, 0) % 2**64
        elif kind == "value_count":
            layout.value_count = max(len(layout.values) + delta, 0) % 2**64
        elif kind == "cut":
            layout.data = layout.data[:cut]
        elif kind == "version":
            layout.version = version
        else:
            layout.extra = extra

    return mutate


@st.composite
def mutated_file(draw: st.DrawFn, layouts: dict[str, bytes]) -> bytes:
    layout = parse(layouts[draw(st.sampled_from(sorted(layouts)))])
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from([value_mutation, value_mutation, tensor_mutation, tensor_mutation,
                                      header_mutation]))
        if (where is value_mutation and not layout.values) or (where is tensor_mutation and not layout.tensors):
            continue
        draw(where(layout))(layout)
    return layout.to_bytes()


def inspect_within_bounds(path: Path) -> GGUFInfo | GGUFError:
    tracemalloc.start()
    try:
        try:
            return inspect_gguf(path)
        except GGUFError as error:
            return error
        finally:
            _, peak = tracemalloc.get_traced_memory()
            assert peak < MAX_TRACED_BYTES, f"inspecting a {path.stat().st_size:,}-byte file took {peak:,} bytes"
    finally:
        tracemalloc.stop()


@fuzz_settings()
@given(data=st.data())
def test_changed_fields_give_a_description_or_a_clear_gguf_error(
    layouts: dict[str, bytes], tmp_path: Path, data: st.DataObject
) -> None:
    path = tmp_path / "mutated.gguf"
    path.write_bytes(data.draw(mutated_file(layouts)))
    with case("gguf fields"):
        outcome = inspect_within_bounds(path)
    if isinstance(outcome, GGUFError):
        message = str(outcome)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert "could not be read" not in message  # the validation named the damage; GGUFReader never failed
    else:
        json.dumps(outcome.as_dict(), allow_nan=False)
        assert outcome.shape.n_layer >= 1


def changed(layouts: dict[str, bytes], mutate: Mutation, name: str = "tiny-moe") -> bytes:
    layout = parse(layouts[name])
    mutate(layout)
    return layout.to_bytes()


def value_of(layout: Layout, key: bytes) -> Value:
    return next(v for v in layout.values if v.key == key)


def tensor_of(layout: Layout, name: bytes) -> Tensor:
    return next(t for t in layout.tensors if t.name == name)


def set_value(key: bytes, value_type: int, value: object) -> Mutation:
    """The key set to ``value`` of ``value_type``, added when the file does not have it."""
    def mutate(layout: Layout) -> None:
        if not any(v.key == key for v in layout.values):
            layout.values.append(Value(key, value_type, b""))
        target = value_of(layout, key)
        target.type, target.payload = value_type, encode(value_type, value)
    return mutate


def set_tensor(tensor_name: bytes, /, **fields: object) -> Mutation:
    def mutate(layout: Layout) -> None:
        for field_name, field_value in fields.items():
            setattr(tensor_of(layout, tensor_name), field_name, field_value)
    return mutate


def array_count(key: bytes, count: int) -> Mutation:
    def mutate(layout: Layout) -> None:
        target = value_of(layout, key)
        target.payload = target.payload[:4] + encode(GGUFValueType.UINT64, count) + target.payload[12:]
    return mutate


def test_a_scalar_embedding_without_an_embedding_length_is_described(layouts: dict[str, bytes],
                                                                     tmp_path: Path) -> None:
    def change(layout: Layout) -> None:
        layout.values = [v for v in layout.values if v.key != b"llama.embedding_length"]
        tensor_of(layout, b"token_embd.weight").dims = []

    path = tmp_path / "scalar.gguf"
    path.write_bytes(changed(layouts, change, "tiny-dense"))
    assert inspect_gguf(path).shape.n_embd == 0


@pytest.mark.parametrize(("mutate", "expected"), [
    (array_count(b"tokenizer.ggml.tokens", 2**64 - 1), "claims 18,446,744,073,709,551,615 entries"),
    (array_count(b"tokenizer.ggml.tokens", 3_999_999), "ends inside its header"),
    (array_count(b"tokenizer.ggml.scores", 3_999_999), "ends inside its header"),
    (set_value(b"general.alignment", GGUFValueType.UINT32, 0), "alignment 0 is not a power of two"),
    (set_value(b"llama.block_count", GGUFValueType.UINT32, 0), "0 layers"),
    (set_value(b"llama.block_count", GGUFValueType.STRING, b"four"), "should be a whole number but is 'four'"),
    (set_value(b"llama.expert_count", GGUFValueType.INT64, -1), "outside the range"),
    (set_value(b"general.architecture", GGUFValueType.UINT32, 7), "should name the architecture"),
    (set_value(b"general.architecture", GGUFValueType.STRING, b""), "should name the architecture"),
    (set_tensor(b"blk.0.attn_q.weight", dims=[128, 128, 1, 1, 1]), "5 dimensions"),
    (set_tensor(b"blk.0.attn_q.weight", dims=[2**20, 2**20, 2**10]), "tensor data are missing"),
    (set_tensor(b"blk.0.attn_q.weight", dims=[2**31, 2**31, 2**31, 2**31]), "more elements than can exist"),
    (set_tensor(b"blk.0.attn_q.weight", offset=2**64 - 32), "tensor data are missing"),
    (set_tensor(b"blk.0.attn_q.weight", offset=1), "not a multiple of the alignment"),
    (set_tensor(b"blk.0.attn_q.weight", name=b"blk.9.attn_q.weight"), "belongs to layer 9"),
    (set_tensor(b"blk.0.attn_q.weight", name=b"\xff\xfe"), "not valid UTF-8"),
    (set_tensor(b"blk.0.ffn_gate_exps.weight", dims=[100, 64, 8]), "not a multiple of the Q8_0 block size"),
    (set_tensor(b"blk.0.ffn_gate_exps.weight", dims=[]), "rows of 1 values, not a multiple of the Q8_0"),
])
def test_each_changed_field_is_named(layouts: dict[str, bytes], tmp_path: Path, mutate: Mutation,
                                     expected: str) -> None:
    path = tmp_path / "changed.gguf"
    path.write_bytes(changed(layouts, mutate))
    outcome = inspect_within_bounds(path)
    assert isinstance(outcome, GGUFError), "the change went unnoticed"
    assert expected in str(outcome)


# --- files the inspector accepts, loaded by llama.cpp ----------------------------------------

LOADER_KEYS = [b"llama.block_count", b"llama.embedding_length", b"llama.context_length", b"llama.expert_count",
               b"llama.expert_used_count", b"llama.feed_forward_length", b"llama.attention.head_count",
               b"llama.attention.head_count_kv", b"llama.rope.dimension_count", b"tokenizer.ggml.bos_token_id",
               b"tokenizer.ggml.eos_token_id", b"llama.attention.layer_norm_rms_epsilon"]
SMALL_INTS = [0, 1, 2, 3, 5, 7, 8, 9, 16, 31, 33, 64, 127, 129, 4096, 2**31 - 1, 2**32 - 1]


@st.composite
def plausible_file(draw: st.DrawFn, layouts: dict[str, bytes]) -> bytes:
    """A tiny model with one or two numbers llama.cpp reads changed, or a tensor's shape:
    what passes inspection but may still make llama.cpp refuse or abort."""
    layout = parse(layouts["tiny-moe"])
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            key = draw(st.sampled_from(LOADER_KEYS))
            value_type = draw(st.sampled_from([GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.FLOAT32]))
            set_value(key, value_type, draw(st.sampled_from(SMALL_INTS)))(layout)
        else:
            tensor = draw(st.sampled_from(layout.tensors))
            if tensor.dims:
                tensor.dims[draw(st.integers(0, len(tensor.dims) - 1))] = draw(st.sampled_from([32, 64, 96, 128]))
    return layout.to_bytes()


@fuzz_settings(default=6)
@given(data=st.data())
def test_llama_cpp_refusing_or_aborting_on_an_accepted_file_leaves_the_worker_usable(
    layouts: dict[str, bytes], tmp_path: Path, worker: Worker, moe_model: Path, data: st.DataObject
) -> None:
    path = tmp_path / "plausible.gguf"
    path.write_bytes(data.draw(plausible_file(layouts)))
    try:
        inspect_gguf(path)
    except GGUFError:
        return  # the inspector refused it: llama.cpp never sees it
    with case("llama.cpp loads"):
        events = list(worker.request(Load(settings_for(path))))
        assert len(events) == 1 and isinstance(events[0], (Loaded, Failed)), events
        if isinstance(events[0], Failed):
            assert events[0].kind in ("error", "crash") and events[0].message
        else:
            reply = list(worker.generate(Generate(prompt="hello", sampling=Sampling(temperature=0, max_tokens=2))))
            assert all(isinstance(e, (Token, Failed)) or type(e).__name__ in ("Progress", "Done") for e in reply)
        worker.load(settings_for(moe_model))  # the same worker, or a fresh one after a crash, goes on
        assert worker.tokenize("hello")
