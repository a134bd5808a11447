"""MQAR recall against the sequence length (``python -m benchmarks.recall``), for the accuracy-vs-length figure.

The cells are those of the MQAR grid (``benchmarks.mqar``: its ``cell_config`` and equal-size
``equalize``, trained with ``training.train.run``), swept over the sequence length with the number
of pairs growing with it (``T / 16``) and a window that holds only a fraction of the pairs, so every
length needs memory beyond the window. Two-layer models at hidden 64, random filler (Zoology's
default), eidetic slots = 4 x pairs. The vocabulary is smaller than the grid's (``--vocab``, default
256 instead of Zoology's 8192) so the sweep fits the ``make bench`` budget on a CPU; the grid itself
(``python -m benchmarks.mqar``) is the reference for the training issue's target.

The arms are those of the language-modelling benchmark (``benchmarks.lm_models.ARMS``):

- the five B'MOJO layer types and the ``hybrid`` (``lm_models.hybrid_layer_types``: ``ssm`` then
  ``attention`` at two layers) go through ``training.train.run`` with the grid's cell config, their
  MLP width matched to the ``bmojo`` cell's parameter count (``equalize``);
- the transformers peers ``llama``, ``mistral`` (window = the cell's window) and ``mamba2`` are built
  by ``lm_models`` from the ``bmojo`` cell's shape and sized by its solver (``sized_configs``) to the
  same non-embedding parameter count, then trained by the training package's ``BMojoTrainer`` with
  the cell's own ``TrainingArguments``, data, metric and seed.

B'MOJO models also report the memory hit rate (``training.mqar.memory_hit_rate``: the fraction of
queries whose value token is in the last ``bmojo`` layer's memory; empty for models without one) and
its ceiling (``memory_hit_ceiling``: the same for a memory that never evicts).

Cells run ``--jobs`` at a time in separate processes. Writes ``benchmarks/results/recall[_quick].{json,md}``
and ``recall[_quick]_length.png`` (one run per point, seed fixed by the training defaults).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks._common import environment_info, write_results
from benchmarks.lm_models import ARMS, HYBRID, PEER_CLASSES

LAYER_TYPES = ("attention", "sliding_attention", "ssm", "bmojo_f", "bmojo")
PEERS = tuple(PEER_CLASSES)  # llama, mistral, mamba2
ARM_NAMES = (*LAYER_TYPES, HYBRID, *PEERS)  # every arm of the LM benchmark, in its order
assert set(ARM_NAMES) == set(ARMS)
SLOWEST_FIRST = {"mamba2": 0, "bmojo": 1, "bmojo_f": 2}  # start order within a length (fewer idle workers)
# Sized for `make bench` (~12 minutes of the 45 on 2 cores): far below the steps MQAR needs to be learnt
# (benchmarks.mqar --grid cpu: 600 steps at hidden 128), so this sweep shows the pipeline and the ordering
# at a small budget, not converged recall.
FULL = {"seq_lens": (64, 128, 256), "steps": 150, "train_examples": 4800, "eval_examples": 300}
QUICK = {"seq_lens": (32, 64), "steps": 40, "train_examples": 1280, "eval_examples": 200}
WINDOW, HIDDEN, FILLER = 16, 64, "random"


def _mqar_args(vocab: int, batch_size: int, lr: float, eval_examples: int) -> argparse.Namespace:
    """The namespace ``benchmarks.mqar.cell_config`` reads its training options from."""
    from training.config import TrainSection

    return argparse.Namespace(vocab=vocab, batch_size=batch_size, lr=lr, eval_examples=eval_examples,
                              seed=TrainSection.seed, no_tqdm=True)  # fmt: skip


def peer_shape(config):
    """The ``lm_models.LMShape`` of a B'MOJO cell's model config, so the peers share its vocabulary,
    width, depth, heads, window and SSM settings (and its parameter count is the solver's target)."""
    from benchmarks.lm_models import LMShape

    return LMShape(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        sliding_window=config.sliding_window,
        chunk_size=config.chunk_size,
        eidetic_slots=config.eidetic_slots,
        eidetic_topk=config.eidetic_topk,
        ssm_heads=config.ssm_num_heads,
        ssm_head_dim=config.ssm_head_dim,
        ssm_state_size=config.ssm_state_size,
        conv_kernel=config.conv_kernel,
        rope_theta=config.rope_theta,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
    )


def _train_peer(arm: str, cell, shape) -> tuple[dict, dict]:
    """Train the transformers peer ``arm`` on the MQAR ``cell`` (a ``RunConfig``) as ``training.train.run``
    would train a B'MOJO model: same arguments, datasets, collator, metric and seed. (metrics, model info)."""
    import dataclasses

    import transformers
    from transformers.trainer_callback import PrinterCallback

    from benchmarks.lm_models import build_model, non_embedding_params, sized_configs
    from training.data import load_tokenizer
    from training.train import build_datasets, make_trainer, make_training_arguments

    config, _ = sized_configs([arm], shape)[arm]
    train_set, eval_set = build_datasets(cell, load_tokenizer(cell.data.tokenizer))
    args = make_training_arguments(cell, "cpu")
    args = dataclasses.replace(args, eval_strategy="no", save_strategy="no")  # one evaluation, at the end
    transformers.set_seed(cell.train.seed)  # the model's initial weights depend on it
    model = build_model(config)
    trainer = make_trainer(cell, model, args, train_set, eval_set, verify_hashes=False)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    info = {
        "model": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "non_embedding_params": non_embedding_params(model),
    }
    return trainer.evaluate(), info


def run_cell(seq_len: int, layer_type: str, steps: int, examples: int, options: dict) -> dict:
    """Train and evaluate one (sequence length, arm) cell; runs in a worker process.

    ``layer_type`` is any arm of ``ARM_NAMES``: a B'MOJO layer type, ``hybrid`` or a transformers peer.
    """
    import torch
    import transformers

    from benchmarks.lm_models import count_non_embedding, hybrid_layer_types
    from benchmarks.mqar import Setting, cell_config, equalize, hit_rate
    from training.data import load_tokenizer
    from training.train import make_model_config, run

    if layer_type not in ARM_NAMES:
        raise ValueError(f"unknown arm {layer_type!r}; choose from {', '.join(ARM_NAMES)}")
    torch.set_num_threads(options["threads"])
    transformers.logging.set_verbosity_error()
    pairs = max(2, seq_len // 16)
    setting = Setting(seq_len=seq_len, num_pairs=pairs, window=WINDOW, slots=4 * pairs)
    args = _mqar_args(options["vocab"], options["batch_size"], options["lr"], options["eval_examples"])
    tokenizer = load_tokenizer("byte")
    reference = cell_config(setting, HIDDEN, FILLER, "bmojo", steps, examples, args)
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as scratch:
        start = time.perf_counter()
        if layer_type in PEERS:
            reference.train.output_dir = str(Path(scratch) / "run")
            metrics, info = _train_peer(layer_type, reference, peer_shape(make_model_config(reference, tokenizer)))
            hits = {"memory_hit_rate": None, "memory_hit_ceiling": None}
        else:
            cell = cell_config(setting, HIDDEN, FILLER, "bmojo", steps, examples, args)
            cell.model.layer_types = hybrid_layer_types(2) if layer_type == HYBRID else [layer_type] * 2
            config, params = equalize(cell, reference, tokenizer)
            config.train.output_dir = str(Path(scratch) / "run")
            model_config = make_model_config(config, tokenizer)
            metrics = run(config).metrics
            info = {
                "model": f"BMojoForCausalLM[{layer_type}]",
                "params": params,
                "non_embedding_params": count_non_embedding(model_config),
            }
            hits = hit_rate(config)  # the saved model, on fresh examples; None without eidetic memory
        seconds = time.perf_counter() - start
    return {
        "seq_len": seq_len,
        "num_pairs": pairs,
        "window": WINDOW,
        "slots": setting.slots,
        "hidden": HIDDEN,
        "filler": FILLER,
        "layer_type": layer_type,
        "model": info["model"],
        "params": info["params"],
        "non_embedding_params": info["non_embedding_params"],
        "accuracy": round(metrics["eval_accuracy"], 4),
        **hits,
        "train_seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two short lengths, few steps (checks the pipeline)")
    parser.add_argument("--seq-lens", type=int, nargs="+", help="sequence lengths (default 64 128 256)")
    parser.add_argument("--steps", type=int, help="optimizer steps per cell (default 150, quick 40)")
    parser.add_argument("--layer-types", "--arms", dest="layer_types", default=",".join(ARM_NAMES),
                        help=f"comma-separated subset of {','.join(ARM_NAMES)}")  # fmt: skip
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (as benchmarks.mqar)")
    parser.add_argument("--eval-examples", type=int, help="evaluation examples per cell (default 300, quick 200)")
    parser.add_argument("--jobs", type=int, default=2, help="cells at a time (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else FULL
    seq_lens, steps = tuple(args.seq_lens or grid["seq_lens"]), args.steps or grid["steps"]
    args.eval_examples = args.eval_examples or grid["eval_examples"]
    options = {k: getattr(args, k) for k in ("vocab", "batch_size", "lr", "eval_examples", "threads")}
    layer_types = [t.strip() for t in args.layer_types.split(",")]
    unknown = sorted(set(layer_types) - set(ARM_NAMES))
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {', '.join(ARM_NAMES)}")

    import transformers

    name = "recall_quick" if args.quick else "recall"
    meta = {**environment_info(), "transformers": transformers.__version__, "mode": "quick" if args.quick else "full",
            "steps": steps, "train_examples": grid["train_examples"], "runs_per_point": 1, "jobs": args.jobs,
            "layers": 2, **options}  # fmt: skip
    start = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the spawned workers
    slow_first = sorted(layer_types, key=lambda a: SLOWEST_FIRST.get(a, len(SLOWEST_FIRST)))
    cells = [(t, lt) for t in sorted(seq_lens, reverse=True) for lt in slow_first]  # longest first
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_cell, t, lt, steps, grid["train_examples"], options) for t, lt in cells]
        rows = []
        for future in futures:
            rows.append(future.result())
            print(rows[-1], flush=True)
    rows.sort(key=lambda r: (r["seq_len"], layer_types.index(r["layer_type"])))
    meta["wall_seconds"] = round(time.perf_counter() - start, 1)
    json_path, md_path = write_results(name, rows, meta)
    if not args.no_plots:
        from benchmarks.plots import plot_series

        plot_series(json_path, "recall")
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
