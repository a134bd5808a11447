"""Model size presets and parameter counting.

A preset is a dict of :class:`bmojo_neuron.BMojoConfig` fields. ``tiny`` trains in minutes on a laptop
CPU; ``small`` is ~25M parameters; ``125m`` .. ``1.4b`` follow the widths and depths of the paper's
model sizes (GPT-3 / Mamba conventions: 12 layers x 768, 24 x 1024, 24 x 1536, 24 x 2048) for Trainium.
Layers follow the pattern ``SSSB`` (``tiny``: ``SB``): ``ssm`` layers (an SSM, expansion 2, heads of 64) and
every fourth a ``bmojo`` layer (the SSM plus the shared attention projections and the eidetic memory), each
with a SwiGLU MLP; the MLP width was chosen so that the count with the byte-level vocabulary matches the
name (the paper used a ~50k-token vocabulary, so its embeddings were larger and its layers smaller).
The exact counts are printed by ``python -m training.train --preset NAME --print-params``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the preset table is read by the command-line parser, which must not import torch
    from bmojo_neuron import BMojoConfig, BMojoForCausalLM

# Shared by every preset unless overridden. Window = chunk (docs/layer.md: memory visible two chunks later).
# Three ssm layers, then a bmojo layer (gated SSM output), and SSMs twice as wide as the residual stream
# (expansion 2, as Mamba-2), chosen by `python -m benchmarks.lm` (results/lm_gated*.md, seeds 0/1/2, equal
# parameters): perplexity SSSB at expansion 2 3.799/3.775/3.774, all-bmojo 3.790/3.795/3.804, the ssm stack
# 3.822/3.791/3.823, against 3.944/3.899/3.923 for SSSB at expansion 1 and Mamba2 3.702/3.646/3.648. The MLP
# widths were re-solved so each preset keeps its parameter count.
_COMMON: dict[str, Any] = {
    "layer_pattern": "SSSB",
    "eidetic_topk": 4,
    "eidetic_policy": "topk",
    "eidetic_aux_loss_weight": 0.1,
    "ssm_state_size": 16,
    "conv_kernel": 4,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "layer_pattern": "SB",  # two layers: one of each, so the tiny preset keeps an eidetic memory
        "hidden_size": 64,
        "intermediate_size": 184,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "sliding_window": 16,
        "chunk_size": 16,
        "eidetic_slots": 32,
        "ssm_num_heads": 4,
        "ssm_head_dim": 32,
        "max_position_embeddings": 1024,
    },
    "small": {
        "hidden_size": 512,
        "intermediate_size": 1536,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "sliding_window": 64,
        "chunk_size": 64,
        "eidetic_slots": 64,
        "eidetic_topk": 8,
        "ssm_num_heads": 16,
        "ssm_head_dim": 64,
        "max_position_embeddings": 2048,
    },
    "125m": {
        "hidden_size": 768,
        "intermediate_size": 2616,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "sliding_window": 512,
        "chunk_size": 128,
        "eidetic_slots": 256,
        "eidetic_topk": 16,
        "ssm_num_heads": 24,
        "ssm_head_dim": 64,
        "ssm_state_size": 64,
        "max_position_embeddings": 8192,
    },
    "350m": {
        "hidden_size": 1024,
        "intermediate_size": 2232,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "sliding_window": 512,
        "chunk_size": 128,
        "eidetic_slots": 256,
        "eidetic_topk": 16,
        "ssm_num_heads": 32,
        "ssm_head_dim": 64,
        "ssm_state_size": 64,
        "max_position_embeddings": 8192,
    },
    "760m": {
        "hidden_size": 1536,
        "intermediate_size": 3064,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "sliding_window": 512,
        "chunk_size": 128,
        "eidetic_slots": 256,
        "eidetic_topk": 16,
        "ssm_num_heads": 48,
        "ssm_head_dim": 64,
        "ssm_state_size": 64,
        "max_position_embeddings": 8192,
    },
    "1.4b": {
        "hidden_size": 2048,
        "intermediate_size": 4464,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "sliding_window": 512,
        "chunk_size": 128,
        "eidetic_slots": 256,
        "eidetic_topk": 16,
        "ssm_num_heads": 64,
        "ssm_head_dim": 64,
        "ssm_state_size": 64,
        "max_position_embeddings": 8192,
    },
}


# Only `tiny` trains in minutes on a CPU; the others are for accelerators. A training step on the 2-core
# development CPU (fp32, torch 2.13) costs about 6 FLOPs per parameter per token at CPU_TRAIN_FLOPS, plus a
# per-token cost of the scans and memory updates that dominates for tiny models. Both constants are fitted
# to steps of 16 x 256 tokens: tiny ~1.6 s (measured), small 36-50 s (1000 steps took 10-14 h, issue 19).
CPU_PRESETS = ("tiny",)
CPU_TRAIN_FLOPS = 15e9
CPU_SECONDS_PER_TOKEN = 3.5e-4


def cpu_seconds_per_step(parameters: int, tokens: int) -> float:
    """Rough seconds of one training step of ``tokens`` tokens on a 2-core CPU (the start-up warning)."""
    return tokens * (CPU_SECONDS_PER_TOKEN + 6 * parameters / CPU_TRAIN_FLOPS)


def model_config(preset: str, vocab_size: int, overrides: dict[str, Any] | None = None, **tokens) -> BMojoConfig:
    """Build the :class:`BMojoConfig` of ``preset`` with ``overrides`` applied on top.

    ``overrides`` may hold any config field; ``layer_types`` or ``layer_pattern`` replaces the preset's
    pattern. ``tokens`` are the special-token ids (``pad_token_id=...``). Invalid values raise
    ``ValueError`` naming the field (from the config's own validation).
    """
    from bmojo_neuron import BMojoConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = {**_COMMON, **PRESETS[preset], "vocab_size": vocab_size, **tokens}
    overrides = dict(overrides or {})
    if overrides.get("layer_types") is not None:
        fields.pop("layer_pattern", None)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(fields) - set(BMojoConfig().to_dict()) - {"layer_pattern"})
    if unknown:
        raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
    return BMojoConfig(**fields)


def build_model(config: BMojoConfig) -> BMojoForCausalLM:
    """The one place that turns a config into a model (training, demo and benchmarks go through it)."""
    from bmojo_neuron import BMojoForCausalLM

    return BMojoForCausalLM(config)


def count_parameters(config: BMojoConfig) -> int:
    """Number of distinct parameters, counted on the meta device so the 1.4B preset allocates nothing."""
    import torch

    from bmojo_neuron import BMojoForCausalLM

    with torch.device("meta"):
        model = BMojoForCausalLM(config)
    return sum(p.numel() for p in model.parameters())  # .parameters() yields tied weights once


def match_parameters(config: BMojoConfig, target: int, multiple: int = 8) -> BMojoConfig:
    """Return a copy of ``config`` whose MLP width makes its parameter count closest to ``target``.

    Different mixers have different sizes; comparing layer types "at equal size" (as the MQAR
    benchmarks do, after Zoology) means giving the smaller mixers a wider MLP. The count is affine
    in ``intermediate_size``, so two counts give the slope and the solution directly.
    """

    def with_width(width: int) -> BMojoConfig:
        new = copy.deepcopy(config)
        new.intermediate_size = int(width)
        return new

    base, slope = count_parameters(with_width(multiple)), count_parameters(with_width(2 * multiple))
    slope -= base
    return with_width(max(multiple, round((target - base) / slope) * multiple + multiple))


__all__ = [
    "CPU_PRESETS",
    "PRESETS",
    "build_model",
    "cpu_seconds_per_step",
    "count_parameters",
    "match_parameters",
    "model_config",
]
