"""``bmojo-demo`` (``python -m training.demo``, ``make demo``): B'MOJO against a sliding window and an SSM on recall.

Trains three ``tiny`` models of (nearly) equal size on the same MQAR task with the training package:
all-``bmojo`` layers, all-``sliding_attention`` layers with the same window, and all-``ssm`` layers.
The sequence is four windows long and the key-value pairs sit at its start, so most queries come when
their pair has left the window: a window alone cannot answer them; B'MOJO can, from its eidetic
memory (exact copies of surprising tokens) and its fading memory. Prints the recall accuracies side
by side, saves the B'MOJO run (model + tokenizer) to ``runs/demo/`` and generates from it.

About three minutes on a laptop CPU. Accuracies after this short budget are not the converged ones
(see ``python -m benchmarks.mqar`` for those).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM

import bmojo_neuron  # noqa: F401  (registers the model with AutoModelForCausalLM)

from .config import ModelSection, MQARSection, RunConfig, TrainSection
from .data import load_tokenizer
from .mqar import IGNORE_INDEX, generate
from .presets import count_parameters, match_parameters
from .train import make_model_config, mqar_spec, run, saved_run_hit_rate

LAYER_TYPES = ("bmojo", "sliding_attention", "ssm")

# The task: window 16 (= chunk), sequences of 64, 4 pairs, zeros filler. Zeros make the pairs the only
# surprising tokens, the setting where selection by innovation can learn within a CPU-minute budget.
MQAR = MQARSection(vocab_size=64, seq_len=64, num_pairs=4, filler="zeros", train_examples=12800, eval_examples=512)
WINDOW = 16
LR = 1e-3  # at 3e-3 and above even full attention stays at chance on MQAR (benchmarks.mqar)


def demo_config(
    layer_type: str, output_dir: Path, steps: int, intermediate_size: int | None, lr: float = LR
) -> RunConfig:
    # Every token of a chunk is a candidate (top-k = chunk): the 8 key/value tokens share the first chunk.
    overrides = {"sliding_window": WINDOW, "chunk_size": WINDOW, "eidetic_slots": 32, "eidetic_topk": WINDOW}
    if intermediate_size is not None:
        overrides["intermediate_size"] = intermediate_size
    return RunConfig(
        task="mqar",
        model=ModelSection(preset="tiny", layer_types=[layer_type] * 2, overrides=overrides),
        mqar=MQAR,
        train=TrainSection(
            output_dir=str(output_dir),
            max_steps=steps,
            batch_size=32,
            lr=lr,
            warmup_steps=20,
            weight_decay=0.0,
            logging_steps=max(1, steps // 10),
            eval_steps=steps,
            save_steps=steps,
            save_total_limit=1,
            precision="fp32",
            plot=True,
            overwrite=True,  # `make demo` again replaces the previous demo (said in one warning line)
        ),
    )


def equal_size_widths(steps: int) -> dict[str, int | None]:
    """MLP widths giving every layer type the parameter count of the B'MOJO model."""
    tokenizer = load_tokenizer("byte")
    reference = make_model_config(demo_config("bmojo", Path("."), steps, None), tokenizer)
    target = count_parameters(reference)
    widths = {"bmojo": None}
    for layer_type in LAYER_TYPES[1:]:
        config = make_model_config(demo_config(layer_type, Path("."), steps, None), tokenizer)
        widths[layer_type] = match_parameters(config, target).intermediate_size
    return widths


def show_generation(model_dir: Path, examples: int = 3) -> None:
    """Prompt the saved model with pairs and a query key; greedy-generate the value."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    data = generate(mqar_spec(RunConfig(task="mqar", mqar=MQAR)), examples, seed=12345)
    print(f"\ngeneration from {model_dir} (prompt: pairs k:v, then the text up to a query key)")
    for ids, labels in zip(data["input_ids"], data["labels"]):
        answer_at = int((labels != IGNORE_INDEX).nonzero()[-1])  # the last query: the farthest from its pair
        prompt = ids[:answer_at].unsqueeze(0)
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=1, do_sample=False, pad_token_id=0)
        pairs = " ".join(
            f"{int(k)}:{int(v)}" for k, v in zip(ids[0 : 2 * MQAR.num_pairs : 2], ids[1 : 2 * MQAR.num_pairs : 2])
        )
        got, want = int(out[0, -1]), int(labels[answer_at])
        print(
            f"  pairs {pairs} | query {int(ids[answer_at - 1])} at position {answer_at - 1} -> "
            f"generated {got}, expected {want} {'ok' if got == want else 'wrong'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bmojo-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per model (default 300)")
    parser.add_argument("--lr", type=float, default=LR, help=f"AdamW peak learning rate (default {LR:g})")
    parser.add_argument("--output-dir", default="runs/demo", help="where the B'MOJO run is saved")
    parser.add_argument("--layer-types", default=",".join(LAYER_TYPES), help="comma-separated subset to train")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: these models are too small to gain more)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()

    out = Path(args.output_dir)
    widths = equal_size_widths(args.steps)
    results = {}
    start = time.time()
    for layer_type in [t.strip() for t in args.layer_types.split(",")]:
        folder = out if layer_type == "bmojo" else out.parent / f"{out.name}_baselines" / layer_type
        config = demo_config(layer_type, folder, args.steps, widths[layer_type], args.lr)
        params = count_parameters(make_model_config(config, load_tokenizer("byte")))
        print(f"\n== {layer_type}: {params:,} parameters, {args.steps} steps ==")
        t0 = time.time()
        result = run(config)
        if result.stopped_by is not None:
            print("interrupted: a checkpoint was saved; stopping the demo")
            return 128 + result.stopped_by
        results[layer_type] = (params, result.metrics["eval_accuracy"], saved_run_hit_rate(config), time.time() - t0)

    print(f"\nMQAR recall: sequence {MQAR.seq_len}, {MQAR.num_pairs} pairs, {MQAR.filler} filler, window {WINDOW}")
    print(f"{'layer type':<20}{'parameters':>12}{'recall':>9}{'memory hit':>12}{'of possible':>13}{'train s':>9}")
    for layer_type, (params, accuracy, hits, seconds) in results.items():
        hit_text, ceiling_text = ("-", "-") if hits is None else (f"{hits[0]:.3f}", f"{hits[1]:.3f}")
        print(f"{layer_type:<20}{params:>12,}{accuracy:>9.3f}{hit_text:>12}{ceiling_text:>13}{seconds:>9.0f}")
    print(
        "memory hit: fraction of queries whose value token is in the last B'MOJO layer's eidetic memory; "
        "of possible: the same for a memory that never evicts (queries before the memory is visible miss)"
    )
    print(
        f"total {time.time() - start:.0f} s; B'MOJO run saved in {out}/ (model, tokenizer, metrics.jsonl, curves.png)"
    )
    if "bmojo" in results:
        show_generation(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
