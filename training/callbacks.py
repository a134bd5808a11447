"""Trainer callbacks: metrics as JSON lines, and a checkpoint on SIGTERM/SIGINT before exiting."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsJSONLCallback(TrainerCallback):
    """Append every log (training and evaluation) to ``output_dir/metrics.jsonl``, one JSON object a line.

    On resume, lines logged after the checkpoint's step (by the run that was interrupted) are dropped
    first, so the file reads as one run; a line that is not JSON (half-written when the run was killed)
    is dropped with a warning.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = []
        for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
            try:
                record = json.loads(line) if line.strip() else None
            except ValueError:
                record = None
                logger.warning("%s line %d is not JSON (a write cut short); dropped", self.path, number)
            if isinstance(record, dict) and record.get("step", 0) <= state.global_step:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class GracefulStopCallback(TrainerCallback):
    """On SIGTERM or SIGINT, finish the current step, save a checkpoint and stop training.

    The handler only sets a flag (doing work in a signal handler is unsafe); the flag is checked at the
    end of each optimizer step. A second signal gets the default behaviour (immediate exit). Under
    ``torch.distributed``, ranks may see the signal at different steps, so the flag is all-reduced over a
    CPU (gloo) group every step: all ranks stop at the same step, and no accelerator sync is involved.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}
        self._group = None

    def _handler(self, signum, frame):
        self.received = signum
        logger.warning(
            "received %s: saving a checkpoint at the end of this step, then exiting", signal.Signals(signum).name
        )
        for sig, previous in self._previous.items():  # a second signal is not ignored
            signal.signal(sig, previous)

    def on_train_begin(self, args, state, control, **kwargs):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self._group = dist.new_group(backend="gloo")

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.received is not None
        if self._group is not None:
            flag = torch.tensor([self.received or 0], dtype=torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
            stop = bool(flag.item())
            self.received = int(flag.item()) or None
        if stop:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


__all__ = ["METRICS_FILE", "GracefulStopCallback", "MetricsJSONLCallback"]
