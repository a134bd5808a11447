"""Helpers of the cache, decoding and inference tests: their model sizes, the full-forward specification, states
compared without their unspecified entries."""

from __future__ import annotations

import torch

from bmojo_neuron import ops
from bmojo_neuron.testing import BYTE_LEVEL_VOCAB

# The sizes the cache, decoding and inference tests are written against, passed to ``tiny_model``: windows and
# chunks of 4 tokens so that short prompts cross them, a 3-slot eidetic memory that fills within a prompt, and
# the byte-level tokenizer's vocabulary (the saved model is served and generated from with that tokenizer).
SHORT_WINDOWS = dict(
    **BYTE_LEVEL_VOCAB,
    sliding_window=4,
    chunk_size=4,
    eidetic_slots=3,
    intermediate_size=48,
    ssm_head_dim=8,
    max_position_embeddings=256,
    initializer_range=0.02,
)


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
