"""Training memory of a preset on one accelerator core, and whether it needs gradient checkpointing.

Activation memory is measured, not modelled: a one- and a two-layer model of the preset's shape run one
training forward pass, and every tensor autograd saves for the backward pass is counted (parameters
excluded, each storage once). The difference is one decoder layer's saved activations, which grow linearly
with the tokens of a batch. The pass runs on PyTorch's meta device (shapes only, seconds even for the 1.4b
widths); on the CPU the count is the same (tested to 1%). The rest is arithmetic, in :func:`estimate`.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import torch

from bmojo_neuron import BMojoConfig, BMojoForCausalLM

GIB = 2**30
# HBM of one core as the SDK schedules it: Trn1 16 GiB per NeuronCore (32 GiB, 2 cores); Trn2 96 GiB over 8
# physical cores, and a logical core at LNC=2 (neuronx-cc's default there) spans two of them.
CORE_HBM_GIB = {"trn1": 16, "trn2": 24}
# fp32 master weights and gradients, and AdamW's two fp32 moments (bf16 autocast keeps the weights in fp32).
WEIGHT_GRAD_BYTES, ADAM_BYTES = 8, 8


def saved_activation_bytes(model: torch.nn.Module, input_ids: torch.Tensor) -> int:
    """Bytes of the tensors that one training forward of ``model`` saves for backward (parameters excluded)."""
    saved: list[weakref.ref] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(weakref.ref(tensor))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(input_ids, labels=input_ids)
    # Counted while the graph (held by `output`) is alive: what a branch of the forward saved and then dropped
    # is gone, and no storage can have been freed and its address reused. A storage's identity is its C
    # object (`_cdata`): meta tensors have no data pointer to tell them apart.
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    sizes = {}
    for ref in saved:
        tensor = ref()
        if tensor is not None:
            storage = tensor.untyped_storage()
            sizes[storage._cdata] = storage.nbytes()
    del output
    return sum(size for key, size in sizes.items() if key not in params)


def layer_bytes_per_token(
    config: BMojoConfig, layer_type: str | None = None, tokens: int | None = None, device: str = "meta"
) -> float:
    """Saved activation bytes of one ``layer_type`` decoder layer (default: the first of ``config``) per token,
    fp32, measured at ``config``'s widths.

    ``tokens`` defaults to four of the layer's longest windows, so per-chunk and per-window state is
    amortised as in a long training sequence.
    """
    tokens = tokens or 4 * max(config.chunk_size, config.sliding_window)
    layer_type = layer_type or config.layer_types[0]
    counts = []
    for layers in (1, 2):
        small = copy.deepcopy(config)
        small.num_hidden_layers = layers
        small.layer_types = [layer_type] * layers
        small.vocab_size = 64  # the embedding and the logits cancel in the difference
        torch.manual_seed(0)
        with torch.device(device):
            model = BMojoForCausalLM(small).train()
            ids = torch.randint(0, 64, (1, tokens))
        counts.append(saved_activation_bytes(model, ids))
    return (counts[1] - counts[0]) / tokens


def mean_layer_bytes_per_token(config: BMojoConfig, device: str = "meta") -> float:
    """:func:`layer_bytes_per_token` averaged over ``config``'s layers (each layer type measured once)."""
    by_type = {t: layer_bytes_per_token(config, t, device=device) for t in set(config.layer_types)}
    return sum(by_type[t] for t in config.layer_types) / len(config.layer_types)


@dataclass
class MemoryEstimate:
    parameters: int
    states_gib: float  # weights, gradients and AdamW moments held by one core
    activations_gib: float  # without checkpointing
    checkpointed_gib: float  # with every layer checkpointed: layer inputs plus one layer recomputed
    core_gib: int

    @property
    def needs_checkpointing(self) -> bool:
        return self.states_gib + self.activations_gib > self.core_gib

    @property
    def fits_with_checkpointing(self) -> bool:
        return self.states_gib + self.checkpointed_gib <= self.core_gib


def estimate(
    config: BMojoConfig,
    parameters: int,
    seq_len: int,
    batch: int = 1,
    zero1_ranks: int = 1,
    device: str = "trn2",
    per_token: float | None = None,
) -> MemoryEstimate:
    """Memory of one core training ``config`` on ``batch`` sequences of ``seq_len`` tokens in bf16 autocast.

    Activations: the measured fp32 bytes per layer and token (``per_token``, default
    :func:`mean_layer_bytes_per_token`), halved for bf16 (an approximation: norms and
    softmax statistics stay fp32). States: 8 bytes per parameter for fp32 weights and gradients, and 8 for
    AdamW's moments divided over ``zero1_ranks``.
    """
    per_token = mean_layer_bytes_per_token(config) if per_token is None else per_token
    tokens = seq_len * batch
    layer = per_token / 2 * tokens
    activations = layer * config.num_hidden_layers
    checkpointed = config.num_hidden_layers * tokens * config.hidden_size * 2 + layer
    states = parameters * (WEIGHT_GRAD_BYTES + ADAM_BYTES / zero1_ranks)
    return MemoryEstimate(parameters, states / GIB, activations / GIB, checkpointed / GIB, CORE_HBM_GIB[device])


def preset_report(configs: dict[str, BMojoConfig], counts: dict[str, int], seq_len: int = 4096) -> list[str]:
    """Lines for ``--print-params``: per preset, one core's training memory at ``seq_len`` tokens, batch 1,
    bf16, without ZeRO-1, and whether gradient checkpointing is needed on a Trn1 and a Trn2 core."""
    lines = [
        f"training memory of one core at T={seq_len}, batch 1, bf16, AdamW without ZeRO-1 (estimate, GiB):",
        f"{'preset':>8}  {'weights+grads+adam':>18}  {'activations':>11}  {'checkpointed':>12}  needs checkpointing",
    ]
    for name, config in configs.items():
        per_token = mean_layer_bytes_per_token(config)
        by_device = {device: estimate(config, counts[name], seq_len, per_token=per_token, device=device)
                     for device in CORE_HBM_GIB}  # fmt: skip
        e = by_device["trn2"]
        verdict = ", ".join(
            f"{device} ({m.core_gib} GiB): "
            + ("yes" if m.needs_checkpointing else "no")
            + ("" if m.fits_with_checkpointing else " (does not fit even then: use --zero1)")
            for device, m in by_device.items()
        )
        lines.append(
            f"{name:>8}  {e.states_gib:>18.1f}  {e.activations_gib:>11.1f}  {e.checkpointed_gib:>12.1f}  {verdict}"
        )
    return lines


__all__ = [
    "CORE_HBM_GIB",
    "MemoryEstimate",
    "estimate",
    "layer_bytes_per_token",
    "mean_layer_bytes_per_token",
    "preset_report",
    "saved_activation_bytes",
]
