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
5. A draft model (speculative decoding) runs for every token, so it goes wholly on one of
   this machine's GPUs when it fits there beside the main model's layers (their attention,
   shared weights and KV cache) — before the main model's experts, which run only in part,
   claim the rest; else in RAM. Its weights, KV cache and compute buffer count on that device.
6. A vision model's projector goes wholly on this machine's first GPU when the plan uses one
   (llama.cpp's multimodal library puts the whole image encoder on the main GPU) and it fits
   there, before the layers are shared out; else in RAM. Its weights and an estimate of its
   compute buffer count there; each image then takes ``tokens_per_image`` of the context.

Sizes of the KV cache and compute buffers follow llama.cpp's own arithmetic (cells are
the context rounded up to 256, in every layer: Enclave loads with ``swa_full``);
``verify`` compares them with what llama.cpp logs after a real load.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from inference.devices import GiB, GpuDevice, Machine, format_size
from inference.load_report import EstimateCheck, LoadReport
from inference.model_shape import LayerShape, ModelShape
from inference.projector_info import ProjectorInfo
from inference.protocol import DRAFT_MAX_CONTEXT, KvCacheType, ModelSettings, TensorOverride

KV_CELL_PAD = 256
MODEL_TOLERANCE, KV_TOLERANCE, COMPUTE_TOLERANCE = 0.03, 0.03, 0.25
# How the graph allocator shares the compute buffers out between devices follows the graph's
# splits (each split's inputs are copied in), which the plan does not model: per device, only
# the total is held to COMPUTE_TOLERANCE
DEVICE_COMPUTE_TOLERANCE = 0.5
BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4, "f16": 2, "bf16": 2, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
    "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32,
}
QUANTIZED_KV = {"q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"}
RAM_DEVICE = "RAM"
MAX_DEVICES = 16  # llama.cpp's LLAMA_MAX_DEVICES: the most devices one model may be split over


@dataclass(frozen=True)
class DraftSize:
    """A draft model's memory, read from its GGUF (``draft_size``): its weights, the K and V
    elements its KV cache holds per token of context (bytes follow the request's KV types) and
    its compute buffer for one ubatch. Its context is the main model's, up to DRAFT_MAX_CONTEXT."""

    weights_bytes: int
    k_elements_per_token: int
    v_elements_per_token: int
    compute_bytes: int = 0

    def kv_bytes(self, n_ctx: int, req: PlanRequest) -> int:
        cells = _pad(min(n_ctx, DRAFT_MAX_CONTEXT), KV_CELL_PAD)
        return (math.ceil(cells * self.k_elements_per_token * BYTES_PER_ELEMENT[req.type_k])
                + math.ceil(cells * self.v_elements_per_token * BYTES_PER_ELEMENT[req.type_v]))

    def total_bytes(self, n_ctx: int, req: PlanRequest) -> int:
        return self.weights_bytes + self.kv_bytes(n_ctx, req) + self.compute_bytes


DRAFT_COMPUTE_CTX = 4096  # the context a draft's compute buffer is estimated at (it grows little with more)


def draft_size(shape: ModelShape, n_ubatch: int = 512) -> DraftSize:
    """What a draft model of ``shape`` needs beside the main model (``PlanRequest.draft``)."""
    k = v = 0
    for layer in shape.layers:
        if layer.n_head_kv:
            layer_k, layer_v = shape.kv_elements_per_token(layer)
            k, v = k + layer_k, v + layer_v
    compute = compute_buffer_bytes(shape, min(DRAFT_COMPUTE_CTX, shape.context_length or DRAFT_COMPUTE_CTX),
                                   PlanRequest(n_ubatch=n_ubatch))
    return DraftSize(shape.total_bytes, k, v, compute)


@dataclass(frozen=True)
class ProjectorSize:
    """A vision projector's memory (``projector_size``): its weights and an estimate of the
    image encoder's compute buffer, and the context one image takes."""

    weights_bytes: int
    compute_bytes: int
    tokens_per_image: int
    tokens_estimated: bool = False  # an upper estimate (the projector follows the image's size)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.compute_bytes


def projector_size(info: ProjectorInfo) -> ProjectorSize:
    return ProjectorSize(info.weights_bytes, info.compute_bytes, info.tokens_per_image, info.tokens_estimated)


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
    draft: DraftSize | None = None  # a draft model loaded beside this one (speculative decoding)
    projector: ProjectorSize | None = None  # a vision projector loaded beside it


@dataclass(frozen=True)
class DeviceUse:
    device: str  # a device's stable id ("CUDA0", "RPC0[10.0.0.5:50052]"), or "RAM"
    budget_bytes: int  # free memory less the safety margin
    weights_bytes: int = 0  # non-expert weights (and, in RAM, the embeddings)
    experts_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    layers: int = 0  # how many of the model's layers it holds (the output head not counted)
    host: str | None = None  # the RPC host serving it
    label: str = ""  # for people: "CUDA0", "RPC0 on 10.0.0.5:50052", "RAM"
    draft_bytes: int = 0  # the draft model (weights, KV cache, compute), when it is here
    projector_bytes: int = 0  # the vision projector (weights, compute), when it is here

    @property
    def total_bytes(self) -> int:
        return (self.weights_bytes + self.experts_bytes + self.kv_bytes + self.compute_bytes + self.draft_bytes
                + self.projector_bytes)

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
    n_gpu_layers: int  # llama.cpp's count: the output head, then the last n - 1 layers
    gpu_device: str | None  # the device holding the last offloaded layer
    cpu_expert_layers: tuple[int, ...]  # offloaded layers whose experts all stay in RAM
    cpu_expert_tensors: tuple[str, ...]  # single expert tensors in RAM from a split layer
    gpu_expert_tensors: tuple[str, ...]  # expert tensors of CPU layers lifted into spare VRAM
    devices: tuple[DeviceUse, ...]  # the offload devices in llama.cpp's order (hosts first), RAM last
    kv_bytes: int
    type_k: str
    type_v: str
    flash_attn: bool
    fits: bool
    verdict: str
    suggestions: tuple[str, ...] = ()
    unified_memory: bool = False
    placement: str = ""  # in words: "runs on the CPU", "24 of 48 layers on the GPU, experts of 20 layers in RAM"
    lifted_to: tuple[str, ...] = ()  # the device of each of gpu_expert_tensors
    layer_devices: tuple[str, ...] = ()  # each layer's device id ("RAM": the CPU)
    output_device: str = RAM_DEVICE
    draft_device: str | None = None  # where the draft model goes: a device id or "RAM"; None: no draft
    draft: DraftSize | None = None
    projector_device: str | None = None  # where the vision projector goes: a device id or "RAM"; None: none
    projector: ProjectorSize | None = None

    @property
    def projector_on_gpu(self) -> bool:
        return self.projector_device is not None and self.projector_device != RAM_DEVICE

    def projector_words(self) -> str:
        """ "Projector 851 MB on CUDA0" ("" without one)."""
        if self.projector_device is None or self.projector is None:
            return ""
        where = "in RAM" if self.projector_device == RAM_DEVICE else "on " + next(
            (d.label or d.device for d in self.devices if d.device == self.projector_device), self.projector_device)
        return f"Projector {format_size(self.projector.total_bytes)} {where}"

    def image_words(self) -> str:
        """ "each image takes ~256 tokens of the context" ("" without a projector)."""
        if self.projector is None or not self.projector.tokens_per_image:
            return ""
        tokens = self.projector.tokens_per_image
        share = f" ({tokens * 100 / self.n_ctx:.1f}% of {self.n_ctx:,})" if self.n_ctx else ""
        return (f"each image takes {'up to ' if self.projector.tokens_estimated else ''}~{tokens:,} tokens of the "
                f"context{share}")

    @property
    def draft_bytes(self) -> int:
        return sum(d.draft_bytes for d in self.devices)

    @property
    def draft_on_gpu(self) -> bool:
        return self.draft_device is not None and self.draft_device != RAM_DEVICE

    @property
    def offload_devices(self) -> tuple[DeviceUse, ...]:
        """The devices llama.cpp is given, in its order (RAM is not one of them)."""
        return tuple(d for d in self.devices if d.device != RAM_DEVICE)

    @property
    def load_devices(self) -> tuple[DeviceUse, ...]:
        """The offload devices the plan puts something on: the ones llama.cpp is given."""
        return tuple(d for d in self.offload_devices if d.total_bytes)

    @property
    def tensor_split(self) -> tuple[int, ...]:
        """llama.cpp's ``tensor_split`` for ``load_devices``: the layers (the output head
        counted as one more) each holds. Proportions, taken exactly: layer j of the offloaded
        ones goes to the first device whose running total exceeds j."""
        return tuple(d.layers + (d.device == self.output_device) for d in self.load_devices)

    @property
    def rpc_hosts(self) -> tuple[str, ...]:
        """The RPC hosts the plan uses, in order: registered before the model loads."""
        return tuple(dict.fromkeys(d.host for d in self.load_devices if d.host))

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
        rules += [TensorOverride(f"^{re.escape(name)}$", device)
                  for name, device in zip(self.gpu_expert_tensors, self.lifted_to, strict=True)]
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
            "tensor_split": list(self.tensor_split),
            "rpc_hosts": list(self.rpc_hosts),
            "draft": None if self.draft_device is None else {"device": self.draft_device, "bytes": self.draft_bytes},
            "projector": None if self.projector_device is None or self.projector is None else {
                "device": self.projector_device, "bytes": self.projector.total_bytes,
                "tokens_per_image": self.projector.tokens_per_image,
                "tokens_estimated": self.projector.tokens_estimated},
            "devices": [
                {"device": d.device, "label": d.label, "host": d.host, "layers": d.layers,
                 "budget": d.budget_bytes, "weights": d.weights_bytes,
                 "experts": d.experts_bytes, "kv_cache": d.kv_bytes, "compute": d.compute_bytes,
                 "draft": d.draft_bytes, "projector": d.projector_bytes, "total": d.total_bytes, "fits": d.fits}
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


def compute_buffer_bytes(shape: ModelShape, n_ctx: int, req: PlanRequest, *, logits: bool = True) -> int:
    """llama.cpp's graph buffer for one ubatch on one device: the logits (``logits``: on the
    device with the output head), the residual stream, and the larger of the attention and
    feed-forward intermediates of one layer (the allocator reuses memory between layers)."""
    n_kv = _pad(n_ctx, KV_CELL_PAD)
    n_ub = min(req.n_ubatch, n_kv)
    f32 = 4
    output = shape.n_vocab * n_ub * f32 if logits else 0
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
    return output + residual + max(attention, ffn)


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
    draft = req.draft.total_bytes(n_ctx, req) if req.draft is not None else 0
    projector = req.projector.total_bytes if req.projector is not None else 0
    if not machine.gpus:
        ram = DeviceUse(RAM_DEVICE, _usable(machine.ram_free_bytes, req),
                        weights_bytes=shape.total_bytes - shape.expert_bytes, experts_bytes=shape.expert_bytes,
                        kv_bytes=sum(kv), compute_bytes=compute, label=RAM_DEVICE, draft_bytes=draft,
                        projector_bytes=projector)
        return _finish(shape, machine, req, n_ctx, 0, None, (), (), (), (ram,), sum(kv),
                       draft_device=RAM_DEVICE if req.draft is not None else None,
                       projector_device=RAM_DEVICE if req.projector is not None else None)
    if machine.unified_memory:
        return _plan_unified(shape, machine, req, n_ctx, kv, compute, draft, projector)

    devices = machine.offload_order
    layout = _layout(shape, devices, req, kv, compute)
    projector_device = RAM_DEVICE if req.projector is not None else None
    if req.projector is not None:
        layout, devices, projector_device = _place_projector(shape, devices, req, kv, compute, layout, projector)
    draft_device = RAM_DEVICE if req.draft is not None else None
    if req.draft is not None:
        layout, draft_device = _place_draft(shape, devices, req, kv, compute, layout, draft)
    return _plan_from(shape, machine, req, n_ctx, kv, compute, layout, draft_device, draft, projector_device,
                      projector)


def _place_projector(shape: ModelShape, devices: tuple[GpuDevice, ...], req: PlanRequest, kv: list[int],
                     compute: int, without: _Layout, projector_bytes: int
                     ) -> tuple[_Layout, tuple[GpuDevice, ...], str]:
    """The layout with the projector on this machine's first GPU (where llama.cpp's multimodal
    library puts it), when the plan uses that GPU and the projector fits there: the layers share
    out what it leaves. Else ``without`` and the projector in RAM. Also the devices as the draft
    model then finds them (the projector's memory taken)."""
    first = next((d for d in devices if not d.host), None)
    used = any(without.units) or bool(without.experts)  # the plan puts something on a device
    if first is None or not used or projector_bytes > _usable(first.free_bytes, req):
        return without, devices, RAM_DEVICE
    less = tuple(replace(d, free_bytes=d.free_bytes - projector_bytes) if d.ident == first.ident else d
                 for d in devices)
    return _layout(shape, less, req, kv, compute), less, first.ident


def _place_draft(shape: ModelShape, devices: tuple[GpuDevice, ...], req: PlanRequest, kv: list[int], compute: int,
                 without: _Layout, draft_bytes: int) -> tuple[_Layout, str]:
    """The layout with the draft model on one of this machine's GPUs (the one with the most
    free memory first), when that GPU holds it and still as many of the main model's layers
    as without it: only the experts give way. Else ``without`` and the draft in RAM."""
    local = sorted((d for d in devices if not d.host), key=lambda d: -d.free_bytes)
    for gpu in local:
        if draft_bytes > _usable(gpu.free_bytes, req):
            continue
        less = tuple(replace(d, free_bytes=d.free_bytes - draft_bytes) if d.ident == gpu.ident else d
                     for d in devices)
        layout = _layout(shape, less, req, kv, compute)
        if layout.n_gpu_layers >= without.n_gpu_layers:
            return layout, gpu.ident
    return without, RAM_DEVICE


def _usable(free_bytes: int, req: PlanRequest) -> int:
    """Free memory less the safety margin, never below zero: a device with less free
    memory than the margin has nothing usable, not a negative amount."""
    return max(0, free_bytes - req.margin_bytes)


@dataclass(frozen=True)
class _Layout:
    """Where the layers and experts go on a machine with offload devices."""

    n_gpu_layers: int
    units: tuple[tuple[int, ...], ...]  # per offload device: the layers it holds (n_layer: the output head)
    experts: dict[str, str]  # expert tensor -> device id, for every expert not in RAM
    ram_expert_bytes: int


def _layout(shape: ModelShape, devices: tuple[GpuDevice, ...], req: PlanRequest, kv: list[int],
            compute: int) -> _Layout:
    """The most layers offloaded (attention runs every token: the CPU is the last resort);
    for that count, as few experts in RAM as the devices allow; and of the layouts that
    leave as many in RAM, the one with the fewest layers on RPC hosts (the network is the
    slowest link). An RPC host holds whole layers, experts included — experts a host's GPU
    cannot hold would cross the network twice per layer and token; this machine's GPUs
    hold their layers' attention and as many of their experts as fit, the rest in RAM."""
    budgets = [_usable(d.free_bytes, req) for d in devices]
    local = [i for i, d in enumerate(devices) if not d.host][:MAX_DEVICES]
    remote = [i for i, d in enumerate(devices) if d.host][:MAX_DEVICES - len(local)]
    for n_gpu_layers in range(shape.n_layer + 1, -1, -1):
        units = _offloaded_units(shape.n_layer, n_gpu_layers)
        on_hosts = _fill_hosts(shape, units, [devices[i] for i in remote], [budgets[i] for i in remote], kv,
                               compute)
        most = sum(len(u) for u in on_hosts)
        if not local and most < len(units):
            continue
        if local and _split_local(shape, units[most:], [budgets[i] for i in local], kv, compute) is None:
            continue
        best: _Layout | None = None
        for k in range(most + 1) if local else (most,):
            here = _split_local(shape, units[k:], [budgets[i] for i in local], kv, compute)
            if here is None:
                continue
            hosts = _fill_hosts(shape, units[:k], [devices[i] for i in remote], [budgets[i] for i in remote], kv,
                                compute)
            if sum(len(held) for held in hosts) != k:
                continue  # the hosts cannot take exactly these: layers would be left on no device
            per_device: list[tuple[int, ...]] = [()] * len(devices)
            for i, held in zip(remote, hosts, strict=True):
                per_device[i] = held
            for i, held in zip(local, here, strict=True):
                per_device[i] = held
            candidate = _with_experts(shape, devices, budgets, per_device, kv, compute, req.cpu_moe_layers,
                                      n_gpu_layers)
            if best is None or candidate.ram_expert_bytes < best.ram_expert_bytes:
                best = candidate
        if best is not None:
            return best
    raise AssertionError("no layers offloaded always fits")  # pragma: no cover


def _offloaded_units(n_layer: int, n_gpu_layers: int) -> list[int]:
    """What llama.cpp offloads for ``n_gpu_layers``: the output head (unit ``n_layer``) first,
    then the last layers — the units from ``n_layer + 1 - n_gpu_layers`` on."""
    return list(range(max(n_layer + 1 - n_gpu_layers, 0), n_layer + 1))


def _unit_bytes(shape: ModelShape, unit: int, kv: list[int], *, experts: bool) -> int:
    if unit == shape.n_layer:
        return shape.output_head_bytes
    layer = shape.layers[unit]
    return layer.non_expert_bytes + kv[unit] + (layer.expert_bytes if experts else 0)


def _fill_hosts(shape: ModelShape, units: list[int], devices: list[GpuDevice], budgets: list[int], kv: list[int],
                compute: int) -> list[tuple[int, ...]]:
    """Whole layers on the hosts' devices: the most of ``units`` (from the first) that fit, on
    the first hosts (in the order they were added) that hold them — each host more is more
    round trips per token — shared out over those hosts' devices in proportion to their free
    memory, as llama.cpp's own split does."""
    hosts = list(dict.fromkeys(d.host for d in devices))
    best: list[tuple[int, ...]] = [()] * len(devices)
    for used in range(1, len(hosts) + 1):
        on = [i for i, d in enumerate(devices) if d.host in hosts[:used]]
        for count in range(len(units), sum(len(held) for held in best), -1):
            shares = _share(shape, units[:count], [budgets[i] for i in on], kv, compute, experts=True)
            if shares is not None:
                best = [()] * len(devices)
                for i, held in zip(on, shares, strict=True):
                    best[i] = held
                break
        if sum(len(held) for held in best) == len(units):
            break
    return best


def _share(shape: ModelShape, units: list[int], budgets: list[int], kv: list[int], compute: int, *,
           experts: bool) -> list[tuple[int, ...]] | None:
    """``units`` shared out over devices in order, in proportion to their usable memory (what
    is left after a compute buffer), each unit counted with or without its experts. None when a
    device's share does not fit."""
    if not units:
        return [()] * len(budgets)
    usable = [max(0, b - compute) for b in budgets]
    if not sum(usable):
        return None
    sizes = [_unit_bytes(shape, u, kv, experts=experts) for u in units]
    total = sum(sizes)
    shares: list[list[int]] = [[] for _ in budgets]
    device, placed, target = 0, 0, total * usable[0] / sum(usable)
    for unit, size in zip(units, sizes, strict=True):
        while device < len(budgets) - 1 and placed + size / 2 > target:
            device += 1
            target += total * usable[device] / sum(usable)
        shares[device].append(unit)
        placed += size
    for share, budget in zip(shares, budgets, strict=True):
        if share and compute + sum(_unit_bytes(shape, u, kv, experts=experts) for u in share) > budget:
            return None
    return [tuple(share) for share in shares]


def _split_local(shape: ModelShape, units: list[int], budgets: list[int], kv: list[int], compute: int
                 ) -> list[tuple[int, ...]] | None:
    """This machine's GPUs' share of ``units``, in proportion to their usable memory, counting
    attention and KV cache only: experts fill what is left afterwards."""
    return _share(shape, units, budgets, kv, compute, experts=False)


def _with_experts(shape: ModelShape, devices: tuple[GpuDevice, ...], budgets: list[int],
                  units: list[tuple[int, ...]], kv: list[int], compute: int, cpu_moe_layers: int | None,
                  n_gpu_layers: int) -> _Layout:
    """Expert tensors for each device. A host's device holds all of its layers' experts. A
    GPU here fills what its layers leave with their experts, tensor by tensor from its last
    layer down, skipping any that does not fit; then experts of layers left on the CPU are
    lifted into what is still free (the last GPU first). Manual mode (``cpu_moe_layers``)
    keeps the experts of the first N layers in RAM and every other offloaded one on its GPU."""
    experts: dict[str, str] = {}
    free = [0] * len(devices)
    for i, (device, held) in enumerate(zip(devices, units, strict=True)):
        if not held:
            continue
        layers = sorted((shape.layers[u] for u in held if u < shape.n_layer), key=lambda lyr: -lyr.index)
        if device.host:  # whole layers, but for manual mode's first N
            experts.update((t.name, device.ident) for layer in layers for t in layer.expert_tensors
                           if cpu_moe_layers is None or layer.index >= cpu_moe_layers)
            continue
        free[i] = budgets[i] - compute - sum(_unit_bytes(shape, u, kv, experts=False) for u in held)
        for layer in layers:
            for tensor in layer.expert_tensors:
                wanted = (layer.index >= cpu_moe_layers if cpu_moe_layers is not None
                          else tensor.n_bytes <= free[i])
                if wanted:
                    experts[tensor.name] = device.ident
                    free[i] -= tensor.n_bytes
    offloaded = {u for held in units for u in held}
    gpus_with_layers = [i for i in reversed(range(len(devices))) if units[i] and not devices[i].host]
    if cpu_moe_layers is None and gpus_with_layers:  # their compute buffers run what is lifted
        for layer in sorted(shape.layers, key=lambda lyr: -lyr.index):
            if layer.index in offloaded:
                continue
            for tensor in layer.expert_tensors:
                target = next((i for i in gpus_with_layers if tensor.n_bytes <= free[i]), None)
                if target is not None:
                    experts[tensor.name] = devices[target].ident
                    free[target] -= tensor.n_bytes
    in_ram = shape.expert_bytes - sum(t.n_bytes for layer in shape.layers for t in layer.expert_tensors
                                      if t.name in experts)
    return _Layout(n_gpu_layers, tuple(units), experts, in_ram)


def _plan_from(shape: ModelShape, machine: Machine, req: PlanRequest, n_ctx: int, kv: list[int], compute: int,
               layout: _Layout, draft_device: str | None = None, draft_bytes: int = 0,
               projector_device: str | None = None, projector_bytes: int = 0) -> Plan:
    devices = machine.offload_order
    layer_device = [RAM_DEVICE] * shape.n_layer
    output_device = RAM_DEVICE
    uses = []
    for device, held in zip(devices, layout.units, strict=True):
        for unit in held:
            if unit == shape.n_layer:
                output_device = device.ident
            else:
                layer_device[unit] = device.ident
        layers = [u for u in held if u < shape.n_layer]
        expert_bytes = sum(t.n_bytes for layer in shape.layers for t in layer.expert_tensors
                           if layout.experts.get(t.name) == device.ident)
        uses.append(DeviceUse(
            device.ident, _usable(device.free_bytes, req),
            weights_bytes=sum(shape.layers[u].non_expert_bytes for u in layers)
            + (shape.output_head_bytes if shape.n_layer in held else 0),
            experts_bytes=expert_bytes, kv_bytes=sum(kv[u] for u in layers),
            compute_bytes=compute_buffer_bytes(shape, n_ctx, req, logits=shape.n_layer in held) if held else 0,
            layers=len(layers), host=device.host, label=device.label,
            draft_bytes=draft_bytes if device.ident == draft_device else 0,
            projector_bytes=projector_bytes if device.ident == projector_device else 0))
    placed_weights = sum(u.weights_bytes for u in uses)
    placed_experts = sum(u.experts_bytes for u in uses)
    duplicated = shape.output_head_bytes - shape.output_bytes if output_device != RAM_DEVICE else 0
    ram_use = DeviceUse(RAM_DEVICE, _usable(machine.ram_free_bytes, req),
                        weights_bytes=shape.total_bytes - shape.expert_bytes - placed_weights + duplicated,
                        experts_bytes=shape.expert_bytes - placed_experts,
                        kv_bytes=sum(kv) - sum(u.kv_bytes for u in uses),
                        compute_bytes=_ram_compute(shape, n_ctx, req, layout, layer_device, output_device),
                        label=RAM_DEVICE, draft_bytes=draft_bytes if draft_device == RAM_DEVICE else 0,
                        projector_bytes=projector_bytes if projector_device == RAM_DEVICE else 0)
    on_device = {i for i, where in enumerate(layer_device) if where != RAM_DEVICE}
    whole, partial, lifted = _summarise(shape.layers, on_device, layout.experts)
    holder = next((d.ident for d, held in zip(reversed(devices), reversed(layout.units), strict=True) if held), None)
    return _finish(shape, machine, req, n_ctx, layout.n_gpu_layers, holder, whole, partial,
                   tuple(name for name, _ in lifted), (*uses, ram_use), sum(kv),
                   lifted_to=tuple(device for _, device in lifted), layer_devices=tuple(layer_device),
                   output_device=output_device, draft_device=draft_device, projector_device=projector_device)


def _ram_compute(shape: ModelShape, n_ctx: int, req: PlanRequest, layout: _Layout, layer_device: list[str],
                 output_device: str) -> int:
    """The CPU's graph buffer: a whole layer's when the CPU runs layers or experts left in RAM,
    else only the inputs and the hand-offs between devices."""
    if RAM_DEVICE in layer_device or layout.ram_expert_bytes:
        return compute_buffer_bytes(shape, n_ctx, req, logits=output_device == RAM_DEVICE)
    return host_compute_bytes(shape, req)


def _summarise(layers: tuple[LayerShape, ...], on_device: set[int], experts: dict[str, str]
               ) -> tuple[tuple[int, ...], tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The overrides a placement needs: offloaded layers whose experts all stay in RAM,
    single expert tensors of offloaded layers in RAM, and expert tensors of CPU layers
    lifted onto a device (with that device)."""
    whole = tuple(sorted(
        lyr.index for lyr in layers
        if lyr.index in on_device and lyr.expert_tensors and not any(t.name in experts for t in lyr.expert_tensors)
    ))
    partial = tuple(t.name for lyr in sorted(layers, key=lambda lyr: -lyr.index) if lyr.index in on_device
                    and lyr.index not in whole for t in lyr.expert_tensors if t.name not in experts)
    lifted = tuple((t.name, experts[t.name]) for lyr in sorted(layers, key=lambda lyr: -lyr.index)
                   if lyr.index not in on_device for t in lyr.expert_tensors if t.name in experts)
    return whole, partial, lifted


def _plan_unified(shape: ModelShape, machine: Machine, req: PlanRequest, n_ctx: int, kv: list[int],
                  compute: int, draft_bytes: int, projector_bytes: int) -> Plan:
    gpu = machine.gpu
    assert gpu is not None
    pool = _usable(min(gpu.free_bytes, machine.ram_free_bytes), req)
    use = DeviceUse(gpu.ident, pool, shape.total_bytes - shape.expert_bytes, shape.expert_bytes, sum(kv), compute,
                    layers=shape.n_layer, label=gpu.label, draft_bytes=draft_bytes, projector_bytes=projector_bytes)
    return _finish(shape, machine, req, n_ctx, shape.n_layer + 1, gpu.ident, (), (), (), (use,), sum(kv),
                   layer_devices=(gpu.ident,) * shape.n_layer, output_device=gpu.ident,
                   draft_device=gpu.ident if req.draft is not None else None,
                   projector_device=gpu.ident if req.projector is not None else None)


def _finish(shape: ModelShape, machine: Machine, req: PlanRequest, n_ctx: int, n_gpu_layers: int,
            gpu_name: str | None, cpu_layers: tuple[int, ...], cpu_tensors: tuple[str, ...],
            gpu_tensors: tuple[str, ...], devices: tuple[DeviceUse, ...], kv_bytes: int, *,
            lifted_to: tuple[str, ...] = (), layer_devices: tuple[str, ...] = (),
            output_device: str = RAM_DEVICE, draft_device: str | None = None,
            projector_device: str | None = None) -> Plan:
    fits = all(d.fits for d in devices)
    result = Plan(n_ctx=n_ctx, n_layer=shape.n_layer, n_gpu_layers=n_gpu_layers, gpu_device=gpu_name,
                  cpu_expert_layers=cpu_layers, cpu_expert_tensors=cpu_tensors, gpu_expert_tensors=gpu_tensors,
                  devices=devices,
                  kv_bytes=kv_bytes, type_k=req.type_k, type_v=req.type_v, flash_attn=req.flash_attn,
                  fits=fits, verdict="", unified_memory=machine.unified_memory, lifted_to=lifted_to,
                  layer_devices=layer_devices, output_device=output_device, draft_device=draft_device,
                  draft=req.draft, projector_device=projector_device, projector=req.projector)
    result = replace(result, placement=_placement(result, shape) + draft_words(result))
    if fits:
        return replace(result, verdict=_fits_verdict(result, shape))
    short = next(d for d in reversed(devices) if not d.fits)
    missing = short.total_bytes - short.budget_bytes
    where = ("memory" if machine.unified_memory else "RAM" if short.device == RAM_DEVICE
             else f"memory on {short.label}" if short.host else "VRAM")
    verdict = (f"Does not fit: needs {format_size(short.total_bytes)} of {where} but "
               f"{format_size(short.budget_bytes)} is usable ({format_size(missing)} missing) at a context of "
               f"{n_ctx:,} tokens.")
    return replace(result, verdict=verdict)


def _fits_verdict(p: Plan, shape: ModelShape) -> str:
    context = f"at a context of {p.n_ctx:,} tokens"
    if p.unified_memory:
        return f"Fits in unified memory: {format_size(p.devices[0].total_bytes)}{draft_words(p)} {context}."
    if _on_cpu_only(p):
        text = f"Fits: runs on the CPU, using {format_size(p.ram.total_bytes)} of RAM{draft_words(p)} {context}."
        return text if p.gpu is None else text + " The GPU has too little free memory for this model."
    return f"Fits: {p.placement}, {context}."


def draft_words(p: Plan) -> str:
    """", draft model on CUDA0 (0.5 GiB)": where the draft model goes, for people ("" without one)."""
    if p.draft_device is None:
        return ""
    where = "in RAM" if p.draft_device == RAM_DEVICE else "on " + next(
        (d.label or d.device for d in p.devices if d.device == p.draft_device), p.draft_device)
    return f", draft model {where} ({format_size(p.draft_bytes)})"


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
    on_gpu = sum(1 for where in p.layer_devices if where != RAM_DEVICE)
    where = _layer_holders(p)
    if on_gpu == 0:  # llama.cpp offloads the output head first: with room for nothing more, only it
        return f"the output head on the GPU, all {shape.n_layer} layers on the CPU"
    layers = (f"all {shape.n_layer} layers on {where}" if on_gpu == shape.n_layer
              else f"{on_gpu} of {shape.n_layer} layers on {where}, the rest on the CPU")
    if not shape.is_moe:
        return layers
    whole, part = _expert_layers_in_ram(p, shape)
    if not whole and not part:
        return layers + (", experts included" if on_gpu == shape.n_layer
                         else f", all experts on {'the GPU' if where == 'the GPU' else 'those devices'}")
    if whole == sum(1 for layer in shape.layers if layer.expert_tensors):
        return layers + ", all experts in RAM"
    text = f"experts of {whole} layer{'' if whole == 1 else 's'}" if whole else "part of the experts of"
    if whole and part:
        text += f" (and part of {part} more)"
    elif part:
        text += f" {part} layer{'' if part == 1 else 's'}"
    return f"{layers}, {text} in RAM"


def _layer_holders(p: Plan) -> str:
    """ "the GPU" when one GPU of this machine holds the offloaded layers; else each device
    with its count: "3 devices (RPC0 on 10.0.0.5:50052: 20, CUDA0: 20, CUDA1: 8)"."""
    holders = [d for d in p.offload_devices if d.layers]
    if len(holders) <= 1:
        return "the GPU" if not holders or not holders[0].host else holders[0].label
    return f"{len(holders)} devices ({', '.join(f'{d.label}: {d.layers}' for d in holders)})"


def _expert_layers_in_ram(p: Plan, shape: ModelShape) -> tuple[int, int]:
    """(layers whose experts are all in RAM, layers whose experts are split between RAM and VRAM)."""
    on_gpu = {i for i, where in enumerate(p.layer_devices) if where != RAM_DEVICE}
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
    """The load settings that carry out ``p``: context, GPU layers, the devices and their
    split, the RPC hosts to reach them, KV types, flash attention and tensor overrides (a
    user's own ``-ot`` rules first: llama.cpp takes the first rule that matches)."""
    return replace(
        settings,
        n_ctx=p.n_ctx,
        n_gpu_layers=p.n_gpu_layers,
        type_k=p.type_k,  # type: ignore[arg-type]
        type_v=p.type_v,  # type: ignore[arg-type]
        flash_attn=p.flash_attn,
        tensor_overrides=extra_overrides + p.tensor_overrides,
        rpc_hosts=p.rpc_hosts,
        devices=tuple(d.device for d in p.load_devices),
        tensor_split=tuple(float(n) for n in p.tensor_split),
        draft_gpu_layers=-1 if p.draft_on_gpu else 0,
        draft_device=p.draft_device if p.draft_on_gpu else None,
        projector_gpu=p.projector_on_gpu if p.projector is not None else settings.projector_gpu,
    )


def check_estimates(p: Plan, report: LoadReport) -> tuple[EstimateCheck, ...]:
    """The plan's model, KV and compute figures against what llama.cpp allocated: in all, and
    per device when the plan uses more than one ("model on RPC0[10.0.0.5:50052]")."""
    # A mapped file's CPU buffer is the span from its first tensor in RAM to its last, tensors
    # loaded onto devices in between included: with a model split, RAM's share is not comparable.
    mapped = any(name.endswith("_Mapped") for name in report.model_buffers) and bool(p.offload_devices)
    weighed = p.offload_devices if mapped else p.devices
    weights, kv, compute = _draft_parts(p)  # llama.cpp logs the draft model's buffers with the main one's

    def draft(d: DeviceUse, part: int) -> int:
        return part if d.device == p.draft_device else 0

    checks = [
        EstimateCheck("model on devices" if mapped else "model",
                      sum(d.weights_bytes + d.experts_bytes + draft(d, weights) for d in weighed),
                      sum(_on(report.model_buffers, d.device) for d in weighed), MODEL_TOLERANCE),
        EstimateCheck("kv", p.kv_bytes + kv, report.kv_bytes, KV_TOLERANCE),
        EstimateCheck("compute", sum(d.compute_bytes for d in p.devices) + compute, report.compute_bytes,
                      COMPUTE_TOLERANCE),
    ]
    used = [d for d in p.devices if d.total_bytes]
    if len(used) > 1:
        for d in used:
            checks += [] if mapped and d.device == RAM_DEVICE else [
                EstimateCheck(f"model on {d.device}", d.weights_bytes + d.experts_bytes + draft(d, weights),
                              _on(report.model_buffers, d.device), MODEL_TOLERANCE)]
            checks += [
                EstimateCheck(f"kv on {d.device}", d.kv_bytes + draft(d, kv), _on(report.kv_buffers, d.device),
                              KV_TOLERANCE),
                EstimateCheck(f"compute on {d.device}", d.compute_bytes + draft(d, compute),
                              _on(report.compute_buffers, d.device), DEVICE_COMPUTE_TOLERANCE),
            ]
    return tuple(checks)


def _draft_parts(p: Plan) -> tuple[int, int, int]:
    """The draft model's weights, KV cache and compute buffer in ``p`` (zeros without one)."""
    if p.draft is None or p.draft_device is None:
        return 0, 0, 0
    kv = p.draft.kv_bytes(p.n_ctx, PlanRequest(type_k=p.type_k, type_v=p.type_v))  # type: ignore[arg-type]
    return p.draft.weights_bytes, kv, p.draft.compute_bytes


def _on(buffers: dict[str, int], device: str) -> int:
    """What llama.cpp's log says ``device`` got: RAM is every CPU buffer ("CPU", "CPU_Mapped",
    "CPU_REPACK"); a device's buffers carry its id ("CUDA0", "RPC0[10.0.0.5:50052]")."""
    if device == RAM_DEVICE:
        return sum(size for name, size in buffers.items() if name.startswith("CPU"))
    return buffers.get(device, 0)
