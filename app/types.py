"""The runtime's data types a front end holds, re-exported from app.

``Services`` returns plans, machines, model shapes and load results that are defined in
``inference/``; the window shows them but must not import ``inference/`` itself (an
import-linter contract: the UI reaches the runtime only through app). It imports them from
here, with the helpers that describe them (``format_size``, ``format_duration``, ``GiB``).
"""

from __future__ import annotations

from app.runtime import LoadOutcome
from inference.devices import GiB, GpuDevice, Machine, SimulatedHost, format_duration, format_size
from inference.errors import EnclaveError
from inference.gguf_info import GGUFInfo
from inference.model_shape import ModelShape
from inference.planner import DeviceUse, Plan, PlanRequest
from inference.protocol import ModelInfo, ModelSettings
from inference.speed import PredictedSpeed

__all__ = [
    "DeviceUse",
    "EnclaveError",
    "GGUFInfo",
    "GiB",
    "GpuDevice",
    "LoadOutcome",
    "Machine",
    "ModelInfo",
    "ModelSettings",
    "ModelShape",
    "Plan",
    "PlanRequest",
    "PredictedSpeed",
    "SimulatedHost",
    "format_duration",
    "format_size",
]
