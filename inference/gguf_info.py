"""What a GGUF model file holds, read without llama.cpp.

``inspect_gguf`` checks a file (or every shard of a split model) and describes it: the
metadata to show, and the ``ModelShape`` the memory planner works from. The ``gguf``
package's ``GGUFReader`` does the reading. Before it runs, a bounds-checked walk over the
header validates what ``GGUFReader`` does not: it trusts every length and count it reads
(a corrupt array length can make it loop for hours), it builds views past the end of a
truncated file, and its failures are bare ``ValueError``/``IndexError``s. Whatever goes
wrong, ``inspect_gguf`` raises ``GGUFError`` and nothing else.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, Keys

from inference.errors import ModelFileError
from inference.model_shape import LayerShape, ModelShape, TensorInfo, TensorRole

Scalar = str | int | float | bool

SUPPORTED_VERSIONS = (2, 3)
MAX_TENSORS = 1_000_000
MAX_METADATA_KEYS = 100_000
MAX_ARRAY_LENGTH = 4_000_000  # a real vocabulary has a few hundred thousand entries
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_LAYERS = 4096
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME (64) minus the terminating NUL
_U32 = 1 << 32
_I64_MAX = (1 << 63) - 1

_REDOWNLOAD = "Download the model again."
_DAMAGED = "The file is damaged; download the model again or choose another file."
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_LAYER_TENSOR = re.compile(r"^blk\.(?P<index>\d+)\.(?P<rest>.+)$")
_EXPERTS = re.compile(r"^ffn_(up|gate|down|gate_up)_exps(\.|$)")
_DENSE_FFN = re.compile(r"^ffn_(up|gate|down)(\.|$)")
_SCALAR_SIZES = {
    GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.BOOL: 1,
    GGUFValueType.UINT16: 2, GGUFValueType.INT16: 2,
    GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4,
    GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8,
}
_OTHER_FORMATS = (  # what a file that is not a GGUF often turns out to be
    (b"version https://git-lfs", "a Git LFS pointer, not the model itself: download the real file"),
    (b"<", "a web page, not a model: the download saved an error or login page instead"),
    (b"{", "a JSON file, not a model"),
    (b"PK\x03\x04", "a ZIP archive, not a model: unpack it first"),
    (b"lmgg", "an old GGML model, which llama.cpp no longer loads: get a GGUF version of it"),
    (b"fmgg", "an old GGML model, which llama.cpp no longer loads: get a GGUF version of it"),
    (b"tjgg", "an old GGML model, which llama.cpp no longer loads: get a GGUF version of it"),
)

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


class GGUFError(ModelFileError):
    """A GGUF file is missing, not a GGUF, truncated, damaged or incomplete."""


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
    raise GGUFError(f"{path}: the model file could not be read ({failure}). {_DAMAGED}")


# --- shards ------------------------------------------------------------------------------


def _inspect(path: Path) -> GGUFInfo:
    files = [(shard, _check_file(shard)) for shard in _shard_paths(path)]
    for shard, size in files:
        _validate_header(shard, size)
    shards = [_read_shard(shard, size) for shard, size in files]
    _check_split_keys(shards)
    return _build_info(shards)


def _shard_paths(path: Path) -> list[Path]:
    match = _SHARD_NAME.match(path.name)
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


def _check_file(path: Path) -> int:
    try:
        if not path.exists():
            raise GGUFError(f"{path}: the file does not exist. Check the path, or download the model again.")
        if path.is_dir():
            raise GGUFError(f"{path}: this is a folder, not a model file. Choose the .gguf file inside it.")
        if not path.is_file():
            raise GGUFError(f"{path}: this is not a regular file (a device or a pipe?). Choose a .gguf model file.")
        size = path.stat().st_size
    except OSError as exc:
        raise GGUFError(f"{path}: the file cannot be read ({exc.strerror or exc}). "
                        "Check that it is not locked by another program and that you may read it.") from None
    if size == 0:
        raise GGUFError(f"{path}: the file is empty (0 bytes): the download did not complete. {_REDOWNLOAD}")
    return size


# --- header validation -------------------------------------------------------------------


class _HeaderEnds(Exception):
    """The header runs past the end of the file."""


class _Cursor:
    """Bounds-checked little-endian reads from a memory-mapped file."""

    def __init__(self, data: mmap.mmap, size: int, pos: int = 0) -> None:
        self.data = data
        self.size = size
        self.pos = pos

    def take(self, n: int) -> int:
        """Advance by ``n`` bytes and return where they start."""
        start = self.pos
        if n < 0 or start + n > self.size:
            raise _HeaderEnds
        self.pos = start + n
        return start

    def u32(self) -> int:
        return struct.unpack_from("<I", self.data, self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack_from("<Q", self.data, self.take(8))[0]

    def string(self) -> bytes:
        length = self.u64()
        start = self.take(length)
        return self.data[start:start + length]

    def remaining(self) -> int:
        return self.size - self.pos


def _validate_header(path: Path, size: int) -> None:
    try:
        with path.open("rb") as file:
            head = file.read(64)
            _check_magic(path, head)
            _check_version(path, head)
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                _walk_header(path, _Cursor(data, len(data), pos=8))
    except _HeaderEnds:
        raise GGUFError(f"{path}: the file ends inside its header, after {size:,} bytes: it is incomplete "
                        f"(an interrupted download?) or damaged. {_REDOWNLOAD}") from None
    except OSError as exc:
        raise GGUFError(f"{path}: the file cannot be read ({exc.strerror or exc}).") from None


def _check_magic(path: Path, head: bytes) -> None:
    if head[:4] == b"GGUF":
        return
    hint = next((what for prefix, what in _OTHER_FORMATS if head.lstrip().startswith(prefix)), None)
    detail = f": it looks like {hint}" if hint else f" (it starts with {head[:4]!r}, not b'GGUF')"
    raise GGUFError(f"{path}: this is not a GGUF model file{detail}. Enclave runs models in the GGUF "
                    "format: choose a .gguf file.")


def _check_version(path: Path, head: bytes) -> None:
    if len(head) < 8:
        raise _HeaderEnds
    version = struct.unpack_from("<I", head, 4)[0]
    if version in SUPPORTED_VERSIONS:
        return
    swapped = struct.unpack_from(">I", head, 4)[0]
    if swapped in SUPPORTED_VERSIONS:
        raise GGUFError(f"{path}: this GGUF file is big-endian (made for a different kind of computer), which "
                        "Enclave does not support. Download the ordinary (little-endian) file.")
    if version == 1:
        why = "an early format llama.cpp no longer loads: download a recent conversion of the model"
    elif max(SUPPORTED_VERSIONS) < version < 1000:
        why = "a newer format than this Enclave understands: update Enclave, or choose another file"
    else:
        why = f"not a version that exists, so the file is damaged. {_REDOWNLOAD}"
    raise GGUFError(f"{path}: unsupported GGUF version {version} (Enclave reads versions 2 and 3); this is {why}.")


def _walk_header(path: Path, cur: _Cursor) -> None:
    tensor_count, kv_count = cur.u64(), cur.u64()
    if tensor_count > MAX_TENSORS:
        raise GGUFError(f"{path}: the header claims {tensor_count:,} tensors, more than any model has "
                        f"(at most {MAX_TENSORS:,}). {_DAMAGED}")
    if kv_count > MAX_METADATA_KEYS:
        raise GGUFError(f"{path}: the header claims {kv_count:,} metadata keys, more than any model has "
                        f"(at most {MAX_METADATA_KEYS:,}). {_DAMAGED}")
    alignment = _walk_metadata(path, cur, kv_count)
    ends = _walk_tensor_infos(path, cur, tensor_count, alignment)
    data_offset = -(-cur.pos // alignment) * alignment
    needed = data_offset + max(ends, default=0)
    if needed > cur.size:
        missing = needed - cur.size
        raise GGUFError(f"{path}: the file is incomplete: {_count(missing, 'byte')} of tensor data are missing (it has "
                        f"{cur.size:,} bytes, its tensors need {needed:,}). The download was interrupted or "
                        f"the file was cut short. {_REDOWNLOAD}")


def _walk_metadata(path: Path, cur: _Cursor, count: int) -> int:
    """Check every key and value; return the data alignment."""
    seen: set[bytes] = set()
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for _ in range(count):
        raw_key = cur.string()
        key = _decode(path, raw_key, "a metadata key")
        if raw_key in seen:
            raise GGUFError(f"{path}: the metadata key '{_shown(key)}' appears twice. {_DAMAGED}")
        seen.add(raw_key)
        value_type = cur.u32()
        if key == Keys.General.ALIGNMENT:
            alignment = _read_alignment(path, cur, value_type)
        else:
            _skip_value(path, cur, key, value_type)
    return alignment


def _read_alignment(path: Path, cur: _Cursor, value_type: int) -> int:
    if value_type != GGUFValueType.UINT32:
        raise GGUFError(f"{path}: the metadata key '{Keys.General.ALIGNMENT}' has the wrong type. {_DAMAGED}")
    alignment = cur.u32()
    if alignment == 0 or alignment & (alignment - 1):
        raise GGUFError(f"{path}: the data alignment {alignment} is not a power of two. {_DAMAGED}")
    return alignment


def _skip_value(path: Path, cur: _Cursor, key: str, value_type: int) -> None:
    if value_type in _SCALAR_SIZES:
        cur.take(_SCALAR_SIZES[GGUFValueType(value_type)])
    elif value_type == GGUFValueType.STRING:
        cur.take(cur.u64())
    elif value_type == GGUFValueType.ARRAY:
        _skip_array(path, cur, key)
    else:
        raise GGUFError(f"{path}: the metadata key '{_shown(key)}' has an unknown value type ({value_type}). "
                        f"{_DAMAGED}")


def _skip_array(path: Path, cur: _Cursor, key: str) -> None:
    item_type, length = cur.u32(), cur.u64()
    if length > MAX_ARRAY_LENGTH:
        raise GGUFError(f"{path}: the metadata array '{_shown(key)}' claims {length:,} entries, more than any model "
                        f"has. {_DAMAGED}")
    if item_type in _SCALAR_SIZES:
        cur.take(length * _SCALAR_SIZES[GGUFValueType(item_type)])
    elif item_type == GGUFValueType.STRING:
        if length * 8 > cur.remaining():
            raise _HeaderEnds
        for _ in range(length):
            cur.take(cur.u64())
    elif item_type == GGUFValueType.ARRAY:
        raise GGUFError(f"{path}: the metadata key '{_shown(key)}' is an array of arrays, which llama.cpp cannot load. "
                        f"{_DAMAGED}")
    else:
        raise GGUFError(f"{path}: the metadata array '{_shown(key)}' has an unknown item type ({item_type}). "
                        f"{_DAMAGED}")


def _walk_tensor_infos(path: Path, cur: _Cursor, count: int, alignment: int) -> list[int]:
    """Check every tensor's description; return where each tensor's data ends (relative)."""
    seen: set[str] = set()
    ends: list[int] = []
    for _ in range(count):
        name = _decode(path, cur.string(), "a tensor name")
        if name in seen:
            raise GGUFError(f"{path}: the tensor name '{_shown(name)}' appears twice: the file is damaged or was "
                            "written by a faulty converter. Download or convert the model again.")
        seen.add(name)
        if len(name.encode()) > MAX_TENSOR_NAME:
            raise GGUFError(f"{path}: the tensor name '{_shown(name)}' is longer than llama.cpp allows "
                            f"({MAX_TENSOR_NAME} bytes). {_DAMAGED}")
        dims = _read_dims(path, cur, name)
        ggml_type = _read_tensor_type(path, cur, name)
        offset = cur.u64()
        if offset % alignment:
            raise GGUFError(f"{path}: the tensor '{_shown(name)}' starts at offset {offset}, which is not a multiple "
                            f"of the alignment {alignment}. {_DAMAGED}")
        ends.append(offset + _tensor_bytes(path, name, dims, ggml_type))
    return ends


def _read_dims(path: Path, cur: _Cursor, name: str) -> list[int]:
    n_dims = cur.u32()
    if n_dims > MAX_DIMS:
        raise GGUFError(f"{path}: the tensor '{_shown(name)}' claims {n_dims} dimensions (at most {MAX_DIMS}). "
                        f"{_DAMAGED}")
    dims = [cur.u64() for _ in range(n_dims)]
    for dim in dims:
        if dim == 0 or dim > _I64_MAX:
            shown = dim if dim == 0 else dim - (1 << 64)
            raise GGUFError(f"{path}: the tensor '{_shown(name)}' has a dimension of {shown}. {_DAMAGED}")
    if math.prod(dims) > _I64_MAX:
        raise GGUFError(f"{path}: the tensor '{_shown(name)}' claims more elements than can exist. {_DAMAGED}")
    return dims


def _read_tensor_type(path: Path, cur: _Cursor, name: str) -> GGMLQuantizationType:
    type_id = cur.u32()
    try:
        ggml_type = GGMLQuantizationType(type_id)
    except ValueError:
        raise GGUFError(f"{path}: the tensor '{_shown(name)}' has the unknown type {type_id}: the file is damaged, or "
                        "uses a type newer than this Enclave understands (update Enclave).") from None
    if ggml_type not in gguf.GGML_QUANT_SIZES:
        raise GGUFError(f"{path}: the tensor '{_shown(name)}' has the unsupported type {ggml_type.name}.")
    return ggml_type


def _tensor_bytes(path: Path, name: str, dims: Sequence[int], ggml_type: GGMLQuantizationType) -> int:
    block_size, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
    if dims and dims[0] % block_size:
        raise GGUFError(f"{path}: the tensor '{_shown(name)}' has rows of {dims[0]} values, not a multiple of the "
                        f"{ggml_type.name} block size {block_size}. {_DAMAGED}")
    return math.prod(dims) * type_size // block_size


def _shown(text: str) -> str:
    """A name read from the file, safe to show: printable and short."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 80 else text[:77] + "..."


def _count(n: int, unit: str) -> str:
    return f"{n:,} {unit}" + ("" if n == 1 else "s")


def _decode(path: Path, raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GGUFError(f"{path}: {what} is not valid UTF-8 text ({raw[:40]!r}). {_DAMAGED}") from None


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
    raise GGUFError(f"{path}: the model file could not be read ({failure}). {_DAMAGED}")


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
    return _Shard(path, size, version, scalars, arrays, lengths, tensors)


def _check_split_keys(shards: list[_Shard]) -> None:
    """The shards' ``split.*`` keys must agree with their names, as llama.cpp requires."""
    count = len(shards)
    claimed = shards[0].scalars.get(Keys.Split.LLM_KV_SPLIT_COUNT)
    if count == 1 and claimed not in (None, 0, 1):
        raise shards[0].fail(f"this file is one part of a model split into {_shown(repr(claimed))} files, but its "
                             "name does not end in '-00001-of-0000N.gguf' as llama.cpp needs. Keep the parts' "
                             "original names.")
    if count > 1:
        for number, shard in enumerate(shards):
            split_no = shard.scalars.get(Keys.Split.LLM_KV_SPLIT_NO)
            split_count = shard.scalars.get(Keys.Split.LLM_KV_SPLIT_COUNT)
            if (split_no, split_count) != (number, count):
                said = f"part {split_no + 1} of {split_count}" if isinstance(split_no, int) else "something else"
                raise shard.fail(f"its name says it is part {number + 1} of {count} of a split model, but its "
                                 f"metadata says {_shown(said)}. Keep the parts' original names and download "
                                 "them again.")
    _check_tensor_names(shards)


def _check_tensor_names(shards: list[_Shard]) -> None:
    owner: dict[str, Path] = {}
    for shard in shards:
        for tensor in shard.tensors:
            if tensor.name in owner:
                raise shard.fail(f"the tensor '{_shown(tensor.name)}' is also in {owner[tensor.name]}: the parts "
                                 "of this split model do not belong together. Download all of them again.")
            owner[tensor.name] = shard.path
    expected = shards[0].scalars.get(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, len(owner))
    if len(shards) > 1 and expected != len(owner):
        raise shards[0].fail(f"the split model should have {_shown(repr(expected))} tensors, but its "
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
                raise self.shard.fail(f"the metadata has no '{_shown(key)}', which every model needs. {_DAMAGED}")
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
            raise self.shard.fail(f"the metadata '{_shown(key)}' holds {self.shard.array_lengths[key]:,} entries "
                                  f"that are not per-layer numbers. {_DAMAGED}")
        return self.shard.arrays[key]

    def _array_ints(self, key: str) -> list[int]:
        return [self._check_int(key, value) for value in self._array(key)]

    def _check_length(self, key: str, values: list[Any], n_layer: int) -> list[Any]:
        if len(values) != n_layer:
            raise self.shard.fail(f"the metadata '{_shown(key)}' has {len(values)} entries for {n_layer} layers. "
                                  f"{_DAMAGED}")
        return values

    def _check_int(self, key: str, value: Scalar) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.shard.fail(f"the metadata '{_shown(key)}' should be a whole number but is "
                                  f"{_shown(repr(value))}. {_DAMAGED}")
        if not 0 <= value < _U32:
            raise self.shard.fail(f"the metadata '{_shown(key)}' is {value}, outside the range llama.cpp reads. "
                                  f"{_DAMAGED}")
        return value


def _build_info(shards: list[_Shard]) -> GGUFInfo:
    first = shards[0]
    arch = first.scalars.get(Keys.General.ARCHITECTURE)
    if arch is None:
        raise first.fail(f"the metadata has no '{Keys.General.ARCHITECTURE}', which every model needs. {_DAMAGED}")
    if not isinstance(arch, str) or not arch.strip():
        raise first.fail(f"the metadata '{Keys.General.ARCHITECTURE}' should name the architecture but is "
                         f"{_shown(repr(arch))}. {_DAMAGED}")
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
    )


def _build_shape(meta: _Metadata, raw: list[_RawTensor], name: str) -> ModelShape:
    n_layer = meta.integer(Keys.LLM.BLOCK_COUNT)
    if not 1 <= n_layer <= MAX_LAYERS:
        raise meta.shard.fail(f"the model claims {n_layer} layers (from 1 to {MAX_LAYERS} are plausible). {_DAMAGED}")
    tensors = [_tensor_info(meta.shard, t, n_layer) for t in raw]
    embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
    n_embd = meta.integer(Keys.LLM.EMBEDDING_LENGTH, embd.shape[0] if embd else 0)
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
        raise shard.fail(f"the tensor '{_shown(raw.name)}' belongs to layer {layer}, but the model has only {n_layer} "
                         f"layers. {_DAMAGED}")
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
    match = _SHARD_NAME.match(path.name)
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
