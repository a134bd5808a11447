"""An interrupted MQAR grid keeps its finished cells in ``<name>_partial`` and never replaces a complete file;
``--curve-every`` keeps each cell's learning curve."""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace

import pytest

from benchmarks import _common, mqar
from training.train import RunResult


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(mqar, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(mqar, "hit_rate", lambda config: {"memory_hit_rate": None, "memory_hit_ceiling": None})
    return tmp_path


def test_sigterm_in_the_second_cell_writes_the_first_as_partial(results_dir, monkeypatch):
    outcomes = iter(
        [RunResult(results_dir, {"eval_accuracy": 0.5}, 1, None), RunResult(results_dir, {}, 0, signal.SIGTERM)]
    )
    monkeypatch.setattr(mqar, "run", lambda config, callbacks=None: next(outcomes))
    (results_dir / "mqar_quick.json").write_text('{"complete": true}')

    status = mqar.main(["--quick", "--layer-types", "attention,ssm", "--no-tqdm"])

    assert status == 128 + signal.SIGTERM
    partial = json.loads((results_dir / "mqar_quick_partial.json").read_text())
    assert [r["layer_type"] for r in partial["rows"]] == ["attention"]
    assert partial["meta"]["interrupted_by_signal"] == signal.SIGTERM
    assert json.loads((results_dir / "mqar_quick.json").read_text()) == {"complete": True}


def test_curve_every_evaluates_that_often_and_keeps_the_curve(results_dir, monkeypatch):
    seen = {}

    def fake_run(config, callbacks=None):
        seen["eval_steps"] = config.train.eval_steps
        for step, accuracy in [(2, 0.1), (4, 0.7)]:
            for callback in callbacks:
                callback.on_evaluate(None, SimpleNamespace(global_step=step), None, metrics={"eval_accuracy": accuracy})
        return RunResult(results_dir, {"eval_accuracy": 0.7}, 4, None)

    monkeypatch.setattr(mqar, "run", fake_run)
    assert mqar.main(["--quick", "--layer-types", "ssm", "--no-tqdm", "--curve-every", "2"]) == 0
    row = json.loads((results_dir / "mqar_quick.json").read_text())["rows"][0]
    assert seen["eval_steps"] == 2
    assert row["accuracy_curve"] == [{"step": 2, "accuracy": 0.1}, {"step": 4, "accuracy": 0.7}]
