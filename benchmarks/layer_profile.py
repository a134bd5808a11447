"""Where the time of one B'MOJO decoder layer goes: forward and backward split per op, on CPU.

    python -m benchmarks.layer_profile [--seq 4096] [--layer-type bmojo] [--threads 1] [--top 25]

One ``BMojoDecoderLayer`` of the ``make bench`` training model (``benchmarks.train_speed``: hidden 256, window
64, chunk 64, 64 eidetic slots, SSM 8 heads x 64, state 16) on a batch of one sequence, fp32. A warm-up step,
then the forward and the backward each under ``torch.profiler``; each op's self CPU time is summed over its
calls. The table lists the ops that take the most time in either phase, with their share of the phase.
Results: ``benchmarks/results/layer_profile_<type>_<seq>.{json,md}``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks._common import environment_info, write_results
from benchmarks.train_speed import bmojo_config
from bmojo_neuron.layers import Tokens
from bmojo_neuron.modeling_bmojo import BMojoDecoderLayer


def self_times_ms(prof) -> dict[str, float]:
    """Self CPU time per op name (ms), summed over calls; autograd's own bookkeeping events folded away."""
    times: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        name = event.key
        if name.startswith("autograd::engine::evaluate_function: "):
            name = name.split(": ", 1)[1]
        times[name] += event.self_cpu_time_total / 1e3
    return dict(times)


def profile_layer(layer_type: str, seq: int) -> tuple[dict[str, float], dict[str, float]]:
    torch.manual_seed(0)
    config = bmojo_config(layer_type)
    layer = BMojoDecoderLayer(config, 0).train()
    hidden = torch.randn(1, seq, config.hidden_size, requires_grad=True)
    tokens = Tokens.whole_sequence(config, seq, hidden.dtype)

    def forward():
        out, aux = layer(hidden, tokens)
        return out.sum() + (aux if aux is not None else 0.0)

    forward().backward()  # warm-up (allocator, first-call costs)
    with profile(activities=[ProfilerActivity.CPU]) as fwd_prof:
        loss = forward()
    with profile(activities=[ProfilerActivity.CPU]) as bwd_prof:
        loss.backward()
    return self_times_ms(fwd_prof), self_times_ms(bwd_prof)


def table(fwd: dict[str, float], bwd: dict[str, float], top: int) -> list[dict]:
    total_f, total_b = sum(fwd.values()), sum(bwd.values())
    names = sorted(set(fwd) | set(bwd), key=lambda n: -(fwd.get(n, 0.0) + bwd.get(n, 0.0)))[:top]
    rows = [
        {
            "op": name,
            "forward_ms": round(fwd.get(name, 0.0), 2),
            "forward_share": round(fwd.get(name, 0.0) / total_f, 3),
            "backward_ms": round(bwd.get(name, 0.0), 2),
            "backward_share": round(bwd.get(name, 0.0) / total_b, 3),
        }
        for name in names
    ]
    rows.append({"op": "(all ops)", "forward_ms": round(total_f, 1), "forward_share": 1.0,
                 "backward_ms": round(total_b, 1), "backward_share": 1.0})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--layer-type", default="bmojo")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.seq < 1 or args.threads < 1 or args.top < 1:
        parser.error("--seq, --threads and --top must be positive")
    torch.set_num_threads(args.threads)
    meta = {**environment_info(), "layer_type": args.layer_type, "seq": args.seq, "threads": args.threads}
    fwd, bwd = profile_layer(args.layer_type, args.seq)
    rows = table(fwd, bwd, args.top)
    for row in rows:
        print(row)
    json_path, md_path = write_results(f"layer_profile_{args.layer_type}_{args.seq}", rows, meta)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
