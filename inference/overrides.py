"""The model parameters llama-cpp-python declares only as raw pointers: tensor buffer-type
overrides (``-ot PATTERN=DEVICE``), the devices to offload to, and their split.

The arrays (and the pattern strings) must outlive the model load, so these classes own them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from inference.errors import EnclaveError
from inference.ggml_backend import buffer_type, device_handle
from inference.protocol import TensorOverride


class _BuftOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


class OverrideArray:
    def __init__(self, overrides: Sequence[TensorOverride]) -> None:
        self._patterns = [o.pattern.encode() for o in overrides]
        self._array = (_BuftOverride * (len(overrides) + 1))()
        for slot, override, pattern in zip(self._array, overrides, self._patterns, strict=False):
            slot.pattern = pattern
            slot.buft = buffer_type(override.device)
        # the last slot stays zeroed: the NULL terminator

    @property
    def address(self) -> int | None:
        return ctypes.addressof(self._array) if self._patterns else None


class DeviceArray:
    """``llama_model_params.devices``: the devices to offload to, by stable id, NULL-terminated
    (None: llama.cpp picks every GPU it has; an empty list: none)."""

    def __init__(self, device_ids: Sequence[str] | None) -> None:
        self._default = device_ids is None
        handles = [device_handle(d) for d in device_ids or ()]  # an unknown id: UnknownDevice, naming those there are
        self._array = (ctypes.c_void_p * (len(handles) + 1))(*handles)

    @property
    def address(self) -> int | None:
        return None if self._default else ctypes.addressof(self._array)


def split_array(shares: Sequence[float], size: int) -> ctypes.Array[ctypes.c_float]:
    """``llama_model_params.tensor_split``: one float per device, ``size`` (llama_max_devices()) long."""
    if len(shares) > size:
        raise EnclaveError(f"llama.cpp splits a model over at most {size} devices, not {len(shares)}")
    return (ctypes.c_float * size)(*shares)
