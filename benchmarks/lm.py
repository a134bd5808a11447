"""Language modelling at equal size and tokens, and length extrapolation (``python -m benchmarks.lm``).

Every arm of ``lm_models.ARMS`` (the five B'MOJO layer types, an SSM/attention hybrid, and the
transformers peers Llama, Mistral with a sliding window, Mamba2 on its torch path) is trained on the
shipped KJV corpus with the byte-level tokenizer, the same non-embedding parameter count (within ~1%),
the same sequence length, batches, steps, learning-rate schedule and seed, through the training
package (HF ``Trainer``, AdamW, cosine). Each trained model is then evaluated on the validation split
(the book of Revelation, never trained on) at 1x, 2x, 4x, 8x and 16x the training length
(``lm_eval``): perplexity and bits per byte per length.

Runs are independent processes (``--jobs`` at a time, ``--threads`` each), since nothing here is a
timing. With several ``--seeds`` the table shows the median over seeds; the per-seed results are
kept in ``<name>_runs.json``.

    python -m benchmarks.lm --quick          # ~1-2 minutes: tiny models, a few dozen steps
    python -m benchmarks.lm                  # ~15 minutes on 2 cores: the figures of docs/results.md

Writes ``benchmarks/results/lm[_quick].{json,md}``, ``lm[_quick]_runs.json`` and the plots
(``benchmarks.plots``). The issue's targets are checked and listed in the Markdown and the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from benchmarks._common import RESULTS_DIR, environment_info, write_results
from benchmarks.lm_models import GATE_VARIANT_ARMS, LM_ARMS, PEER_CLASSES, VARIANTS, LMShape, describe, sized_configs

FACTORS = (1, 2, 4, 8, 16)
SLOWEST_FIRST = {"mamba2": 0, "bmojo": 1, "bmojo_f": 2}  # start order of the runs: fewer idle cores at the end


@dataclass(frozen=True)
class LMSettings:
    """One benchmark mode. Tokens trained = ``steps * batch_size * seq_len`` for every arm."""

    shape: LMShape
    seq_len: int = 256  # training length; evaluation at seq_len * FACTORS
    steps: int = 240  # x 8 x 256 = 491,520 tokens: what fits ~15 minutes of 2 cores for the 9 arms
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 24
    weight_decay: float = 0.1
    eval_tokens: int = 32768  # validation tokens evaluated at every length (the split has ~62k)
    eval_batch_tokens: int = 8192  # tokens per evaluation forward
    factors: tuple[int, ...] = FACTORS
    arms: tuple[str, ...] = tuple(LM_ARMS)
    seeds: tuple[int, ...] = (0,)
    extra: dict = field(default_factory=dict)

    @property
    def train_tokens(self) -> int:
        return self.steps * self.batch_size * self.seq_len

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["train_tokens"] = self.train_tokens
        return d


QUICK = LMSettings(
    shape=LMShape(hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128, sliding_window=32, chunk_size=32),
    steps=40,
    batch_size=4,
    warmup_steps=4,
    eval_tokens=8192,
)
FULL = LMSettings(shape=LMShape())


def _training_arguments(settings: LMSettings, seed: int, output_dir: str):
    """``TrainingArguments`` from the training package's own builder; no evaluation or checkpoint during the run."""
    from training.config import RunConfig, TrainSection
    from training.train import make_training_arguments

    train = TrainSection(
        output_dir=output_dir,
        max_steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        precision="fp32",
        seed=seed,
        logging_steps=max(1, settings.steps // 20),
        tqdm=False,
        plot=False,
    )
    args = make_training_arguments(RunConfig(train=train), "cpu")
    return dataclasses.replace(args, eval_strategy="no", save_strategy="no")


def train_and_evaluate(arm: str, seed: int, settings: LMSettings, threads: int) -> dict:
    """Train ``arm`` with ``seed`` and evaluate it at every length; one JSON-able dict (runs in a worker)."""
    import datasets
    import torch
    import transformers
    from transformers import default_data_collator
    from transformers.trainer_callback import PrinterCallback

    from benchmarks.lm_eval import evaluate_lengths
    from benchmarks.lm_models import build_model, non_embedding_params
    from training.data import build_lm_datasets, load_tokenizer
    from training.trainer import BMojoTrainer

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    tokenizer = load_tokenizer("byte")
    train_set, eval_set = build_lm_datasets(tokenizer, settings.seq_len)
    stream = eval_set[:]["input_ids"].reshape(-1)  # the validation split as one token stream (it is contiguous)
    config, _ = sized_configs([arm], settings.shape)[arm]
    transformers.set_seed(seed)
    model = build_model(config)
    with tempfile.TemporaryDirectory(prefix="bench-lm-") as scratch:
        trainer = BMojoTrainer(
            model=model,
            args=_training_arguments(settings, seed, scratch),
            train_dataset=train_set,
            data_collator=default_data_collator,
            verify_hashes=False,
        )
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    start = time.perf_counter()
    lengths = [settings.seq_len * f for f in settings.factors]
    results = evaluate_lengths(model, stream, lengths, settings.eval_tokens, settings.eval_batch_tokens)
    return {
        "arm": arm,
        "seed": seed,
        "lr": settings.lr,
        "model_class": type(model).__name__,
        "non_embedding_params": non_embedding_params(model),
        "total_params": sum(p.numel() for p in model.parameters()),
        "config": describe(config),
        "train_tokens": settings.train_tokens,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "train_loss_curve": losses,
        "lengths": [r.to_dict() for r in results],
    }


def run_all(settings: LMSettings, jobs: int, threads: int) -> tuple[list[dict], list[dict]]:
    """Every (arm, seed) run, ``jobs`` processes at a time, slowest arms first: (results, failures)."""
    import datasets

    from training.data import build_lm_datasets, load_tokenizer

    datasets.disable_progress_bars()
    build_lm_datasets(load_tokenizer("byte"), settings.seq_len)  # fill the datasets cache once, before the workers
    slow_first = sorted(settings.arms, key=lambda a: SLOWEST_FIRST.get(a, len(SLOWEST_FIRST)))
    tasks = [(arm, seed) for arm in slow_first for seed in settings.seeds]
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the spawned workers
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_and_evaluate, arm, seed, settings, threads): (arm, seed) for arm, seed in tasks}
        runs, failures = [], []
        for future, (arm, seed) in futures.items():
            try:
                run = future.result()
            except Exception as e:  # noqa: BLE001 - one broken arm must not lose the others' results
                failures.append({"arm": arm, "seed": seed, "error": f"{type(e).__name__}: {e}"})
                print(f"{arm:>18} seed {seed}: FAILED {failures[-1]['error']}", flush=True)
                continue
            ppl = ", ".join(f"{r['seq_len']}: {r['perplexity']:.3f}" for r in run["lengths"])
            print(f"{arm:>18} seed {seed}: train {run['train_seconds']:.0f} s, perplexity by length {ppl}", flush=True)
            runs.append(run)
    return runs, failures


def summarize(runs: list[dict], settings: LMSettings) -> list[dict]:
    """One row per arm: medians over seeds of perplexity per length and bits per byte at 1x."""
    rows = []
    for arm in settings.arms:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        row = {
            "arm": arm,
            "model": PEER_CLASSES.get(arm, f"BMojoForCausalLM[{arm}]"),
            "non_embedding_params": mine[0]["non_embedding_params"],
            "runs": len(mine),
        }
        for i, factor in enumerate(settings.factors):
            row[f"ppl_{factor}x"] = round(statistics.median(r["lengths"][i]["perplexity"] for r in mine), 4)
        ppl_1x = [r["lengths"][0]["perplexity"] for r in mine]
        row["ppl_1x_seeds"] = " ".join(f"{p:.3f}" for p in ppl_1x)  # per seed, in seed order
        row["ppl_1x_mean"] = round(statistics.fmean(ppl_1x), 4)
        row["ppl_1x_spread"] = round(max(ppl_1x) - min(ppl_1x), 4)
        row["bpb_1x"] = round(statistics.median(r["lengths"][0]["bits_per_byte"] for r in mine), 4)
        row["train_seconds"] = round(statistics.median(r["train_seconds"] for r in mine), 1)
        # Training throughput, loaded machine included (jobs share the cores): a relative figure only.
        row["train_tokens_per_s"] = round(settings.train_tokens / row["train_seconds"])
        rows.append(row)
    return rows


def check_targets(rows: list[dict]) -> list[dict]:
    """The issue's language-modelling targets, on the median rows (missing arms are skipped)."""
    by_arm = {r["arm"]: r for r in rows}
    checks = []

    def add(target: str, measured: str, met: bool) -> None:
        checks.append({"target": target, "measured": measured, "met": bool(met)})

    b, a = by_arm.get("bmojo"), by_arm.get("attention")
    if b and a:
        ratio = b["ppl_1x"] / a["ppl_1x"]
        add("bmojo perplexity within 3% of attention (or better)", f"bmojo / attention = {ratio:.4f}", ratio <= 1.03)
    for other in ("ssm", "sliding_attention"):
        if b and other in by_arm:
            o = by_arm[other]["ppl_1x"]
            add(f"bmojo perplexity better than {other}", f"{b['ppl_1x']:.4f} vs {o:.4f}", b["ppl_1x"] < o)
    if b and "ppl_8x" in b:
        growth = b["ppl_8x"] / b["ppl_1x"]
        add("bmojo perplexity at 8x length <= 1.10 x its own at 1x", f"{growth:.4f}", growth <= 1.10)
        if a and "ppl_8x" in a:
            a_growth = a["ppl_8x"] / a["ppl_1x"]
            add("attention degrades more than bmojo at 8x", f"attention {a_growth:.4f} vs bmojo {growth:.4f}",
                a_growth > growth)  # fmt: skip
    return checks


def check_gated_targets(rows: list[dict]) -> list[dict]:
    """Issue 16's targets: the gated layer and the preset pattern candidates learn language as fast as the
    SSM alone (within the seeds' spread), within 5% of Mamba2, and extrapolate to 16x within 5%."""
    by_arm = {r["arm"]: r for r in rows}
    checks = []

    def add(target: str, measured: str, met: bool) -> None:
        checks.append({"target": target, "measured": measured, "met": bool(met)})

    mamba2 = by_arm.get("mamba2")
    # A variant (``bmojo_n64``) is compared with the ssm arm of the same variant (``ssm_n64``) when it ran,
    # else with the plain ssm arm.
    # Gate variants (``bmojo_e2_in02``) are compared with the ssm arm of their SSM width (``ssm_e2``).
    for name, row in by_arm.items():
        suffix = GATE_VARIANT_ARMS.get(name) or next((s for s in VARIANTS if name.endswith(s)), "")
        if name not in GATE_VARIANT_ARMS and name[: len(name) - len(suffix)] not in ("bmojo", "SSSB", "SB"):
            continue
        ssm = by_arm.get("ssm" + suffix) or by_arm.get("ssm")
        if ssm:
            slack = max(row.get("ppl_1x_spread", 0.0), ssm.get("ppl_1x_spread", 0.0))
            add(f"{name} perplexity at 1x <= {ssm['arm']}'s (within the seeds' spread, {slack:.4f})",
                f"{row['ppl_1x']:.4f} vs {ssm['ppl_1x']:.4f}", row["ppl_1x"] <= ssm["ppl_1x"] + slack)  # fmt: skip
        if mamba2:
            ratio = row["ppl_1x"] / mamba2["ppl_1x"]
            add(f"{name} perplexity at 1x <= 1.05 x Mamba2's", f"{ratio:.4f}", ratio <= 1.05)
        if "ppl_16x" in row:
            growth = row["ppl_16x"] / row["ppl_1x"]
            add(f"{name} perplexity at 16x <= 1.05 x its own at 1x", f"{growth:.4f}", growth <= 1.05)
    return checks


def _targets_markdown(checks: list[dict]) -> str:
    lines = ["", "## Targets (issues 9 and 16)", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['measured']} | {'yes' if c['met'] else 'no'} |" for c in checks]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps (checks the pipeline)")
    parser.add_argument("--arms", help=f"comma-separated subset of {','.join(LM_ARMS)}")
    parser.add_argument("--name", help="results file name (default lm, or lm_quick with --quick)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0); the table shows medians")
    parser.add_argument("--steps", type=int, help="optimizer steps per run")
    parser.add_argument("--lr", type=float, help=f"AdamW peak learning rate (default {FULL.lr}); for a sweep, one "
                        "rate per run, then benchmarks.lm_combine --best-lr")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (processes; default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)

    settings = QUICK if args.quick else FULL
    changes = {}
    if args.arms:
        unknown = sorted(set(args.arms.split(",")) - set(LM_ARMS))
        if unknown:
            parser.error(f"unknown arms {unknown}; choose from {', '.join(LM_ARMS)}")
        changes["arms"] = tuple(args.arms.split(","))
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.steps:
        changes["steps"] = args.steps
    if args.lr is not None:
        if not args.lr > 0:
            parser.error(f"--lr must be positive, got {args.lr}")
        changes["lr"] = args.lr
    settings = dataclasses.replace(settings, **changes)
    name = args.name or ("lm_quick" if args.quick else "lm")

    import transformers

    meta = {
        **environment_info(),
        "transformers": transformers.__version__,
        "mode": "quick" if args.quick else "full",
        "jobs": args.jobs,
        "threads_per_job": args.threads,
        "settings": settings.to_dict(),
        "seeds": list(settings.seeds),
        "data": "training/data/kjv_train.txt.gz (train), kjv_validation.txt.gz (eval: Revelation)",
        "tokenizer": "byte-level (bmojo_neuron.tokenization)",
    }
    print(json.dumps({k: v for k, v in meta.items() if k != "settings"}, default=str))
    start = time.perf_counter()
    runs, failures = run_all(settings, args.jobs, args.threads)
    rows = summarize(runs, settings)
    checks = check_targets(rows) + check_gated_targets(rows)
    meta["wall_seconds"] = round(time.perf_counter() - start, 1)
    meta["targets"] = checks
    meta["failed_runs"] = failures
    meta["runs_file"] = f"{name}_runs.json"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}_runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    json_path, md_path = write_results(name, rows, {k: v for k, v in meta.items() if k != "targets"})
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    with md_path.open("a") as f:
        f.write(_targets_markdown(checks))
    if not args.no_plots:
        from benchmarks.plots import plot_lm

        for path in plot_lm(json_path):
            print(f"wrote {path}")
    print(md_path.read_text())
    print(f"wrote {json_path}, {md_path} in {meta['wall_seconds']:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
