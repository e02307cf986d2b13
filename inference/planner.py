"""Where every tensor of a model goes, decided before loading: a pure function.

The rules, in order:

1. On a discrete GPU, each offloaded layer brings its non-expert weights (attention,
   norms, router, shared experts) and its KV cache; the output head comes with the
   last "layer". These run for every token, so they get VRAM first. If even they do
   not all fit, layers stay on the CPU from the first one up, as llama.cpp counts
   ``n_gpu_layers``.
2. Expert tensors then fill the VRAM that is left, tensor by tensor from the last layer
   down, skipping any that does not fit. So whole layers of experts go to the GPU while
   they fit, one layer may be split between up/gate/down, and the VRAM left unused is
   smaller than any expert tensor still in RAM.
3. Every device keeps a safety margin (1 GiB by default). Host RAM is checked too:
   embeddings, CPU layers, experts left in RAM, their KV cache and the CPU compute buffer.
4. Unified memory (Apple) is one pool: everything is "on the GPU" and counted once.

Sizes of the KV cache and compute buffers follow llama.cpp's own arithmetic (cells are
the context rounded up to 256, in every layer: Enclave loads with ``swa_full``);
``verify`` compares them with what llama.cpp logs after a real load.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from inference.devices import GiB, Machine, format_size
from inference.load_report import EstimateCheck, LoadReport
from inference.model_shape import LayerShape, ModelShape, TensorInfo
from inference.protocol import KvCacheType, ModelSettings, TensorOverride

KV_CELL_PAD = 256
MODEL_TOLERANCE, KV_TOLERANCE, COMPUTE_TOLERANCE = 0.03, 0.03, 0.25
BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4, "f16": 2, "bf16": 2, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
    "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32,
}
QUANTIZED_KV = {"q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"}
RAM_DEVICE = "RAM"


@dataclass(frozen=True)
class PlanRequest:
    n_ctx: int | None = None  # None: the largest context that fits, up to the trained one
    type_k: KvCacheType = "f16"
    type_v: KvCacheType = "f16"
    flash_attn: bool = True
    n_ubatch: int = 512
    margin_bytes: int = GiB
    cpu_moe_layers: int | None = None  # manual: the experts of the first N layers stay in RAM
    min_ctx: int = 512


@dataclass(frozen=True)
class DeviceUse:
    device: str  # a GPU's llama.cpp name, or "RAM"
    budget_bytes: int  # free memory less the safety margin
    weights_bytes: int = 0  # non-expert weights (and, in RAM, the embeddings)
    experts_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.experts_bytes + self.kv_bytes + self.compute_bytes

    @property
    def unused_bytes(self) -> int:
        return self.budget_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes


@dataclass(frozen=True)
class Plan:
    n_ctx: int
    n_layer: int
    n_gpu_layers: int  # llama.cpp's count: the last n layers, n_layer + 1 includes the output head
    gpu_device: str | None
    cpu_expert_layers: tuple[int, ...]  # offloaded layers whose experts all stay in RAM
    cpu_expert_tensors: tuple[str, ...]  # single expert tensors in RAM from a split layer
    gpu_expert_tensors: tuple[str, ...]  # expert tensors of CPU layers lifted into spare VRAM
    devices: tuple[DeviceUse, ...]  # the GPU (if any) first, RAM last
    kv_bytes: int
    type_k: str
    type_v: str
    flash_attn: bool
    fits: bool
    verdict: str
    suggestions: tuple[str, ...] = ()
    unified_memory: bool = False
    placement: str = ""  # in words: "runs on the CPU", "24 of 48 layers on the GPU, experts of 20 layers in RAM"

    @property
    def ram(self) -> DeviceUse:
        return self.devices[-1]

    @property
    def gpu(self) -> DeviceUse | None:
        return self.devices[0] if len(self.devices) > 1 else None

    @property
    def tensor_overrides(self) -> tuple[TensorOverride, ...]:
        """llama.cpp ``-ot`` rules that keep the planned experts in host memory."""
        rules = []
        if self.cpu_expert_layers:
            layers = "|".join(str(i) for i in self.cpu_expert_layers)
            rules.append(TensorOverride(rf"^blk\.({layers})\.ffn_(up|gate|down|gate_up)_exps\.", "CPU"))
        rules += [TensorOverride(f"^{re.escape(name)}$", "CPU") for name in self.cpu_expert_tensors]
        if self.gpu_device:
            rules += [TensorOverride(f"^{re.escape(name)}$", self.gpu_device) for name in self.gpu_expert_tensors]
        return tuple(rules)

    def as_dict(self) -> dict[str, object]:
        return {
            "fits": self.fits,
            "verdict": self.verdict,
            "suggestions": list(self.suggestions),
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "gpu_device": self.gpu_device,
            "cpu_expert_layers": list(self.cpu_expert_layers),
            "cpu_expert_tensors": list(self.cpu_expert_tensors),
            "gpu_expert_tensors": list(self.gpu_expert_tensors),
            "kv_bytes": self.kv_bytes,
            "type_k": self.type_k,
            "type_v": self.type_v,
            "flash_attn": self.flash_attn,
            "unified_memory": self.unified_memory,
            "tensor_overrides": [f"{o.pattern}={o.device}" for o in self.tensor_overrides],
            "devices": [
                {"device": d.device, "budget": d.budget_bytes, "weights": d.weights_bytes,
                 "experts": d.experts_bytes, "kv_cache": d.kv_bytes, "compute": d.compute_bytes,
                 "total": d.total_bytes, "fits": d.fits}
                for d in self.devices
            ],
        }


class PlanError(ValueError):
    """The request itself is impossible (not merely too big): a bad KV type for this model."""


# Sizes -------------------------------------------------------------------------------


def layer_kv_bytes(shape: ModelShape, layer: LayerShape, n_ctx: int, req: PlanRequest) -> int:
    """One layer's KV cache. Enclave loads with llama.cpp's ``swa_full``, so sliding-window
    layers keep the whole context too (a cached prefix stays reusable)."""
    if layer.n_head_kv == 0:
        return 0
    k, v = shape.kv_elements_per_token(layer)
    cells = _pad(n_ctx, KV_CELL_PAD)
    return math.ceil(cells * k * BYTES_PER_ELEMENT[req.type_k]) + math.ceil(cells * v * BYTES_PER_ELEMENT[req.type_v])


def compute_buffer_bytes(shape: ModelShape, n_ctx: int, req: PlanRequest) -> int:
    """llama.cpp's graph buffer for one ubatch: the logits, the residual stream, and the
    larger of the attention and feed-forward intermediates of one layer (the allocator
    reuses memory between layers)."""
    n_kv = _pad(n_ctx, KV_CELL_PAD)
    n_ub = min(req.n_ubatch, n_kv)
    f32 = 4
    logits = shape.n_vocab * n_ub * f32
    residual = 2 * shape.n_embd * n_ub * f32
    q_k_v = (shape.n_head * shape.key_length + 2 * shape.n_head_kv * shape.key_length) * n_ub * f32
    masks = 2 if shape.sliding_window else 1  # sliding-window models build a second mask
    if req.flash_attn:
        attention = q_k_v + masks * n_kv * n_ub * 2  # f16 masks
    else:
        attention = q_k_v + shape.n_head * n_kv * n_ub * f32 + masks * n_kv * n_ub * f32  # KQ scores + f32 masks
    if shape.is_moe:
        n_ff = shape.n_ff_expert or shape.n_ff
        ffn = 2 * n_ff * shape.expert_used_count * n_ub * f32 + shape.expert_count * n_ub * f32
    else:
        ffn = 2 * shape.n_ff * n_ub * f32
    return logits + residual + max(attention, ffn)


def host_compute_bytes(shape: ModelShape, req: PlanRequest) -> int:
    """The CPU-side buffer when the graph runs on a GPU: inputs and the layers' hand-offs."""
    return 2 * shape.n_embd * min(req.n_ubatch, 512) * 4 + shape.n_vocab * 4


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


# Planning ----------------------------------------------------------------------------


def plan(shape: ModelShape, machine: Machine, req: PlanRequest = PlanRequest()) -> Plan:
    """The plan for ``req.n_ctx``, or, when it is None, for the largest context that fits."""
    _check_request(shape, req)
    result = _plan_at(shape, machine, req, req.n_ctx) if req.n_ctx is not None else _largest_context(
        shape, machine, req)
    if result.fits:
        return result
    return replace(result, suggestions=tuple(_suggestions(shape, machine, req, result)))


def _largest_context(shape: ModelShape, machine: Machine, req: PlanRequest) -> Plan:
    """The largest context (a multiple of 256, up to the trained one) that fits. On a
    discrete GPU it must also keep every layer's attention and KV cache in VRAM, the
    point of expert offloading; only when even the smallest context cannot, the largest
    that fits at all. ``context_table`` shows what longer contexts would cost."""

    def full_offload(p: Plan) -> bool:
        return p.fits and (p.gpu is None or p.n_gpu_layers > shape.n_layer)

    smallest = _plan_at(shape, machine, req, req.min_ctx)
    good = full_offload if full_offload(smallest) else (lambda p: p.fits)
    if not good(smallest):
        return smallest
    lo_cells = -(-req.min_ctx // KV_CELL_PAD)
    hi_cells = -(-max(shape.context_length, req.min_ctx) // KV_CELL_PAD)
    top = _plan_at(shape, machine, req, hi_cells * KV_CELL_PAD)
    if good(top):
        return top
    best = smallest
    while hi_cells - lo_cells > 1:  # good(lo) and not good(hi): memory only grows with the context
        mid = (lo_cells + hi_cells) // 2
        candidate = _plan_at(shape, machine, req, mid * KV_CELL_PAD)
        if good(candidate):
            lo_cells, best = mid, candidate
        else:
            hi_cells = mid
    return best


def context_table(shape: ModelShape, machine: Machine, req: PlanRequest = PlanRequest(),
                  contexts: tuple[int, ...] = (4096, 8192, 16384, 32768, 65536, 131072)) -> list[Plan]:
    """What fits at which context length, up to the trained context."""
    sizes = sorted({c for c in contexts if c <= shape.context_length} | {shape.context_length})
    return [_plan_at(shape, machine, req, n) for n in sizes]


def _check_request(shape: ModelShape, req: PlanRequest) -> None:
    for which, kv_type in (("K", req.type_k), ("V", req.type_v)):
        if kv_type not in BYTES_PER_ELEMENT:
            raise PlanError(f"Unknown KV cache type {kv_type!r}; use one of {', '.join(BYTES_PER_ELEMENT)}.")
        head = shape.key_length if which == "K" else shape.value_length
        if kv_type in QUANTIZED_KV and head % 32:
            raise PlanError(f"A {kv_type} {which} cache needs a head size that is a multiple of 32; "
                            f"this model's is {head}. Use f16.")
    if req.type_v in QUANTIZED_KV and not req.flash_attn:
        raise PlanError("A quantized V cache needs flash attention. Turn flash attention on or use an f16 V cache.")


def _plan_at(shape: ModelShape, machine: Machine, req: PlanRequest, n_ctx: int) -> Plan:
    kv = [layer_kv_bytes(shape, layer, n_ctx, req) for layer in shape.layers]
    compute = compute_buffer_bytes(shape, n_ctx, req)
    gpu = machine.gpu
    if gpu is None:
        ram = DeviceUse(RAM_DEVICE, _usable(machine.ram_free_bytes, req),
                        weights_bytes=shape.total_bytes - shape.expert_bytes, experts_bytes=shape.expert_bytes,
                        kv_bytes=sum(kv), compute_bytes=compute)
        return _finish(shape, machine, req, n_ctx, 0, None, (), (), (), (ram,), sum(kv))
    if machine.unified_memory:
        return _plan_unified(shape, machine, req, n_ctx, kv, compute)

    budget = _usable(gpu.free_bytes, req)
    n_gpu_layers = _gpu_layers_that_fit(shape, kv, compute, budget)
    on_gpu = {i for i in range(shape.n_layer) if i >= shape.n_layer - n_gpu_layers}
    output_on_gpu = n_gpu_layers > shape.n_layer
    gpu_weights = sum(shape.layers[i].non_expert_bytes for i in on_gpu) + (shape.output_bytes if output_on_gpu else 0)
    gpu_kv = sum(kv[i] for i in on_gpu)
    gpu_compute = compute if on_gpu else 0
    free_for_experts = budget - gpu_weights - gpu_kv - gpu_compute

    to_gpu, to_ram = _place_experts(shape.layers, on_gpu, free_for_experts, req.cpu_moe_layers)
    gpu_experts = sum(t.n_bytes for t in to_gpu)
    gpu_use = DeviceUse(gpu.name, budget, gpu_weights, gpu_experts, gpu_kv, gpu_compute)
    ram_use = DeviceUse(RAM_DEVICE, _usable(machine.ram_free_bytes, req),
                        weights_bytes=shape.total_bytes - shape.expert_bytes - gpu_weights,
                        experts_bytes=shape.expert_bytes - gpu_experts, kv_bytes=sum(kv) - gpu_kv,
                        compute_bytes=host_compute_bytes(shape, req) if on_gpu else compute)
    overrides = _summarise(shape.layers, on_gpu, to_gpu, to_ram)
    return _finish(shape, machine, req, n_ctx, n_gpu_layers, gpu.name, *overrides, (gpu_use, ram_use), sum(kv))


def _usable(free_bytes: int, req: PlanRequest) -> int:
    """Free memory less the safety margin, never below zero: a device with less free
    memory than the margin has nothing usable, not a negative amount."""
    return max(0, free_bytes - req.margin_bytes)


def _gpu_layers_that_fit(shape: ModelShape, kv: list[int], compute: int, budget: int) -> int:
    """The most layers (counted from the last, the output head as one more) whose
    non-expert weights and KV cache fit in ``budget`` with the compute buffer."""
    used = compute + shape.output_bytes
    if used > budget:
        return 0
    count = 1  # the output head
    for layer in reversed(shape.layers):
        need = layer.non_expert_bytes + kv[layer.index]
        if used + need > budget:
            break
        used += need
        count += 1
    return count if count > shape.n_layer else count - 1  # output only with all layers


def _place_experts(layers: tuple[LayerShape, ...], on_gpu: set[int], free: int, cpu_moe_layers: int | None
                   ) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Expert tensors for the GPU and for RAM. The offloaded layers' experts are tried
    first, from the last layer down; then those of layers left on the CPU (their experts
    can still sit in VRAM through an override). Manual mode puts the experts of the first
    ``cpu_moe_layers`` layers in RAM and every other offloaded one on the GPU."""
    order = sorted(layers, key=lambda lyr: (lyr.index not in on_gpu, -lyr.index))
    to_gpu: list[TensorInfo] = []
    to_ram: list[TensorInfo] = []
    for layer in order:
        for tensor in layer.expert_tensors:
            if cpu_moe_layers is not None:
                wanted = layer.index in on_gpu and layer.index >= cpu_moe_layers
            else:  # experts of CPU layers only join offloaded ones, whose compute buffer is on the GPU
                wanted = tensor.n_bytes <= free and bool(on_gpu)
            if wanted:
                to_gpu.append(tensor)
                free -= tensor.n_bytes
            else:
                to_ram.append(tensor)
    return to_gpu, to_ram


def _summarise(layers: tuple[LayerShape, ...], on_gpu: set[int], to_gpu: list[TensorInfo],
               to_ram: list[TensorInfo]) -> tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]]:
    """The overrides a placement needs: offloaded layers whose experts all stay in RAM,
    single expert tensors of offloaded layers in RAM, expert tensors of CPU layers in VRAM."""
    ram_names = {t.name for t in to_ram}
    whole = tuple(sorted(
        lyr.index for lyr in layers
        if lyr.index in on_gpu and lyr.expert_tensors and all(t.name in ram_names for t in lyr.expert_tensors)
    ))
    partial = tuple(t.name for t in to_ram if t.layer in on_gpu and t.layer not in whole)
    lifted = tuple(t.name for t in to_gpu if t.layer not in on_gpu)
    return whole, partial, lifted


def _plan_unified(shape: ModelShape, machine: Machine, req: PlanRequest, n_ctx: int, kv: list[int],
                  compute: int) -> Plan:
    gpu = machine.gpu
    assert gpu is not None
    pool = _usable(min(gpu.free_bytes, machine.ram_free_bytes), req)
    use = DeviceUse(gpu.name, pool, shape.total_bytes - shape.expert_bytes, shape.expert_bytes, sum(kv), compute)
    return _finish(shape, machine, req, n_ctx, shape.n_layer + 1, gpu.name, (), (), (), (use,), sum(kv))


def _finish(shape: ModelShape, machine: Machine, req: PlanRequest, n_ctx: int, n_gpu_layers: int,
            gpu_name: str | None, cpu_layers: tuple[int, ...], cpu_tensors: tuple[str, ...],
            gpu_tensors: tuple[str, ...], devices: tuple[DeviceUse, ...], kv_bytes: int) -> Plan:
    fits = all(d.fits for d in devices)
    result = Plan(n_ctx=n_ctx, n_layer=shape.n_layer, n_gpu_layers=n_gpu_layers, gpu_device=gpu_name,
                  cpu_expert_layers=cpu_layers, cpu_expert_tensors=cpu_tensors, gpu_expert_tensors=gpu_tensors,
                  devices=devices,
                  kv_bytes=kv_bytes, type_k=req.type_k, type_v=req.type_v, flash_attn=req.flash_attn,
                  fits=fits, verdict="", unified_memory=machine.unified_memory)
    result = replace(result, placement=_placement(result, shape))
    if fits:
        return replace(result, verdict=_fits_verdict(result, shape))
    short = next(d for d in reversed(devices) if not d.fits)
    missing = short.total_bytes - short.budget_bytes
    where = "memory" if machine.unified_memory else ("RAM" if short.device == RAM_DEVICE else "VRAM")
    verdict = (f"Does not fit: needs {format_size(short.total_bytes)} of {where} but "
               f"{format_size(short.budget_bytes)} is usable ({format_size(missing)} missing) at a context of "
               f"{n_ctx:,} tokens.")
    return replace(result, verdict=verdict)


def _fits_verdict(p: Plan, shape: ModelShape) -> str:
    context = f"at a context of {p.n_ctx:,} tokens"
    if p.unified_memory:
        return f"Fits in unified memory: {format_size(p.devices[0].total_bytes)} {context}."
    if _on_cpu_only(p):
        text = f"Fits: runs on the CPU, using {format_size(p.ram.total_bytes)} of RAM {context}."
        return text if p.gpu is None else text + " The GPU has too little free memory for this model."
    return f"Fits: {p.placement}, {context}."


def _on_cpu_only(p: Plan) -> bool:
    return not p.unified_memory and (p.gpu is None or (p.n_gpu_layers == 0 and not p.gpu_expert_tensors))


def _placement(p: Plan, shape: ModelShape) -> str:
    if p.unified_memory:
        return "runs on the GPU, in unified memory"
    if _on_cpu_only(p):
        return "runs on the CPU" if p.gpu is None else "runs on the CPU (the GPU has too little free memory)"
    return placement_sentence(p, shape)


def placement_sentence(p: Plan, shape: ModelShape) -> str:
    """Where the layers (and a MoE model's experts) go, in words: "24 of 48 layers on the
    GPU, experts of 20 layers in RAM"."""
    on_gpu = min(p.n_gpu_layers, shape.n_layer)
    layers = (f"all {shape.n_layer} layers on the GPU" if on_gpu == shape.n_layer
              else f"{on_gpu} of {shape.n_layer} layers on the GPU, the rest on the CPU")
    if not shape.is_moe:
        return layers
    whole, part = _expert_layers_in_ram(p, shape)
    if not whole and not part:
        return layers + (", experts included" if on_gpu == shape.n_layer else ", all experts on the GPU")
    if whole == sum(1 for layer in shape.layers if layer.expert_tensors):
        return layers + ", all experts in RAM"
    text = f"experts of {whole} layer{'' if whole == 1 else 's'}" if whole else "part of the experts of"
    if whole and part:
        text += f" (and part of {part} more)"
    elif part:
        text += f" {part} layer{'' if part == 1 else 's'}"
    return f"{layers}, {text} in RAM"


def _expert_layers_in_ram(p: Plan, shape: ModelShape) -> tuple[int, int]:
    """(layers whose experts are all in RAM, layers whose experts are split between RAM and VRAM)."""
    on_gpu = set(range(shape.n_layer - min(p.n_gpu_layers, shape.n_layer), shape.n_layer))
    in_ram = set(p.cpu_expert_tensors)
    lifted = set(p.gpu_expert_tensors)
    whole = part = 0
    for layer in shape.layers:
        if not layer.expert_tensors:
            continue
        if layer.index in p.cpu_expert_layers:
            whole += 1
            continue
        names = [t.name for t in layer.expert_tensors]
        ram = (sum(1 for n in names if n in in_ram) if layer.index in on_gpu
               else sum(1 for n in names if n not in lifted))
        if ram == len(names):
            whole += 1
        elif ram:
            part += 1
    return whole, part


def _ranges(indices: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> '0-2, 5'"""
    parts: list[str] = []
    for i in indices:
        if parts and parts[-1].split("-")[-1] == str(i - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{i}"
        else:
            parts.append(str(i))
    return ", ".join(parts)


def _suggestions(shape: ModelShape, machine: Machine, req: PlanRequest, failed: Plan) -> list[str]:
    n_ctx = failed.n_ctx
    short = next(d for d in reversed(failed.devices) if not d.fits)
    missing = short.total_bytes - short.budget_bytes
    tips = []
    if n_ctx > req.min_ctx:
        shorter = _largest_context(shape, machine, req)
        if shorter.fits:
            tips.append(f"a context of {shorter.n_ctx:,} tokens fits")
    if req.type_k == "f16" and shape.key_length % 32 == 0:
        q8 = replace(req, n_ctx=n_ctx, type_k="q8_0", type_v="q8_0" if req.flash_attn else req.type_v)
        if _plan_at(shape, machine, q8, n_ctx).fits:
            tips.append("a q8_0 KV cache fits at this context")
    if missing < shape.total_bytes // 2:  # a quant at least that much smaller can exist
        tips.append(f"a smaller quant of this model (about {format_size(missing)} smaller) would fit")
    else:
        tips.append("a smaller model, or a machine with more free memory")
    return tips


# Applying and checking ------------------------------------------------------------------


def apply_plan(settings: ModelSettings, p: Plan, extra_overrides: tuple[TensorOverride, ...] = ()) -> ModelSettings:
    """The load settings that carry out ``p``: context, GPU layers, KV types, flash
    attention and tensor overrides (a user's own ``-ot`` rules first: llama.cpp takes the
    first rule that matches)."""
    return replace(
        settings,
        n_ctx=p.n_ctx,
        n_gpu_layers=p.n_gpu_layers,
        type_k=p.type_k,  # type: ignore[arg-type]
        type_v=p.type_v,  # type: ignore[arg-type]
        flash_attn=p.flash_attn,
        tensor_overrides=extra_overrides + p.tensor_overrides,
    )


def check_estimates(p: Plan, report: LoadReport) -> tuple[EstimateCheck, ...]:
    """The plan's model, KV and compute figures against what llama.cpp allocated."""
    model = sum(d.weights_bytes + d.experts_bytes for d in p.devices)
    compute = sum(d.compute_bytes for d in p.devices)
    return (
        EstimateCheck("model", model, report.model_bytes, MODEL_TOLERANCE),
        EstimateCheck("kv", p.kv_bytes, report.kv_bytes, KV_TOLERANCE),
        EstimateCheck("compute", compute, report.compute_bytes, COMPUTE_TOLERANCE),
    )
