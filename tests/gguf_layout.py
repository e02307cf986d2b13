"""A GGUF file taken apart into its header's fields and put back together, so that fuzz tests
can change one field (a value's type, an array's count, a tensor's dimensions or offset)
and write a file that is otherwise exactly the real one."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import gguf
from gguf import GGUFValueType

_SCALAR_SIZES = {GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.BOOL: 1,
                 GGUFValueType.UINT16: 2, GGUFValueType.INT16: 2, GGUFValueType.UINT32: 4,
                 GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4, GGUFValueType.UINT64: 8,
                 GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8}


@dataclass
class Value:
    key: bytes
    type: int
    payload: bytes  # the value's bytes as written after its type


@dataclass
class Tensor:
    name: bytes
    dims: list[int]
    type: int
    offset: int


@dataclass
class Layout:
    version: int
    values: list[Value]
    tensors: list[Tensor]
    data: bytes  # everything from the (aligned) start of the tensor data
    alignment: int = gguf.GGUF_DEFAULT_ALIGNMENT
    tensor_count: int | None = None  # None: the real count; else what the header claims
    value_count: int | None = None
    extra: bytes = field(default=b"")  # bytes between the header and the padding

    def to_bytes(self) -> bytes:
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version,
                           len(self.tensors) if self.tensor_count is None else self.tensor_count,
                           len(self.values) if self.value_count is None else self.value_count)
        for value in self.values:
            out += _string(value.key) + struct.pack("<I", value.type) + value.payload
        for tensor in self.tensors:
            out += _string(tensor.name) + struct.pack("<I", len(tensor.dims))
            out += b"".join(struct.pack("<Q", d) for d in tensor.dims)
            out += struct.pack("<IQ", tensor.type, tensor.offset)
        out += self.extra
        out += b"\0" * (-len(out) % self.alignment)
        return bytes(out + self.data)


def _string(raw: bytes) -> bytes:
    return struct.pack("<Q", len(raw)) + raw


def parse(data: bytes) -> Layout:
    """The fields of a well-formed GGUF file (the tiny models)."""
    assert data[:4] == b"GGUF"
    version, n_tensors, n_values = struct.unpack_from("<IQQ", data, 4)
    pos = 24

    def string() -> bytes:
        nonlocal pos
        (length,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + length
        return data[pos - length:pos]

    def skip(value_type: int) -> None:
        nonlocal pos
        if value_type == GGUFValueType.STRING:
            string()
        elif value_type == GGUFValueType.ARRAY:
            item_type, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for _ in range(count):
                skip(item_type)
        else:
            pos += _SCALAR_SIZES[GGUFValueType(value_type)]

    values = []
    for _ in range(n_values):
        key = string()
        (value_type,) = struct.unpack_from("<I", data, pos)
        pos += 4
        start = pos
        skip(value_type)
        values.append(Value(key, value_type, data[start:pos]))
    tensors = []
    for _ in range(n_tensors):
        name = string()
        (n_dims,) = struct.unpack_from("<I", data, pos)
        dims = list(struct.unpack_from(f"<{n_dims}Q", data, pos + 4))
        pos += 4 + 8 * n_dims
        tensor_type, offset = struct.unpack_from("<IQ", data, pos)
        pos += 12
        tensors.append(Tensor(name, dims, tensor_type, offset))
    start = pos + (-pos % gguf.GGUF_DEFAULT_ALIGNMENT)
    return Layout(version, values, tensors, data[start:])


def encode(value_type: int, value: object) -> bytes:
    """``value`` written as ``value_type`` (numbers wrap to fit, as a hostile writer would)."""
    if value_type == GGUFValueType.STRING:
        return _string(value if isinstance(value, bytes) else str(value).encode())
    formats = {GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.BOOL: "B",
               GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h", GGUFValueType.UINT32: "I",
               GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.UINT64: "Q",
               GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d"}
    code = formats[GGUFValueType(value_type)]
    if code in "fd":
        return struct.pack("<" + code, float(value))  # type: ignore[arg-type]
    bits = 8 * struct.calcsize(code)
    number = int(value) % (1 << bits)  # type: ignore[call-overload]
    if code.islower() and number >= 1 << (bits - 1):
        number -= 1 << bits
    return struct.pack("<" + code, number)
