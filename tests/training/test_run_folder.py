"""One run per folder: a used folder is refused unless --resume or --overwrite says what to do, a lock keeps
two runs out, interrupted rotations are cleaned up, and resume explains (or refuses) what changed."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.training import TINY_MODEL, TINY_MQAR
from training import checkpoint
from training.train import main

STEPS = ["--max-steps", "4", "--save-steps", "2", "--eval-steps", "1000", "--save-total-limit", "2"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 4-step tiny run (checkpoint-2 and checkpoint-4), copied by each test that changes it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*TINY_MQAR, *TINY_MODEL, *STEPS, "--output-dir", str(out)]) == 0
    return out


@pytest.fixture
def used(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def _losses(out: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


def test_used_folder_is_refused_then_overwritten_on_request(used, tiny_args, capsys):
    before = (used / "metrics.jsonl").read_text()
    assert main([*tiny_args, "--max-steps", "2", "--output-dir", str(used)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert (used / "metrics.jsonl").read_text() == before, "the refused run must not touch the old one"

    args = [*tiny_args, "--max-steps", "2", "--save-steps", "2", "--eval-steps", "1000", "--output-dir", str(used)]
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in used.glob("checkpoint-*")) == ["checkpoint-2"], "the old run's checkpoints are gone"
    assert sorted(_losses(used)) == [1, 2], "metrics.jsonl holds the new run only"


def test_resume_and_overwrite_exclude_each_other(tmp_path, tiny_args, capsys):
    assert main([*tiny_args, "--resume", "--overwrite", "--output-dir", str(tmp_path), "--dry-run"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_yaml_output_dir_is_printed(tmp_path, caplog):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"task: mqar\nmqar:\n  train_examples: 64\n  eval_examples: 8\ntrain:\n  output_dir: {tmp_path}/x\n")
    with caplog.at_level(logging.INFO, logger="training"):
        assert main(["--config", str(cfg), "--dry-run"]) == 0
    assert f"run folder: {tmp_path}/x (train.output_dir in {cfg}" in caplog.text


def test_a_locked_folder_is_refused(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # another process's run (an open file description of its own)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*tiny_args, "--max-steps", "1", "--output-dir", str(out)]) == 2
        assert "another run" in capsys.readouterr().err
    assert not (out / "metrics.jsonl").exists()


def test_interrupted_rotation_is_cleaned_up_at_start(used, tiny_args):
    # A rotation killed half-way through deleting checkpoint-2, and a save killed in its temporary folder.
    (used / "checkpoint-2" / "model.safetensors").unlink()
    (used / f"{checkpoint.TMP_PREFIX}6").mkdir()
    assert main([*tiny_args, *STEPS[:-2], "--max-steps", "5", "--resume", "--output-dir", str(used)]) == 0
    names = sorted(p.name for p in used.iterdir() if "checkpoint" in p.name)
    assert names == ["checkpoint-4", "checkpoint-5"], names


def test_rotation_never_leaves_a_half_deleted_checkpoint(tmp_path, monkeypatch):
    for step in (1, 2):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(os.urandom(32))
        checkpoint.write_manifest(folder, step)

    def killed(path, ignore_errors=False):  # the process dies during the deletion
        next(Path(path).iterdir()).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.rotate(tmp_path, keep=1)
    assert [p.name for _, p in checkpoint.list_checkpoints(tmp_path)] == ["checkpoint-2"]


def test_resume_tolerates_a_cut_metrics_line_and_names_a_changed_lr(used, tiny_args, caplog):
    with open(used / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 1.2')  # killed while writing
    args = [*tiny_args, *STEPS[:-2], "--max-steps", "6", "--resume", "--output-dir", str(used), "--lr", "0.0005"]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
    assert "not JSON" in caplog.text
    assert "resuming with train.lr 0.0005 (the checkpoint's run had 0.001)" in caplog.text
    assert "missing keys" not in caplog.text, "the tied lm_head is not a missing tensor"
    losses = _losses(used)
    assert sorted(losses) == list(range(1, 7))
    # The new peak rate is used from the first resumed step on (the rate logged at step s is the one step s
    # used: cosine to min_lr_ratio 0.1 after a warm-up of 2, over 6 steps).
    for step in (5, 6):
        expected = 0.0005 * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - 1 - 2) / (6 - 2))))
        assert losses[step]["learning_rate"] == pytest.approx(expected, rel=1e-6), step


def test_resume_with_another_model_is_refused(used, tiny_args, capsys):
    args = [*tiny_args, "--max-steps", "6", "--resume", "--output-dir", str(used)]
    assert main([*args, "--set", "model.overrides.hidden_size=64"]) == 2
    err = capsys.readouterr().err
    assert "different model" in err and "hidden_size 32 (this run: 64)" in err and "Traceback" not in err


def test_a_malformed_manifest_is_an_incomplete_checkpoint(tmp_path):
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    for files in ([1, 2], {"x": 5}, {"x": {"size": "big"}}, {"../../etc/passwd": {"size": 1}}):
        (folder / checkpoint.MANIFEST).write_text(json.dumps({"files": files}))
        assert checkpoint.verify(folder) is not None


def test_only_rank_zero_says_done(tmp_path, tiny_args, caplog, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # as a second torchrun process would see it (the world is one process here)
    with caplog.at_level(logging.INFO, logger="training"):
        assert main([*tiny_args, "--max-steps", "1", "--eval-steps", "1000", "--output-dir", str(tmp_path)]) == 0
    assert "done at step" not in caplog.text and "run folder" not in caplog.text


def test_an_unusable_run_folder_is_a_one_line_error(tmp_path, tiny_args, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main([*tiny_args, "--max-steps", "1", "--output-dir", str(blocker / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bmojo-train: error: cannot create the run folder") and "\n" not in err
