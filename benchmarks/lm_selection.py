"""Does the innovation decide the eidetic selection? (``python -m benchmarks.lm_selection``)

For the ``bmojo`` arm of the language-modelling benchmark (``lm_models``, the README's shape), with the
innovation standardised within its chunk (``eidetic_innovation_norm="chunk"``) and raw (``"none"``): at step 0
and along a short training run on the KJV corpus, on a fixed validation batch, per ``bmojo`` layer and
complete chunk,

- ``overlap``: ``|top-k by score ∩ top-k by innovation| / k``, the chunk's candidates against the
  innovation-only candidates (chance: ``k / C``);
- ``innovation_mean``, ``innovation_std``: the raw innovation (its mean, and its standard deviation within a
  chunk);
- ``innovation_term_std``, ``learned_term_std``: the standard deviation within a chunk of the score's two
  terms, ``a * innovation`` (standardised or raw) and ``w . [x, s] + b``.

Averages over layers, chunks and rows. Small on purpose (one seed, a few dozen steps: the CPU is shared);
writes ``benchmarks/results/lm_selection.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks._common import environment_info, write_results
from benchmarks.lm import FULL
from benchmarks.lm_models import build_model, sized_configs

NORMS = ("chunk", "none")


def selection_stats(model, ids: torch.Tensor) -> dict:
    """The module docstring's measures on ``ids`` (batch, seq), averaged over bmojo layers and chunks."""
    captured = []

    def hook(module, args, output):
        x, s, _k, _v, k_proj, _mask = args
        s_prev = torch.nn.functional.pad(s, (0, 0, 1, 0))[:, : s.shape[1]]
        learned, innovation, _ = module.score_parts(x, s, s_prev, k_proj)
        valid = torch.ones_like(innovation, dtype=torch.bool)
        score = module.combine(learned, innovation, valid)
        captured.append((module, learned.detach(), innovation, score.detach()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if hasattr(m, "score_parts")]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    sums: dict[str, float] = {}
    for module, learned, innovation, score in captured:
        C, k = module.chunk_size, module.topk
        n = innovation.shape[1] // C  # complete chunks only
        inn, sc, le = (t[:, : n * C].reshape(t.shape[0], n, C).float() for t in (innovation, score, learned))
        by_score = torch.zeros_like(sc).scatter_(-1, sc.topk(k, -1).indices, 1.0)
        by_innovation = torch.zeros_like(inn).scatter_(-1, inn.topk(k, -1).indices, 1.0)
        term = sc - le  # a * (standardised or raw) innovation
        measures = {
            "overlap": ((by_score * by_innovation).sum(-1) / k).mean(),
            "innovation_mean": inn.mean(),
            "innovation_std": inn.std(-1).mean(),
            "innovation_term_std": term.std(-1).mean(),
            "learned_term_std": le.std(-1).mean(),
        }
        for key, value in measures.items():
            sums[key] = sums.get(key, 0.0) + value.item() / len(captured)
    sums["chance_overlap"] = captured[0][0].topk / captured[0][0].chunk_size
    return sums


def run(norm: str, steps: list[int], settings, seed: int, eval_rows: int) -> list[dict]:
    from training.data import build_lm_datasets, load_tokenizer

    train_set, eval_set = build_lm_datasets(load_tokenizer("byte"), settings.seq_len)
    config, _ = sized_configs(["bmojo"], settings.shape)["bmojo"]
    config.eidetic_innovation_norm = norm
    torch.manual_seed(seed)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, settings.warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / warmup))
    eval_ids = eval_set[:eval_rows]["input_ids"]
    gen = torch.Generator().manual_seed(seed)
    rows, step, start = [], 0, time.perf_counter()
    for target in sorted(steps):
        while step < target:
            batch = torch.randint(0, len(train_set), (settings.batch_size,), generator=gen)
            ids = train_set[batch.tolist()]["input_ids"]
            model.train()
            loss = model(ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        model.eval()
        stats = selection_stats(model, eval_ids)
        row = {"innovation_norm": norm, "step": step, **{k: round(v, 5) for k, v in stats.items()}}
        row["train_seconds"] = round(time.perf_counter() - start, 1)
        print(row, flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 10, 30, 60], help="where to measure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-rows", type=int, default=8, help="validation sequences measured")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--name", default="lm_selection")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = FULL
    rows = [row for norm in NORMS for row in run(norm, args.steps, settings, args.seed, args.eval_rows)]
    meta = {
        **environment_info(),
        "arm": "bmojo (benchmarks.lm_models, the README's LM shape)",
        "shape": settings.shape.to_dict(),
        "seq_len": settings.seq_len,
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "schedule": f"linear warmup {settings.warmup_steps} steps, then constant (AdamW, clip 1.0)",
        "seed": args.seed,
        "eval_rows": args.eval_rows,
        "measures": "top-k candidates of each complete chunk (k / C chance), averaged over bmojo layers",
    }
    json_path, md_path = write_results(args.name, rows, meta)
    print(md_path.read_text())
    print(f"wrote {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
