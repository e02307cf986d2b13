"""The sparse GGUF files of scripts/plan_at_scale.py: read as the real download would be, no
disk used, and planned over simulated hosts as docs/plan-at-scale.md says."""

from __future__ import annotations

import sys
from pathlib import Path

from inference.devices import GiB, SimulatedHost, simulated_machine
from inference.gguf_info import inspect_gguf
from inference.planner import PlanRequest, plan

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from sparse_gguf import deepseek_v3, with_experts, write_sparse_gguf


def test_deepseek_v3_is_read_as_published_and_takes_no_disk(tmp_path: Path) -> None:
    path = tmp_path / "DeepSeek-V3.gguf"
    size = write_sparse_gguf(path, deepseek_v3())
    info = inspect_gguf(path)
    assert round(info.parameter_count / 1e9) == 671  # the published 671 B (without the MTP layer)
    assert 400e9 < size < 410e9  # a Q4_K_M mix: about 404 GB
    assert path.stat().st_size == size and path.stat().st_blocks * 512 < 4 << 20  # a hole, not 400 GB
    shape = info.shape
    assert (shape.n_layer, shape.expert_count, shape.expert_used_count, shape.expert_shared_count) == (61, 256, 8, 1)
    assert (shape.n_head_kv, shape.key_length, shape.value_length) == (1, 576, 512)  # llama.cpp's MLA cache
    assert [layer.index for layer in shape.layers if not layer.expert_tensors] == [0, 1, 2]


def test_hypothetical_model_needs_two_hosts_and_fits_them(tmp_path: Path) -> None:
    path = tmp_path / "big.gguf"
    write_sparse_gguf(path, with_experts(deepseek_v3(), 624, "hypothetical-1.6T-MoE"))
    info = inspect_gguf(path)
    shape = info.shape
    assert 1.60e12 < info.parameter_count < 1.62e12
    request = PlanRequest(n_ctx=32_768)
    host = SimulatedHost(8, 80 * GiB, 25e9)
    alone = plan(shape, simulated_machine(24 * GiB, 256 * GiB), request)
    one = plan(shape, simulated_machine(24 * GiB, 256 * GiB, hosts=[host]), request)
    two = plan(shape, simulated_machine(24 * GiB, 256 * GiB, hosts=[host, host]), request)
    assert not alone.fits and not one.fits and two.fits
    assert two.ram.experts_bytes == 0  # every expert on a GPU
