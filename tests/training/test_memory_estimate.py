"""The training-memory estimate behind ``--print-params``: its measurement and its arithmetic."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.testing import tiny_config
from training import memory


@pytest.mark.parametrize("layer_type", ["bmojo", "ssm", "sliding_attention"])
def test_meta_device_count_agrees_with_the_cpu(layer_type):
    config = tiny_config([layer_type])
    on_meta = memory.layer_bytes_per_token(config, tokens=64, device="meta")
    on_cpu = memory.layer_bytes_per_token(config, tokens=64, device="cpu")
    assert on_meta > 0
    assert on_meta == pytest.approx(on_cpu, rel=0.01)


def test_layer_bytes_grow_linearly_with_tokens():
    config = tiny_config(["bmojo"])
    assert memory.layer_bytes_per_token(config, tokens=64) == pytest.approx(
        memory.layer_bytes_per_token(config, tokens=256), rel=0.1
    )


def test_a_mixed_stack_averages_its_layer_types():
    config = tiny_config(["ssm", "ssm", "ssm", "bmojo"])
    ssm, bmojo = (memory.layer_bytes_per_token(config, t) for t in ("ssm", "bmojo"))
    assert bmojo > ssm
    assert memory.mean_layer_bytes_per_token(config) == pytest.approx((3 * ssm + bmojo) / 4)


def test_checkpointing_keeps_far_fewer_saved_tensors():
    torch.manual_seed(0)
    model = BMojoForCausalLM(tiny_config(["bmojo"] * 4)).train()
    ids = torch.randint(0, 97, (1, 64))
    plain = memory.saved_activation_bytes(model, ids)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert memory.saved_activation_bytes(model, ids) < plain / 2


def test_estimate_arithmetic():
    config = tiny_config(["bmojo"] * 10, hidden_size=32)
    params, per_token = 1_000_000_000, 1_000_000.0
    e = memory.estimate(config, params, seq_len=4096, per_token=per_token, device="trn2")
    assert e.states_gib == pytest.approx(16 * params / 2**30)
    assert e.activations_gib == pytest.approx(per_token / 2 * 4096 * 10 / 2**30)
    assert e.needs_checkpointing and e.fits_with_checkpointing  # 14.9 + 19.1 > 24 >= 14.9 + 0.2
    sharded = memory.estimate(config, params, seq_len=4096, per_token=per_token, zero1_ranks=32, device="trn2")
    assert sharded.states_gib == pytest.approx((8 + 8 / 32) * params / 2**30)
    assert not memory.estimate(config, params, seq_len=256, per_token=per_token).needs_checkpointing
