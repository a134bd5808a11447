"""The HF Trainer's PyTorch/XLA route run end to end on PyTorch/XLA's CPU device (part of ``make xla-check``).

The step checks of :mod:`tools.xla_check` run a hand-written step; this runs ``training.train.run``
itself with ``train.device=xla``: the Trainer's XLA data loader, accelerate's optimizer wrapper, our
checkpoints, and ZeRO-1 (``train.zero1``, PyTorch/XLA's sharded optimizer). Three runs of a tiny MQAR task,
with 2 gradient-accumulation micro-batches per step and gradient clipping that binds on every step (so that
it is the optimizer's clipping that is compared):

1. ``adamw``: plain AdamW, :data:`STEPS` steps;
2. ``zero1``: ZeRO-1, same steps. Its optimizer reduces, clips and steps by itself, and the Trainer's
   all-reduce and clipping are skipped; on one device it must give the same losses as run 1;
3. ``zero1-resumed``: ZeRO-1 stopped at step ``STEPS // 2`` with a checkpoint (its optimizer shard file),
   then resumed with ``--resume``: its loss and weights at the end must equal run 2's.

One process owns one CPU device here, so the shards are the whole state: the collectives between ranks
are PyTorch/XLA's and run only on a multi-device host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from transformers import TrainerCallback

from bmojo_neuron.testing import TINY_RUN_FIELDS
from training import checkpoint
from training.callbacks import METRICS_FILE

STEPS = 6
MAX_GRAD_NORM = 0.05  # below the tiny model's gradient norms (~0.3 to 3): clipping binds on every step
# XLA against XLA, same graphs except the optimizer's: the clipping norm is summed in another order.
LOSS_ATOL = 1e-5
WEIGHT_ATOL = 1e-5

ARGS = [
    *"--task mqar --mqar-seq-len 32 --mqar-pairs 4 --mqar-vocab 64 --mqar-train-examples 256".split(),
    *"--mqar-eval-examples 16 --batch-size 4 --logging-steps 1 --no-tqdm --no-plot --precision fp32".split(),
    *f"--warmup-steps 2 --device xla --max-grad-norm {MAX_GRAD_NORM} --save-steps 1000 --grad-accum 2".split(),
    *("--layer-pattern", "WSFB"),
    *(arg for field, value in TINY_RUN_FIELDS.items() for arg in ("--set", f"model.overrides.{field}={value}")),
]


class StopAt(TrainerCallback):
    """Stop after ``step`` with a checkpoint, as a run cut short would leave it."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = control.should_training_stop = True


class FirstStep(TrainerCallback):
    """Records the first step a run trains (a resumed run must not start again from step 1)."""

    step: int | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.step is None:
            self.step = state.global_step + 1


@contextlib.contextmanager
def gradient_all_reduces():
    """Counts accelerate's ``xm.all_reduce`` calls: its all-reduce of the gradients before clipping or the
    optimizer step (the ZeRO-1 optimizer's own all-reduce, of its gradient norm, is not counted). On one
    device the result is the same either way, so only the count shows that the ZeRO-1 path skips it."""
    import torch_xla.core.xla_model as xm

    real, calls = xm.all_reduce, []

    def counting(reduce_type, inputs, *args, **kwargs):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("accelerate."):
            calls.append(len(inputs))
        return real(reduce_type, inputs, *args, **kwargs)

    xm.all_reduce = counting
    try:
        yield calls
    finally:
        xm.all_reduce = real


@dataclass
class Run:
    losses: dict[int, float]
    grad_norms: dict[int, float]
    weights: dict[str, torch.Tensor]
    files: list[str]  # of the last checkpoint
    gradient_all_reduces: int


def _train(output_dir: Path, *extra: str, callbacks=()) -> Run:
    from training.config import parse
    from training.train import run

    config, _ = parse([*ARGS, "--output-dir", str(output_dir), "--max-steps", str(STEPS), *extra])
    with gradient_all_reduces() as calls:
        run(config, callbacks=list(callbacks))
    records = [json.loads(line) for line in (output_dir / METRICS_FILE).read_text().splitlines() if line]
    return Run(
        {r["step"]: r["loss"] for r in records if "loss" in r},
        {r["step"]: r["grad_norm"] for r in records if "grad_norm" in r},
        load_file(output_dir / "model.safetensors"),
        _complete_checkpoint_files(output_dir),
        len(calls),
    )


def _complete_checkpoint_files(output_dir: Path) -> list[str]:
    """The files of the newest complete (manifest-verified) checkpoint; none if there is none."""
    last = checkpoint.latest_complete(output_dir)
    return [] if last is None else sorted(p.name for p in last.iterdir())


def _max_diff(a: dict, b: dict) -> float:
    """Largest |a - b| over the keys (floats or tensors); infinite if the keys differ."""
    if sorted(a) != sorted(b):
        return math.inf
    return max(float(torch.as_tensor(a[k] - b[k]).abs().max()) for k in a)


@dataclass
class Check:
    rule: str
    ok: bool
    detail: str


def run_checks() -> list[Check]:
    """The three runs and what is compared; quiet (the Trainer logs only warnings)."""
    from training.zero1 import xla_shard_file

    logging.getLogger("training").setLevel(logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="xla-trainer-") as tmp:
        tmp = Path(tmp)
        adamw = _train(tmp / "adamw")
        zero1 = _train(tmp / "zero1", "--zero1")
        _train(tmp / "cut", "--zero1", callbacks=[StopAt(STEPS // 2)])
        cut_files = _complete_checkpoint_files(tmp / "cut")
        first = FirstStep()
        resumed = _train(tmp / "cut", "--zero1", "--resume", callbacks=[first])

    shard = xla_shard_file(0, 1)
    clipped = sum(n > MAX_GRAD_NORM for n in adamw.grad_norms.values())
    checks = [
        Check(
            "trainer-route",
            sorted(adamw.losses) == list(range(1, STEPS + 1)) and "optimizer.pt" in adamw.files,
            f"plain AdamW: {len(adamw.losses)} steps, loss {adamw.losses.get(STEPS, math.nan):.4f} at step {STEPS}, "
            f"checkpoint with {', '.join(adamw.files)}",
        ),
        Check(
            "clipping-binds",
            clipped == STEPS,
            f"{clipped}/{STEPS} steps had a gradient norm above max_grad_norm {MAX_GRAD_NORM}",
        ),
    ]
    diff = max(_max_diff(adamw.losses, zero1.losses), _max_diff(adamw.grad_norms, zero1.grad_norms))
    checks.append(
        Check(
            "zero1-matches-adamw",
            diff <= LOSS_ATOL and shard in zero1.files and "optimizer.pt" not in zero1.files,
            f"ZeRO-1 vs AdamW: losses and gradient norms at steps 1-{STEPS} differ by up to {diff:.1e} "
            f"(<= {LOSS_ATOL:g}); ZeRO-1 checkpoint holds {shard}: {shard in zero1.files}",
        )
    )
    checks.append(
        Check(
            "zero1-no-all-reduce",
            adamw.gradient_all_reduces == STEPS and zero1.gradient_all_reduces == 0,
            f"gradient all-reduces by accelerate: AdamW {adamw.gradient_all_reduces} (one per step), ZeRO-1 "
            f"{zero1.gradient_all_reduces} (its step reduce-scatters instead)",
        )
    )
    loss_diff = abs(resumed.losses.get(STEPS, math.inf) - zero1.losses[STEPS])
    weight_diff = _max_diff(resumed.weights, zero1.weights)
    checks.append(
        Check(
            "zero1-resume-exact",
            shard in cut_files
            and first.step == STEPS // 2 + 1
            and loss_diff <= LOSS_ATOL
            and weight_diff <= WEIGHT_ATOL,
            f"stopped at step {STEPS // 2} (checkpoint holds {shard}: {shard in cut_files}), resumed at step "
            f"{first.step}: loss at step {STEPS} differs by {loss_diff:.1e}, final weights by {weight_diff:.1e} "
            f"(<= {WEIGHT_ATOL:g})",
        )
    )
    return checks


__all__ = ["Check", "run_checks"]
