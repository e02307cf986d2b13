"""How fast a plan will generate and read a prompt, predicted before loading.

Generating a token reads, on every device in turn, the weights of the layers it holds —
of an MoE layer only the experts the router picks (``expert_used_count`` of
``expert_count``) — and the KV cache of the context so far; each device then hands the
hidden state to the next, across the network when a device is an RPC host's. So the time
of a token is the sum, over devices, of bytes read ÷ that device's read rate for their
type, plus a fixed step per device, plus per hop of the network its round trips and the
transfer. A prompt is read n_ubatch tokens at a time: there the arithmetic counts (2
flops per weight and token, the attention over the tokens before), at each device's
measured flops, and a hop carries n_ubatch hidden states.

The rates come from ``inference.device_speed`` (measured through ggml on this machine and
on each host, cached) or, for simulated devices, from published figures (``devices``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from inference.device_speed import DeviceSpeed
from inference.devices import Machine
from inference.model_shape import ModelShape, TensorInfo, TensorRole
from inference.planner import BYTES_PER_ELEMENT, RAM_DEVICE, Plan

CPU_DEVICE = "CPU"  # the speed entry of this machine's cores and RAM
RPC_TRIPS_PER_HOP = 2  # hidden state sent, graph computed and result fetched: two waits on the network
# llama.cpp's graph has about 40 operations per layer (Gemma 3: 727 for 18 layers), a dozen more
# in an MoE layer (routing, top-k, the expert products), and each costs a device a fixed step
# (a CPU's threads meet at a barrier after every one; a GPU launches a kernel)
NODES_PER_LAYER, NODES_PER_MOE_LAYER, NODES_OUTPUT = 40, 52, 10
# Fitted on this project's benchmark machine (bench/plan_speed.py; README, Performance), the
# parts the probe cannot see: choosing a token copies and scans a logit per vocabulary entry
# (3.6 ms a token for Gemma 3's 262,144), and a prompt reaches about two thirds of the probe's
# matrix-product flops (activations quantized on the fly, MoE products split per expert,
# flash attention in vector code)
SAMPLE_SECONDS_PER_VOCAB = 12e-9
PROMPT_EFFICIENCY = 0.65
F32 = 4
PROMPT_TOKENS = 2048  # the prompt a prompt speed is stated for


@dataclass(frozen=True)
class PredictedSpeed:
    generation_tps: float  # tokens per second at the start of a reply, short context
    generation_full_tps: float  # at a full context (the KV cache read every token)
    prompt_tps: float  # reading a prompt of PROMPT_TOKENS (or the context, if shorter)
    seconds_per_token: dict[str, float] = field(hash=False)  # per device, and per host link
    link_bytes_per_token: dict[str, int] = field(hash=False)  # per host
    dominant: str = ""  # what most of a token's time goes to, in words

    def describe(self) -> str:
        return (f"about {_rate(self.generation_tps)} tokens/s generation "
                f"({_rate(self.generation_full_tps)} at a full context), "
                f"{_rate(self.prompt_tps)} tokens/s prompt; most time: {self.dominant}")

    def as_dict(self) -> dict[str, object]:
        return {"generation_tps": self.generation_tps, "generation_full_tps": self.generation_full_tps,
                "prompt_tps": self.prompt_tps, "seconds_per_token": self.seconds_per_token,
                "link_bytes_per_token": self.link_bytes_per_token, "dominant": self.dominant}


def _rate(tps: float) -> str:
    return f"{tps:,.0f}" if tps >= 10 else f"{tps:.1f}"


def predict(shape: ModelShape, p: Plan, machine: Machine, *, n_ubatch: int = 512) -> PredictedSpeed | None:
    """The plan's speed, or None when a device it uses has no speed figures."""
    where = tensor_devices(shape, p)
    devices = set(where.values()) | {p.output_device}
    speeds = {dev: machine.speed(CPU_DEVICE if dev == RAM_DEVICE else dev) for dev in devices}
    if any(s is None for s in speeds.values()):
        return None
    rates: dict[str, DeviceSpeed] = {d: s for d, s in speeds.items() if s is not None}
    active = shape.expert_used_count / shape.expert_count if shape.is_moe else 1.0

    prompt_len = min(PROMPT_TOKENS, p.n_ctx)
    gen: dict[str, float] = {}  # seconds per generated token, by device
    prompt: dict[str, float] = {}  # seconds per prompt token, by device
    for tensor, device in where.items():
        speed = rates[device]
        share = active if tensor.role is TensorRole.EXPERTS else 1.0
        if tensor.role is TensorRole.EMBEDDING:
            if not shape.tied_embeddings:
                continue  # one row per token: nothing to speak of
            device = p.output_device  # it is the output head too, read whole every token
            speed = rates[device]
        read = tensor.n_bytes * share
        gen[device] = gen.get(device, 0.0) + read / _read_rate(speed, tensor.type)
        flops = 2 * _elements(tensor) * share
        # the output head makes logits for a prompt's last token only
        once = prompt_len if tensor.role in (TensorRole.OUTPUT, TensorRole.EMBEDDING) else 1
        prompt[device] = prompt.get(device, 0.0) + (flops / _flops(speed, tensor.type) + read / (
            _read_rate(speed, tensor.type) * n_ubatch)) / once
    steps = _step_seconds(shape, p, machine, rates)
    kv_full = _kv_seconds(shape, p, rates, fill=p.n_ctx)
    attention = _attention_seconds(shape, p, rates, mean_context=prompt_len / 2)

    links, link_bytes = _links(shape, p, machine, n_tokens=1)
    prompt_links, _ = _links(shape, p, machine, n_tokens=n_ubatch)
    per_token = {d: gen.get(d, 0.0) + steps[d] for d in rates}
    per_token["choosing the token"] = shape.n_vocab * SAMPLE_SECONDS_PER_VOCAB
    per_token.update({f"link to {h}": s for h, s in links.items()})
    gen_seconds = sum(per_token.values())
    full_seconds = gen_seconds + sum(kv_full.values())
    prompt_seconds = ((sum(prompt.values()) + sum(attention.values())) / PROMPT_EFFICIENCY
                      + (sum(steps.values()) + sum(prompt_links.values())) / n_ubatch)
    dominant = max(per_token, key=lambda k: per_token[k])
    return PredictedSpeed(
        generation_tps=1 / gen_seconds, generation_full_tps=1 / full_seconds, prompt_tps=1 / prompt_seconds,
        seconds_per_token=per_token, link_bytes_per_token=link_bytes,
        dominant=_in_words(dominant, per_token[dominant] / gen_seconds, p))


def _step_seconds(shape: ModelShape, p: Plan, machine: Machine, rates: dict[str, DeviceSpeed]) -> dict[str, float]:
    """Each device's fixed cost per token: its share of the graph's operations times its step.
    An RPC device's measured step is mostly the network round trip (counted with the link), so
    its operations cost at most what this machine's CPU takes per operation: the host is taken
    to be alike."""
    cpu = machine.speed(CPU_DEVICE)
    hosted = {d.device for d in p.offload_devices if d.host}
    nodes: dict[str, int] = {device: 0 for device in rates}
    layer_devices = p.layer_devices or (RAM_DEVICE,) * shape.n_layer
    for layer in shape.layers:
        nodes[layer_devices[layer.index]] += NODES_PER_MOE_LAYER if layer.expert_tensors else NODES_PER_LAYER
    nodes[p.output_device] += NODES_OUTPUT
    steps = {}
    for device, count in nodes.items():
        step = rates[device].step_seconds
        if device in hosted and cpu is not None:
            step = min(step, cpu.step_seconds)
        steps[device] = count * step
    return steps


def tensor_devices(shape: ModelShape, p: Plan) -> dict[TensorInfo, str]:
    """Every weight's device under the plan (RAM_DEVICE: this machine's RAM), as llama.cpp
    will place it: a layer's tensors with its layer, overridden experts where the override
    sends them, the embeddings in RAM, the output head with the output."""
    lifted = dict(zip(p.gpu_expert_tensors, p.lifted_to, strict=True))
    in_ram = set(p.cpu_expert_tensors)
    layer_devices = p.layer_devices or (RAM_DEVICE,) * shape.n_layer
    where: dict[TensorInfo, str] = {}
    for tensor in shape.global_tensors:
        where[tensor] = RAM_DEVICE if tensor.role is TensorRole.EMBEDDING else p.output_device
    for layer in shape.layers:
        home = layer_devices[layer.index]
        for tensor in layer.tensors:
            device = home
            if tensor.role is TensorRole.EXPERTS:
                if tensor.name in lifted:
                    device = lifted[tensor.name]
                elif layer.index in p.cpu_expert_layers or tensor.name in in_ram:
                    device = RAM_DEVICE
            where[tensor] = device
    return where


def _elements(tensor: TensorInfo) -> int:
    return math.prod(tensor.shape) if tensor.shape else 0


_RATE_TYPES = (("q8", "q8_0"), ("q6", "q6_K"), ("q5", "q6_K"), ("f", "f16"), ("bf", "f16"))


def _measured_type(ggml_type: str) -> str:
    """The measured type nearest in cost per byte: 4-bit and smaller quants as q4_K."""
    name = ggml_type.lower()
    return next((measured for prefix, measured in _RATE_TYPES if name.startswith(prefix)), "q4_K")


def _type_rate(rates: dict[str, float], ggml_type: str) -> float:
    """A device's rate (read bytes/s or flops) for weights of ``ggml_type``: the measured type
    nearest in cost, else the best measured."""
    return rates.get(_measured_type(ggml_type)) or max(rates.values())


def _read_rate(speed: DeviceSpeed, ggml_type: str) -> float:
    return _type_rate(speed.read_bytes_per_s, ggml_type)


def _flops(speed: DeviceSpeed, ggml_type: str) -> float:
    return _type_rate(speed.flops, ggml_type)


def _layer_kv_bytes_per_token(shape: ModelShape, p: Plan, index: int) -> float:
    k, v = shape.kv_elements_per_token(shape.layers[index])
    return k * _kv_element_bytes(p.type_k) + v * _kv_element_bytes(p.type_v)


def _kv_element_bytes(kv_type: str) -> float:
    return BYTES_PER_ELEMENT.get(kv_type, 2)


def _kv_seconds(shape: ModelShape, p: Plan, rates: dict[str, DeviceSpeed], fill: int) -> dict[str, float]:
    """Reading ``fill`` tokens of KV cache once, per device (a generated token attends to all)."""
    seconds: dict[str, float] = {}
    devices = p.layer_devices or (RAM_DEVICE,) * shape.n_layer
    for layer in shape.layers:
        device = devices[layer.index]
        read = _layer_kv_bytes_per_token(shape, p, layer.index) * fill
        seconds[device] = seconds.get(device, 0.0) + read / _read_rate(rates[device], "f16")
    return seconds


def _attention_seconds(shape: ModelShape, p: Plan, rates: dict[str, DeviceSpeed], mean_context: float
                       ) -> dict[str, float]:
    """A prompt token's attention to the ``mean_context`` tokens before it: 4 flops per head
    dimension and token (the scores and the weighted sum)."""
    seconds: dict[str, float] = {}
    devices = p.layer_devices or (RAM_DEVICE,) * shape.n_layer
    per_layer = 2 * shape.n_head * (shape.key_length + shape.value_length) * mean_context
    for layer in shape.layers:
        if layer.n_head_kv == 0:
            continue
        device = devices[layer.index]
        seconds[device] = seconds.get(device, 0.0) + per_layer / _flops(rates[device], "f16")
    return seconds


def _links(shape: ModelShape, p: Plan, machine: Machine, n_tokens: int) -> tuple[dict[str, float], dict[str, int]]:
    """Per host: seconds and bytes per step of ``n_tokens`` tokens. Each run of layers on a
    host is a hop: the hidden states go there, the layers run, and they come back (llama.cpp's
    client waits on the network ``RPC_TRIPS_PER_HOP`` times); from one device of a host to the
    next, the host copies them itself, and the client waits once."""
    hosts = {d.device: d.host for d in p.offload_devices if d.host}
    order = [*(p.layer_devices or ()), p.output_device]
    trips: dict[str, int] = {}
    sent: dict[str, int] = {}
    hidden = shape.n_embd * F32 * n_tokens
    previous: str | None = None
    for device in order:
        if device != previous:
            here, before = hosts.get(device), hosts.get(previous or "")
            if here is not None and here == before:
                trips[here] += 1
            else:
                if here is not None:
                    trips[here] = trips.get(here, 0) + RPC_TRIPS_PER_HOP
                    sent[here] = sent.get(here, 0) + hidden
                if before is not None:
                    sent[before] = sent.get(before, 0) + hidden
        previous = device
    seconds: dict[str, float] = {}
    for host, count in trips.items():
        link = machine.link(host)
        if link is not None:
            seconds[host] = count * link.latency_s + sent.get(host, 0) / link.bytes_per_s
    return seconds, sent


def _in_words(key: str, share: float, p: Plan) -> str:
    labels = {d.device: d.label or d.device for d in p.devices}
    if key == "choosing the token":
        what = "choosing each token from the whole vocabulary"
    elif key.startswith("link to "):
        what = f"the network {key[len('link to '):]}"
    elif key == RAM_DEVICE:
        what = "reading weights from RAM"
    else:
        what = f"reading weights on {labels.get(key, key)}"
    return f"{what} ({share:.0%})"
