"""Perplexity per evaluation length (benchmarks/lm_eval.py) and the summary and targets of benchmarks/lm.py."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.lm import LMSettings, check_targets, summarize
from benchmarks.lm_eval import evaluate_lengths, sequences_at
from benchmarks.lm_models import LMShape, arm_config, build_model


class UniformLM(torch.nn.Module):
    """Predicts every one of ``vocab`` tokens with equal probability: perplexity exactly ``vocab``."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids, use_cache=False):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


def test_sequences_at_uses_the_same_leading_tokens_at_every_length():
    stream = torch.arange(100)
    assert sequences_at(stream, 16, 64).shape == (4, 16)
    assert sequences_at(stream, 32, 64).flatten().tolist() == list(range(64))
    with pytest.raises(ValueError, match="not enough"):
        sequences_at(stream, 128, 64)


def test_uniform_model_has_perplexity_vocab_and_matching_bits_per_byte():
    stream = torch.randint(0, 256, (512,))
    for result in evaluate_lengths(UniformLM(264), stream, [32, 64, 128], eval_tokens=512, batch_tokens=128):
        assert result.perplexity == pytest.approx(264, rel=1e-5)
        assert result.bits_per_byte == pytest.approx(math.log2(264), rel=1e-5)  # every target is a byte
        assert result.predicted_tokens == (512 // result.seq_len) * (result.seq_len - 1)


def test_real_arms_evaluate_beyond_their_training_length():
    shape = LMShape(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, sliding_window=8, chunk_size=8,
                    eidetic_slots=8, ssm_heads=2, ssm_head_dim=16, ssm_state_size=8)  # fmt: skip
    stream = torch.randint(0, 256, (256,))
    for arm in ("bmojo", "mamba2", "mistral"):
        model = build_model(arm_config(arm, shape, 32 if arm != "mamba2" else 8))
        results = evaluate_lengths(model, stream, [16, 128], eval_tokens=256, batch_tokens=64)
        assert all(math.isfinite(r.perplexity) and r.perplexity > 1 for r in results), arm


def _run(arm: str, seed: int, ppl: list[float]) -> dict:
    return {"arm": arm, "seed": seed, "non_embedding_params": 1000, "train_seconds": 1.0,
            "lengths": [{"perplexity": p, "bits_per_byte": math.log2(p)} for p in ppl]}  # fmt: skip


def test_summary_takes_medians_over_seeds_and_checks_the_targets():
    settings = LMSettings(shape=LMShape(), arms=("attention", "bmojo", "ssm", "sliding_attention"), seeds=(0, 1, 2))
    runs = [_run("attention", s, [10 + s, 11, 12, 30, 60]) for s in range(3)]
    runs += [_run("bmojo", s, [10.2, 10.3, 10.4, 10.5, 11]) for s in range(3)]
    runs += [_run("ssm", 0, [12] * 5), _run("sliding_attention", 0, [12.5] * 5)]
    rows = summarize(runs, settings)
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["attention"]["ppl_1x"] == 11 and by_arm["attention"]["runs"] == 3
    checks = {c["target"]: c["met"] for c in check_targets(rows)}
    assert checks == {
        "bmojo perplexity within 3% of attention (or better)": True,
        "bmojo perplexity better than ssm": True,
        "bmojo perplexity better than sliding_attention": True,
        "bmojo perplexity at 8x length <= 1.10 x its own at 1x": True,
        "attention degrades more than bmojo at 8x": True,
    }
