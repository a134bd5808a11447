"""The language-modelling arms and their sizing: every arm gets the same non-embedding parameter count.

An *arm* is one architecture in the comparison: a B'MOJO stack of one layer type (or a hybrid), or a
peer model from transformers. All arms share the vocabulary (byte-level), the residual width, the
depth (Mamba2: twice the depth, as in the Mamba papers, since its blocks have no MLP), the heads and
the window; what differs is solved so that the **non-embedding** parameter counts match:

- B'MOJO arms, Llama, Mistral: the SwiGLU MLP width (``intermediate_size``);
- Mamba2 (expansion 2, the Mamba default; ``expand`` must be an integer in transformers): the SSM
  state size ``N`` (Mamba-2 itself uses large states, 64 to 256).

The count grows monotonically with either knob, so a bisection over meta-device counts finds the
value nearest the target (``solve_width``).
The target is the count of the reference arm (``bmojo``, whose mixer is the largest) at the shape's
``intermediate_size``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Mamba2Config,
    Mamba2ForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
)

from bmojo_neuron import BMojoConfig, BMojoForCausalLM

# arm name -> (family, B'MOJO layer pattern or None). Patterns repeat to the depth; "hybrid" is the
# usual SSM/attention hybrid (see ``hybrid_layer_types``).
HYBRID = "hybrid"
ARMS: dict[str, tuple[str, str | None]] = {
    "attention": ("bmojo", "A"),
    "sliding_attention": ("bmojo", "W"),
    "ssm": ("bmojo", "S"),
    "bmojo_f": ("bmojo", "F"),
    "bmojo": ("bmojo", "B"),
    HYBRID: ("bmojo", None),
    "llama": ("llama", None),
    "mistral": ("mistral", None),
    "mamba2": ("mamba2", None),
}
# Arms of the language-modelling benchmark only (the recall benchmark keeps ARMS): B'MOJO layer patterns
# that are preset candidates, and today's bmojo with the attention-only readout (no gated SSM output).
PATTERN_ARMS: dict[str, tuple[str, str | None]] = {"SSSB": ("bmojo", "SSSB"), "SB": ("bmojo", "SB")}
# The expansion-2 bmojo with other SSM-output gates (with the vector gate at 1 the layer did not learn MQAR recall
# in 1500 steps): ``_g0``/``_g01`` the vector gate starting at 0/0.1; ``_in*`` the token gate (named "input" in
# the screening runs of lm_gate_screen*) starting at 0.05, 0.2, 0.5 in every layer; ``_in05L`` at 0.5, the last
# layer at 0.05 (for 4 layers). ``SSSB_e2_in02``: the preset pattern with the token gate at 0.2. These ran with
# the innovation standardised within its chunk and pin it; ``*_raw``: the same with the raw innovation.
_VECTOR = {"ssm_output_gate": "vector", "eidetic_innovation_norm": "chunk"}
_TOKEN = {"ssm_output_gate": "token", "eidetic_innovation_norm": "chunk"}
_RAW = {**_TOKEN, "ssm_output_gate_init": 0.2, "eidetic_innovation_norm": "none"}
GATE_ARMS: dict[str, tuple[str, dict]] = {  # arm -> (layer pattern, config fields); every one at expansion 2
    "bmojo_e2_g0": ("B", {**_VECTOR, "ssm_output_gate_init": 0.0}),
    "bmojo_e2_g01": ("B", {**_VECTOR, "ssm_output_gate_init": 0.1}),
    "bmojo_e2_in005": ("B", {**_TOKEN, "ssm_output_gate_init": 0.05}),
    "bmojo_e2_in02": ("B", {**_TOKEN, "ssm_output_gate_init": 0.2}),
    "bmojo_e2_in05": ("B", {**_TOKEN, "ssm_output_gate_init": 0.5}),
    "bmojo_e2_in05L": ("B", {**_TOKEN, "ssm_output_gate_init": [0.5, 0.5, 0.5, 0.05]}),
    "SSSB_e2_in02": ("SSSB", {**_TOKEN, "ssm_output_gate_init": 0.2}),
    "bmojo_e2_in02_raw": ("B", _RAW),
    "SSSB_e2_in02_raw": ("SSSB", _RAW),
    "bmojo_e2_in005_raw": ("B", {**_RAW, "ssm_output_gate_init": 0.05}),
}
# Each gate variant arm -> the VARIANTS suffix of its SSM width (its ssm arm for the targets: ``ssm_e2``).
GATE_VARIANT_ARMS: dict[str, str] = dict.fromkeys(GATE_ARMS, "_e2")
ABLATION_ARMS: dict[str, tuple[str, str | None]] = {
    "bmojo_nogate": ("bmojo", "B"),
    **{arm: ("bmojo", pattern) for arm, (pattern, _) in GATE_ARMS.items()},
}
# Variants of the B'MOJO arms (suffix -> config overrides), each arm ``<base><suffix>`` with its MLP width
# re-solved to the common parameter count. The Mamba2 arm has twice the depth, an SSM inner width of twice the
# residual (expand 2) and a solved state size of 63, so the gap to it may be the SSM's size, not the layer:
# ``_n64`` is a Mamba-2-sized state (N = 64 instead of 16), ``_e2`` twice the SSM heads (inner width 256).
VARIANTS: dict[str, dict] = {"_n64": {"ssm_state_size": 64}, "_e2": {"ssm_num_heads": 8}}
VARIANT_BASES = ("ssm", "bmojo", "bmojo_f", "SSSB", "SB")
VARIANT_ARMS: dict[str, tuple[str, str | None]] = {
    base + suffix: {**ARMS, **PATTERN_ARMS}[base] for suffix in VARIANTS for base in VARIANT_BASES
}
LM_ARMS: dict[str, tuple[str, str | None]] = {**ARMS, **PATTERN_ARMS, **ABLATION_ARMS, **VARIANT_ARMS}
CONFIG_OVERRIDES: dict[str, dict] = {
    "bmojo_nogate": {"ssm_output_gate": "none"},
    **{arm: {"ssm_num_heads": 8, **fields} for arm, (_, fields) in GATE_ARMS.items()},
    **{base + suffix: overrides for suffix, overrides in VARIANTS.items() for base in VARIANT_BASES},
}
REFERENCE_ARM = "bmojo"
PEER_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mamba2": "Mamba2ForCausalLM"}


@dataclass(frozen=True)
class LMShape:
    """What every arm shares. ``intermediate_size`` is the reference arm's MLP width (sets the target)."""

    vocab_size: int = 264  # the byte-level tokenizer's 263 ids, rounded up to a multiple of 8
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    sliding_window: int = 64  # raw window of sliding_attention / bmojo_f / bmojo, and Mistral's window
    chunk_size: int = 64
    eidetic_slots: int = 32
    eidetic_topk: int = 4
    ssm_heads: int = 4
    ssm_head_dim: int = 32
    ssm_state_size: int = 16
    conv_kernel: int = 4
    rope_theta: float = 10000.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def hybrid_layer_types(num_layers: int) -> list[str]:
    """``ssm`` layers with every 4th layer ``attention`` (at least one: the last), as in Jamba/Zamba-style hybrids."""
    types = ["attention" if i % 4 == 3 else "ssm" for i in range(num_layers)]
    if "attention" not in types:
        types[-1] = "attention"
    return types


def _bmojo_config(shape: LMShape, pattern: str | None, width: int, **overrides) -> BMojoConfig:
    """The B'MOJO config of ``pattern``; ``overrides`` (an arm's ``CONFIG_OVERRIDES``) win over the shape's fields."""
    layers = {"layer_pattern": pattern} if pattern else {"layer_types": hybrid_layer_types(shape.num_layers)}
    fields = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=width,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        **layers,
        sliding_window=shape.sliding_window,
        chunk_size=shape.chunk_size,
        eidetic_slots=shape.eidetic_slots,
        eidetic_topk=shape.eidetic_topk,
        ssm_num_heads=shape.ssm_heads,
        ssm_head_dim=shape.ssm_head_dim,
        ssm_state_size=shape.ssm_state_size,
        conv_kernel=shape.conv_kernel,
        rope_theta=shape.rope_theta,
        initializer_range=shape.initializer_range,
        tie_word_embeddings=shape.tie_word_embeddings,
        max_position_embeddings=1 << 16,
        use_cache=False,
    )
    return BMojoConfig(**{**fields, **overrides})


def _llama_like(cls, shape: LMShape, width: int, **extra):
    return cls(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=width,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        rope_theta=shape.rope_theta,
        rms_norm_eps=1e-6,
        initializer_range=shape.initializer_range,
        tie_word_embeddings=shape.tie_word_embeddings,
        max_position_embeddings=1 << 16,
        use_cache=False,
        **extra,
    )


MAMBA2_EXPAND = 2


def _mamba2_config(shape: LMShape, state_size: int) -> Mamba2Config:
    inner = MAMBA2_EXPAND * shape.hidden_size
    return Mamba2Config(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=2 * shape.num_layers,  # Mamba convention: two mixer blocks per Transformer layer
        num_heads=inner // shape.ssm_head_dim,
        head_dim=shape.ssm_head_dim,
        expand=MAMBA2_EXPAND,
        n_groups=1,
        state_size=state_size,
        conv_kernel=shape.conv_kernel,
        chunk_size=shape.chunk_size,
        initializer_range=shape.initializer_range,
        tie_word_embeddings=shape.tie_word_embeddings,
        use_cache=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )


def arm_config(arm: str, shape: LMShape, width: int) -> PretrainedConfig:
    """The config of ``arm`` at ``width`` (MLP width, or the SSM state size for Mamba2)."""
    if arm not in LM_ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(LM_ARMS)}")
    family, pattern = LM_ARMS[arm]
    if family == "bmojo":
        return _bmojo_config(shape, pattern, width, **CONFIG_OVERRIDES.get(arm, {}))
    if family == "llama":
        return _llama_like(LlamaConfig, shape, width)
    if family == "mistral":
        return _llama_like(MistralConfig, shape, width, sliding_window=shape.sliding_window)
    return _mamba2_config(shape, width)


_MODEL_CLASSES = {
    BMojoConfig: BMojoForCausalLM,
    LlamaConfig: LlamaForCausalLM,
    MistralConfig: MistralForCausalLM,
    Mamba2Config: Mamba2ForCausalLM,
}


def build_model(config: PretrainedConfig) -> PreTrainedModel:
    """The causal LM for ``config`` (peers in their stock transformers classes, torch paths on CPU)."""
    config = copy.deepcopy(config)
    if not isinstance(config, BMojoConfig):
        config._attn_implementation = "sdpa" if not isinstance(config, Mamba2Config) else None
    return _MODEL_CLASSES[type(config)](config)


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the input embedding and the output head (the usual scaling-law count)."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def count_non_embedding(config: PretrainedConfig) -> int:
    """``non_embedding_params`` of the model built from ``config``, on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return non_embedding_params(build_model(config))


def solve_width(count: Callable[[int], int], target: int, multiple: int = 8, minimum: int | None = None) -> int:
    """The width (a multiple of ``multiple``, at least ``minimum``) whose ``count`` is nearest ``target``.

    ``count`` must increase with the width. Bisection over the multiples: the first one at or above
    the target and the one before it are compared; ties go to the smaller width.
    """
    lo = minimum if minimum is not None else multiple
    if count(lo) >= target:
        return lo
    hi = lo
    while count(hi) < target:  # grow until the target is bracketed
        hi = lo + 2 * (hi - lo) + multiple
    while hi - lo > multiple:  # invariant: count(lo) < target <= count(hi)
        mid = lo + (hi - lo) // (2 * multiple) * multiple
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda w: (abs(count(w) - target), w))


def sized_configs(arms: list[str], shape: LMShape) -> dict[str, tuple[PretrainedConfig, int]]:
    """``arm -> (config, non-embedding parameters)``, every arm sized to the reference arm's count."""
    target = count_non_embedding(arm_config(REFERENCE_ARM, shape, shape.intermediate_size))
    out = {}
    for arm in arms:

        def count(width: int, arm: str = arm) -> int:
            return count_non_embedding(arm_config(arm, shape, width))

        if arm == REFERENCE_ARM:
            width = shape.intermediate_size
        else:  # Mamba2's knob is the state size (steps of 1); MLP widths go in multiples of 8
            width = solve_width(count, target, multiple=1 if LM_ARMS[arm][0] == "mamba2" else 8)
        config = arm_config(arm, shape, width)
        out[arm] = (config, count_non_embedding(config))
    return out


def describe(config: PretrainedConfig) -> dict:
    """The fields that tell arms apart, for the results JSON."""
    keys = (
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "layer_types",
        "sliding_window",
        "chunk_size",
        "eidetic_slots",
        "eidetic_topk",
        "num_heads",
        "head_dim",
        "ssm_num_heads",
        "ssm_head_dim",
        "state_size",
        "ssm_state_size",
        "expand",
        "ssm_output_gate",
        "ssm_output_gate_init",
        "eidetic_innovation_norm",
    )
    d = config.to_dict()
    return {k: d[k] for k in keys if k in d and d[k] is not None}


__all__ = [
    "ARMS",
    "LM_ARMS",
    "LMShape",
    "arm_config",
    "build_model",
    "count_non_embedding",
    "describe",
    "hybrid_layer_types",
    "non_embedding_params",
    "sized_configs",
    "solve_width",
]
