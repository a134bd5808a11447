"""Merging LM runs files (benchmarks/lm_combine.py)."""

from __future__ import annotations

import json

import pytest

from benchmarks import _common, lm_combine
from benchmarks.lm import FACTORS
from benchmarks.lm_combine import best_over_lr, combine, main

SETTINGS = {"seq_len": 256, "steps": 240, "batch_size": 8, "lr": 2e-3, "warmup_steps": 24, "weight_decay": 0.1,
            "eval_tokens": 32768, "shape": {"hidden_size": 128}}  # fmt: skip


def _write(tmp_path, name, runs, **settings):
    meta = {"git_sha": name, "git_dirty": False, "settings": {**SETTINGS, **settings}}
    (tmp_path / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": []}))
    path = tmp_path / f"{name}_runs.json"
    path.write_text(json.dumps([{"arm": a, "seed": s, "ppl": p} for a, s, p in runs]))
    return path


def test_later_file_replaces_the_same_arm_and_seed(tmp_path):
    a = _write(tmp_path, "a", [("ssm", 0, 1.0), ("ssm", 1, 2.0)])
    b = _write(tmp_path, "b", [("ssm", 1, 3.0), ("bmojo", 0, 4.0)])
    runs, meta = combine([a, b])
    assert sorted((r["arm"], r["seed"], r["ppl"]) for r in runs) == [
        ("bmojo", 0, 4.0),
        ("ssm", 0, 1.0),
        ("ssm", 1, 3.0),
    ]
    assert [s["git_sha"] for s in meta["sources"]] == ["a", "b"]


def test_runs_trained_with_other_settings_are_refused(tmp_path):
    a = _write(tmp_path, "a", [("ssm", 0, 1.0)])
    b = _write(tmp_path, "b", [("ssm", 1, 1.0)], steps=960)
    with pytest.raises(ValueError, match="other settings"):
        combine([a, b])


def test_a_file_that_is_not_a_runs_file_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match="runs file"):
        combine([path])


def test_seeds_of_one_arm_must_be_one_model(tmp_path):
    """After a default changes (the SSM output gate), an arm's old and new runs are different models."""
    a = _write(tmp_path, "a", [("bmojo", 0, 1.0)])
    b = _write(tmp_path, "b", [("bmojo", 1, 1.0)])
    for path, gate in ((a, "vector"), (b, "token")):
        runs = json.loads(path.read_text())
        runs[0]["config"] = {"hidden_size": 128, "ssm_output_gate": gate}
        path.write_text(json.dumps(runs))
    with pytest.raises(ValueError, match="bmojo are of different models.*ssm_output_gate"):
        combine([a, b])
    runs = json.loads(b.read_text())
    runs[0]["config"] = {"ssm_output_gate": "vector", "ssm_output_gate_init": None}  # a field only b records
    b.write_text(json.dumps(runs))
    assert len(combine([a, b])[0]) == 2


def test_gate_fields_do_not_split_a_stack_without_a_gated_layer(tmp_path):
    """An ssm stack recorded the gate default of its day; the gate is not part of that model."""
    a = _write(tmp_path, "a", [("ssm", 0, 1.0)])
    b = _write(tmp_path, "b", [("ssm", 1, 1.0)])
    for path, gate, layers in ((a, "vector", ["ssm", "ssm"]), (b, "token", ["ssm", "ssm"])):
        runs = json.loads(path.read_text())
        runs[0]["config"] = {"layer_types": layers, "ssm_output_gate": gate}
        path.write_text(json.dumps(runs))
    assert len(combine([a, b])[0]) == 2
    runs = json.loads(b.read_text())
    runs[0]["config"]["layer_types"] = ["ssm", "bmojo"]  # now the gate is read, and the layers differ too
    b.write_text(json.dumps(runs))
    with pytest.raises(ValueError, match="ssm are of different models"):
        combine([a, b])


def _lr_runs(tmp_path, name, lr, perplexities):
    """A runs file at ``lr``: ``perplexities`` maps arm -> perplexity at 1x by seed (the same at every length)."""
    path = _write(tmp_path, name, [], lr=lr)
    runs = [{"arm": arm, "seed": seed, "lengths": [{"perplexity": p, "bits_per_byte": 1.0}] * len(FACTORS),
             "non_embedding_params": 1, "train_seconds": 10.0}
            for arm, by_seed in perplexities.items() for seed, p in enumerate(by_seed)]  # fmt: skip
    path.write_text(json.dumps(runs))
    return path


def test_best_lr_picks_each_arms_rate_by_its_mean_over_seeds(tmp_path):
    slow = _lr_runs(tmp_path, "slow", 2e-3, {"ssm": [3.8, 3.9], "bmojo": [3.9, 4.0]})
    fast = _lr_runs(tmp_path, "fast", 4e-3, {"ssm": [3.7, 4.1], "bmojo": [3.7, 3.8]})
    with pytest.raises(ValueError, match="other settings"):  # a rate is a setting unless the sweep is asked for
        combine([slow, fast])
    runs, _ = best_over_lr(combine([slow, fast], best_lr=True)[0])
    picked = {(r["arm"], r["lr"]) for r in runs}
    assert picked == {("ssm", 2e-3), ("bmojo", 4e-3)}  # ssm: 3.85 vs 3.90 by mean (its best seed is at 4e-3)
    assert len(runs) == 4
    assert best_over_lr(combine([slow, fast], best_lr=True)[0])[1]["ssm"] == {"0.002": 3.85, "0.004": 3.9}


@pytest.mark.parametrize(
    "fast_perplexities",
    [{"bmojo": [3.7, 3.8]}, {"ssm": [3.7], "bmojo": [3.7, 3.8]}],
    ids=["an arm missed a rate", "an arm has fewer seeds at one rate"],
)
def test_best_lr_refuses_an_uneven_sweep(tmp_path, fast_perplexities):
    slow = _lr_runs(tmp_path, "slow", 2e-3, {"ssm": [3.8, 3.9], "bmojo": [3.9, 4.0]})
    fast = _lr_runs(tmp_path, "fast", 4e-3, fast_perplexities)
    with pytest.raises(ValueError, match=r"every arm must run at every learning rate.*ssm at lr 0.004"):
        best_over_lr(combine([slow, fast], best_lr=True)[0])


def test_arms_keeps_only_the_named_arms_and_refuses_an_absent_one(tmp_path):
    wide = _lr_runs(tmp_path, "wide", 2e-3, {"ssm": [3.8], "bmojo": [3.9], "hybrid": [4.0]})
    narrow = _lr_runs(tmp_path, "narrow", 4e-3, {"ssm": [3.7], "bmojo": [3.6]})
    runs, _ = best_over_lr(combine([wide, narrow], best_lr=True, arms=("ssm", "bmojo"))[0])
    assert {(r["arm"], r["lr"]) for r in runs} == {("ssm", 4e-3), ("bmojo", 4e-3)}
    with pytest.raises(ValueError, match="--arms: no run of mamba2"):
        combine([wide, narrow], best_lr=True, arms=("ssm", "mamba2"))


def test_runs_older_than_the_lr_field_take_their_files_rate(tmp_path):
    path = _write(tmp_path, "old", [("ssm", 0, 1.0)], lr=3e-3)
    assert combine([path])[0][0]["lr"] == 3e-3


def test_the_best_lr_table_names_each_arms_rate(tmp_path, monkeypatch):
    slow = _lr_runs(tmp_path, "slow", 2e-3, {"ssm": [3.8, 3.9], "bmojo": [3.9, 4.0]})
    fast = _lr_runs(tmp_path, "fast", 4e-3, {"ssm": [3.7, 4.1], "bmojo": [3.7, 3.8]})
    out = tmp_path / "out"
    monkeypatch.setattr(_common, "RESULTS_DIR", out)
    monkeypatch.setattr(lm_combine, "RESULTS_DIR", out)
    assert main(["--name", "swept", "--best-lr", str(slow), str(fast)]) == 0
    result = json.loads((out / "swept.json").read_text())
    rows = {r["arm"]: r for r in result["rows"]}
    assert (rows["ssm"]["lr"], rows["ssm"]["ppl_1x"]) == (2e-3, 3.85)
    assert (rows["bmojo"]["lr"], rows["bmojo"]["ppl_1x_mean_by_lr"]) == (4e-3, {"0.002": 3.95, "0.004": 3.75})
    assert result["meta"]["settings"]["lr"] == "best of [0.002, 0.004] per arm"
