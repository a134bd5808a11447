"""ZeRO-1 (``train.zero1``): each data-parallel rank keeps the AdamW state of its share of the parameters.

AdamW's two moments are 2x the fp32 weights; with ZeRO-1 a rank holds ``1 / world_size`` of them. The
gradients are still all-reduced by DDP and the weights are still replicated: after its local step each
rank broadcasts the parameters it owns (``torch.distributed.optim.ZeroRedundancyOptimizer``, which
works with every ``torch.distributed`` backend: gloo on CPU, NCCL, and the native Neuron backend).

Checkpoints stay in the format of an unsharded run: before saving, the shards are consolidated on rank 0
(``consolidate_state_dict``), which writes one ``optimizer.pt``; on resume every rank loads that file and
keeps its own partition. The file has the format of a plain AdamW checkpoint (tested: the moments equal
plain DDP's), so resuming it without ZeRO-1 or with another world size should work; that is not tested.

On the XLA route (torch-neuronx + PyTorch/XLA, SDK <= 2.28) the optimizer is PyTorch/XLA's
``ZeroRedundancyOptimizer`` (:func:`sharded_xla`; neuronx-distributed's ``NeuronZero1Optimizer`` and
optimum-neuron's trainer build on the same class). It does the whole data-parallel step itself:
reduce-scatter of the gradients, gradient clipping on the shards (its norm is all-reduced), the step on
the local shard, all-gather of the weights. So the Trainer must not all-reduce or clip first
(``BMojoTrainer`` skips both), and there is no consolidation: each rank saves and loads its own shard,
``rank{r}-of-{world}-optimizer.pt``, with its shard of the weights (PyTorch/XLA's ``save_master_weights``).
Tested on one CPU device (``make xla-check``, :mod:`tools.xla_check.trainer_runs`): equal to AdamW, and exact
resume; collectives across several devices were not run.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer


def _non_empty(param_groups) -> list:
    # The Trainer passes a no-weight-decay group even when it is empty; both ZeRO-1 classes reject empty groups.
    return [g for g in param_groups if not isinstance(g, dict) or g["params"]]


def sharded(optimizer_class: type[torch.optim.Optimizer]) -> type[ZeroRedundancyOptimizer]:
    """``optimizer_class`` made ZeRO-1, with an ordinary optimizer's constructor ``cls(param_groups, **defaults)``
    (what the Trainer's ``optimizer_cls_and_kwargs`` calls); each rank steps ``optimizer_class`` on its share."""

    class ZeRO1(ZeroRedundancyOptimizer):
        def __init__(self, params, **defaults):
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("ZeRO-1 needs torch.distributed initialised (launch with torchrun)")
            super().__init__(_non_empty(params), optimizer_class=optimizer_class, **defaults)

        def state_dict(self):
            if not self._all_state_dicts and not self.optim.state:
                # Before the first step there is nothing to gather, and accelerate reads the state (to move
                # it to the device) when it wraps the optimizer: the base class would raise there.
                return torch.optim.Optimizer.state_dict(self)
            return super().state_dict()

    ZeRO1.__name__ = ZeRO1.__qualname__ = f"ZeRO1{optimizer_class.__name__}"
    return ZeRO1


class XlaShards:
    """Marks PyTorch/XLA ZeRO-1 optimizers (torch_xla is imported only when one is built)."""

    last_grad_norm: torch.Tensor | None


def sharded_xla(optimizer_class: type[torch.optim.Optimizer], max_grad_norm: float) -> type[torch.optim.Optimizer]:
    """``optimizer_class`` made ZeRO-1 on PyTorch/XLA, same constructor as :func:`sharded`; it clips the
    gradients to ``max_grad_norm`` itself (0: no clipping) and keeps the norm in ``last_grad_norm``."""
    from torch_xla.distributed.zero_redundancy_optimizer import ZeroRedundancyOptimizer as XlaZeRO

    class ZeRO1XLA(XlaZeRO, XlaShards):
        def __init__(self, params, **defaults):
            super().__init__(
                _non_empty(params),
                optimizer_class=optimizer_class,
                grad_clipping=max_grad_norm > 0,
                max_norm=max_grad_norm if max_grad_norm > 0 else None,
                save_master_weights=True,
                **defaults,
            )
            # One tensor for the run, updated in place: the Trainer keeps a reference to it before the step
            # (its grad_norm) and reads it at logging time, after the step has computed the norm.
            self.last_grad_norm = torch.zeros((), device=self.device) if max_grad_norm > 0 else None

        def step(self, closure=None, **kwargs):
            loss = super().step(closure, **kwargs)
            if self.last_grad_norm is not None:
                self.last_grad_norm.copy_(self._grad_norm)
            return loss

    ZeRO1XLA.__name__ = ZeRO1XLA.__qualname__ = f"ZeRO1XLA{optimizer_class.__name__}"
    return ZeRO1XLA


def xla_shard_file(rank: int, world_size: int) -> str:
    """A rank's optimizer file in a checkpoint of a PyTorch/XLA ZeRO-1 run."""
    return f"rank{rank}-of-{world_size}-optimizer.pt"


def unwrap(optimizer) -> torch.optim.Optimizer:
    """The optimizer inside accelerate's / the Trainer's wrappers."""
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def is_sharded(optimizer) -> bool:
    """ZeRO-1 of ``torch.distributed`` (consolidated before saving)."""
    return isinstance(unwrap(optimizer), ZeroRedundancyOptimizer)


def is_sharded_xla(optimizer) -> bool:
    """ZeRO-1 of PyTorch/XLA (one shard file per rank)."""
    return isinstance(unwrap(optimizer), XlaShards)


def consolidate(optimizer) -> None:
    """Gather the shards on rank 0 (a collective: every rank must call it)."""
    unwrap(optimizer).consolidate_state_dict(to=0)


__all__ = ["consolidate", "is_sharded", "is_sharded_xla", "sharded", "sharded_xla", "unwrap", "xla_shard_file"]
