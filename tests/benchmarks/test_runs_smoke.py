"""One tiny training run through each worker function: the LM arms (benchmarks/lm.py) and MQAR cells
(benchmarks/recall.py, which calls the MQAR grid's own cell builder and the training package for the
B'MOJO arms, and lm_models' builders and size solver for the transformers peers)."""

from __future__ import annotations

import dataclasses
import math

from benchmarks import recall
from benchmarks.lm import QUICK, train_and_evaluate


def test_lm_worker_trains_and_evaluates_at_every_length():
    settings = dataclasses.replace(QUICK, steps=2, batch_size=2, warmup_steps=1, eval_tokens=1024, factors=(1, 2))
    run = train_and_evaluate("bmojo", seed=0, settings=settings, threads=1)
    assert [r["seq_len"] for r in run["lengths"]] == [256, 512]
    assert all(math.isfinite(r["perplexity"]) for r in run["lengths"])
    assert run["train_tokens"] == 2 * 2 * 256 and run["model_class"] == "BMojoForCausalLM"


def test_recall_cell_uses_the_mqar_grid_cell():
    options = {"vocab": 64, "batch_size": 8, "lr": 3e-3, "eval_examples": 16, "threads": 1}
    row = recall.run_cell(32, "bmojo", steps=2, examples=64, options=options)
    assert row["num_pairs"] == 2 and row["window"] == recall.WINDOW and 0 <= row["accuracy"] <= 1


_TINY = {"vocab": 64, "batch_size": 8, "lr": 3e-3, "eval_examples": 16, "threads": 1}


def test_recall_bmojo_cell_reports_memory_hit_rate():
    row = recall.run_cell(32, "bmojo", steps=1, examples=16, options=_TINY)
    assert row["model"] == "BMojoForCausalLM[bmojo]" and 0 <= row["memory_hit_rate"] <= row["memory_hit_ceiling"] <= 1


def test_recall_covers_every_lm_arm_at_equal_size():
    from benchmarks.lm_models import ARMS

    assert set(recall.ARM_NAMES) == set(ARMS)
    rows = {
        arm: recall.run_cell(32, arm, steps=1, examples=16, options=_TINY)
        for arm in ("hybrid", "llama", "mistral", "mamba2")
    }
    assert rows["hybrid"]["model"] == "BMojoForCausalLM[hybrid]" and rows["hybrid"]["memory_hit_rate"] is None
    assert rows["llama"]["model"] == "LlamaForCausalLM" and rows["mamba2"]["model"] == "Mamba2ForCausalLM"
    for row in rows.values():
        assert 0 <= row["accuracy"] <= 1
    # the peers are sized by lm_models' solver to the bmojo cell's non-embedding count (within 1%)
    reference = recall.run_cell(32, "bmojo", steps=1, examples=16, options=_TINY)["non_embedding_params"]
    for row in rows.values():
        assert abs(row["non_embedding_params"] / reference - 1) < 0.01
