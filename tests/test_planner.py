"""The memory planner on real models' published shapes and simulated machines."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.catalog import shape_from_config
from inference.devices import GiB, format_size, simulated_machine
from inference.load_report import LoadReport
from inference.model_shape import ModelShape
from inference.planner import (
    KV_CELL_PAD,
    RAM_DEVICE,
    PlanError,
    PlanRequest,
    apply_plan,
    check_estimates,
    context_table,
    draft_size,
    plan,
)
from inference.protocol import ModelSettings
from tests.model_shapes import real_shapes

SHAPES = real_shapes()
UNDER_TEST = ["gpt-oss-120b", "Qwen3-30B-A3B", "Qwen3-235B-A22B", "Llama-4-Scout-17B-16E", "Llama-3.1-8B",
              "Mixtral-8x7B-v0.1", "GLM-4.5-Air", "DeepSeek-V3", "gpt-oss-20b", "OLMoE-1B-7B-0924"]
MACHINES = {
    "24 GiB CUDA + 64 GiB RAM": simulated_machine(24 * GiB, 64 * GiB, gpu_name="CUDA0"),
    "16 GiB card + 128 GiB RAM": simulated_machine(16 * GiB, 128 * GiB, gpu_name="CUDA0"),
    "Apple unified 128 GiB": simulated_machine(None, 128 * GiB, unified=True),
    "CPU only 64 GiB": simulated_machine(None, 64 * GiB),
}
MiB = 1 << 20
HYPOTHESIS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shape_names = st.sampled_from(UNDER_TEST)
vram = st.integers(min_value=2, max_value=160).map(lambda g: g * GiB // 2)
ram = st.integers(min_value=8, max_value=1024).map(lambda g: g * GiB)
contexts = st.sampled_from([2048, 4096, 8192, 32768, 65536])
kv_types = st.sampled_from(["f16", "q8_0", "q4_0"])


def request(n_ctx: int, kv: str) -> PlanRequest:
    return PlanRequest(n_ctx=n_ctx, type_k=kv, type_v=kv)  # type: ignore[arg-type]


def ram_experts(shape: ModelShape, p) -> list[int]:
    """Sizes of the expert tensors the plan leaves in RAM."""
    on_gpu = {i for i, where in enumerate(p.layer_devices) if where != RAM_DEVICE}
    lifted = set(p.gpu_expert_tensors)
    sizes = []
    for layer in shape.layers:
        for t in layer.expert_tensors:
            in_ram = (layer.index in p.cpu_expert_layers or t.name in p.cpu_expert_tensors
                      or (layer.index not in on_gpu and t.name not in lifted))
            if in_ram:
                sizes.append(t.n_bytes)
    return sizes


@HYPOTHESIS
@given(name=shape_names, vram=vram, ram=ram, n_ctx=contexts, kv=kv_types)
def test_never_over_a_devices_budget_and_vram_is_packed(name: str, vram: int, ram: int, n_ctx: int, kv: str) -> None:
    shape = SHAPES[name]
    p = plan(shape, simulated_machine(vram, ram), request(n_ctx, kv))
    gpu = p.gpu
    assert gpu is not None
    assert gpu.total_bytes <= gpu.budget_bytes  # VRAM is never overcommitted, fit or not
    if p.fits:
        assert all(d.total_bytes <= d.budget_bytes for d in p.devices)
    left = ram_experts(shape, p)
    if left and p.n_gpu_layers > 0:
        assert gpu.unused_bytes < min(left)  # the packing target
    if p.n_gpu_layers == 0:
        assert gpu.total_bytes == 0  # no half-measures: without a layer on the GPU nothing goes there
    # the plan's own accounting adds up: every byte of the model is somewhere, once
    placed = sum(d.weights_bytes + d.experts_bytes for d in p.devices)
    assert placed == shape.total_bytes
    assert p.ram.experts_bytes == sum(left)


@HYPOTHESIS
@given(name=shape_names, small=vram, extra=st.integers(min_value=1, max_value=64).map(lambda g: g * GiB),
       ram=ram, n_ctx=contexts)
def test_more_vram_never_puts_fewer_experts_on_the_gpu(name: str, small: int, extra: int, ram: int,
                                                     n_ctx: int) -> None:
    shape = SHAPES[name]
    req = request(n_ctx, "f16")
    less = plan(shape, simulated_machine(small, ram), req)
    more = plan(shape, simulated_machine(small + extra, ram), req)
    assert more.n_gpu_layers >= less.n_gpu_layers
    assert more.ram.total_bytes <= less.ram.total_bytes
    assert more.gpu.total_bytes >= less.gpu.total_bytes
    if less.n_gpu_layers == more.n_gpu_layers == shape.n_layer + 1:
        # with every layer's attention on the GPU, extra VRAM only ever adds experts; before that,
        # it goes to attention and KV cache first, by design (they run for every token)
        assert more.gpu.experts_bytes >= less.gpu.experts_bytes


@HYPOTHESIS
@given(name=shape_names, vram=vram, ram=ram, n_ctx=contexts)
@example(name="OLMoE-1B-7B-0924", vram=3 * GiB // 2, ram=13 * GiB, n_ctx=65536)  # room for the output head only
def test_refusals_name_the_missing_amount(name: str, vram: int, ram: int, n_ctx: int) -> None:
    p = plan(SHAPES[name], simulated_machine(vram, ram), request(n_ctx, "f16"))
    if p.fits:
        assert p.verdict.startswith("Fits") and " 0 of " not in p.verdict
        return
    short = next(d for d in reversed(p.devices) if not d.fits)
    assert f"({format_size(short.total_bytes - short.budget_bytes)} missing)" in p.verdict
    assert p.suggestions and "smaller" in p.suggestions[-1]


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("name", UNDER_TEST)
def test_largest_context_that_fits_is_proposed(name: str, machine: str) -> None:
    shape, m = SHAPES[name], MACHINES[machine]
    p = plan(shape, m, PlanRequest())
    if not p.fits:
        assert not plan(shape, m, PlanRequest(n_ctx=512)).fits
        return
    assert p.n_ctx <= shape.context_length
    full_offload = p.gpu is None or p.n_gpu_layers == shape.n_layer + 1
    if p.n_ctx < shape.context_length:
        longer = plan(shape, m, PlanRequest(n_ctx=p.n_ctx + KV_CELL_PAD))
        # one step more either does not fit, or (on a GPU) pushes attention out of VRAM
        assert not longer.fits or (full_offload and longer.n_gpu_layers <= shape.n_layer)
    if not full_offload:  # attention could not all be on the GPU even at the smallest context
        assert plan(shape, m, PlanRequest(n_ctx=512)).n_gpu_layers <= shape.n_layer


def test_known_machines_give_sensible_plans() -> None:
    oss = SHAPES["gpt-oss-120b"]
    p = plan(oss, MACHINES["24 GiB CUDA + 64 GiB RAM"], PlanRequest(n_ctx=32768))
    assert p.fits and p.n_gpu_layers == oss.n_layer + 1  # all attention on the GPU
    assert 0 < len(p.cpu_expert_layers) < oss.n_layer  # some experts in VRAM, some in RAM
    assert p.cpu_expert_layers == tuple(range(len(p.cpu_expert_layers)))  # the first layers' experts go to RAM
    scout = plan(SHAPES["Llama-4-Scout-17B-16E"], MACHINES["CPU only 64 GiB"], PlanRequest(n_ctx=8192))
    assert scout.n_gpu_layers == 0 and scout.gpu is None
    small = plan(SHAPES["Qwen3-30B-A3B"], MACHINES["24 GiB CUDA + 64 GiB RAM"], PlanRequest(n_ctx=8192))
    assert small.fits and not small.cpu_expert_layers and not small.cpu_expert_tensors  # all of it in VRAM
    apple = plan(SHAPES["Qwen3-235B-A22B"], MACHINES["Apple unified 128 GiB"], PlanRequest(n_ctx=8192))
    assert len(apple.devices) == 1 and apple.unified_memory and apple.fits


def test_a_model_too_big_for_ram_is_refused_with_what_would_help() -> None:
    p = plan(SHAPES["Qwen3-235B-A22B"], MACHINES["24 GiB CUDA + 64 GiB RAM"], PlanRequest(n_ctx=32768))
    assert not p.fits
    assert "of RAM" in p.verdict and "GiB missing)" in p.verdict
    assert any("smaller quant" in s for s in p.suggestions)


def test_q8_kv_cache_is_offered_when_it_makes_the_context_fit() -> None:
    shape, m = SHAPES["Llama-3.1-8B"], simulated_machine(None, 20 * GiB)
    tight = 131072
    p = plan(shape, m, PlanRequest(n_ctx=tight))
    assert not p.fits
    assert plan(shape, m, PlanRequest(n_ctx=tight, type_k="q8_0", type_v="q8_0")).fits
    assert "a q8_0 KV cache fits at this context" in p.suggestions


def test_more_context_never_puts_more_experts_on_the_gpu() -> None:
    rows = context_table(SHAPES["gpt-oss-120b"], MACHINES["24 GiB CUDA + 64 GiB RAM"])
    assert [r.n_ctx for r in rows] == sorted(r.n_ctx for r in rows) and rows[-1].n_ctx == 131072
    experts = [r.gpu.experts_bytes for r in rows]
    assert experts == sorted(experts, reverse=True)
    kv = [r.kv_bytes for r in rows]
    assert kv == sorted(kv) and kv[0] < kv[-1]


def test_sliding_window_layers_keep_the_whole_context() -> None:
    oss = SHAPES["gpt-oss-20b"]
    short = plan(oss, MACHINES["CPU only 64 GiB"], PlanRequest(n_ctx=8192)).kv_bytes
    long = plan(oss, MACHINES["CPU only 64 GiB"], PlanRequest(n_ctx=131072)).kv_bytes
    # llama.cpp's swa_full: every layer's cache grows with the context, so prefixes stay reusable
    assert long / short == 16


def test_overrides_select_exactly_the_planned_tensors() -> None:
    shape = SHAPES["Mixtral-8x7B-v0.1"]
    p = plan(shape, MACHINES["16 GiB card + 128 GiB RAM"], PlanRequest(n_ctx=8192))
    assert p.cpu_expert_layers and p.cpu_expert_tensors  # whole layers and one split layer
    names = [t.name for layer in shape.layers for t in layer.tensors] + [t.name for t in shape.global_tensors]
    matched = {n for n in names for o in p.tensor_overrides if re.search(o.pattern, n)}
    wanted = {t.name for i in p.cpu_expert_layers for t in shape.layers[i].expert_tensors} | set(p.cpu_expert_tensors)
    assert matched == wanted


def test_manual_cpu_moe_layers_are_honoured() -> None:
    shape = SHAPES["gpt-oss-120b"]
    p = plan(shape, simulated_machine(80 * GiB, 128 * GiB), PlanRequest(n_ctx=8192, cpu_moe_layers=5))
    assert p.cpu_expert_layers == (0, 1, 2, 3, 4) and not p.cpu_expert_tensors


def test_quantized_cache_needs_a_head_size_multiple_of_32() -> None:
    odd = replace(SHAPES["Llama-3.1-8B"], key_length=48, value_length=48)
    with pytest.raises(PlanError, match="multiple of 32"):
        plan(odd, MACHINES["CPU only 64 GiB"], PlanRequest(n_ctx=4096, type_k="q8_0", type_v="q8_0"))
    with pytest.raises(PlanError, match="flash attention"):
        plan(SHAPES["Llama-3.1-8B"], MACHINES["CPU only 64 GiB"],
             PlanRequest(n_ctx=4096, type_v="q8_0", flash_attn=False))


def test_apply_plan_carries_every_decision_into_the_load_settings() -> None:
    p = plan(SHAPES["gpt-oss-120b"], MACHINES["24 GiB CUDA + 64 GiB RAM"], PlanRequest(n_ctx=16384, type_k="q8_0"))
    s = apply_plan(ModelSettings(path="m.gguf"), p)
    assert (s.n_ctx, s.n_gpu_layers, s.type_k, s.flash_attn) == (16384, 37, "q8_0", True)
    assert s.tensor_overrides == p.tensor_overrides and s.tensor_overrides[0].device == "CPU"


def tiny_dense_shape() -> ModelShape:
    """A ~94 MiB dense model of 18 layers (the size of a small test GGUF)."""
    config = {"llama_cpp_arch": "llama", "n_layer": 18, "n_embd": 512, "n_head": 8, "n_head_kv": 8, "key_length": 64,
              "value_length": 64, "n_vocab": 32000, "context_length": 4096, "expert_count": 0,
              "expert_used_count": 0, "n_ff_expert": 0, "expert_shared_count": 0, "n_ff_shared": 0, "n_ff": 2048,
              "dense_layers": "all", "sliding_window": 0}
    return shape_from_config(config)


def test_a_gpu_with_less_free_memory_than_the_margin_runs_the_model_on_the_cpu() -> None:
    shape = tiny_dense_shape()
    assert 60 * MiB < shape.total_bytes < 130 * MiB
    p = plan(shape, simulated_machine(0.15 * GiB, 8 * GiB, gpu_name="CUDA0"), PlanRequest(n_ctx=4096))
    assert p.gpu is not None and p.gpu.budget_bytes == 0  # nothing usable, never a negative amount
    assert p.fits and p.n_gpu_layers == 0 and p.gpu.total_bytes == 0
    assert p.verdict.startswith("Fits: runs on the CPU") and "too little free memory" in p.verdict
    assert "-" not in p.verdict and "0 B" not in p.verdict and "smaller quant" not in p.verdict


def test_a_smaller_quant_is_only_suggested_when_one_could_fit() -> None:
    shape = tiny_dense_shape()
    p = plan(shape, simulated_machine(None, 1 * GiB), PlanRequest(n_ctx=4096))  # no RAM usable after the margin
    assert not p.fits and p.ram.budget_bytes == 0 and "0 B is usable" in p.verdict
    assert not any("smaller quant" in s for s in p.suggestions)
    assert p.suggestions[-1].startswith("a smaller model")


def test_placement_sentences_speak_of_layers_and_experts() -> None:
    cpu = plan(SHAPES["Llama-3.1-8B"], MACHINES["CPU only 64 GiB"], PlanRequest(n_ctx=8192))
    assert cpu.verdict.startswith("Fits: runs on the CPU, using ") and "layers" not in cpu.verdict
    assert cpu.placement == "runs on the CPU"
    half = plan(SHAPES["Llama-3.1-8B"], simulated_machine(4 * GiB, 64 * GiB), PlanRequest(n_ctx=8192))
    assert re.match(r"Fits: \d+ of 32 layers on the GPU, the rest on the CPU, at a context of 8,192 tokens\.$",
                    half.verdict), half.verdict
    assert half.verdict == f"Fits: {half.placement}, at a context of 8,192 tokens."
    moe = plan(SHAPES["gpt-oss-120b"], MACHINES["24 GiB CUDA + 64 GiB RAM"], PlanRequest(n_ctx=8192))
    assert re.match(r"Fits: all 36 layers on the GPU, experts of \d+ layers( \(and part of 1 more\))? in RAM, ",
                    moe.verdict), moe.verdict
    manual = plan(SHAPES["gpt-oss-120b"], simulated_machine(80 * GiB, 128 * GiB), PlanRequest(n_ctx=8192,
                                                                                             cpu_moe_layers=5))
    assert "all 36 layers on the GPU, experts of 5 layers in RAM" in manual.verdict
    whole = plan(SHAPES["Qwen3-30B-A3B"], MACHINES["24 GiB CUDA + 64 GiB RAM"], PlanRequest(n_ctx=8192))
    assert whole.verdict.startswith("Fits: all 48 layers on the GPU, experts included")


# A draft model beside the main one (speculative decoding) -----------------------------------

QWEN3_06B = {"model": "Qwen3-0.6B", "llama_cpp_arch": "qwen3", "n_layer": 28, "n_embd": 1024, "n_head": 16,
             "n_head_kv": 8, "key_length": 128, "value_length": 128, "n_vocab": 151936, "context_length": 40960,
             "expert_count": 0, "expert_used_count": 0, "n_ff_expert": 0, "expert_shared_count": 0,
             "n_ff_shared": 0, "n_ff": 3072, "dense_layers": "all", "sliding_window": 0,
             "tied_embeddings": True}  # Qwen/Qwen3-0.6B's published configuration, the 30B-A3B's vocabulary
DRAFT = draft_size(shape_from_config(QWEN3_06B))
EIGHT_GIB = simulated_machine(8 * GiB, 64 * GiB, gpu_name="CUDA0")


def test_a_draft_models_size_is_its_weights_kv_cache_and_compute() -> None:
    shape = shape_from_config(QWEN3_06B)
    assert DRAFT.weights_bytes == shape.total_bytes
    assert DRAFT.k_elements_per_token == DRAFT.v_elements_per_token == 28 * 8 * 128  # layers x KV heads x head
    f16 = PlanRequest(n_ctx=8192)
    assert DRAFT.kv_bytes(8192, f16) == 2 * 8192 * 28 * 8 * 128 * 2  # K and V, 2 bytes each
    assert DRAFT.kv_bytes(8192, replace(f16, type_k="q8_0", type_v="q8_0")) < DRAFT.kv_bytes(8192, f16) * 0.6
    assert DRAFT.compute_bytes > QWEN3_06B["n_vocab"] * 512 * 4  # at least the logits of one ubatch
    assert DRAFT.total_bytes(8192, f16) == DRAFT.weights_bytes + DRAFT.kv_bytes(8192, f16) + DRAFT.compute_bytes


def test_a_draft_goes_on_the_gpu_before_the_experts_and_is_counted() -> None:
    main = SHAPES["Qwen3-30B-A3B"]
    without = plan(main, EIGHT_GIB, PlanRequest(n_ctx=8192))
    drafted = plan(main, EIGHT_GIB, PlanRequest(n_ctx=8192, draft=DRAFT))
    assert without.draft_device is None and without.draft_bytes == 0 and "draft" not in without.verdict
    assert drafted.fits and drafted.draft_device == "CUDA0" and drafted.draft_on_gpu
    gpu = drafted.gpu
    assert gpu is not None and gpu.draft_bytes == DRAFT.total_bytes(8192, PlanRequest(n_ctx=8192))
    assert gpu.total_bytes <= gpu.budget_bytes  # the draft's bytes are in the device's total, within budget
    assert drafted.n_gpu_layers == without.n_gpu_layers == main.n_layer + 1  # attention still all on the GPU
    assert len(drafted.cpu_expert_layers) > len(without.cpu_expert_layers)  # the experts gave way
    assert drafted.ram.experts_bytes > without.ram.experts_bytes
    size = format_size(gpu.draft_bytes)
    assert f"draft model on CUDA0 ({size})" in drafted.placement and f"draft model on CUDA0 ({size})" in drafted.verdict
    assert apply_plan(ModelSettings(path="m.gguf"), drafted).draft_gpu_layers == -1
    assert drafted.as_dict()["draft"] == {"device": "CUDA0", "bytes": gpu.draft_bytes}


def test_a_draft_with_no_room_beside_the_layers_goes_to_ram() -> None:
    main = SHAPES["Qwen3-30B-A3B"]
    small = simulated_machine(int(4.5 * GiB), 64 * GiB, gpu_name="CUDA0")  # not even every layer's attention fits
    without = plan(main, small, PlanRequest(n_ctx=32768))
    drafted = plan(main, small, PlanRequest(n_ctx=32768, draft=DRAFT))
    assert without.n_gpu_layers <= main.n_layer  # the case: layers already stay on the CPU
    assert drafted.draft_device == RAM_DEVICE and not drafted.draft_on_gpu
    assert drafted.n_gpu_layers == without.n_gpu_layers  # the draft took nothing from the main model's GPU share
    assert drafted.ram.draft_bytes == DRAFT.total_bytes(32768, PlanRequest()) and drafted.gpu.draft_bytes == 0  # type: ignore[union-attr]
    assert drafted.ram.total_bytes == without.ram.total_bytes + drafted.ram.draft_bytes
    assert "draft model in RAM" in drafted.verdict
    assert apply_plan(ModelSettings(path="m.gguf"), drafted).draft_gpu_layers == 0


def test_a_draft_counts_on_cpu_only_and_unified_machines() -> None:
    main = SHAPES["Llama-3.1-8B"]
    cpu = plan(main, MACHINES["CPU only 64 GiB"], PlanRequest(n_ctx=8192, draft=DRAFT))
    alone = plan(main, MACHINES["CPU only 64 GiB"], PlanRequest(n_ctx=8192))
    assert cpu.draft_device == RAM_DEVICE and cpu.ram.total_bytes - alone.ram.total_bytes == cpu.draft_bytes
    assert "of RAM, draft model in RAM (" in cpu.verdict
    unified = plan(main, MACHINES["Apple unified 128 GiB"], PlanRequest(n_ctx=8192, draft=DRAFT))
    assert unified.draft_on_gpu and unified.devices[0].draft_bytes == unified.draft_bytes > 0
    assert "draft model on" in unified.verdict


def test_the_largest_context_leaves_room_for_the_draft() -> None:
    main = SHAPES["Qwen3-30B-A3B"]
    alone = plan(main, EIGHT_GIB, PlanRequest(n_ctx=None))
    drafted = plan(main, EIGHT_GIB, PlanRequest(n_ctx=None, draft=DRAFT))
    assert drafted.fits and all(d.fits for d in drafted.devices)
    assert drafted.n_ctx <= alone.n_ctx


def test_the_estimates_check_counts_the_draft_models_buffers() -> None:
    p = plan(SHAPES["Qwen3-30B-A3B"], EIGHT_GIB, PlanRequest(n_ctx=8192, draft=DRAFT))
    draft_kv = DRAFT.kv_bytes(8192, PlanRequest())
    gpu, ram = p.devices
    report = LoadReport(  # as llama.cpp logs both loads: the main model's buffers and the draft's, summed
        model_buffers={"CUDA0": gpu.weights_bytes + gpu.experts_bytes + DRAFT.weights_bytes,
                       "CPU": ram.weights_bytes + ram.experts_bytes},
        kv_buffers={"CUDA0": gpu.kv_bytes + draft_kv},
        compute_buffers={"CUDA0": gpu.compute_bytes + DRAFT.compute_bytes, "CPU": ram.compute_bytes})
    checks = {c.what: c for c in check_estimates(p, report)}
    assert all(c.ok and c.error == 0 for c in checks.values()), [c.describe() for c in checks.values()]
    assert {"model", "kv", "compute", "model on CUDA0", "kv on CUDA0"} <= set(checks)
