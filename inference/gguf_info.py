"""What a GGUF model file holds, read without llama.cpp.

``inspect_gguf`` checks a file (or every shard of a split model) and describes it: the
metadata to show, and the ``ModelShape`` the memory planner works from. The ``gguf``
package's ``GGUFReader`` does the reading, once ``gguf_header`` has walked and validated
each file's header. Whatever goes wrong, ``inspect_gguf`` raises ``GGUFError`` and nothing
else.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGUFReader, GGUFValueType, Keys

from inference.chat_formats import MARKER_TOKENS, ChatFormatChoice, choose_chat_format
from inference.errors import GGUFError
from inference.gguf_header import DAMAGED, check_file, shown, validate_header
from inference.model_shape import LayerShape, ModelShape, TensorInfo, TensorRole

Scalar = str | int | float | bool

MAX_LAYERS = 4096
PROJECTOR_ARCHITECTURE = "clip"  # llama.cpp's multimodal projectors (mmproj-*.gguf) all say so
_U32 = 1 << 32

SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_LAYER_TENSOR = re.compile(r"^blk\.(?P<index>\d+)\.(?P<rest>.+)$")
_EXPERTS = re.compile(r"^ffn_(up|gate|down|gate_up)_exps(\.|$)")
_DENSE_FFN = re.compile(r"^ffn_(up|gate|down)(\.|$)")

# llama.cpp's sliding-window layout per architecture when the file has no
# ``{arch}.attention.sliding_window_pattern`` key (src/llama-model.cpp, load_hparams):
# (period, window when the window key is absent). ``set_swa_pattern(period)`` makes layer
# ``i`` a sliding-window layer iff ``i % period < period - 1``: layer 0 slides, every
# period-th layer attends to everything (gpt-oss: even layers slide, odd layers are full).
# Other architectures without a pattern key get full attention everywhere, which is what
# llama.cpp does for them (Phi-3, Mistral-style llama files) and never underestimates.
_SWA_DEFAULTS: dict[str, tuple[int, int]] = {
    "gpt-oss": (2, 0),
    "gemma2": (2, 4096),
    "gemma3": (6, 0),
    "gemma3n": (5, 0),
    "gemma-embedding": (6, 0),
    "cohere2": (4, 0),
    "olmo2": (4, 0),
    "afmoe": (4, 0),
    "llama4": (4, 8192),  # chunked attention in 8192-token chunks; a window of 0 turns it off
}
_FIXED_WINDOW = {"llama4": 8192}  # llama.cpp ignores the key's value (other than 0) here
_SPECIAL_TOKEN_TYPES = (int(gguf.TokenType.CONTROL), int(gguf.TokenType.USER_DEFINED))


@dataclass(frozen=True)
class GGUFInfo:
    path: Path  # the file, or the first shard of a split model
    files: tuple[tuple[Path, int], ...]  # every shard with its size in bytes
    version: int
    architecture: str
    name: str  # general.name, or the file name without the extension and shard suffix
    parameter_count: int
    file_type: str  # "Q4_K_M", "F16", ...
    context_length: int  # trained context
    chat_template: str | None
    license: str | None
    shape: ModelShape
    metadata: dict[str, Scalar] = field(repr=False)  # scalar keys only, for display
    marker_tokens: frozenset[str] = frozenset()  # the special tokens that name a chat format, if it has them

    @property
    def chat_format(self) -> ChatFormatChoice:
        """The chat format Enclave uses for this model, decided as the worker decides it."""
        pre = self.metadata.get(Keys.Tokenizer.PRE)
        return choose_chat_format(template=self.chat_template, architecture=self.architecture,
                                  has_token=self.marker_tokens.__contains__,
                                  tokenizer_pre=pre if isinstance(pre, str) else None)

    @property
    def total_bytes(self) -> int:
        return self.shape.total_bytes

    @property
    def file_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def as_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values (non-finite floats become strings)."""
        shape = self.shape
        return {
            "path": str(self.path),
            "files": [{"path": str(p), "bytes": size} for p, size in self.files],
            "version": self.version,
            "architecture": self.architecture,
            "name": self.name,
            "quant": self.file_type,
            "parameters": self.parameter_count,
            "size_bytes": self.total_bytes,
            "file_bytes": self.file_bytes,
            "trained_context": self.context_length,
            "chat_template": self.chat_template,
            "chat_format": self.chat_format.description,
            "chat_format_guessed": self.chat_format.guessed,
            "license": self.license,
            "n_layer": shape.n_layer,
            "n_embd": shape.n_embd,
            "n_vocab": shape.n_vocab,
            "n_head": shape.n_head,
            "n_head_kv": shape.n_head_kv,
            "key_length": shape.key_length,
            "value_length": shape.value_length,
            "n_ff": shape.n_ff,
            "n_ff_expert": shape.n_ff_expert,
            "expert_count": shape.expert_count,
            "expert_used_count": shape.expert_used_count,
            "expert_shared_count": shape.expert_shared_count,
            "sliding_window": shape.sliding_window,
            "sliding_window_layers": [layer.index for layer in shape.layers if layer.sliding_window],
            "embedding_bytes": shape.embedding_bytes,
            "output_bytes": shape.output_bytes,
            "layers": [_layer_dict(layer) for layer in shape.layers],
            "metadata": {key: _json_scalar(value) for key, value in self.metadata.items()},
        }


def inspect_gguf(path: Path | str) -> GGUFInfo:
    """Validate and describe a GGUF model; raises ``GGUFError`` and nothing else."""
    path = Path(path)
    failure = ""
    try:
        return _inspect(path)
    except GGUFError:
        raise
    except Exception as exc:  # a bug here must still reach the user as a file problem
        failure = f"{type(exc).__name__}: {exc}"
    # Raised outside the ``except`` so no traceback keeps a memory map of the file open.
    raise GGUFError(f"{path}: the model file could not be read ({failure}). {DAMAGED}")


@dataclass(frozen=True)
class GGUFTensorEntry:
    name: str
    shape: tuple[int, ...]  # ggml's order: the first dimension is the fastest-varying
    n_bytes: int


@dataclass(frozen=True)
class GGUFContents:
    """One GGUF file's metadata and tensor list, validated, for files that are not language
    models (a vision projector): ``projector_info`` builds on it."""

    path: Path
    size: int
    metadata: dict[str, Scalar]
    tensors: tuple[GGUFTensorEntry, ...]


def read_gguf(path: Path | str) -> GGUFContents:
    """Validate one GGUF file as ``inspect_gguf`` does (header walked first, then read) and
    return what it holds; raises ``GGUFError`` and nothing else."""
    path = Path(path)
    failure = ""
    try:
        size = check_file(path)
        validate_header(path, size)
        shard = _read_shard(path, size)
        return GGUFContents(path, size, dict(shard.scalars),
                            tuple(GGUFTensorEntry(t.name, t.shape, t.n_bytes) for t in shard.tensors))
    except GGUFError:
        raise
    except Exception as exc:  # a bug here must still reach the user as a file problem
        failure = f"{type(exc).__name__}: {exc}"
    raise GGUFError(f"{path}: the file could not be read ({failure}). {DAMAGED}")


# --- shards ------------------------------------------------------------------------------


def _inspect(path: Path) -> GGUFInfo:
    files = [(shard, check_file(shard)) for shard in _shard_paths(path)]
    for shard, size in files:
        validate_header(shard, size)
    shards = [_read_shard(shard, size) for shard, size in files]
    _check_split_keys(shards)
    return _build_info(shards)


def _shard_paths(path: Path) -> list[Path]:
    match = SHARD_NAME.match(path.name)
    if match is None:
        return [path]
    number, count = int(match["no"]), int(match["count"])
    if count < 1 or not 1 <= number <= count:
        raise GGUFError(f"{path}: the name says this is part {number} of {count}, which cannot be. "
                        "Rename the parts of the split model as they were downloaded.")
    paths = [path.with_name(f"{match['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    for i, shard in enumerate(paths, start=1):
        if not shard.exists():
            raise GGUFError(f"{shard}: this file is missing. The model is split into {count} files and "
                            f"'{path.name}' needs all of them in the same folder; part {i} is not there. "
                            "Download the missing part.")
    return paths


# --- reading with GGUFReader -------------------------------------------------------------


@dataclass(frozen=True)
class _RawTensor:
    name: str
    shape: tuple[int, ...]
    type: str
    n_bytes: int
    n_elements: int


@dataclass(frozen=True)
class _Shard:
    path: Path
    size: int
    version: int
    scalars: dict[str, Scalar]
    arrays: dict[str, list[Scalar]]  # numeric arrays short enough to be per-layer values
    array_lengths: dict[str, int]  # every array
    tensors: tuple[_RawTensor, ...]
    marker_tokens: frozenset[str] = frozenset()

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.path}: {what}")


class _Reader(GGUFReader):
    """``GGUFReader`` over a plain ndarray view of its memory map. It slices its ``data``
    once or twice per vocabulary entry, and numpy's ``memmap`` subclass makes each slice
    several times slower: a 150k-token vocabulary takes 9 s instead of 2.5 s."""

    @property
    def data(self) -> np.ndarray:
        return self._plain_data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._plain_data = value.view(np.ndarray)


def _read_shard(path: Path, size: int) -> _Shard:
    failure = ""
    try:
        return _extract(path, size, _Reader(path))
    except GGUFError:
        raise
    except Exception as exc:  # GGUFReader fails with anything from IndexError to MemoryError
        failure = f"{type(exc).__name__}: {exc}"
    raise GGUFError(f"{path}: the model file could not be read ({failure}). {DAMAGED}")


def _extract(path: Path, size: int, reader: GGUFReader) -> _Shard:
    scalars: dict[str, Scalar] = {}
    arrays: dict[str, list[Scalar]] = {}
    lengths: dict[str, int] = {}
    for key, reader_field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if reader_field.types[0] == GGUFValueType.ARRAY:
            lengths[key] = len(reader_field.data)
            if reader_field.types[-1] != GGUFValueType.STRING and len(reader_field.data) <= MAX_LAYERS:
                arrays[key] = [reader_field.parts[i].tolist()[0] for i in reader_field.data]
        elif reader_field.types[0] == GGUFValueType.STRING:
            scalars[key] = bytes(reader_field.parts[-1]).decode("utf-8", errors="replace")
        else:
            scalars[key] = reader_field.parts[-1].tolist()[0]
    tensors = tuple(
        _RawTensor(t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_bytes), int(t.n_elements))
        for t in reader.tensors
    )
    version = int(reader.fields["GGUF.version"].parts[0][0])
    return _Shard(path, size, version, scalars, arrays, lengths, tensors, _marker_tokens(reader))


def _marker_tokens(reader: GGUFReader) -> frozenset[str]:
    """Which of ``chat_formats.MARKER_TOKENS`` the vocabulary holds as control or
    user-defined tokens (the tokens llama.cpp parses as special)."""
    tokens = reader.fields.get(Keys.Tokenizer.LIST)
    if tokens is None or tokens.types[-1] != GGUFValueType.STRING:
        return frozenset()
    types = reader.fields.get(Keys.Tokenizer.TOKEN_TYPE)
    wanted = {marker.encode(): marker for marker in MARKER_TOKENS}
    lengths = {len(encoded) for encoded in wanted}
    found = set()
    for index, part in enumerate(tokens.data):
        text = tokens.parts[part]
        if len(text) in lengths and (marker := wanted.get(text.tobytes())) is not None and _is_special(types, index):
            found.add(marker)
    return frozenset(found)


def _is_special(types: Any, index: int) -> bool:
    if types is None or index >= len(types.data):
        return False
    return int(types.parts[types.data[index]][0]) in _SPECIAL_TOKEN_TYPES


def _check_split_keys(shards: list[_Shard]) -> None:
    """The shards' ``split.*`` keys must agree with their names, as llama.cpp requires."""
    count = len(shards)
    claimed = shards[0].scalars.get(Keys.Split.LLM_KV_SPLIT_COUNT)
    if count == 1 and claimed not in (None, 0, 1):
        raise shards[0].fail(f"this file is one part of a model split into {shown(repr(claimed))} files, but its "
                             "name does not end in '-00001-of-0000N.gguf' as llama.cpp needs. Keep the parts' "
                             "original names.")
    if count > 1:
        for number, shard in enumerate(shards):
            split_no = shard.scalars.get(Keys.Split.LLM_KV_SPLIT_NO)
            split_count = shard.scalars.get(Keys.Split.LLM_KV_SPLIT_COUNT)
            if (split_no, split_count) != (number, count):
                said = f"part {split_no + 1} of {split_count}" if isinstance(split_no, int) else "something else"
                raise shard.fail(f"its name says it is part {number + 1} of {count} of a split model, but its "
                                 f"metadata says {shown(said)}. Keep the parts' original names and download "
                                 "them again.")
    _check_tensor_names(shards)


def _check_tensor_names(shards: list[_Shard]) -> None:
    owner: dict[str, Path] = {}
    for shard in shards:
        for tensor in shard.tensors:
            if tensor.name in owner:
                raise shard.fail(f"the tensor '{shown(tensor.name)}' is also in {owner[tensor.name]}: the parts "
                                 "of this split model do not belong together. Download all of them again.")
            owner[tensor.name] = shard.path
    expected = shards[0].scalars.get(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, len(owner))
    if len(shards) > 1 and expected != len(owner):
        raise shards[0].fail(f"the split model should have {shown(repr(expected))} tensors, but its "
                             f"{len(shards)} parts hold {len(owner)}. Download all the parts again.")


# --- building the description ------------------------------------------------------------


class _Metadata:
    """Typed access to the first shard's metadata, failing with the file's name."""

    def __init__(self, shard: _Shard, arch: str) -> None:
        self.shard = shard
        self.arch = arch

    def key(self, template: str) -> str:
        return template.format(arch=self.arch)

    def integer(self, template: str, default: int | None = None) -> int:
        """A whole number; for a per-layer array, its largest entry."""
        key = self.key(template)
        if key in self.shard.array_lengths:
            return max(self._array_ints(key), default=0)
        value = self.shard.scalars.get(key)
        if value is None:
            if default is None:
                raise self.shard.fail(f"the metadata has no '{shown(key)}', which every model needs. {DAMAGED}")
            return default
        return self._check_int(key, value)

    def per_layer(self, template: str, n_layer: int, default: list[int]) -> list[int]:
        """A value that may be one number for all layers or an array with one per layer."""
        key = self.key(template)
        if key in self.shard.array_lengths:
            return self._check_length(key, self._array_ints(key), n_layer)
        if key in self.shard.scalars:
            return [self.integer(template)] * n_layer
        return default

    def flags(self, template: str, n_layer: int) -> list[bool]:
        key = self.key(template)
        return [bool(v) for v in self._check_length(key, self._array(key), n_layer)]

    def text(self, key: str) -> str | None:
        value = self.shard.scalars.get(key)
        return value if isinstance(value, str) else None

    def _array(self, key: str) -> list[Scalar]:
        if key not in self.shard.arrays:
            raise self.shard.fail(f"the metadata '{shown(key)}' holds {self.shard.array_lengths[key]:,} entries "
                                  f"that are not per-layer numbers. {DAMAGED}")
        return self.shard.arrays[key]

    def _array_ints(self, key: str) -> list[int]:
        return [self._check_int(key, value) for value in self._array(key)]

    def _check_length(self, key: str, values: list[Any], n_layer: int) -> list[Any]:
        if len(values) != n_layer:
            raise self.shard.fail(f"the metadata '{shown(key)}' has {len(values)} entries for {n_layer} layers. "
                                  f"{DAMAGED}")
        return values

    def _check_int(self, key: str, value: Scalar) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.shard.fail(f"the metadata '{shown(key)}' should be a whole number but is "
                                  f"{shown(repr(value))}. {DAMAGED}")
        if not 0 <= value < _U32:
            raise self.shard.fail(f"the metadata '{shown(key)}' is {value}, outside the range llama.cpp reads. "
                                  f"{DAMAGED}")
        return value


def _build_info(shards: list[_Shard]) -> GGUFInfo:
    first = shards[0]
    arch = first.scalars.get(Keys.General.ARCHITECTURE)
    if arch is None:
        raise first.fail(f"the metadata has no '{Keys.General.ARCHITECTURE}', which every model needs. {DAMAGED}")
    if not isinstance(arch, str) or not arch.strip():
        raise first.fail(f"the metadata '{Keys.General.ARCHITECTURE}' should name the architecture but is "
                         f"{shown(repr(arch))}. {DAMAGED}")
    if arch == PROJECTOR_ARCHITECTURE:
        raise first.fail("this is a vision projector (mmproj), not a language model. Import the model it belongs "
                         "to with it: 'enclave models import MODEL.gguf --mmproj "
                         f"{first.path.name}', or 'enclave models attach-projector MODEL {first.path.name}'.")
    meta = _Metadata(first, arch)
    raw = [t for shard in shards for t in shard.tensors]
    name = meta.text(Keys.General.NAME) or _display_stem(first.path)
    shape = _build_shape(meta, raw, name)
    return GGUFInfo(
        path=first.path,
        files=tuple((shard.path, shard.size) for shard in shards),
        version=first.version,
        architecture=arch,
        name=name,
        parameter_count=sum(t.n_elements for t in raw),
        file_type=_file_type(first.scalars.get(Keys.General.FILE_TYPE), raw),
        context_length=shape.context_length,
        chat_template=meta.text(Keys.Tokenizer.CHAT_TEMPLATE),
        license=meta.text(Keys.General.LICENSE),
        shape=shape,
        metadata=dict(first.scalars),
        marker_tokens=first.marker_tokens,
    )


def _build_shape(meta: _Metadata, raw: list[_RawTensor], name: str) -> ModelShape:
    n_layer = meta.integer(Keys.LLM.BLOCK_COUNT)
    if not 1 <= n_layer <= MAX_LAYERS:
        raise meta.shard.fail(f"the model claims {n_layer} layers (from 1 to {MAX_LAYERS} are plausible). {DAMAGED}")
    tensors = [_tensor_info(meta.shard, t, n_layer) for t in raw]
    embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
    n_embd = meta.integer(Keys.LLM.EMBEDDING_LENGTH, embd.shape[0] if embd and embd.shape else 0)
    heads = meta.per_layer(Keys.Attention.HEAD_COUNT, n_layer, [0] * n_layer)
    heads_kv = meta.per_layer(Keys.Attention.HEAD_COUNT_KV, n_layer, heads)
    head_dim = n_embd // heads[0] if heads[0] else 0  # llama.cpp: n_embd / n_head(0)
    window, sliding = _sliding_window(meta, n_layer)
    by_layer: dict[int | None, list[TensorInfo]] = {}
    for tensor in tensors:
        by_layer.setdefault(tensor.layer, []).append(tensor)
    layers = tuple(
        LayerShape(index=i, tensors=tuple(by_layer.get(i, ())), n_head_kv=heads_kv[i], sliding_window=sliding[i])
        for i in range(n_layer)
    )
    return ModelShape(
        architecture=meta.arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=max(heads),
        n_head_kv=max(heads_kv),
        key_length=meta.integer(Keys.Attention.KEY_LENGTH, head_dim),
        value_length=meta.integer(Keys.Attention.VALUE_LENGTH, head_dim),
        context_length=meta.integer(Keys.LLM.CONTEXT_LENGTH, 0),
        n_vocab=_vocab_size(meta.shard, embd),
        layers=layers,
        global_tensors=tuple(by_layer.get(None, ())),
        expert_count=meta.integer(Keys.LLM.EXPERT_COUNT, 0),
        expert_used_count=meta.integer(Keys.LLM.EXPERT_USED_COUNT, 0),
        expert_shared_count=meta.integer(Keys.LLM.EXPERT_SHARED_COUNT, 0),
        sliding_window=window if any(sliding) else 0,
        n_ff=meta.integer(Keys.LLM.FEED_FORWARD_LENGTH, 0),
        n_ff_expert=meta.integer(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, 0),
        name=name,
    )


def _vocab_size(shard: _Shard, embd: TensorInfo | None) -> int:
    if Keys.Tokenizer.LIST in shard.array_lengths:
        return shard.array_lengths[Keys.Tokenizer.LIST]
    return embd.shape[1] if embd and len(embd.shape) > 1 else 0


def _sliding_window(meta: _Metadata, n_layer: int) -> tuple[int, list[bool]]:
    """The window size and which layers use it, following llama.cpp (see ``_SWA_DEFAULTS``)."""
    period, default_window = _SWA_DEFAULTS.get(meta.arch, (0, 0))
    window = meta.integer(Keys.Attention.SLIDING_WINDOW, default_window)
    if window and meta.arch in _FIXED_WINDOW:
        window = _FIXED_WINDOW[meta.arch]
    if window == 0:
        return 0, [False] * n_layer
    pattern_key = meta.key(Keys.Attention.SLIDING_WINDOW_PATTERN)
    if pattern_key in meta.shard.array_lengths:
        return window, meta.flags(Keys.Attention.SLIDING_WINDOW_PATTERN, n_layer)
    if pattern_key in meta.shard.scalars:
        period = meta.integer(Keys.Attention.SLIDING_WINDOW_PATTERN)
    elif period == 0:
        return window, [False] * n_layer
    return window, [period == 0 or i % period < period - 1 for i in range(n_layer)]


def _tensor_info(shard: _Shard, raw: _RawTensor, n_layer: int) -> TensorInfo:
    match = _LAYER_TENSOR.match(raw.name)
    layer = int(match["index"]) if match else None
    if layer is not None and layer >= n_layer:
        raise shard.fail(f"the tensor '{shown(raw.name)}' belongs to layer {layer}, but the model has only {n_layer} "
                         f"layers. {DAMAGED}")
    role = tensor_role(raw.name)
    return TensorInfo(name=raw.name, shape=raw.shape, type=raw.type, n_bytes=raw.n_bytes, role=role, layer=layer)


def tensor_role(name: str) -> TensorRole:
    """What a tensor does, from its llama.cpp name."""
    match = _LAYER_TENSOR.match(name)
    if match is None:
        if name.startswith("token_embd."):
            return TensorRole.EMBEDDING
        if name.startswith(("output.", "output_norm.")):
            return TensorRole.OUTPUT
        return TensorRole.OTHER
    rest = match["rest"]
    if _EXPERTS.match(rest):
        return TensorRole.EXPERTS
    if rest.startswith("ffn_") and "_shexp" in rest:
        return TensorRole.SHARED_EXPERTS
    if rest.startswith(("ffn_gate_inp.", "exp_probs_b")):
        return TensorRole.ROUTER
    if _DENSE_FFN.match(rest):
        return TensorRole.DENSE_FFN
    if rest.startswith("attn_") or "norm" in rest:
        return TensorRole.ATTENTION
    return TensorRole.OTHER


def _file_type(value: Scalar | None, raw: list[_RawTensor]) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            file_type = gguf.LlamaFileType(value)
        except ValueError:
            file_type = None
        if file_type is not None and file_type is not gguf.LlamaFileType.GUESSED:
            return file_type.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    by_type: Counter[str] = Counter()
    for tensor in raw:
        by_type[tensor.type] += tensor.n_bytes
    return by_type.most_common(1)[0][0] if by_type else "unknown"


def _display_stem(path: Path) -> str:
    match = SHARD_NAME.match(path.name)
    return match["prefix"] if match else path.stem


def _layer_dict(layer: LayerShape) -> dict[str, Any]:
    return {
        "index": layer.index,
        "n_head_kv": layer.n_head_kv,
        "sliding_window": layer.sliding_window,
        "bytes": {role.value: layer.bytes_of(role) for role in TensorRole
                  if role not in (TensorRole.EMBEDDING, TensorRole.OUTPUT)},
        "total_bytes": layer.total_bytes,
    }


def _json_scalar(value: Scalar) -> Scalar:
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value
