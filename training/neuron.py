"""Trainium routes, with guarded imports (the Neuron SDK is not installable on development machines).

UNVERIFIED: written from the Neuron SDK documentation; never run on a Trainium host.

- ``xla`` (torch-neuronx + PyTorch/XLA, SDK <= 2.28): the HF Trainer's own PyTorch/XLA path does the
  device placement, the gradient all-reduce and ``xm.mark_step``; here we only set the compiler flags
  and join the ``xla`` process group that torchrun workers need. Launch::

      torchrun --nproc_per_node 32 -m training.train --device xla --preset 125m --task lm --data DATA

- ``neuron`` (native TorchNeuron backend, ``device="neuron"``): standard ``torch.distributed`` DDP/FSDP
  apply; the SDK's torch package registers the device. Launch as for CPU/GPU with ``--device neuron``.

ZeRO-1 runs on the native route (``torch.distributed``'s ZeroRedundancyOptimizer, ``zero1.py``). On the
``xla`` route neither ZeRO-1 nor tensor parallelism through neuronx-distributed is implemented
(``train.zero1`` is refused there with a clear error): NxD's ZeRO-1 optimizer reduce-scatters the gradients
itself, so the all-reduce that accelerate performs on XLA would have to go, and tensor parallelism needs the
model built from NxD's parallel layers; neither can be checked without the SDK.
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
    _import("torch_neuronx")
    if device == "xla":
        _import("torch_xla")
        os.environ.setdefault("NEURON_CC_FLAGS", _DEFAULT_CC_FLAGS)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            _import("torch_xla.distributed.xla_backend")  # registers the "xla" backend with torch.distributed
            dist.init_process_group("xla")


__all__ = ["prepare"]
