"""Tiny B'MOJO configs and models: one definition for the tests, the Trainium gate and quick checks.

Tiny means that exact equivalence tests run in a fraction of a second on one CPU core while every mechanism
takes part: the sliding window and the chunk (8 tokens) are much shorter than a test sequence, so sequences
cross window and chunk edges and fill the eidetic memory; 4 query heads share 2 key/value heads (GQA). A test
that depends on a particular size (a window edge, an odd length, a tokenizer's vocabulary) passes that size as
an override, so the dependency is written where it is used.

    from bmojo_neuron.testing import BYTE_LEVEL_VOCAB, HYBRID, tiny_config, tiny_model

    config = tiny_config(["bmojo", "ssm"], sliding_window=4)
    model = tiny_model(HYBRID, **BYTE_LEVEL_VOCAB)  # fixed seed, eval mode

Only public names are used, so this module sees the package as a user does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bmojo_neuron import BMojoConfig, BMojoForCausalLM
from bmojo_neuron.configuration_bmojo import LAYER_TYPES
from bmojo_neuron.tokenization import NUM_BYTES, SPECIAL_TOKENS

# Every layer type once, in an order where each type follows a different one (the state handed from layer to
# layer crosses every pair of neighbouring families at least once).
HYBRID = ("bmojo", "attention", "ssm", "bmojo_f", "sliding_attention")

# The stacks a "for every layer type" test runs: two layers of each type (the second layer reads the first's
# output, so a layer that corrupts its input shows), and the hybrid. Keys are readable test ids.
LAYER_STACKS: dict[str, tuple[str, ...]] = {**{t: (t, t) for t in LAYER_TYPES}, "hybrid": HYBRID}

# Overrides for a model that reads the byte-level tokenizer's ids (bmojo_neuron.tokenization: 256 bytes, then
# the special tokens in order); the vocabulary has room to spare above its 263 tokens.
BYTE_LEVEL_VOCAB = dict(
    vocab_size=300,
    pad_token_id=NUM_BYTES + SPECIAL_TOKENS.index("<pad>"),
    bos_token_id=NUM_BYTES + SPECIAL_TOKENS.index("<bos>"),
    eos_token_id=NUM_BYTES + SPECIAL_TOKENS.index("<eos>"),
)

TINY_FIELDS = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    sliding_window=8,
    chunk_size=8,
    eidetic_topk=2,
    eidetic_slots=6,
    ssm_num_heads=2,
    ssm_head_dim=16,
    ssm_state_size=8,
    conv_kernel=4,
    # Larger than the default (0.02) so that attention is far from uniform and window edges show in the logits.
    initializer_range=0.2,
)


# The model of a tiny training run (``training.train``'s ``model.overrides`` on a preset's layer pattern): the
# sizes above, with 2 attention heads and 8 eidetic slots. A few optimizer steps take well under a second.
TINY_RUN_FIELDS = dict(
    hidden_size=TINY_FIELDS["hidden_size"],
    intermediate_size=TINY_FIELDS["intermediate_size"],
    num_attention_heads=2,
    ssm_num_heads=TINY_FIELDS["ssm_num_heads"],
    ssm_head_dim=TINY_FIELDS["ssm_head_dim"],
    sliding_window=TINY_FIELDS["sliding_window"],
    chunk_size=TINY_FIELDS["chunk_size"],
    eidetic_slots=8,
)


def tiny_config(layer_types: Sequence[str] = HYBRID, **overrides) -> BMojoConfig:
    """A tiny config with one layer per entry of ``layer_types``; ``overrides`` replace any config field."""
    if isinstance(layer_types, str) or not layer_types:
        raise ValueError(f"layer_types must be a non-empty list of layer types, got {layer_types!r}")
    # BMojoConfig keeps unknown keyword arguments as attributes, so a misspelt override would change nothing.
    defaults = BMojoConfig()
    unknown = sorted(k for k in overrides if not hasattr(defaults, k))
    if unknown:
        raise ValueError(f"tiny_config overrides name no BMojoConfig field: {', '.join(unknown)}")
    fields = {**TINY_FIELDS, "layer_types": list(layer_types), "num_hidden_layers": len(layer_types), **overrides}
    return BMojoConfig(**fields)


def tiny_model(
    layer_types: Sequence[str] = HYBRID, *, seed: int = 0, randomize_neutral_init: bool = True, **overrides
) -> BMojoForCausalLM:
    """A tiny model in eval mode, its weights drawn from ``torch.manual_seed(seed)``.

    With ``randomize_neutral_init`` (the default), the parameters that start at a neutral value get random
    ones: the eidetic score's learned part starts at zero, so selection would depend on the innovation alone;
    the SSM output gate starts at 1 (the token gate's logit at a constant), so a path that forgets to multiply by
    it (or by its data-dependent part) would still agree. Equivalence tests want neither blind spot.
    """
    config = tiny_config(layer_types, **overrides)
    torch.manual_seed(seed)
    model = BMojoForCausalLM(config).eval()
    if randomize_neutral_init:
        for module in model.modules():
            if hasattr(module, "score_proj"):
                torch.nn.init.normal_(module.score_proj.weight, std=0.5)
            if getattr(module, "ssm_gate", None) is not None:
                torch.nn.init.normal_(module.ssm_gate, mean=1.0, std=0.5)
            if getattr(module, "ssm_gate_proj", None) is not None:  # the token gate's logits then vary by token
                torch.nn.init.normal_(module.ssm_gate_proj.weight, std=0.5)
    return model


__all__ = [
    "BYTE_LEVEL_VOCAB",
    "HYBRID",
    "LAYER_STACKS",
    "LAYER_TYPES",
    "TINY_FIELDS",
    "TINY_RUN_FIELDS",
    "tiny_config",
    "tiny_model",
]
