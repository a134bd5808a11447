"""Command line and configuration: --help, overrides, clear errors, presets and parameter counts."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bmojo_neuron import BMojoForCausalLM
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


@pytest.mark.parametrize(
    "argv,field",
    [
        (["--lr", "inf"], "train.lr"),
        (["--lr", "nan"], "train.lr"),
        (["--lr", "0"], "train.lr"),
        (["--lr", "5"], "train.lr"),
        (["--set", "train.eval_batch_size=-3"], "train.eval_batch_size"),
        (["--batch-size", "-1"], "train.batch_size"),
        (["--warmup-steps", "-1"], "train.warmup_steps"),
        (["--max-grad-norm", "inf"], "train.max_grad_norm"),
        (["--weight-decay", "nan"], "train.weight_decay"),
        (["--set", "train.adam_beta2=1.0"], "train.adam_beta2"),
        (["--set", "train.min_lr_ratio=-0.5"], "train.min_lr_ratio"),
        (["--set", "train.seed=-1"], "train.seed"),
        (["--set", "train.dataloader_workers=-2"], "train.dataloader_workers"),
        (["--set", "train.resume='no'"], "train.resume"),
        (["--set", "train.plot=3"], "train.plot"),
        (["--set", "data.validation_fraction=.nan"], "data.validation_fraction"),
        (["--set", "train.output_dir="], "train.output_dir"),
        (["--set", "model.overrides=[1]"], "model.overrides"),
    ],
)
def test_bad_training_values_are_refused_before_training(argv, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse(argv)


def test_yaml_strings_are_not_booleans_but_numbers_are_numbers(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text('train:\n  resume: "no"\n')
    with pytest.raises(ConfigError, match="train.resume must be true or false"):
        parse(["--config", str(cfg)])
    cfg.write_text("train:\n  resume: no\n  lr: 1e-3\n")  # YAML 1.1 reads 1e-3 as a string
    config, _ = parse(["--config", str(cfg)])
    assert config.train.resume is False and config.train.lr == 1e-3


def test_short_run_warns_about_the_warm_up(tmp_path, tiny_args, caplog):
    with caplog.at_level(logging.WARNING, logger="training"):
        assert (
            main([*tiny_args, "--max-steps", "5", "--warmup-steps", "100", "--output-dir", str(tmp_path), "--dry-run"])
            == 0
        )
    lines = [r.getMessage() for r in caplog.records if "warmup_steps" in r.getMessage()]
    assert len(lines) == 1 and "never reaches its peak" in lines[0]


def test_fsdp_on_cpu_is_refused_in_one_process(tmp_path, tiny_args, capsys):
    assert main([*tiny_args, "--strategy", "fsdp", "--device", "cpu", "--output-dir", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "train.strategy=fsdp needs an accelerator" in err and "does not shard CPU processes" in err


def test_ddp_does_not_search_for_unused_parameters(monkeypatch):
    """Every parameter of every layer type takes part in the loss, so DDP is told not to look for unused ones
    (the Trainer's default looks every step and warns that it found none)."""
    import torch

    from training.distributed import training_arguments_fields

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert training_arguments_fields(parse([])[0], "cpu")["ddp_find_unused_parameters"] is False
    for layer_type in ("bmojo", "bmojo_f", "ssm", "sliding_attention", "attention"):
        model = BMojoForCausalLM(model_config("tiny", 264, {"layer_types": [layer_type] * 2}))
        ids = torch.randint(0, 256, (2, 40))
        model(ids, labels=ids).loss.backward()
        unused = [name for name, p in model.named_parameters() if p.grad is None]
        assert not unused, f"{layer_type}: {unused}"


def test_print_params_says_which_presets_fit_a_cpu(capsys):
    assert main(["--print-params"]) == 0
    lines = {}
    for line in capsys.readouterr().out.splitlines():
        if line.strip():
            lines.setdefault(line.split()[0], line)  # the parameter table; the memory table repeats the names
    assert "CPU preset" in lines["tiny"] and "not a CPU preset" not in lines["tiny"]
    for name in ("small", "125m", "1.4b"):
        assert "not a CPU preset" in lines[name]


def test_large_preset_on_cpu_warns_with_the_time_per_step(tmp_path, tiny_args, caplog):
    argv = [*tiny_args, "--preset", "small", "--device", "cpu", "--output-dir", str(tmp_path), "--dry-run"]
    with caplog.at_level(logging.WARNING, logger="training"):
        assert main(argv) == 0
    assert "preset small is not a CPU preset: about" in caplog.text and "s per step" in caplog.text


def test_invalid_yaml_is_one_line_with_its_position(tmp_path, capsys):
    cfg = tmp_path / "tabs.yaml"
    cfg.write_text("train:\n\tlr: 1\n")
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "invalid YAML at line 2, column 1" in err and "\n" not in err
