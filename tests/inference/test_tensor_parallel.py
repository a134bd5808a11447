"""Tensor parallelism through transformers (``distributed_config=DistributedConfig(tp_size=2)``), two CPU
processes over gloo: the MLPs are sharded, and logits and greedy generation equal the unsharded model's."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bmojo_neuron import BMojoConfig, BMojoForCausalLM
from tests.helpers.torchrun import run_two_processes


def test_tp2_matches_unsharded_model(tmp_path):
    torch.manual_seed(0)
    config = BMojoConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=2, ssm_num_heads=2,
        ssm_head_dim=16, sliding_window=8, chunk_size=8, eidetic_slots=8, num_hidden_layers=4,
        layer_types=["attention", "sliding_attention", "ssm", "bmojo"],
    )  # fmt: skip
    BMojoForCausalLM(config).save_pretrained(tmp_path / "model")
    run_two_processes(Path(__file__).with_name("tp_worker.py"), str(tmp_path / "model"), str(tmp_path))
    for rank in range(2):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert record["tp_size"] == 2 and record["weight_type"] == "DTensor"
        assert record["local_rows"] * 2 == record["full_rows"], "each rank holds half of the MLP"
        assert record["max_logit_diff"] < 1e-5, record
        assert record["same_generation"], "the decode path must take sharded layers through their collectives"
