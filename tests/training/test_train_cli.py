"""Command line and configuration: --help, overrides, clear errors, presets and parameter counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from training.config import FLAGS, ConfigError, parse
from training.presets import PRESETS, count_parameters, match_parameters, model_config
from training.train import main

REPO = Path(__file__).resolve().parents[2]


def test_help_documents_every_flag():
    out = subprocess.run(
        [sys.executable, "-m", "training.train", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for flag, *_ in FLAGS:
        assert flag in out.stdout
    for flag in ("--config", "--resume", "--set", "--print-params", "--dry-run", "--no-tqdm", "--no-plot"):
        assert flag in out.stdout


def test_precedence_defaults_yaml_flags_set(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("task: mqar\ntrain:\n  max_steps: 7\n  lr: 0.5\nmqar:\n  num_pairs: 3\n")
    config, _ = parse(
        [
            "--config",
            str(cfg),
            "--max-steps",
            "9",
            "--set",
            "train.lr=0.25",
            "--set",
            "model.overrides.eidetic_slots=12",
        ]
    )
    assert config.task == "mqar" and config.mqar.num_pairs == 3
    assert config.train.max_steps == 9 and config.train.lr == 0.25
    assert config.model.overrides == {"eidetic_slots": 12}
    assert config.train.batch_size == 16  # untouched default


def test_shipped_configs_parse():
    for path in sorted((REPO / "training" / "configs").glob("*.yaml")):
        parse(["--config", str(path)])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--task", "translation"], "task must be one of"),
        (["--preset", "huge"], "model.preset must be one of"),
        (["--max-steps", "0"], "train.max_steps must be a positive integer"),
        (["--set", "train.nonsense=1"], "unknown setting 'train.nonsense'"),
        (["--set", "oops"], "KEY=VALUE"),
        (["--mqar-filler", "ones"], "mqar.filler"),
    ],
)
def test_bad_settings_are_named(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse(argv)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--data", "/nonexistent/corpus.txt"], "does not exist"),
        (["--task", "mqar", "--mqar-seq-len", "16", "--mqar-pairs", "8"], "seq_len"),
        (["--layer-pattern", "BXZ"], "unknown letters"),
        (["--set", "model.overrides.sliding_window=0"], "sliding_window"),
    ],
)
def test_main_reports_errors_without_traceback(argv, message, tmp_path, capsys):
    assert main([*argv, "--output-dir", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_print_params(capsys):
    assert main(["--print-params", "--layer-pattern", "BW"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert name in out
    assert "'bmojo', 'sliding_attention'" in out


@pytest.mark.parametrize(
    "preset,low,high",
    [
        ("tiny", 1e5, 1e6),
        ("small", 20e6, 30e6),
        ("125m", 115e6, 135e6),
        ("350m", 330e6, 370e6),
        ("760m", 720e6, 800e6),
        ("1.4b", 1.3e9, 1.5e9),
    ],
)
def test_presets_build_and_count(preset, low, high):
    n = count_parameters(model_config(preset, vocab_size=264))  # meta device: no memory allocated
    assert low <= n <= high


@pytest.mark.parametrize("layer_type", ["sliding_attention", "ssm", "attention", "bmojo_f"])
def test_match_parameters(layer_type):
    target = count_parameters(model_config("tiny", 264))
    matched = match_parameters(model_config("tiny", 264, {"layer_types": [layer_type] * 2}), target)
    assert abs(count_parameters(matched) - target) / target < 0.02
