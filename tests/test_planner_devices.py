"""The planner across several devices: this machine's GPUs and RPC hosts' devices, on real
models' published shapes and simulated machines."""

from __future__ import annotations

import bisect

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.devices import GiB, parse_devices, parse_sim_host, simulated_machine
from inference.planner import MAX_DEVICES, RAM_DEVICE, Plan, PlanRequest, plan
from tests.model_shapes import real_shapes

SHAPES = real_shapes()
MOE = ["gpt-oss-120b", "Qwen3-30B-A3B", "Qwen3-235B-A22B", "GLM-4.5-Air", "DeepSeek-V3", "Mixtral-8x7B-v0.1"]
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def llama_cpp_layer_devices(p: Plan) -> tuple[str, ...]:
    """Where llama.cpp puts each layer and the output head for the plan's ``n_gpu_layers`` and
    ``tensor_split`` (llama-model.cpp, load_tensors: the output head is offloaded first, then
    the last layers; a layer's device is the first whose running share exceeds its place, in
    float32 arithmetic as there)."""
    devices = [d.device for d in p.load_devices]
    split = np.array(p.tensor_split, dtype=np.float32)
    cumulative = np.cumsum(split, dtype=np.float32) / np.float32(split.sum()) if split.sum() else split
    start = max(p.n_layer + 1 - p.n_gpu_layers, 0)
    active = min(p.n_gpu_layers, p.n_layer + 1) if devices else 0
    where = []
    for unit in range(p.n_layer + 1):
        if unit < start or unit - start >= active:
            where.append(RAM_DEVICE)
            continue
        place = np.float32(unit - start) / np.float32(active)
        where.append(devices[bisect.bisect_right(list(cumulative), place)])
    return tuple(where)


def check_consistent(p: Plan) -> None:
    """What the plan says and what llama.cpp will do with its settings agree, and no device
    is over its budget."""
    assert llama_cpp_layer_devices(p) == (*p.layer_devices, p.output_device)
    assert sum(p.tensor_split) == (p.n_gpu_layers if p.load_devices else 0)
    for d in p.offload_devices:
        assert d.total_bytes <= d.budget_bytes, d
        assert d.layers == sum(1 for where in p.layer_devices if where == d.device)


def test_two_gpus_share_the_layers_in_proportion_and_keep_their_own_experts() -> None:
    shape = SHAPES["gpt-oss-120b"]  # 61 GiB: more than two 24 GiB cards
    p = plan(shape, simulated_machine(parse_devices("2x24GiB"), 128 * GiB), PlanRequest(n_ctx=32768))
    check_consistent(p)
    gpu0, gpu1, ram = p.devices
    assert (gpu0.device, gpu1.device, ram.device) == ("GPU0", "GPU1", RAM_DEVICE)
    assert p.fits and p.n_gpu_layers == shape.n_layer + 1  # all attention on the GPUs
    assert abs(gpu0.layers - gpu1.layers) <= shape.n_layer // 3 and gpu0.layers and gpu1.layers
    assert gpu0.experts_bytes > 10 * GiB and gpu1.experts_bytes > 10 * GiB  # both cards hold experts
    # an expert is on its own layer's GPU or in RAM, never on the other card
    lifted = dict(zip(p.gpu_expert_tensors, p.lifted_to, strict=True))
    assert not lifted
    for layer in shape.layers:
        home = p.layer_devices[layer.index]
        for t in layer.expert_tensors:
            in_ram = layer.index in p.cpu_expert_layers or t.name in p.cpu_expert_tensors
            assert in_ram or home != RAM_DEVICE
    one_card = plan(shape, simulated_machine(24 * GiB, 128 * GiB), PlanRequest(n_ctx=32768))
    assert ram.experts_bytes < one_card.ram.experts_bytes - 15 * GiB  # the second card takes a card's worth


def test_a_host_is_used_only_when_this_machine_cannot_hold_the_model() -> None:
    small = SHAPES["Qwen3-30B-A3B"]
    host = parse_sim_host("8x80GiB@25Gbit")
    here = plan(small, simulated_machine(24 * GiB, 64 * GiB, hosts=[host]), PlanRequest(n_ctx=8192))
    check_consistent(here)
    assert here.rpc_hosts == () and all(d.layers == 0 for d in here.offload_devices if d.host)

    big = SHAPES["DeepSeek-V3"]  # 377 GiB at 4-bit: no workstation holds it
    alone = plan(big, simulated_machine(24 * GiB, 256 * GiB), PlanRequest(n_ctx=32768))
    assert not alone.fits
    spread = plan(big, simulated_machine(24 * GiB, 256 * GiB, hosts=[host]), PlanRequest(n_ctx=32768))
    check_consistent(spread)
    assert spread.fits and spread.rpc_hosts == ("sim-host-1:50052",)
    assert spread.ram.experts_bytes == 0  # a host keeps whole layers: no expert crosses the network per token
    on_host = [d for d in spread.offload_devices if d.host and d.layers]
    assert len(on_host) >= 5 and sum(d.layers for d in on_host) + spread.devices[-2].layers == big.n_layer
    assert "devices (RPC0 on sim-host-1:50052:" in spread.placement


def test_manual_expert_layers_apply_to_hosts_too() -> None:
    shape = SHAPES["Qwen3-30B-A3B"]
    machine = simulated_machine(None, 64 * GiB, hosts=[parse_sim_host("1x80GiB@10Gbit")])
    p = plan(shape, machine, PlanRequest(n_ctx=4096, cpu_moe_layers=10))
    check_consistent(p)
    assert p.cpu_expert_layers == tuple(range(10)) and p.ram.experts_bytes == sum(
        shape.layers[i].expert_bytes for i in range(10))


@HYPOTHESIS
@given(name=st.sampled_from(MOE), gpus=st.integers(1, 4), vram=st.integers(4, 96),
       hosts=st.lists(st.tuples(st.integers(1, 8), st.sampled_from([24, 48, 80])), max_size=3),
       ram=st.integers(16, 512), n_ctx=st.sampled_from([4096, 32768]))
def test_any_machine_gets_a_plan_llama_cpp_carries_out_within_budget(
        name: str, gpus: int, vram: int, hosts: list[tuple[int, int]], ram: int, n_ctx: int) -> None:
    shape = SHAPES[name]
    sim = [parse_sim_host(f"{count}x{size}GiB@25Gbit") for count, size in hosts]
    machine = simulated_machine([vram * GiB] * gpus, ram * GiB, hosts=sim)
    p = plan(shape, machine, PlanRequest(n_ctx=n_ctx))
    check_consistent(p)
    # every weight is somewhere once; a tied output head is a second copy of the embeddings
    placed = sum(d.weights_bytes + d.experts_bytes for d in p.devices)
    duplicated = shape.output_head_bytes - shape.output_bytes if p.output_device != RAM_DEVICE else 0
    assert placed == shape.total_bytes + duplicated
    # a host's device holds its layers whole
    for layer in shape.layers:
        device = next((d for d in p.offload_devices if d.device == p.layer_devices[layer.index]), None)
        if device is not None and device.host:
            assert layer.index not in p.cpu_expert_layers
            assert not any(t.name in p.cpu_expert_tensors for t in layer.expert_tensors)


def test_never_more_devices_than_llama_cpp_takes() -> None:
    shape = SHAPES["DeepSeek-V3"]
    machine = simulated_machine(24 * GiB, 256 * GiB, hosts=[parse_sim_host("8x24GiB@25Gbit")] * 3)
    p = plan(shape, machine, PlanRequest(n_ctx=8192))
    check_consistent(p)
    assert len(p.load_devices) <= MAX_DEVICES and len(p.tensor_split) <= MAX_DEVICES


def test_hosts_that_cannot_take_exactly_their_layers_leave_none_unplaced() -> None:
    """A machine where the hosts' greedy fill could leave layers on no device (found by review):
    llama.cpp would then move every boundary."""
    shape = SHAPES["DeepSeek-V3"]
    machine = simulated_machine([10 * GiB, 13 * GiB, 12 * GiB, 30 * GiB], 512 * GiB,
                                hosts=[parse_sim_host("3x44.5GiB@25Gbit"), parse_sim_host("1x6GiB@25Gbit"),
                                       parse_sim_host("4x65.5GiB@25Gbit")])
    check_consistent(plan(shape, machine, PlanRequest()))
