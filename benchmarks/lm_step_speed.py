"""Training tokens/s of the LM arms at the benchmark's shape, measured side by side
(``python -m benchmarks.lm_step_speed --arms bmojo,bmojo_e2``).

``benchmarks.lm`` reports tokens/s beside perplexity, but its runs are minutes apart on a shared machine,
so their times differ by 2x for the same arm. Here every arm's model is built once and the arms take turns:
each round times one training step (forward, loss, backward, AdamW) of a batch of ``--batch`` x
``--seq-len`` random tokens for every arm, and the median over rounds is reported, so a change of the
machine's load hits every arm alike. One process, ``--threads`` torch threads.
Results: ``benchmarks/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks._common import environment_info, write_results
from benchmarks.lm import FULL
from benchmarks.lm_models import LM_ARMS, build_model, sized_configs


def _step(model, optimizer, ids):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", required=True, help=f"comma-separated subset of {','.join(LM_ARMS)}")
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per arm (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=FULL.batch_size)
    parser.add_argument("--seq-len", type=int, default=FULL.seq_len)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="lm_step_speed")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    unknown = sorted(set(arms) - set(LM_ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {', '.join(LM_ARMS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sized = sized_configs(arms, FULL.shape)
    ids = torch.randint(0, FULL.shape.vocab_size, (args.batch, args.seq_len))
    setups = {}
    for arm in arms:
        model = build_model(sized[arm][0]).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        _step(model, optimizer, ids)  # warm-up: allocations, first-call dispatch
        setups[arm] = (model, optimizer)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for _ in range(args.rounds):
        for arm, (model, optimizer) in setups.items():
            start = time.perf_counter()
            _step(model, optimizer, ids)
            times[arm].append(time.perf_counter() - start)
    tokens = args.batch * args.seq_len
    rows = []
    for arm in arms:
        median = statistics.median(times[arm])
        rows.append({"arm": arm, "non_embedding_params": sized[arm][1], "step_seconds_median": round(median, 3),
                     "step_seconds_min": round(min(times[arm]), 3), "tokens_per_s": round(tokens / median)})  # fmt: skip
    meta = {**environment_info(), "rounds": args.rounds, "batch": args.batch, "seq_len": args.seq_len,
            "threads": args.threads, "shape": FULL.shape.to_dict()}  # fmt: skip
    json_path, md_path = write_results(args.name, rows, meta)
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
