"""The distributed strategy becomes ``TrainingArguments`` fields, or a clear error where it cannot run."""

from __future__ import annotations

import pytest

from training.config import ConfigError, parse
from training.distributed import training_arguments_fields


@pytest.fixture
def two_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")


def _config(*flags: str):
    config, _ = parse(["--task", "mqar", *flags])
    return config


def test_single_process_adds_no_strategy():
    assert training_arguments_fields(_config("--strategy", "ddp"), "cpu") == {"use_cpu": True}
    assert training_arguments_fields(_config("--strategy", "fsdp"), "cuda") == {"use_cpu": False}


def test_fsdp_on_cpu_is_refused_in_one_process_too():
    # One process would train unsharded without a word (issue 19): docs/training.md promises a refusal on CPU.
    with pytest.raises(ConfigError, match="does not shard CPU processes"):
        training_arguments_fields(_config("--strategy", "fsdp"), "cpu")


def test_ddp_on_cpu_uses_gloo(two_processes):
    fields = training_arguments_fields(_config(), "cpu")
    assert fields["ddp_backend"] == "gloo" and "fsdp" not in fields


def test_fsdp_on_accelerators_is_fsdp2_per_decoder_layer(two_processes):
    fields = training_arguments_fields(
        _config("--strategy", "fsdp", "--set", "train.fsdp_config.cpu_offload=true"), "cuda"
    )
    assert fields["fsdp"] is True
    assert fields["fsdp_config"] == {
        "version": 2,
        "transformer_layer_cls_to_wrap": ["BMojoDecoderLayer"],
        "cpu_offload": True,
    }


@pytest.mark.parametrize(
    ("device", "message"),
    [("cpu", "train.strategy=fsdp needs an accelerator"), ("xla", "not supported on the XLA route")],
)
def test_fsdp_where_it_cannot_shard_is_refused(two_processes, device, message):
    # On CPU, accelerate would silently fall back to DDP: refusing is the honest answer.
    with pytest.raises(ConfigError, match=message):
        training_arguments_fields(_config("--strategy", "fsdp"), device)


@pytest.mark.parametrize(
    ("flags", "device", "world", "message"),
    [
        ((), "cpu", "1", "launch with torchrun"),
        (("--strategy", "fsdp"), "cuda", "2", "FSDP already shards the optimizer state"),
    ],
)
def test_zero1_where_it_cannot_run_is_refused(monkeypatch, flags, device, world, message):
    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(ConfigError, match=message):
        training_arguments_fields(_config("--zero1", *flags), device)


def test_zero1_under_ddp_keeps_the_ddp_fields(two_processes):
    assert training_arguments_fields(_config("--zero1"), "cpu") == training_arguments_fields(_config(), "cpu")


@pytest.mark.parametrize("world", ["1", "2"])
def test_zero1_on_xla_is_accepted_on_any_number_of_processes(monkeypatch, world):
    # PyTorch/XLA's sharded optimizer shards across XLA devices, which one process may own several of;
    # make xla-check runs it (tools/xla_check/trainer_runs.py).
    monkeypatch.setenv("WORLD_SIZE", world)
    assert training_arguments_fields(_config("--zero1"), "xla") == training_arguments_fields(_config(), "xla")
