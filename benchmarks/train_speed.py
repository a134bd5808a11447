"""Training-step throughput and peak memory on CPU: B'MOJO layer types against Llama (sdpa) and Mamba-2 (the
transformers torch path) at equal size.

    python -m benchmarks.train_speed [--quick] [--threads 1 2] [--seqs 512 2048 4096 8192]

A ~10M-parameter model (vocab 8192, hidden 256, 4 layers) of each B'MOJO type (``bmojo``, ``bmojo_f``,
``ssm``, ``sliding_attention``; window 64, chunk 64, 64 eidetic slots, SSM 8 heads x 64, state 16);
``LlamaForCausalLM`` with the MLP widened and ``Mamba2ForCausalLM`` with layers added until their parameter
counts match ``bmojo``'s. One training step = forward, loss, backward and an AdamW step on a batch of one
sequence of T tokens, fp32. Each (model, T, threads) runs in a fresh process: tokens/s from the median
step after a warm-up step, and the peak resident memory the steps add on top of the model and optimizer.

Targets (issue 4): bmojo >= 0.8x Llama at 2048, >= 1.0x at 4096, >= 1.3x at 8192; >= 1.5x Mamba2 at every T;
bmojo at 8192 >= 0.85x its own tokens/s at 512; peak memory at 8192 no more than Llama's.
Results: ``benchmarks/results/train_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

VOCAB, HIDDEN, LAYERS = 8192, 256, 4
BMOJO_TYPES = ("bmojo", "bmojo_f", "ssm", "sliding_attention")
# Arms beyond one layer type: name -> (layer pattern, config fields that differ). "SSSB" is the pattern the
# training presets ship; "_paper" arms use the paper's memory sizes (window 512, 256 slots).
BMOJO_ARMS = {
    "SSSB": ("SSSB", {}),
    "bmojo_paper": ("B", {"sliding_window": 512, "eidetic_slots": 256}),
    "SSSB_paper": ("SSSB", {"sliding_window": 512, "eidetic_slots": 256}),
}
PEERS = ("llama", "mamba2")
SEQS = (512, 2048, 4096, 8192)


def bmojo_config(name: str, intermediate: int = 688):
    """A layer type (every layer that type) or one of ``BMOJO_ARMS`` (MLP width ``intermediate``)."""
    from bmojo_neuron import BMojoConfig

    pattern, overrides = BMOJO_ARMS.get(name, (None, {}))
    layers = {"layer_pattern": pattern} if pattern else {"layer_types": [name] * LAYERS}
    fields = dict(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=intermediate, num_hidden_layers=LAYERS,
        num_attention_heads=4, sliding_window=64, chunk_size=64, eidetic_topk=8, eidetic_slots=64,
        ssm_num_heads=8, ssm_head_dim=64, ssm_state_size=16, max_position_embeddings=16384,
    )  # fmt: skip
    return BMojoConfig(**{**fields, **overrides, **layers})


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(name: str):
    """The benchmark model ``name`` (a B'MOJO layer type, ``llama`` or ``mamba2``), matched in size to bmojo."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Mamba2Config, Mamba2ForCausalLM

    from bmojo_neuron import BMojoForCausalLM
    from training.presets import match_parameters

    if name in BMOJO_TYPES:
        return BMojoForCausalLM(bmojo_config(name))
    with torch.device("meta"):
        target = _count(BMojoForCausalLM(bmojo_config("bmojo")))
    if name in BMOJO_ARMS:  # the MLP widened to bmojo's parameter count
        return BMojoForCausalLM(match_parameters(bmojo_config(name), target))
    if name == "llama":

        def llama(intermediate):
            return LlamaConfig(
                vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=intermediate, num_hidden_layers=LAYERS,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=16384,
                attn_implementation="sdpa", tie_word_embeddings=False,
            )  # fmt: skip

        with torch.device("meta"):
            per_unit = (_count(LlamaForCausalLM(llama(1000))) - _count(LlamaForCausalLM(llama(0)))) / 1000
            base = _count(LlamaForCausalLM(llama(0)))
        return LlamaForCausalLM(llama(round((target - base) / per_unit)))

    def mamba2(layers):
        return Mamba2Config(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=layers, num_heads=8, head_dim=64, expand=2,
            state_size=16, n_groups=1, chunk_size=256, tie_word_embeddings=False,
        )  # fmt: skip

    with torch.device("meta"):
        layers = min(range(1, 33), key=lambda n: abs(_count(Mamba2ForCausalLM(mamba2(n))) - target))
    return Mamba2ForCausalLM(mamba2(layers))


def worker(job: dict) -> dict:
    import torch

    from benchmarks._common import current_rss_mb, peak_rss_mb

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    model = build_model(job["model"]).train()
    if job.get("checkpointing"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, VOCAB, (1, job["seq"]))
    kwargs = {"use_cache": False} if job["model"] in BMOJO_TYPES or job["model"] in BMOJO_ARMS else {}
    baseline = current_rss_mb()
    times = []
    for i in range(job["warmup"] + job["repeats"]):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids, **kwargs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= job["warmup"]:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {**job, "params_m": _count(model) / 1e6, "step_s": seconds, "tokens_per_s": job["seq"] / seconds,
            "peak_extra_mb": peak_rss_mb() - baseline}  # fmt: skip


def targets(rows: list[dict], threads: int) -> list[dict]:
    """The issue's targets, evaluated on the rows of one thread count."""
    tps = {(r["model"], r["seq"]): r.get("tokens_per_s") for r in rows if r.get("threads") == threads}
    mem = {(r["model"], r["seq"]): r.get("peak_extra_mb") for r in rows if r.get("threads") == threads}
    checks = []

    def check(name, value, goal):
        checks.extend(_check(threads, name, value, goal))

    for seq, goal in ((2048, 0.8), (4096, 1.0), (8192, 1.3)):
        if tps.get(("bmojo", seq)) and tps.get(("llama", seq)):
            check(f"bmojo / llama tokens/s at {seq}", tps[("bmojo", seq)] / tps[("llama", seq)], goal)
    for seq in sorted({s for _, s in tps}):
        if tps.get(("bmojo", seq)) and tps.get(("mamba2", seq)):
            check(f"bmojo / mamba2 tokens/s at {seq}", tps[("bmojo", seq)] / tps[("mamba2", seq)], 1.5)
    if tps.get(("bmojo", 8192)) and tps.get(("bmojo", 512)):
        check("bmojo tokens/s 8192 / 512", tps[("bmojo", 8192)] / tps[("bmojo", 512)], 0.85)
    if mem.get(("bmojo", 8192)) and mem.get(("llama", 8192)):
        check("llama / bmojo peak memory at 8192", mem[("llama", 8192)] / mem[("bmojo", 8192)], 1.0)
    return checks + shipped_targets(tps, mem, threads)


def shipped_targets(tps: dict, mem: dict, threads: int) -> list[dict]:
    """Issue 18's targets, for bmojo, the shipped pattern and both at the paper's memory sizes."""
    checks = []
    for arm in ("bmojo", "SSSB", "bmojo_paper", "SSSB_paper"):
        pairs = [(f"{arm} / llama tokens/s at {seq}", tps.get((arm, seq)), tps.get(("llama", seq)), goal)
                 for seq, goal in ((2048, 0.9), (4096, 1.1), (8192, 1.4))]  # fmt: skip
        pairs.append((f"llama / {arm} peak memory at 8192", mem.get(("llama", 8192)), mem.get((arm, 8192)), 1.0))
        for name, num, den, goal in pairs:
            if num and den:
                checks += _check(threads, f"{name} (issue 18)", num / den, goal)
    return checks


def _check(threads: int, name: str, value: float | None, goal: float) -> list[dict]:
    """The row of one target (none when the figure is missing)."""
    if value is None:
        return []
    return [{"threads": threads, "target": name, "value": value, "goal": f">= {goal}", "met": value >= goal}]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T = 512 and 2048, one timed step (a few minutes)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seqs", type=int, nargs="+", default=None)
    parser.add_argument("--models", nargs="+", default=[*BMOJO_TYPES, *BMOJO_ARMS, *PEERS])
    parser.add_argument("--name", help="results file stem (default: train_speed, or train_speed_quick)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    from benchmarks._common import environment_info, run_worker, write_results

    meta = environment_info()
    print("\n".join(f"{k}: {v}" for k, v in meta.items()))
    seqs = args.seqs or ([512, 2048] if args.quick else list(SEQS))
    repeats = 1 if args.quick else 2
    rows = []
    for threads in args.threads:
        for seq in seqs:  # models side by side at each T, so that machine load hits them alike
            for model in args.models:
                job = dict(model=model, seq=seq, warmup=1, repeats=repeats)
                row = run_worker("benchmarks.train_speed", job, threads)
                rows.append(row)
                print(json.dumps(row), flush=True)
    checks = [c for threads in args.threads for c in targets(rows, threads)]
    for c in checks:
        print(c)
    name = args.name or ("train_speed_quick" if args.quick else "train_speed")
    table = [{k: r.get(k) for k in ("model", "threads", "seq", "params_m", "tokens_per_s", "step_s",
                                    "peak_extra_mb", "error") if k in r} for r in rows]  # fmt: skip
    json_path, md_path = write_results(name, table + checks, {**meta, "quick": args.quick})
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
