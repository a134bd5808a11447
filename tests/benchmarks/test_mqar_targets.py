"""The MQAR grid's target checks: one group per (setting, hidden, filler), comparisons only where arms ran."""

from __future__ import annotations

import json

import pytest

from benchmarks.mqar import GRIDS, TARGET, _merge_source, build_parser, cell_config, main, merge, target_checks


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


def _results(path, rows, **meta):
    base = {"steps": 1500, "train_examples": 96000, "batch_size": 64, "lr": 1e-3, "vocab": 256, "layers": 2,
            "mode": "cpu", "git_sha": "abc", "timestamp": "t"}  # fmt: skip
    path.write_text(json.dumps({"meta": {**base, **meta}, "rows": rows}))
    return path


def test_merge_joins_the_cells_of_one_grid_in_grid_order(tmp_path):
    a = _results(tmp_path / "a.json", [_row("zeros", "bmojo", 0.97)])
    b = _results(tmp_path / "b.json", [_row("zeros", "ssm", 0.1), _row("zeros", "attention", 1.0)], git_sha="def")
    rows, meta = merge([a, b])
    assert [r["layer_type"] for r in rows] == ["attention", "ssm", "bmojo"]
    assert [p["git_sha"] for p in meta["merged_from"]] == ["abc", "def"]
    assert {c["target"]: c["met"] for c in meta["targets"]} == {
        f"T=128, 8 pairs, d=128, zeros: bmojo >= {TARGET}": True,
        "T=128, 8 pairs, d=128, zeros: bmojo > ssm": True,
    }


@pytest.mark.parametrize(
    ("second_rows", "second_meta", "message"),
    [
        ([_row("zeros", "ssm", 0.1)], {"steps": 600}, "differs in steps"),
        ([_row("zeros", "ssm", 0.1)], {"lr": 3e-3}, "differs in lr"),
        ([_row("zeros", "bmojo", 0.5)], {}, "share cells"),
        ([_row("zeros", "ssm", 0.1)], {"seed": 7}, "differs in seed"),
    ],
)
def test_merge_refuses_runs_that_do_not_fit_together(tmp_path, second_rows, second_meta, message):
    a = _results(tmp_path / "a.json", [_row("zeros", "bmojo", 0.97)])
    b = _results(tmp_path / "b.json", second_rows, **second_meta)
    with pytest.raises(ValueError, match=message):
        merge([a, b])


def test_merge_keeps_chosen_arms_and_takes_runs_older_than_overrides(tmp_path):
    old = _results(tmp_path / "old.json", [_row("zeros", "bmojo", 0.9), _row("zeros", "ssm", 0.1)])  # no overrides
    new = _results(tmp_path / "new.json", [_row("zeros", "bmojo", 0.97), _row("zeros", "SB", 0.96)], model_overrides={})
    with pytest.raises(ValueError, match="share cells"):  # both runs hold a bmojo cell
        merge([old, new])
    with pytest.raises(ValueError, match="share cells"):
        merge([old, new], arms=["ssm", "bmojo"])
    rows, meta = merge([old, new], arms=["ssm", "SB"])
    assert [(r["layer_type"], r["accuracy"]) for r in rows] == [("ssm", 0.1), ("SB", 0.96)]
    assert len(meta["merged_from"]) == 2


def test_best_lr_reports_each_cell_at_its_best_rate(tmp_path):
    slow = _results(tmp_path / "a.json", [_row("random", "bmojo", 0.675), _row("random", "attention", 0.99)])
    fast = _results(tmp_path / "b.json", [_row("random", "bmojo", 0.96), _row("random", "attention", 0.01)], lr=3e-3)
    rows, meta = merge([slow, fast], best_lr=True)
    assert [(r["layer_type"], r["accuracy"], r["lr"]) for r in rows] == [
        ("attention", 0.99, 1e-3),
        ("bmojo", 0.96, 3e-3),
    ]
    assert rows[1]["accuracy_by_lr"] == {"0.001": 0.675, "0.003": 0.96}
    assert meta["lr"] == "best of [0.001, 0.003] per cell"
    assert {c["target"]: c["met"] for c in meta["targets"]}[f"T=128, 8 pairs, d=128, random: bmojo >= {TARGET}"]


def test_runs_older_than_the_seed_field_count_as_the_default_seed(tmp_path):
    old = _results(tmp_path / "old.json", [_row("zeros", "ssm", 0.1)])
    assert len(merge([old, _results(tmp_path / "a.json", [_row("zeros", "bmojo", 0.9)], seed=42)])[0]) == 2
    with pytest.raises(ValueError, match="differs in seed"):
        merge([old, _results(tmp_path / "b.json", [_row("zeros", "bmojo", 0.9)], seed=1)])


def test_merge_keeps_each_runs_evaluation_size(tmp_path):
    a = _results(tmp_path / "a.json", [_row("zeros", "bmojo", 0.97)], eval_examples=500)
    b = _results(tmp_path / "b.json", [_row("zeros", "ssm", 0.1)])  # older than the field
    _, meta = merge([a, b])
    assert [p["eval_examples"] for p in meta["merged_from"]] == [500, None]
    assert meta["eval_examples"] == "per run, see merged_from"
    c = _results(tmp_path / "c.json", [_row("zeros", "ssm", 0.1)], eval_examples=500)
    assert merge([a, c])[1]["eval_examples"] == 500


def test_best_lr_refuses_a_cell_that_missed_a_rate(tmp_path):
    slow = _results(tmp_path / "a.json", [_row("random", "bmojo", 0.675), _row("random", "ssm", 0.01)])
    fast = _results(tmp_path / "b.json", [_row("random", "bmojo", 0.96)], lr=3e-3)
    with pytest.raises(ValueError, match=r"missing: .*'ssm'\) at lr 0.003"):
        merge([slow, fast], best_lr=True)
    rows, _ = merge([slow, fast], arms=["bmojo"], best_lr=True)  # the arms that ran at every rate
    assert [r["accuracy"] for r in rows] == [0.96]


def test_stacks_are_checked_against_every_baseline():
    rows = [
        _row("zeros", a, acc) for a, acc in [("sliding_attention", 0.5), ("ssm", 0.2), ("hybrid", 0.97), ("SB", 0.96)]
    ]
    checks = {c["target"]: c["met"] for c in target_checks(rows)}
    assert checks == {
        f"T=128, 8 pairs, d=128, zeros: SB >= {TARGET}": True,
        "T=128, 8 pairs, d=128, zeros: SB > sliding_attention": True,
        "T=128, 8 pairs, d=128, zeros: SB > ssm": True,
        "T=128, 8 pairs, d=128, zeros: SB > hybrid": False,
    }


def test_best_lr_without_merge_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--grid", "quick", "--best-lr"])
    assert exit_.value.code == 2
    assert "--best-lr goes with --merge" in capsys.readouterr().err


def test_the_seed_reaches_every_cells_training():
    args = build_parser().parse_args(["--grid", "cpu", "--seed", "7"])
    setting = GRIDS["cpu"]["settings"][0]
    assert cell_config(setting, 128, "zeros", "bmojo", 10, 640, args).train.seed == 7
    assert cell_config(setting, 128, "zeros", "bmojo", 10, 640, build_parser().parse_args([])).train.seed == 42


def test_across_seeds_reports_the_median_of_each_cells_seeds(tmp_path):
    paths = [
        _results(tmp_path / f"{seed}.json", [_row("zeros", "bmojo", acc), _row("zeros", "hybrid", other)], seed=seed)
        for seed, acc, other in [(42, 0.9513, 0.931), (0, 0.945, 0.9517), (1, 0.9878, 0.9467)]
    ]
    with pytest.raises(ValueError, match="differs in seed"):
        merge(paths)
    rows, meta = merge(paths, across_seeds=True)
    bmojo = next(r for r in rows if r["layer_type"] == "bmojo")
    assert bmojo["accuracy"] == 0.9513 and bmojo["curve_seed"] == 42  # the median run's row
    assert bmojo["seeds"] == 3 and bmojo["accuracy_seeds"] == "0: 0.945 1: 0.9878 42: 0.9513"
    assert bmojo["accuracy_spread"] == pytest.approx(0.0428)
    assert {c["target"]: c["met"] for c in meta["targets"]}["T=128, 8 pairs, d=128, zeros: bmojo > hybrid"]
    assert meta["seed"] == "median over the seeds of each cell, of [0, 1, 42]"
    with pytest.raises(ValueError, match="share cells"):
        merge([*paths, paths[0]], across_seeds=True)


def test_across_seeds_with_best_lr_chooses_the_rate_on_the_seeds_every_rate_ran(tmp_path):
    # seed 42 ran at both rates; seeds 0 and 1 only at 3e-3, where they did badly: the rate is still chosen on
    # seed 42 alone (3e-3), then reported as the median of all three seeds there.
    sweep = [_results(tmp_path / "a.json", [_row("random", "bmojo", 0.5)], seed=42),
             _results(tmp_path / "b.json", [_row("random", "bmojo", 0.9)], seed=42, lr=3e-3),
             _results(tmp_path / "c.json", [_row("random", "bmojo", 0.2)], seed=0, lr=3e-3),
             _results(tmp_path / "d.json", [_row("random", "bmojo", 0.3)], seed=1, lr=3e-3)]  # fmt: skip
    (row,), _ = merge(sweep, best_lr=True, across_seeds=True)
    assert (row["lr"], row["accuracy"], row["curve_seed"]) == (3e-3, 0.3, 1)
    assert row["accuracy_by_lr"] == {"0.001": 0.5, "0.003": 0.9}
    only_extra = _results(tmp_path / "e.json", [_row("random", "bmojo", 0.4)], seed=0)
    with pytest.raises(ValueError, match="no training seed ran at every learning rate"):
        merge([only_extra, sweep[1]], best_lr=True, across_seeds=True)


def test_across_seeds_without_merge_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--grid", "quick", "--across-seeds"])
    assert "--across-seeds goes with --merge" in capsys.readouterr().err


def test_merge_takes_chosen_arms_of_one_file(tmp_path):
    old = _results(tmp_path / "old.json", [_row("zeros", "sliding_attention", 0.5), _row("zeros", "ssm", 0.1)])
    rerun = _results(tmp_path / "rerun.json", [_row("zeros", "sliding_attention", 0.56)])
    with pytest.raises(ValueError, match="share cells"):
        merge([old, rerun])
    rows, _ = merge([old, rerun], arms_of_file=[["ssm"], None])
    assert [(r["layer_type"], r["accuracy"]) for r in rows] == [("sliding_attention", 0.56), ("ssm", 0.1)]
    with pytest.raises(ValueError, match="old.json: no cell of hybrid"):
        merge([old, rerun], arms_of_file=[["ssm", "hybrid"], None])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("runs/a.json", ("runs/a.json", None)), ("runs/a.json:ssm,hybrid", ("runs/a.json", ["ssm", "hybrid"]))],
)
def test_merge_sources_name_a_file_and_optionally_its_arms(text, expected):
    path, arms = _merge_source(build_parser(), text)
    assert (str(path), arms) == expected


def test_merge_source_with_an_unknown_arm_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["--merge", "a.json:mamba", "--name", "x"])
    assert "--merge a.json:mamba: choose from" in capsys.readouterr().err
