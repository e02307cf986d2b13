"""Real models' shapes as planner input, built from their published configurations
(tests/data/model_shapes.json, derived from shared/model-shapes.json) without any file.

Tensor sizes assume a Q4_K_M-like mix (``app.catalog.Bits``), which lands within about
10% of published Q4_K_M file sizes: all the planner's property tests need.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.catalog import shape_from_config
from inference.model_shape import ModelShape

DATA = Path(__file__).parent / "data" / "model_shapes.json"


def published() -> dict[str, dict[str, Any]]:
    return {m["model"]: m for m in json.loads(DATA.read_text())["models"]}


def build_shape(m: dict[str, Any]) -> ModelShape:
    return shape_from_config(m)


def real_shapes() -> dict[str, ModelShape]:
    return {name: build_shape(m) for name, m in published().items()}
