"""ZeRO-1 (``train.zero1``): each data-parallel rank keeps the AdamW state of its share of the parameters.

AdamW's two moments are 2x the fp32 weights; with ZeRO-1 a rank holds ``1 / world_size`` of them. The
gradients are still all-reduced by DDP and the weights are still replicated: after its local step each
rank broadcasts the parameters it owns (``torch.distributed.optim.ZeroRedundancyOptimizer``, which
works with every ``torch.distributed`` backend: gloo on CPU, NCCL, and the native Neuron backend).

Checkpoints stay in the format of an unsharded run: before saving, the shards are consolidated on rank 0
(``consolidate_state_dict``), which writes one ``optimizer.pt``; on resume every rank loads that file and
keeps its own partition. The file has the format of a plain AdamW checkpoint (tested: the moments equal
plain DDP's), so resuming it without ZeRO-1 or with another world size should work; that is not tested.

On the XLA route (torch-neuronx, SDK <= 2.28) the same flag is refused: there the sharded optimizer is
neuronx-distributed's (``NeuronZero1Optimizer``), which reduce-scatters the gradients itself, so the
Trainer's all-reduce and its per-rank optimizer files would both have to change; that needs an SDK to test.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer


def sharded(optimizer_class: type[torch.optim.Optimizer]) -> type[ZeroRedundancyOptimizer]:
    """``optimizer_class`` made ZeRO-1, with an ordinary optimizer's constructor ``cls(param_groups, **defaults)``
    (what the Trainer's ``optimizer_cls_and_kwargs`` calls); each rank steps ``optimizer_class`` on its share."""

    class ZeRO1(ZeroRedundancyOptimizer):
        def __init__(self, params, **defaults):
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("ZeRO-1 needs torch.distributed initialised (launch with torchrun)")
            groups = [g for g in params if not isinstance(g, dict) or g["params"]]  # drop empty groups
            super().__init__(groups, optimizer_class=optimizer_class, **defaults)

        def state_dict(self):
            if not self._all_state_dicts and not self.optim.state:
                # Before the first step there is nothing to gather, and accelerate reads the state (to move
                # it to the device) when it wraps the optimizer: the base class would raise there.
                return torch.optim.Optimizer.state_dict(self)
            return super().state_dict()

    ZeRO1.__name__ = ZeRO1.__qualname__ = f"ZeRO1{optimizer_class.__name__}"
    return ZeRO1


def unwrap(optimizer) -> torch.optim.Optimizer:
    """The optimizer inside accelerate's / the Trainer's wrappers."""
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def is_sharded(optimizer) -> bool:
    return isinstance(unwrap(optimizer), ZeroRedundancyOptimizer)


def consolidate(optimizer) -> None:
    """Gather the shards on rank 0 (a collective: every rank must call it)."""
    unwrap(optimizer).consolidate_state_dict(to=0)


__all__ = ["consolidate", "is_sharded", "sharded", "unwrap"]
