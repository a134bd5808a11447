"""The inference state of a B'MOJO model: one fixed-size state per layer, built from ``config.layer_types``.

Each layer's mixer class says what its state holds (``empty_state`` in :mod:`bmojo_neuron.layers`: the
module of each layer type documents the tensors and their shapes); every tensor is batch-first, so that
reordering beams, selecting rows and moving devices are one rule for all of them (:class:`BMojoLayerState`).
Shared by all layers: ``positions`` (B,) int64, the number of real (unpadded) tokens each row has seen, which
is also the position of its next token. Every shape is fixed once allocated, except the key/value cache of
``attention`` layers, so an attention-free model's state costs the same after 10 or 10 million tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.cache_utils import Cache

from .configuration_bmojo import BMojoConfig
from .layers import MIXERS


class BMojoLayerState:
    """The state of one layer: named tensors whose leading dim is the batch (see the module docstring)."""

    # Attributes `transformers.Cache` reads from its layers.
    is_compileable = False
    is_croppable = False
    supports_early_init = False
    is_initialized = True

    def __init__(self, layer_type: str, config: BMojoConfig):
        self.layer_type = layer_type
        self.config = config
        self.mixer_class = MIXERS[layer_type]
        self.is_sliding = not self.mixer_class.state_grows
        self.tensors: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self.tensors[name] = value

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.tensors.items())
        return f"BMojoLayerState({self.layer_type}: {shapes})"

    def allocate(self, batch: int, dtype: torch.dtype, device: torch.device) -> None:
        """Create the empty state for ``batch`` rows."""
        self.dtype = dtype
        self.tensors = self.mixer_class.empty_state(self.config, batch, dtype, device)

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace every tensor ``t`` by ``fn(t)`` (batch reordering, device moves)."""
        self.tensors = {name: fn(t) for name, t in self.tensors.items()}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    # --- the per-layer interface of `transformers.Cache`
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.apply(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def reset(self) -> None:
        """Back to the empty state, keeping the batch size, dtype and device."""
        if self.tensors:
            first = next(iter(self.tensors.values()))
            self.allocate(first.shape[0], self.dtype, first.device)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a B'MOJO state summarises the past; it cannot be cropped")

    def offload(self) -> None: ...

    def prefetch(self) -> None: ...

    def get_max_length(self) -> int:
        return -1


class BMojoCache(Cache):
    """Constant-size inference state of a :class:`~bmojo_neuron.BMojoForCausalLM` (growing only for
    ``attention`` layers). Tensors are allocated on the first forward that uses the cache.

    Works with ``model.generate`` (greedy, sampling, ``num_return_sequences``, beam search, left padding,
    ``prefill_chunk_size``) and with direct calls: ``model(ids, cache=cache, use_cache=True)``
    processes ``ids`` after everything the cache has seen.
    """

    def __init__(self, config: BMojoConfig):
        super().__init__(layers=[BMojoLayerState(t, config) for t in config.layer_types])
        self.config = config
        self.positions: torch.Tensor | None = None  # (batch,) int64 real tokens seen per row
        self.steps = 0  # columns processed so far, padding included (what `generate` calls the cache length)
        # Every row's position when the host knows it without reading a tensor: 0 after `allocate`/`reset`,
        # advanced by calls without an attention_mask, None (unknown) after any masked call or `load_tensors`.
        # Decoding uses it to skip work that a known position makes unnecessary (bmojo_neuron.fast_decode).
        self.host_position: int | None = None
        # The fused decode step checks its folded weights against the parameters once per cache (at its first
        # fused step after allocate/reset/load_tensors), not at every token: weights changed in the middle of
        # a generation are not noticed (the state was computed with the old ones anyway).
        self.fused_weights_checked = False

    @property
    def constant_size(self) -> bool:
        """True when no layer's state grows with the tokens seen (no ``attention`` layer)."""
        return not any(layer.mixer_class.state_grows for layer in self.layers)

    @property
    def is_allocated(self) -> bool:
        return self.positions is not None

    def allocate(self, batch: int, dtype: torch.dtype, device: torch.device) -> None:
        for layer in self.layers:
            layer.allocate(batch, dtype, device)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)
        self.steps = 0
        self._start_over(host_position=0)

    def _start_over(self, host_position: int | None) -> None:
        """A new state (allocated, reset or loaded): what the host knows of the position, and the fused
        weights to be checked again at the next fused step."""
        self.host_position = host_position
        self.fused_weights_checked = False

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.steps

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    @property
    def batch_size(self) -> int:
        return -1 if self.positions is None else self.positions.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes held by the state (every layer, plus the position counters)."""
        extra = 0 if self.positions is None else self.positions.numel() * self.positions.element_size()
        return sum(layer.nbytes for layer in self.layers) + extra

    def _apply_batch(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if self.positions is None:
            return
        for layer in self.layers:
            layer.apply(fn)
        self.positions = fn(self.positions)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._apply_batch(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._apply_batch(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._apply_batch(lambda t: t.repeat_interleave(repeats, dim=0))

    def reset(self) -> None:
        """Back to the empty state (same batch size, dtype and device)."""
        for layer in self.layers:
            layer.reset()
        if self.positions is not None:
            self.positions = torch.zeros_like(self.positions)
        self.steps = 0
        self._start_over(host_position=None if self.positions is None else 0)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a B'MOJO state summarises the past; it cannot be cropped")

    # --- explicit tensors, for exported graphs (torch.export / Neuron tracing)
    def state_names(self) -> list[str]:
        """Names of :meth:`to_tensors`'s outputs, in order: ``positions`` then ``layers.<i>.<name>``."""
        names = ["positions"]
        for i, layer in enumerate(self.layers):
            names += [f"layers.{i}.{name}" for name in layer.tensors]
        return names

    def to_tensors(self) -> list[torch.Tensor]:
        """The whole state as a flat list of tensors (order of :meth:`state_names`)."""
        if self.positions is None:
            raise ValueError("the cache is not allocated yet; run a forward or call allocate() first")
        return [self.positions] + [t for layer in self.layers for t in layer.tensors.values()]

    def load_tensors(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...], steps: int = 0) -> None:
        """Inverse of :meth:`to_tensors` (the cache must be allocated, to know the names)."""
        names = self.state_names()
        if len(tensors) != len(names):
            raise ValueError(f"expected {len(names)} state tensors, got {len(tensors)}")
        it = iter(tensors)
        self.positions = next(it)
        for layer in self.layers:
            layer.tensors = {name: next(it) for name in layer.tensors}
        self.steps = steps
        self._start_over(host_position=None)


__all__ = ["BMojoCache", "BMojoLayerState"]
