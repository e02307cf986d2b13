"""The bounds-checked walk over a GGUF file's header that runs before ``GGUFReader``.

``validate_header`` checks what ``GGUFReader`` does not: it trusts every length and count it
reads (a corrupt array length can make it loop for hours), it builds views past the end of
a truncated file, and its failures are bare ``ValueError``/``IndexError``s. Every problem
found here is a ``GGUFError`` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Sequence
from pathlib import Path

import gguf
from gguf import GGMLQuantizationType, GGUFValueType, Keys

from inference.errors import GGUFError

SUPPORTED_VERSIONS = (2, 3)
MAX_TENSORS = 1_000_000
MAX_METADATA_KEYS = 100_000
MAX_ARRAY_LENGTH = 4_000_000  # a real vocabulary has a few hundred thousand entries
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME (64) minus the terminating NUL
_I64_MAX = (1 << 63) - 1

REDOWNLOAD = "Download the model again."
DAMAGED = "The file is damaged; download the model again or choose another file."
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


def check_file(path: Path) -> int:
    try:
        if not path.exists() and path.is_symlink():
            raise GGUFError(f"{path}: this link points to a file that is not there, or loops back on itself. "
                            "Choose the model file itself.")
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
        raise GGUFError(f"{path}: the file is empty (0 bytes): the download did not complete. {REDOWNLOAD}")
    return size


def check_is_gguf(path: Path) -> None:
    """The cheap check, for where a file reaches llama.cpp without the full validation: it is
    there, a readable regular file, not empty, and starts as a GGUF file does."""
    check_file(path)
    try:
        with path.open("rb") as file:
            _check_magic(path, file.read(8))
    except OSError as exc:
        raise GGUFError(f"{path}: the file cannot be read ({exc.strerror or exc}).") from None


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


def validate_header(path: Path, size: int) -> None:
    try:
        with path.open("rb") as file:
            head = file.read(64)
            _check_magic(path, head)
            _check_version(path, head)
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                _walk_header(path, _Cursor(data, len(data), pos=8))
    except _HeaderEnds:
        raise GGUFError(f"{path}: the file ends inside its header, after {size:,} bytes: it is incomplete "
                        f"(an interrupted download?) or damaged. {REDOWNLOAD}") from None
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
        why = f"not a version that exists, so the file is damaged. {REDOWNLOAD}"
    raise GGUFError(f"{path}: unsupported GGUF version {version} (Enclave reads versions 2 and 3); this is {why}.")


def _walk_header(path: Path, cur: _Cursor) -> None:
    tensor_count, kv_count = cur.u64(), cur.u64()
    if tensor_count > MAX_TENSORS:
        raise GGUFError(f"{path}: the header claims {tensor_count:,} tensors, more than any model has "
                        f"(at most {MAX_TENSORS:,}). {DAMAGED}")
    if kv_count > MAX_METADATA_KEYS:
        raise GGUFError(f"{path}: the header claims {kv_count:,} metadata keys, more than any model has "
                        f"(at most {MAX_METADATA_KEYS:,}). {DAMAGED}")
    alignment = _walk_metadata(path, cur, kv_count)
    ends = _walk_tensor_infos(path, cur, tensor_count, alignment)
    data_offset = -(-cur.pos // alignment) * alignment
    needed = data_offset + max(ends, default=0)
    if needed > cur.size:
        missing = needed - cur.size
        raise GGUFError(f"{path}: the file is incomplete: {_count(missing, 'byte')} of tensor data are missing (it has "
                        f"{cur.size:,} bytes, its tensors need {needed:,}). The download was interrupted or "
                        f"the file was cut short. {REDOWNLOAD}")


def _walk_metadata(path: Path, cur: _Cursor, count: int) -> int:
    """Check every key and value; return the data alignment."""
    seen: set[bytes] = set()
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for _ in range(count):
        raw_key = cur.string()
        key = _decode(path, raw_key, "a metadata key")
        if raw_key in seen:
            raise GGUFError(f"{path}: the metadata key '{shown(key)}' appears twice. {DAMAGED}")
        seen.add(raw_key)
        value_type = cur.u32()
        if key == Keys.General.ALIGNMENT:
            alignment = _read_alignment(path, cur, value_type)
        else:
            _skip_value(path, cur, key, value_type)
    return alignment


def _read_alignment(path: Path, cur: _Cursor, value_type: int) -> int:
    if value_type != GGUFValueType.UINT32:
        raise GGUFError(f"{path}: the metadata key '{Keys.General.ALIGNMENT}' has the wrong type. {DAMAGED}")
    alignment = cur.u32()
    if alignment == 0 or alignment & (alignment - 1):
        raise GGUFError(f"{path}: the data alignment {alignment} is not a power of two. {DAMAGED}")
    return alignment


def _skip_value(path: Path, cur: _Cursor, key: str, value_type: int) -> None:
    if value_type in _SCALAR_SIZES:
        cur.take(_SCALAR_SIZES[GGUFValueType(value_type)])
    elif value_type == GGUFValueType.STRING:
        cur.take(cur.u64())
    elif value_type == GGUFValueType.ARRAY:
        _skip_array(path, cur, key)
    else:
        raise GGUFError(f"{path}: the metadata key '{shown(key)}' has an unknown value type ({value_type}). "
                        f"{DAMAGED}")


def _skip_array(path: Path, cur: _Cursor, key: str) -> None:
    item_type, length = cur.u32(), cur.u64()
    if length > MAX_ARRAY_LENGTH:
        raise GGUFError(f"{path}: the metadata array '{shown(key)}' claims {length:,} entries, more than any model "
                        f"has. {DAMAGED}")
    if item_type in _SCALAR_SIZES:
        cur.take(length * _SCALAR_SIZES[GGUFValueType(item_type)])
    elif item_type == GGUFValueType.STRING:
        if length * 8 > cur.remaining():
            raise _HeaderEnds
        for _ in range(length):
            cur.take(cur.u64())
    elif item_type == GGUFValueType.ARRAY:
        raise GGUFError(f"{path}: the metadata key '{shown(key)}' is an array of arrays, which llama.cpp cannot load. "
                        f"{DAMAGED}")
    else:
        raise GGUFError(f"{path}: the metadata array '{shown(key)}' has an unknown item type ({item_type}). "
                        f"{DAMAGED}")


def _walk_tensor_infos(path: Path, cur: _Cursor, count: int, alignment: int) -> list[int]:
    """Check every tensor's description; return where each tensor's data ends (relative)."""
    seen: set[str] = set()
    ends: list[int] = []
    for _ in range(count):
        name = _decode(path, cur.string(), "a tensor name")
        if name in seen:
            raise GGUFError(f"{path}: the tensor name '{shown(name)}' appears twice: the file is damaged or was "
                            "written by a faulty converter. Download or convert the model again.")
        seen.add(name)
        if len(name.encode()) > MAX_TENSOR_NAME:
            raise GGUFError(f"{path}: the tensor name '{shown(name)}' is longer than llama.cpp allows "
                            f"({MAX_TENSOR_NAME} bytes). {DAMAGED}")
        dims = _read_dims(path, cur, name)
        ggml_type = _read_tensor_type(path, cur, name)
        offset = cur.u64()
        if offset % alignment:
            raise GGUFError(f"{path}: the tensor '{shown(name)}' starts at offset {offset}, which is not a multiple "
                            f"of the alignment {alignment}. {DAMAGED}")
        ends.append(offset + _tensor_bytes(path, name, dims, ggml_type))
    return ends


def _read_dims(path: Path, cur: _Cursor, name: str) -> list[int]:
    n_dims = cur.u32()
    if n_dims > MAX_DIMS:
        raise GGUFError(f"{path}: the tensor '{shown(name)}' claims {n_dims} dimensions (at most {MAX_DIMS}). "
                        f"{DAMAGED}")
    dims = [cur.u64() for _ in range(n_dims)]
    for dim in dims:
        if dim == 0 or dim > _I64_MAX:
            signed = dim if dim == 0 else dim - (1 << 64)
            raise GGUFError(f"{path}: the tensor '{shown(name)}' has a dimension of {signed}. {DAMAGED}")
    if math.prod(dims) > _I64_MAX:
        raise GGUFError(f"{path}: the tensor '{shown(name)}' claims more elements than can exist. {DAMAGED}")
    return dims


def _read_tensor_type(path: Path, cur: _Cursor, name: str) -> GGMLQuantizationType:
    type_id = cur.u32()
    try:
        ggml_type = GGMLQuantizationType(type_id)
    except ValueError:
        raise GGUFError(f"{path}: the tensor '{shown(name)}' has the unknown type {type_id}: the file is damaged, or "
                        "uses a type newer than this Enclave understands (update Enclave).") from None
    if ggml_type not in gguf.GGML_QUANT_SIZES:
        raise GGUFError(f"{path}: the tensor '{shown(name)}' has the unsupported type {ggml_type.name}.")
    return ggml_type


def _tensor_bytes(path: Path, name: str, dims: Sequence[int], ggml_type: GGMLQuantizationType) -> int:
    block_size, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
    row = dims[0] if dims else 1  # no dimensions: one value, as in ggml
    if row % block_size:
        raise GGUFError(f"{path}: the tensor '{shown(name)}' has rows of {row} values, not a multiple of the "
                        f"{ggml_type.name} block size {block_size}. {DAMAGED}")
    return math.prod(dims) * type_size // block_size


def shown(text: str) -> str:
    """A name read from the file, safe to show: printable and short."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 80 else text[:77] + "..."


def _count(n: int, unit: str) -> str:
    return f"{n:,} {unit}" + ("" if n == 1 else "s")


def _decode(path: Path, raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GGUFError(f"{path}: {what} is not valid UTF-8 text ({raw[:40]!r}). {DAMAGED}") from None
