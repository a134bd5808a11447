"""Tiny B'MOJO models for the inference tests (windows and chunks of a few tokens, so short prompts cross them)."""

from __future__ import annotations

import torch

from bmojo_neuron import BMojoConfig, BMojoForCausalLM, ops

WINDOW = 4
CHUNK = 4


def tiny_config(layer_types, **overrides) -> BMojoConfig:
    fields = dict(
        vocab_size=300,  # the byte-level tokenizer has 263 tokens
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=len(layer_types),
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=list(layer_types),
        sliding_window=WINDOW,
        chunk_size=CHUNK,
        eidetic_topk=2,
        eidetic_slots=3,
        ssm_state_size=8,
        ssm_num_heads=2,
        ssm_head_dim=8,
        max_position_embeddings=256,
        pad_token_id=256,
        bos_token_id=257,
        eos_token_id=258,
    )
    fields.update(overrides)
    return BMojoConfig(**fields)


def tiny_model(layer_types, seed: int = 0, **overrides) -> BMojoForCausalLM:
    """A random tiny model. The eidetic score's learned part starts at zero; randomise it so that
    selection depends on more than the innovation. The SSM output gate starts at 1; randomise it so that a
    path that forgets to multiply by it differs."""
    torch.manual_seed(seed)
    model = BMojoForCausalLM(tiny_config(layer_types, **overrides)).eval()
    for module in model.modules():
        if hasattr(module, "score_proj"):
            torch.nn.init.normal_(module.score_proj.weight, std=0.5)
        if getattr(module, "ssm_gate", None) is not None:
            torch.nn.init.normal_(module.ssm_gate, mean=1.0, std=0.5)
    return model


@torch.no_grad()
def full_logits(model, ids, attention_mask=None):
    """The specification: one full forward without a cache, on the reference ops."""
    with ops.use_kernels("reference"):
        return model(ids, attention_mask=attention_mask).logits


# The kv of an empty eidetic entry is unspecified (attention masks it); compare states without them.
_EMPTY_MARKER = {"mem_kv": "mem_prio", "pend_kv": "pend_prio", "chunk_kv": "chunk_score"}


def comparable_state(names, tensors) -> dict:
    """``{name: tensor}`` with the keys/values of empty eidetic entries zeroed."""
    state = dict(zip(names, tensors))
    for name, t in list(state.items()):
        prefix, _, leaf = name.rpartition(".")
        if leaf in _EMPTY_MARKER:
            marker = state[f"{prefix}.{_EMPTY_MARKER[leaf]}"]
            state[name] = torch.where(torch.isfinite(marker)[..., None, None, None], t, 0.0)
        elif leaf == "chunk_innov":  # the raw innovation of an empty chunk slot is unspecified too
            state[name] = torch.where(torch.isfinite(state[f"{prefix}.chunk_score"]), t, 0.0)
    return state
