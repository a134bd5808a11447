"""``--gradient-checkpointing`` (YAML ``train.gradient_checkpointing``) reaches the model through the Trainer
and leaves the training losses unchanged."""

from __future__ import annotations

import pytest
from transformers import TrainerCallback

from training.config import parse
from training.train import run


class _RecordCheckpointing(TrainerCallback):
    def __init__(self):
        self.flags = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.flags = [layer.gradient_checkpointing for layer in model.model.layers]


@pytest.mark.parametrize("source", ["flag", "yaml"])
def test_switch_turns_it_on_and_losses_match(tmp_path, tiny_args, train_losses, source):
    common = [*tiny_args, "--max-steps", "3", "--eval-steps", "3", "--save-steps", "3"]
    plain = run(parse([*common, "--output-dir", str(tmp_path / "plain")])[0])
    if source == "flag":
        switch = ["--gradient-checkpointing"]
    else:
        (tmp_path / "run.yaml").write_text("train:\n  gradient_checkpointing: true\n")
        switch = ["--config", str(tmp_path / "run.yaml")]
    probe = _RecordCheckpointing()
    checkpointed = run(parse([*common, *switch, "--output-dir", str(tmp_path / "ckpt")])[0], callbacks=[probe])
    assert probe.flags == [True, True]
    expected, got = train_losses(plain.output_dir), train_losses(checkpointed.output_dir)
    assert got.keys() == expected.keys() == {1, 2, 3}
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
