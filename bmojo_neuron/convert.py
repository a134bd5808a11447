"""Weight conversion from Llama-layout checkpoints (Llama, Mistral) to B'MOJO attention layers."""

from __future__ import annotations

import torch


def from_llama_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``LlamaForCausalLM``/``MistralForCausalLM`` state dict for a B'MOJO model of
    ``attention``/``sliding_attention`` layers: ``layers.i.self_attn.*`` becomes ``layers.i.mixer.*``;
    every other name is the same."""
    return {name.replace(".self_attn.", ".mixer."): tensor for name, tensor in state_dict.items()}
