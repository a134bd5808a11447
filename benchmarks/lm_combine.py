"""One LM results table from several runs files (``python -m benchmarks.lm_combine --name NAME RUNS...``).

Seeds of one arm are often measured in separate invocations of ``benchmarks.lm`` (one core, one arm at a
time); this merges their ``<name>_runs.json`` files into one ``<NAME>.{json,md}`` with the same rows
(median, mean and spread over seeds, per-seed perplexity, tokens/s) and the same target checks. The runs
must share the training settings (steps, batch, length): a mix would compare different budgets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from benchmarks._common import RESULTS_DIR, environment_info, write_results
from benchmarks.lm import FULL, _targets_markdown, check_gated_targets, check_targets, summarize

SETTINGS_KEYS = ("seq_len", "steps", "batch_size", "lr", "warmup_steps", "weight_decay", "eval_tokens", "shape")


def _source(runs_path: Path) -> dict:
    """The runs file's own results file's settings and commit (``x_runs.json`` -> ``x.json``)."""
    meta_path = runs_path.with_name(runs_path.name.removesuffix("_runs.json") + ".json")
    if not runs_path.name.endswith("_runs.json") or not meta_path.exists():
        raise ValueError(f"runs: {runs_path} is not a benchmarks.lm runs file beside its <name>.json")
    meta = json.loads(meta_path.read_text())["meta"]
    return {"file": runs_path.name, "git_sha": meta["git_sha"], "git_dirty": meta["git_dirty"], **meta}


def combine(paths: list[Path]) -> tuple[list[dict], dict]:
    """The runs of every file (a later file's (arm, seed) replaces an earlier one's) and the meta to record."""
    by_key: dict[tuple[str, int], dict] = {}
    sources, settings = [], None
    for path in paths:
        src = _source(path)
        mine = {k: src["settings"][k] for k in SETTINGS_KEYS}
        if settings is not None and mine != settings:
            raise ValueError(f"runs: {path.name} was trained with other settings than {paths[0].name}")
        settings = mine
        runs = json.loads(path.read_text())
        sources.append({"file": src["file"], "git_sha": src["git_sha"], "git_dirty": src["git_dirty"],
                        "runs": [f"{r['arm']}/{r['seed']}" for r in runs]})  # fmt: skip
        for run in runs:
            by_key[(run["arm"], run["seed"])] = run
    _check_one_model_per_arm(list(by_key.values()))
    return list(by_key.values()), {"settings": settings, "sources": sources}


def _check_one_model_per_arm(runs: list[dict]) -> None:
    """An arm's seeds must be one model: an arm that follows a default (``bmojo`` and the SSM output gate) names
    another model once the default changes. Fields recorded by only one of two runs are not compared."""
    first: dict[str, dict] = {}
    for run in runs:
        config = run.get("config", {})
        seen = first.setdefault(run["arm"], config)
        differ = sorted(k for k in config.keys() & seen.keys() if config[k] != seen[k])
        if differ:
            raise ValueError(f"runs: the runs of {run['arm']} are of different models ({', '.join(differ)} differ)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="results file name (benchmarks/results/<name>.{json,md})")
    parser.add_argument("runs", nargs="+", type=Path, help="benchmarks.lm runs files (<name>_runs.json)")
    args = parser.parse_args(argv)
    try:
        runs, meta = combine(args.runs)
    except ValueError as e:
        parser.error(str(e))
    arms = tuple(dict.fromkeys(r["arm"] for r in runs))
    s = meta["settings"]
    settings = dataclasses.replace(FULL, arms=arms, steps=s["steps"], batch_size=s["batch_size"], seq_len=s["seq_len"])
    rows = summarize(runs, settings)
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
