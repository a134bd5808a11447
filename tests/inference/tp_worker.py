"""Run by torchrun in test_tensor_parallel.py: load a saved model with tensor parallelism, compare with the
unsharded model on the same rank, write what was found. Not a test module (no ``test_`` prefix)."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM
from transformers.distributed import DistributedConfig

import bmojo_neuron  # noqa: F401  (registers BMojo with the Auto classes)

if __name__ == "__main__":
    folder, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    full = AutoModelForCausalLM.from_pretrained(folder).eval()
    sharded = AutoModelForCausalLM.from_pretrained(folder, distributed_config=DistributedConfig(tp_size=2)).eval()
    tokens = torch.randint(0, full.config.vocab_size, (2, 21), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (sharded(tokens).logits - full(tokens).logits).abs().max().item()
    greedy = dict(max_new_tokens=12, do_sample=False)
    same_generation = torch.equal(sharded.generate(tokens[:, :7], **greedy), full.generate(tokens[:, :7], **greedy))
    weight = sharded.model.layers[0].mlp.gate_proj.weight
    record = {
        "tp_size": sharded.tp_size,
        "weight_type": type(weight).__name__,
        "local_rows": weight.to_local().shape[0],
        "full_rows": full.model.layers[0].mlp.gate_proj.weight.shape[0],
        "max_logit_diff": diff,
        "same_generation": same_generation,
    }
    with open(f"{out}/rank{os.environ['RANK']}.json", "w") as f:
        json.dump(record, f)
