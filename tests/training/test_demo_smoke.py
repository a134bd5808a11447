"""`make demo` end to end with a few steps: the table, the saved run and the generation."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoTokenizer

import bmojo_neuron  # noqa: F401
from training import demo


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--steps", "2", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for layer_type in demo.LAYER_TYPES:
        assert f"\n{layer_type} " in printed, f"{layer_type} missing from the results table"
    assert "generated" in printed and "expected" in printed
    model = AutoModelForCausalLM.from_pretrained(out)
    assert set(model.config.layer_types) == {"bmojo"}
    assert len(AutoTokenizer.from_pretrained(out)) == 263
    assert (out / "curves.png").exists() and (out / "metrics.jsonl").exists()
    assert (tmp_path / "demo_baselines" / "ssm" / "model.safetensors").exists()
