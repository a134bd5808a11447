"""Merging LM runs files (benchmarks/lm_combine.py)."""

from __future__ import annotations

import json

import pytest

from benchmarks.lm_combine import combine

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
