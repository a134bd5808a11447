"""Trainium routes, with guarded imports (the Neuron SDK is not installable on development machines).

Never run on a Trainium host. The ``xla`` route is run on PyTorch/XLA's CPU device (``PJRT_DEVICE=CPU``,
where torch-neuronx is not needed) by ``make xla-check``: the HF Trainer's XLA path, checkpoints, exact
resume and ZeRO-1. What only a Neuron host shows (neuronx-cc, the Neuron runtime, collectives across
NeuronCores) is unverified.

- ``xla`` (torch-neuronx + PyTorch/XLA, SDK <= 2.28): the HF Trainer's own PyTorch/XLA path does the
  device placement, the gradient all-reduce and ``xm.mark_step``; here we only set the compiler flags
  and join the ``xla`` process group that torchrun workers need. Launch::

      torchrun --nproc_per_node 32 -m training.train --device xla --preset 125m --task lm --data DATA

- ``neuron`` (native TorchNeuron backend, ``device="neuron"``): standard ``torch.distributed`` DDP/FSDP
  apply; the SDK's torch package registers the device. Launch as for CPU/GPU with ``--device neuron``.

ZeRO-1 (``train.zero1``) runs on both routes: ``torch.distributed``'s ZeroRedundancyOptimizer on the
native one, PyTorch/XLA's (the class neuronx-distributed's ``NeuronZero1Optimizer`` extends) on ``xla``
(``zero1.py``). Tensor parallelism through neuronx-distributed is not implemented: it needs the model
built from NxD's parallel layers, which cannot be checked without the SDK (``from_pretrained(...,
tp_plan)`` with ``torch.distributed`` is the tested tensor-parallel path, for inference).
"""

from __future__ import annotations

import importlib
import os

import torch.distributed as dist

from .config import ConfigError, RunConfig

# Neuron's documented compiler setting for transformer training graphs.
_DEFAULT_CC_FLAGS = "--model-type transformer"


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"the Neuron route needs {module!r}, which does not import here: {e}") from None


def prepare(config: RunConfig, device: str) -> None:
    """Import the SDK packages of ``device`` and set up the process group before the Trainer starts."""
    if not (device == "xla" and os.environ.get("PJRT_DEVICE") == "CPU"):
        _import("torch_neuronx")  # registers the Neuron PJRT device; not needed on PyTorch/XLA's CPU device
    if device == "xla":
        _import("torch_xla")
        os.environ.setdefault("NEURON_CC_FLAGS", _DEFAULT_CC_FLAGS)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            _import("torch_xla.distributed.xla_backend")  # registers the "xla" backend with torch.distributed
            dist.init_process_group("xla")


__all__ = ["prepare"]
