"""The layers of a B'MOJO model, one module per mixer family; :data:`MIXERS` is the one table from a layer
type's name to its mixer class.

Every mixer class owns its whole story (``docs/architecture.md``):

- ``forward(hidden, tokens, state=None) -> (out, aux_loss or None)``: the whole sequence when ``state`` is
  None (training, the specification), else the new tokens after ``state`` (prefill, chunked prefill,
  decoding), updating it;
- ``empty_state(config, batch, dtype, device) -> dict`` (static): the tensors of its fresh state, every one
  batch-first with a fixed shape (only ``attention``'s key/value cache grows), so that reordering beams or
  moving devices is one rule for every layer (:class:`bmojo_neuron.cache.BMojoLayerState`).
"""

from __future__ import annotations

from .attention import BMojoAttention, FullAttention, SlidingAttention
from .bmojo import BMojoMixer, FadingAttention, TokenGate
from .common import BMojoMLP, BMojoRMSNorm, Tokens
from .eidetic import BMojoEideticMemory
from .ssm import BMojoSSM, SSMMixer

MIXERS = {
    "attention": FullAttention,
    "sliding_attention": SlidingAttention,
    "ssm": SSMMixer,
    "bmojo_f": FadingAttention,
    "bmojo": BMojoMixer,
}

__all__ = [
    "MIXERS",
    "BMojoAttention",
    "BMojoEideticMemory",
    "BMojoMLP",
    "BMojoMixer",
    "BMojoRMSNorm",
    "BMojoSSM",
    "FadingAttention",
    "FullAttention",
    "SSMMixer",
    "SlidingAttention",
    "TokenGate",
    "Tokens",
]
