"""Checkpoints: manifest and verification, corrupt ones skipped, rotation, exact resume, SIGTERM."""

from __future__ import annotations

import logging
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from training import checkpoint
from training.config import parse
from training.train import main, run


def _fake_checkpoint(root, step, complete=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(64))
    (folder / "trainer_state.json").write_text("{}")
    if complete:
        checkpoint.write_manifest(folder, step)
    return folder


def test_manifest_detects_every_kind_of_damage(tmp_path):
    folder = _fake_checkpoint(tmp_path, 1)
    assert checkpoint.verify(folder) is None
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-1])
    assert "bytes" in checkpoint.verify(folder)
    (folder / "model.safetensors").write_bytes(bytes([data[0] ^ 1]) + data[1:])
    assert "SHA-256" in checkpoint.verify(folder)
    assert checkpoint.verify(folder, hashes=False) is None  # same size: only the hash sees it
    (folder / "model.safetensors").unlink()
    assert "missing" in checkpoint.verify(folder)
    (folder / checkpoint.MANIFEST).write_text("{not json")
    assert "unreadable" in checkpoint.verify(folder)
    (folder / checkpoint.MANIFEST).unlink()
    assert "no manifest" in checkpoint.verify(folder)


def test_newest_complete_is_chosen_and_others_skipped_with_warning(tmp_path, caplog):
    _fake_checkpoint(tmp_path, 10)
    _fake_checkpoint(tmp_path, 20)
    corrupt = _fake_checkpoint(tmp_path, 30)
    (corrupt / "model.safetensors").write_bytes(b"")
    _fake_checkpoint(tmp_path, 40, complete=False)
    with caplog.at_level(logging.WARNING):
        assert checkpoint.latest_complete(tmp_path) == tmp_path / "checkpoint-20"
    assert "checkpoint-40" in caplog.text and "checkpoint-30" in caplog.text
    assert checkpoint.latest_complete(tmp_path / "absent") is None


def test_rotation_counts_complete_checkpoints_only(tmp_path):
    for step in (10, 20, 30):
        _fake_checkpoint(tmp_path, step)
    _fake_checkpoint(tmp_path, 40, complete=False)
    (tmp_path / f"{checkpoint.TMP_PREFIX}50").mkdir()
    checkpoint.rotate(tmp_path, keep=1)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["checkpoint-30", "checkpoint-40"], "the last good one stays; the partial one is not counted"


def test_finalize_replaces_an_existing_folder_atomically(tmp_path):
    old = _fake_checkpoint(tmp_path, 5, complete=False)
    tmp = tmp_path / f"{checkpoint.TMP_PREFIX}5"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"new")
    checkpoint.finalize(tmp, old, 5)
    assert (old / "model.safetensors").read_bytes() == b"new" and checkpoint.verify(old) is None
    assert not tmp.exists() and len(list(tmp_path.iterdir())) == 1


class _SignalAt(TrainerCallback):
    """Send ourselves a real signal at the end of a given step (as a scheduler preempting the job)."""

    def __init__(self, step, signum=signal.SIGTERM):
        self.step, self.signum = step, signum

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class _FirstStep(TrainerCallback):
    """Record the first optimizer step a run performs (s + 1 when it resumed from step s)."""

    step = None

    def on_step_end(self, args, state, control, **kwargs):
        self.step = self.step or state.global_step


def _config(tiny_args, out, steps, *extra):
    return parse([*tiny_args, "--output-dir", str(out), "--max-steps", str(steps), "--eval-steps", "1000", *extra])[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_then_resume_matches_uninterrupted_run(tiny_args, tmp_path, signum, train_losses):
    s = 4
    full = run(_config(tiny_args, tmp_path / "full", 2 * s, "--save-steps", "100"))
    assert full.stopped_by is None and full.global_step == 2 * s

    stopped = run(_config(tiny_args, tmp_path / "cut", 2 * s, "--save-steps", "100"), callbacks=[_SignalAt(s, signum)])
    assert stopped.stopped_by == signum and stopped.global_step == s
    assert checkpoint.latest_complete(tmp_path / "cut") == tmp_path / "cut" / f"checkpoint-{s}"
    assert signal.getsignal(signum) is not stopped, "handlers are restored after training"

    first = _FirstStep()
    resumed = run(_config(tiny_args, tmp_path / "cut", 2 * s, "--save-steps", "100", "--resume"), callbacks=[first])
    assert resumed.stopped_by is None and resumed.global_step == 2 * s
    assert first.step == s + 1, "the run must continue from the checkpoint, not start again"
    a, b = train_losses(tmp_path / "full"), train_losses(tmp_path / "cut")
    assert sorted(b) == list(range(1, 2 * s + 1)), "metrics.jsonl reads as one run"
    assert b[2 * s] == pytest.approx(a[2 * s], abs=1e-5)
    wa, wb = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-5, rtol=0)


def test_resume_skips_corrupt_checkpoint_and_keeps_last_good(tiny_args, tmp_path, caplog):
    out = tmp_path / "run"
    run(_config(tiny_args, out, 4, "--save-steps", "2", "--save-total-limit", "2"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    (out / "checkpoint-4" / "model.safetensors").write_bytes(b"")  # as a crash mid-write would leave it
    first = _FirstStep()
    with caplog.at_level(logging.WARNING):
        result = run(
            _config(tiny_args, out, 4, "--save-steps", "2", "--save-total-limit", "2", "--resume"), callbacks=[first]
        )
    assert "skipping checkpoint" in caplog.text and "checkpoint-4" in caplog.text
    assert first.step == 3, "resumed from checkpoint-2, the newest complete one"
    assert result.global_step == 4
    assert checkpoint.verify(out / "checkpoint-2") is None, "the last good checkpoint is untouched"
    assert checkpoint.verify(out / "checkpoint-4") is None, "re-saved, complete"


def test_main_exit_code_after_signal(tiny_args, tmp_path, monkeypatch):
    import training.train as train_module

    real_run = train_module.run
    monkeypatch.setattr(train_module, "run", lambda config, dry_run=False: real_run(config, dry_run, [_SignalAt(2)]))
    code = main([*tiny_args, "--output-dir", str(tmp_path), "--max-steps", "5"])
    assert code == 128 + signal.SIGTERM
    assert checkpoint.latest_complete(tmp_path) == tmp_path / "checkpoint-2"
