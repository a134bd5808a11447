"""The MQAR grid's target checks: one group per (setting, hidden, filler), comparisons only where arms ran."""

from __future__ import annotations

from benchmarks.mqar import TARGET, target_checks


def _row(filler: str, layer_type: str, accuracy: float) -> dict:
    return {"seq_len": 128, "num_pairs": 8, "hidden": 128, "filler": filler, "layer_type": layer_type,
            "accuracy": accuracy}  # fmt: skip


def test_each_filler_is_checked_on_its_own():
    rows = [_row("zeros", "bmojo", 0.99), _row("zeros", "ssm", 0.2), _row("random", "bmojo", 0.4)]
    rows += [_row("random", "sliding_attention", 0.5)]
    checks = {c["target"]: c["met"] for c in target_checks(rows)}
    assert checks == {
        f"T=128, 8 pairs, d=128, random: bmojo >= {TARGET}": False,
        "T=128, 8 pairs, d=128, random: bmojo > sliding_attention": False,
        f"T=128, 8 pairs, d=128, zeros: bmojo >= {TARGET}": True,
        "T=128, 8 pairs, d=128, zeros: bmojo > ssm": True,
    }


def test_groups_without_bmojo_have_no_checks():
    assert target_checks([_row("zeros", "attention", 1.0)]) == []
