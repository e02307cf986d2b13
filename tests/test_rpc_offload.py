"""Models split between this machine and RPC hosts, for real: two llama.cpp RPC hosts on
127.0.0.1 (tests/rpc_hosts.py) are a second and third device, and llama.cpp's own log of
where each tensor and buffer went is checked against the plan."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.services import Services
from inference.gguf_info import inspect_gguf
from inference.model_shape import ModelShape
from inference.planner import RAM_DEVICE, PlanRequest, compute_buffer_bytes, layer_kv_bytes
from inference.protocol import Failed, Generate, ModelSettings, Sampling, Token
from inference.worker import Worker
from tests.rpc_hosts import LoopbackHosts

N_CTX = 1024
REQUEST = PlanRequest(n_ctx=N_CTX, margin_bytes=0, cpu_moe_layers=2)
GREEDY = Sampling(temperature=0, max_tokens=12)
PROMPTS = ("hello world", "the model answers the question", "expert memory token")


def room_for(shape: ModelShape, layers: int) -> int:
    """Memory for ``layers`` whole layers (experts and KV cache) and a compute buffer, and a
    little less than one more layer: a host capped at this holds exactly that many."""
    layer = shape.layers[0]
    whole = layer.total_bytes + layer_kv_bytes(shape, layer, N_CTX, REQUEST)
    return compute_buffer_bytes(shape, N_CTX, REQUEST) + layers * whole + whole // 2


def greedy_tokens(worker: Worker, prompt: str) -> list[int]:
    return [e.id for e in worker.generate(Generate(prompt=prompt, sampling=GREEDY))
            if isinstance(e, Token) and e.id is not None]


@pytest.fixture
def split(services: Services, rpc_hosts: LoopbackHosts, moe_model: Path) -> Services:
    """Both loopback hosts added, capped so that the first holds two layers and the second one."""
    shape = inspect_gguf(moe_model).shape
    first, second = rpc_hosts.endpoints
    services.hosts.add(first, room_for(shape, 2))
    services.hosts.add(second, room_for(shape, 1))
    return services


def test_layers_go_to_both_hosts_as_planned_and_llama_cpp_agrees(split: Services, rpc_hosts: LoopbackHosts,
                                                                 moe_model: Path, tmp_path: Path) -> None:
    first, second = (f"RPC0[{e}]" for e in rpc_hosts.endpoints)
    settings = ModelSettings(path=str(moe_model), n_threads=1, use_mmap=False)  # RAM: a buffer of its own
    outcome = split.runtime.load(str(moe_model), settings, planned=REQUEST)
    plan, report = outcome.plan, outcome.report
    assert plan is not None
    # the planner: layer 0 on the CPU, 1-2 on the first host, 3 and the output head (llama.cpp
    # offloads it first) on the second
    assert plan.layer_devices == (RAM_DEVICE, first, first, second) and plan.output_device == second
    assert plan.rpc_hosts == tuple(rpc_hosts.endpoints) and plan.tensor_split == (2, 2)
    # manual expert mode: the experts of layer 1 (on the first host) are overridden to the CPU
    assert plan.cpu_expert_layers == (1,)
    assert report.overridden == {f"blk.1.ffn_{kind}_exps.weight": "CPU" for kind in ("gate", "up", "down")}
    # llama.cpp: each host got buffers, and every estimate is within tolerance, per device too
    assert {first, second} <= set(report.model_buffers) and {first, second} <= set(report.kv_buffers)
    assert {first, second} <= set(report.compute_buffers)
    per_device = [c for c in outcome.checks if " on " in c.what]
    assert {c.what for c in per_device} >= {f"{kind} on {d}" for kind in ("model", "kv", "compute")
                                             for d in (first, second, RAM_DEVICE)}
    assert all(c.ok for c in outcome.checks), [c.describe() for c in outcome.checks if not c.ok]
    assert all(c.actual > 0 for c in per_device if c.what.startswith(("model", "compute")))

    # the same greedy tokens as the model on the CPU alone
    split_tokens = [list(split.runtime.worker.generate(Generate(prompt=p, sampling=GREEDY))) for p in PROMPTS]
    alone = Worker(tmp_path / "alone.log")
    try:
        alone.load(ModelSettings(path=str(moe_model), n_ctx=N_CTX, n_threads=1))
        expected = [greedy_tokens(alone, p) for p in PROMPTS]
    finally:
        alone.close()
    got = [[e.id for e in events if isinstance(e, Token) and e.id is not None] for events in split_tokens]
    assert got == expected and all(len(t) == GREEDY.max_tokens for t in got)


def test_a_host_killed_mid_reply_is_one_line_and_the_next_plan_leaves_it_out(
        split: Services, rpc_hosts: LoopbackHosts, moe_model: Path) -> None:
    settings = ModelSettings(path=str(moe_model), n_threads=1)
    outcome = split.runtime.load(str(moe_model), settings, planned=REQUEST)
    assert outcome.plan is not None and len(outcome.plan.rpc_hosts) == 2
    long_reply = Sampling(temperature=0, max_tokens=N_CTX - 16)  # a few seconds over the loopback hosts
    try:
        events = []
        for event in split.runtime.worker.generate(Generate(prompt="hello", sampling=long_reply)):
            events.append(event)
            if sum(isinstance(e, Token) for e in events) == 3:
                rpc_hosts.kill(1)
        failed = events[-1]
        assert isinstance(failed, Failed) and failed.kind == "crash"
        assert 3 <= sum(isinstance(e, Token) for e in events) < 200  # stopped mid-reply, not at its end
        assert "\n" not in failed.message and failed.message.startswith("An RPC host stopped answering")
        assert "Remote RPC server crashed" in failed.message  # llama.cpp's own words
        # the app lives on: the next load plans again, without the host that is gone
        started = time.monotonic()
        again = split.runtime.load(str(moe_model), settings, planned=REQUEST)
        assert time.monotonic() - started < 30  # a dead host costs a refused connection, not a hang
        assert again.plan is not None and again.plan.rpc_hosts == (rpc_hosts.endpoints[0],)
        assert split.runtime.machine().unreachable[0][0] == rpc_hosts.endpoints[1]
        assert len(greedy_tokens(split.runtime.worker, "hello")) == GREEDY.max_tokens
    finally:
        split.runtime.worker.close()  # let go of the first host before the second comes back
        rpc_hosts.revive(1)
