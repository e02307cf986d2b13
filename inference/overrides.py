"""llama.cpp's tensor buffer-type overrides (``-ot PATTERN=DEVICE``) for llama-cpp-python,
which declares ``llama_model_params.tensor_buft_overrides`` only as a raw pointer.

The array is NULL-terminated; it and the pattern strings must outlive the model load, so
``OverrideArray`` owns them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from inference.ggml_backend import buffer_type
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
