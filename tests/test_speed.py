"""The speed a plan predicts, and the device speeds it is made from (kept once measured)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from app.device_speeds import BUSY_STEP_SECONDS, SpeedCache
from inference.device_speed import DeviceSpeed
from inference.devices import GiB, Machine, parse_sim_host, simulated_machine
from inference.gguf_info import inspect_gguf
from inference.model_shape import TensorRole
from inference.planner import PlanRequest, plan
from inference.speed import CPU_DEVICE, NODES_OUTPUT, NODES_PER_MOE_LAYER, SAMPLE_SECONDS_PER_VOCAB, predict
from tests.model_shapes import real_shapes

TYPES = ("q4_K", "q6_K", "q8_0", "f16")


def cpu(read: float = 10e9, flops: float = 100e9, step: float = 5e-6) -> DeviceSpeed:
    return DeviceSpeed(CPU_DEVICE, dict.fromkeys(TYPES, read), dict.fromkeys(TYPES, flops), step, 2)


def cpu_only(speed: DeviceSpeed) -> Machine:
    return Machine(gpus=(), ram_free_bytes=8 * GiB, ram_total_bytes=8 * GiB, speeds=(speed,))


def test_a_token_reads_the_weights_and_the_chosen_experts_once(moe_model: Path) -> None:
    shape = inspect_gguf(moe_model).shape
    speed = cpu()
    p = plan(shape, cpu_only(speed), PlanRequest(n_ctx=1024))
    predicted = predict(shape, p, cpu_only(speed))
    assert predicted is not None
    active = shape.expert_used_count / shape.expert_count
    read = sum(t.n_bytes * (active if t.role is TensorRole.EXPERTS else 1)
               for layer in shape.layers for t in layer.tensors)
    read += sum(t.n_bytes for t in shape.global_tensors if t.role is not TensorRole.EMBEDDING)
    if shape.tied_embeddings:
        read += shape.embedding_bytes
    steps = (shape.n_layer * NODES_PER_MOE_LAYER + NODES_OUTPUT) * speed.step_seconds
    choosing = shape.n_vocab * SAMPLE_SECONDS_PER_VOCAB
    assert predicted.generation_tps == pytest.approx(
        1 / (read / speed.read_bytes_per_s["q8_0"] + steps + choosing), rel=1e-6)
    assert predicted.generation_full_tps < predicted.generation_tps  # the KV cache of a full context is read too
    twice = predict(shape, p, cpu_only(replace(speed, read_bytes_per_s=dict.fromkeys(TYPES, 20e9))))
    assert twice is not None and twice.generation_tps > predicted.generation_tps
    assert "reading weights from RAM (100%)" in predicted.describe()


def test_hosts_cost_their_link_per_hop_and_say_so() -> None:
    shape = real_shapes()["DeepSeek-V3"]
    request = PlanRequest(n_ctx=32768)

    def over(link: str) -> tuple[float, dict[str, int]]:
        machine = simulated_machine(24 * GiB, 256 * GiB, hosts=[parse_sim_host(f"8x80GiB@{link}")],
                                    cpu_speed=cpu())
        p = plan(shape, machine, request)
        assert p.fits and p.rpc_hosts == ("sim-host-1:50052",)
        speed = predict(shape, p, machine)
        assert speed is not None
        return speed.generation_tps, speed.link_bytes_per_token

    slow, sent = over("1Gbit")
    fast, same = over("100Gbit")
    assert fast > slow and sent == same
    # the hidden state goes to the host once and comes back once: from one of its GPUs to the
    # next, the host copies it itself
    assert sent == {"sim-host-1:50052": 2 * shape.n_embd * 4}


def test_no_prediction_without_a_devices_speed(moe_model: Path) -> None:
    shape = inspect_gguf(moe_model).shape
    machine = Machine(gpus=(), ram_free_bytes=8 * GiB, ram_total_bytes=8 * GiB)
    assert predict(shape, plan(shape, machine, PlanRequest(n_ctx=512)), machine) is None


def test_speeds_are_measured_once_and_a_busy_measurement_is_not_kept(tmp_path: Path) -> None:
    answers = [cpu(step=2 * BUSY_STEP_SECONDS), cpu(step=3 * BUSY_STEP_SECONDS), cpu(step=4 * BUSY_STEP_SECONDS),
               cpu(step=5e-6)]
    calls: list[str] = []

    def measure(device: str, n_threads: int, log_path: Path, host: str | None = None) -> DeviceSpeed:
        calls.append(device)
        return answers.pop(0)

    cache = SpeedCache(tmp_path / "speeds.json", tmp_path / "llama.log", measure)
    machine = Machine(gpus=(), ram_free_bytes=GiB, ram_total_bytes=GiB)
    assert cache.with_speeds(machine, 2).speed(CPU_DEVICE) is None  # busy three times: none rather than a wrong one
    assert len(calls) == 3 and not (tmp_path / "speeds.json").exists()  # and nothing kept
    calm = cache.with_speeds(machine, 2).speed(CPU_DEVICE)
    assert calm is not None and calm.step_seconds == 5e-6 and len(calls) == 4
    again = SpeedCache(tmp_path / "speeds.json", tmp_path / "llama.log", measure).with_speeds(machine, 2)
    assert again.speed(CPU_DEVICE) == calm and len(calls) == 4  # kept: not measured again
