"""Where a run executes: device, precision and the distributed strategy, as ``TrainingArguments`` fields.

Routes through the one entry point (``python -m training.train``, or ``torchrun ... -m training.train``):

- ``cpu`` / ``cuda``: plain PyTorch; under torchrun, DDP (gloo on CPU), optionally with ZeRO-1
  (``train.zero1``: the AdamW state sharded across ranks, ``zero1.py``), or FSDP2 (``--strategy fsdp``) on
  accelerators (accelerate does not shard CPU processes, so FSDP on CPU is refused with a clear error).
- ``xla``: torch-neuronx + PyTorch/XLA (Neuron SDK <= 2.28). The HF Trainer has a PyTorch/XLA path
  of its own (it detects ``torch_xla``); we add bf16 and static shapes (drop the last partial batch).
  ZeRO-1 (``train.zero1``) uses PyTorch/XLA's sharded optimizer there (``zero1.py``). With
  ``PJRT_DEVICE=CPU`` the route runs on the CPU without torch-neuronx (``make xla-check`` does).
- ``neuron``: the native PyTorch backend of newer SDKs (TorchNeuron, ``device="neuron"``), where
  ``torch.distributed`` DDP/FSDP apply as on any device (``neuron.py``).

The Neuron routes import their packages only when chosen, and fail with a clear message when the
packages are missing. They are written against the SDK documentation and have not been run (no
Trainium host here).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from .config import ConfigError, RunConfig


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_device(requested: str) -> str:
    """The device kind to train on; ``auto`` prefers Neuron (XLA, then native), then CUDA, then CPU."""
    if requested == "auto":
        if _has("torch_neuronx") and _has("torch_xla"):
            return "xla"
        if _has("torch_neuronx"):
            return "neuron"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "xla" and not _has("torch_xla"):
        raise ConfigError("train.device=xla needs torch-neuronx and torch-xla (Neuron SDK <= 2.28); not installed")
    if requested == "neuron" and not _has("torch_neuronx"):
        raise ConfigError("train.device=neuron needs torch-neuronx (native TorchNeuron backend); not installed")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available")
    return requested


def use_bf16(precision: str, device: str) -> bool:
    """bf16 where the device has it natively (Trainium, recent GPUs); fp32 on CPU unless asked."""
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    if device in ("xla", "neuron"):
        return True
    return device == "cuda" and torch.cuda.is_bf16_supported()


def training_arguments_fields(config: RunConfig, device: str) -> dict:
    """``TrainingArguments`` keyword arguments for the device and the strategy."""
    fields: dict = {"use_cpu": device == "cpu"}
    if device in ("xla", "neuron"):
        # Static shapes: a partial last batch would be a new graph to compile.
        fields["dataloader_drop_last"] = True
    strategy = "ddp" if config.train.strategy == "auto" else config.train.strategy
    if config.train.zero1:
        _check_zero1(strategy, device)
    # Refused in every launch mode (one process included), before anything starts.
    if strategy == "fsdp" and device == "xla":
        raise ConfigError("train.strategy=fsdp is not supported on the XLA route; use train.strategy=ddp")
    if strategy == "fsdp" and device == "cpu":
        # accelerate enables its FSDP plugin for accelerator processes only: on CPU processes the
        # Trainer would silently train with DDP (or, in one process, unsharded) instead.
        raise ConfigError(
            "train.strategy=fsdp needs an accelerator (CUDA, or Neuron with train.device=neuron): "
            "accelerate does not shard CPU processes; use train.strategy=ddp on CPU"
        )
    if world_size() > 1:
        if device == "cpu":
            fields["ddp_backend"] = "gloo"
        # Every parameter of every layer type takes part in the loss (checked in tests/training), so DDP need
        # not search the graph for unused ones each step (the Trainer's default, which warns when none is found).
        fields["ddp_find_unused_parameters"] = False
        if strategy == "fsdp":
            # FSDP2 (fully_shard), one unit per decoder layer; the user's train.fsdp_config fields win.
            fields["fsdp"] = True
            fields["fsdp_config"] = {
                "version": 2,
                "transformer_layer_cls_to_wrap": ["BMojoDecoderLayer"],
                **config.train.fsdp_config,
            }
    return fields


def _check_zero1(strategy: str, device: str) -> None:
    if strategy == "fsdp":
        raise ConfigError("train.zero1 with train.strategy=fsdp: FSDP already shards the optimizer state; choose one")
    # PyTorch/XLA's ZeRO-1 shards across the XLA devices (one process may own several); torch.distributed's
    # across processes, so it needs torchrun.
    if world_size() == 1 and device != "xla":
        raise ConfigError(
            "train.zero1 shards the optimizer state across data-parallel processes: launch with "
            "torchrun --nproc_per_node N (N > 1), or leave it off"
        )


__all__ = ["resolve_device", "training_arguments_fields", "use_bf16", "world_size"]
