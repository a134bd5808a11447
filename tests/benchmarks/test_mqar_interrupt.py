"""An interrupted MQAR grid keeps its finished cells in ``<name>_partial`` and never replaces a complete file."""

from __future__ import annotations

import json
import signal

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
    monkeypatch.setattr(mqar, "run", lambda config: next(outcomes))
    (results_dir / "mqar_quick.json").write_text('{"complete": true}')

    status = mqar.main(["--quick", "--layer-types", "attention,ssm", "--no-tqdm"])

    assert status == 128 + signal.SIGTERM
    partial = json.loads((results_dir / "mqar_quick_partial.json").read_text())
    assert [r["layer_type"] for r in partial["rows"]] == ["attention"]
    assert partial["meta"]["interrupted_by_signal"] == signal.SIGTERM
    assert json.loads((results_dir / "mqar_quick.json").read_text()) == {"complete": True}
