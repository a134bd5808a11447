"""One LM results table from several runs files (``python -m benchmarks.lm_combine --name NAME RUNS...``).

Seeds of one arm are often measured in separate invocations of ``benchmarks.lm`` (one core, one arm at a
time); this merges their ``<name>_runs.json`` files into one ``<NAME>.{json,md}`` with the same rows
(median, mean and spread over seeds, per-seed perplexity, tokens/s) and the same target checks. The runs
must share the training settings (steps, batch, length): a mix would compare different budgets.

``--best-lr``: the runs may differ in their learning rate only; each arm is reported at the rate of its best mean
perplexity at 1x over its seeds, every rate's mean beside it. Every arm must have run at every rate of the sweep
with the same seeds, so that no arm gets more tries than another. ``--arms a,b`` keeps only those arms, so a
file that measured many arms at one rate can join a sweep that ran a few.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from benchmarks._common import RESULTS_DIR, environment_info, write_results
from benchmarks.lm import FULL, _targets_markdown, check_gated_targets, check_targets, summarize
from bmojo_neuron.configuration_bmojo import GATED_LAYER_TYPES

SETTINGS_KEYS = ("seq_len", "steps", "batch_size", "lr", "warmup_steps", "weight_decay", "eval_tokens", "shape")


def _source(runs_path: Path) -> dict:
    """The runs file's own results file's settings and commit (``x_runs.json`` -> ``x.json``)."""
    meta_path = runs_path.with_name(runs_path.name.removesuffix("_runs.json") + ".json")
    if not runs_path.name.endswith("_runs.json") or not meta_path.exists():
        raise ValueError(f"runs: {runs_path} is not a benchmarks.lm runs file beside its <name>.json")
    meta = json.loads(meta_path.read_text())["meta"]
    return {"file": runs_path.name, "git_sha": meta["git_sha"], "git_dirty": meta["git_dirty"], **meta}


def combine(paths: list[Path], best_lr: bool = False, arms: tuple[str, ...] = ()) -> tuple[list[dict], dict]:
    """The runs of every file (a later file's (arm, seed, lr) replaces an earlier one's) and the meta to record.
    Each run records its ``lr`` (runs older than the field take their file's). ``best_lr``: the files may differ
    in their learning rate (see :func:`best_over_lr`). ``arms``: keep only these arms (a file that measured
    many arms can feed a sweep that ran a few); an arm named but absent from every file is an error."""
    keys = [k for k in SETTINGS_KEYS if not (best_lr and k == "lr")]
    by_key: dict[tuple[str, int, float], dict] = {}
    sources, settings = [], None
    for path in paths:
        src = _source(path)
        mine = {k: src["settings"][k] for k in keys}
        if settings is not None and mine != settings:
            raise ValueError(f"runs: {path.name} was trained with other settings than {paths[0].name}")
        settings = mine
        runs = [{**r, "lr": r.get("lr", src["settings"]["lr"])} for r in json.loads(path.read_text())
                if not arms or r["arm"] in arms]  # fmt: skip
        sources.append({"file": src["file"], "git_sha": src["git_sha"], "git_dirty": src["git_dirty"],
                        "runs": [f"{r['arm']}/{r['seed']}" for r in runs]})  # fmt: skip
        for run in runs:
            by_key[(run["arm"], run["seed"], run["lr"])] = run
    missing = sorted(set(arms) - {arm for arm, _, _ in by_key})
    if missing:
        raise ValueError(f"--arms: no run of {', '.join(missing)} in {', '.join(p.name for p in paths)}")
    _check_one_model_per_arm(list(by_key.values()))
    return list(by_key.values()), {"settings": settings, "sources": sources}


def best_over_lr(runs: list[dict]) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Each arm's runs at the learning rate of its lowest mean perplexity at 1x over seeds (the first rate on a
    tie), and every arm's mean by rate. Zoology's protocol for recall, applied to perplexity: a rate that suits
    one layer type can be too high or too low for another, and a single shared rate would favour one arm."""
    tries: dict[str, dict[float, list[dict]]] = {}
    for run in runs:
        tries.setdefault(run["arm"], {}).setdefault(run["lr"], []).append(run)
    sweep = sorted({lr for by_lr in tries.values() for lr in by_lr})
    seeds = {arm: {lr: sorted(r["seed"] for r in rs) for lr, rs in by_lr.items()} for arm, by_lr in tries.items()}
    uneven = [f"{arm} at lr {lr}: seeds {seeds[arm].get(lr, [])}" for arm in tries for lr in sweep
              if seeds[arm].get(lr) != seeds[arm][min(seeds[arm])]]  # fmt: skip
    if uneven:  # a missing rate has no seeds
        raise ValueError(f"runs: every arm must run at every learning rate with the same seeds; {'; '.join(uneven)}")
    chosen, means = [], {}
    for arm, by_lr in tries.items():
        mean = {lr: statistics.fmean(r["lengths"][0]["perplexity"] for r in rs) for lr, rs in by_lr.items()}
        chosen += by_lr[min(sweep, key=mean.__getitem__)]
        means[arm] = {str(lr): round(mean[lr], 4) for lr in sweep}
    return chosen, means


# Fields only a bmojo_f/bmojo layer reads: a stack without one is the same model whatever they record (an ssm
# stack records the SSM output gate's default of its day, which changed from ``vector`` to ``token``).
_GATED_LAYER_FIELDS = ("ssm_output_gate", "ssm_output_gate_init", "eidetic_innovation_norm", "eidetic_slots",
                       "eidetic_topk")  # fmt: skip


def _model_fields(config: dict) -> dict:
    """The recorded config fields that define the model (see ``_GATED_LAYER_FIELDS``)."""
    if "layer_types" in config and not set(config["layer_types"]) & set(GATED_LAYER_TYPES):
        return {k: v for k, v in config.items() if k not in _GATED_LAYER_FIELDS}
    return config


def _check_one_model_per_arm(runs: list[dict]) -> None:
    """An arm's seeds must be one model: an arm that follows a default (``bmojo`` and the SSM output gate) names
    another model once the default changes. Fields recorded by only one of two runs are not compared."""
    first: dict[str, dict] = {}
    for run in runs:
        config = _model_fields(run.get("config", {}))
        seen = first.setdefault(run["arm"], config)
        differ = sorted(k for k in config.keys() & seen.keys() if config[k] != seen[k])
        if differ:
            raise ValueError(f"runs: the runs of {run['arm']} are of different models ({', '.join(differ)} differ)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="results file name (benchmarks/results/<name>.{json,md})")
    parser.add_argument("runs", nargs="+", type=Path, help="benchmarks.lm runs files (<name>_runs.json)")
    parser.add_argument("--best-lr", action="store_true", help="the runs differ in --lr: report each arm at its "
                        "best rate (every arm must have run at every rate with the same seeds)")  # fmt: skip
    parser.add_argument("--arms", type=lambda v: tuple(a for a in v.split(",") if a), default=(),
                        help="comma-separated arms to keep (default: every arm of every file)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        runs, meta = combine(args.runs, best_lr=args.best_lr, arms=args.arms)
        sweep = sorted({r["lr"] for r in runs})
        mean_by_lr = None
        if args.best_lr:
            runs, mean_by_lr = best_over_lr(runs)
    except ValueError as e:
        parser.error(str(e))
    arms = tuple(dict.fromkeys(r["arm"] for r in runs))
    s = meta["settings"]
    settings = dataclasses.replace(FULL, arms=arms, steps=s["steps"], batch_size=s["batch_size"], seq_len=s["seq_len"])
    rows = summarize(runs, settings)
    if mean_by_lr is not None:
        for row in rows:
            row["lr"] = next(r["lr"] for r in runs if r["arm"] == row["arm"])
            row["ppl_1x_mean_by_lr"] = mean_by_lr[row["arm"]]
        meta["settings"]["lr"] = f"best of {sweep} per arm"
    checks = check_targets(rows) + check_gated_targets(rows)
    meta = {**environment_info(), **meta, "combined_from": [x["file"] for x in meta["sources"]]}
    json_path, md_path = write_results(args.name, rows, meta)
    json_path.write_text(json.dumps({"meta": {**meta, "targets": checks}, "rows": rows}, indent=2) + "\n")
    with md_path.open("a") as f:
        f.write(_targets_markdown(checks))
    (RESULTS_DIR / f"{args.name}_runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
