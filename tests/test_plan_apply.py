"""Plans applied to real loads: llama.cpp's own log says where tensors went and how
much it allocated, and the plan must agree."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from inference.devices import GiB, GpuDevice, Machine, detect_machine
from inference.gguf_info import inspect_gguf
from inference.load_report import parse_load_log
from inference.planner import PlanRequest, apply_plan, check_estimates, plan
from inference.protocol import Generate, ModelSettings, Sampling, Token
from inference.worker import Worker
from tests.rpc_hosts import LoopbackHosts

EXPERT_KINDS = ("gate", "up", "down")


def expert_names(layers: range | tuple[int, ...]) -> set[str]:
    return {f"blk.{i}.ffn_{kind}_exps.weight" for i in layers for kind in EXPERT_KINDS}


def device_machine(endpoint: str, free_bytes: int, *, as_gpu: bool = False) -> Machine:
    """This machine's CPU and 32 GiB of RAM, and the loopback RPC host at ``endpoint`` as a
    device of ``free_bytes``: a host's device (whole layers), or, ``as_gpu``, planned as if it
    were a GPU of this machine (attention first, experts where they fit) — llama.cpp places
    tensors on it all the same, so the overrides a GPU plan needs are checked for real."""
    device = GpuDevice("RPC0", endpoint, free_bytes, free_bytes, host=None if as_gpu else endpoint,
                       ident=f"RPC0[{endpoint}]")
    return Machine(gpus=(device,), ram_free_bytes=32 * GiB, ram_total_bytes=32 * GiB)


def test_planned_expert_offload_is_exactly_what_llama_cpp_does(worker: Worker, moe_model: Path,
                                                              rpc_hosts: LoopbackHosts) -> None:
    shape = inspect_gguf(moe_model).shape
    p = plan(shape, device_machine(rpc_hosts.endpoints[0], 8 * GiB), PlanRequest(n_ctx=1024, cpu_moe_layers=2))
    assert p.cpu_expert_layers == (0, 1) and p.rpc_hosts == (rpc_hosts.endpoints[0],)
    info = worker.load(apply_plan(ModelSettings(path=str(moe_model), n_threads=2), p))
    report = parse_load_log(info.log_lines)
    assert report.overridden == {name: "CPU" for name in expert_names(range(2))}
    assert report.model_buffers[f"RPC0[{rpc_hosts.endpoints[0]}]"] > 0  # the rest is on the host
    # and the model still answers
    events = list(worker.generate(Generate(prompt="hello", sampling=Sampling(temperature=0, max_tokens=4))))
    assert sum(isinstance(e, Token) and e.id is not None for e in events) == 4


def test_a_split_layer_overrides_single_tensors(worker: Worker, moe_model: Path, rpc_hosts: LoopbackHosts) -> None:
    shape = inspect_gguf(moe_model).shape
    endpoint = rpc_hosts.endpoints[0]
    req = PlanRequest(n_ctx=512, margin_bytes=0)
    # memory for everything but the experts, plus room for five expert tensors and a bit
    all_gpu = plan(shape, device_machine(endpoint, 8 * GiB, as_gpu=True), req)
    assert all_gpu.gpu is not None
    base = all_gpu.gpu.total_bytes - all_gpu.gpu.experts_bytes
    expert = shape.layers[0].expert_tensors[0].n_bytes
    p = plan(shape, device_machine(endpoint, base + 5 * expert + expert // 2, as_gpu=True), req)
    assert p.cpu_expert_layers == (0, 1) and len(p.cpu_expert_tensors) == 1  # layers 3, 2 and part of 1 there
    settings = replace(apply_plan(ModelSettings(path=str(moe_model), n_threads=2), p), rpc_hosts=(endpoint,))
    info = worker.load(settings)
    overridden = set(parse_load_log(info.log_lines).overridden)
    assert overridden == expert_names(p.cpu_expert_layers) | set(p.cpu_expert_tensors)
    assert len(overridden) == 7


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
@pytest.mark.parametrize("n_ctx", [1024, 4096])
@pytest.mark.parametrize("kind", ["moe", "dense"])
def test_estimates_match_llama_cpps_buffers(kind: str, n_ctx: int, kv_type: str, worker: Worker,
                                            request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(f"{kind}_model")
    p = plan(inspect_gguf(path).shape, detect_machine(), PlanRequest(n_ctx=n_ctx, type_k=kv_type, type_v=kv_type))
    assert p.fits
    info = worker.load(apply_plan(ModelSettings(path=str(path), n_threads=2), p))
    report = parse_load_log(info.log_lines)
    assert report.model_bytes and report.kv_bytes and report.compute_bytes
    checks = {c.what: c for c in check_estimates(p, report)}
    assert abs(checks["model"].error) <= 0.03, checks["model"].describe()
    assert abs(checks["kv"].error) <= 0.03, checks["kv"].describe()
    assert abs(checks["compute"].error) <= 0.25, checks["compute"].describe()


def test_compute_estimate_without_flash_attention(worker: Worker, dense_model: Path) -> None:
    p = plan(inspect_gguf(dense_model).shape, detect_machine(), PlanRequest(n_ctx=2048, flash_attn=False))
    info = worker.load(apply_plan(ModelSettings(path=str(dense_model), n_threads=2), p))
    compute = next(c for c in check_estimates(p, parse_load_log(info.log_lines)) if c.what == "compute")
    assert compute.ok, compute.describe()
