"""Command-line settings of tiny training runs, for the training tests (passed to training.train.main or a torchrun worker)."""

from __future__ import annotations

from bmojo_neuron.testing import TINY_RUN_FIELDS

# The tiny model as `--set` arguments of training.train (a 2-layer, width-32 B'MOJO with the default preset).
TINY_MODEL = [arg for field, value in TINY_RUN_FIELDS.items() for arg in ("--set", f"model.overrides.{field}={value}")]
TINY_MQAR = (
    "--task mqar --mqar-seq-len 32 --mqar-pairs 4 --mqar-vocab 64 --mqar-train-examples 256 "
    "--mqar-eval-examples 16 --batch-size 4 --logging-steps 1 --no-tqdm --no-plot --precision fp32 --warmup-steps 2"
).split()
