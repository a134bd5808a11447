"""The HF ``Trainer``, with crash-safe checkpoints and B'MOJO's auxiliary loss reported on its own.

What is changed, and why:

- ``_save_checkpoint`` writes into a temporary folder, adds a manifest, renames (``checkpoint.py``);
  the stock one writes ``checkpoint-N`` in place and rotates by modification time.
- ``compute_loss`` keeps the eidetic auxiliary loss (``outputs.aux_loss``) so it is logged as
  ``aux_loss``; in evaluation the reported ``eval_loss`` is the language-model cross-entropy alone
  (the auxiliary term removed), so ``eval_perplexity = exp(eval_loss)`` is a true perplexity.
- ``_load_from_checkpoint`` reads ``config.json`` with the model's config class: the stock one uses the
  base ``PreTrainedConfig``, whose ``layer_types`` check rejects B'MOJO's types, so resuming would fail.
- ``zero1=True``: the optimizer is ZeRO-1's (``zero1.py``), and its shards are consolidated on rank 0
  before the optimizer file is written, so checkpoints keep the unsharded format.
- the model's ``forward`` takes ``**kwargs`` but does not use ``num_items_in_batch``, so the loss must be
  averaged over gradient-accumulation steps by the Trainer (``model_accepts_loss_kwargs = False``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from unittest import mock

import torch
import transformers.trainer as hf_trainer
from transformers import Trainer
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import checkpoint
from .zero1 import consolidate, is_sharded, sharded

TRAINER_STATE_NAME = "trainer_state.json"


class BMojoTrainer(Trainer):
    """``Trainer`` with atomic, verified checkpoints (see the module docstring)."""

    def __init__(self, *args, verify_hashes: bool = True, zero1: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.verify_hashes = verify_hashes
        if zero1:
            optimizer_class, defaults = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer_cls_and_kwargs = (sharded(optimizer_class), defaults)
        self.model_accepts_loss_kwargs = False
        self._aux = {True: [], False: []}  # training? -> detached per-batch auxiliary losses

    # ----------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        aux = outputs.get("aux_loss") if isinstance(outputs, dict) else getattr(outputs, "aux_loss", None)
        if aux is not None:
            self._aux[model.training].append(aux.detach())
            if not model.training:
                # Report the language-model loss alone in evaluation (perplexity must not include it).
                loss = loss - self._aux_weight() * aux.detach()
        return (loss, outputs) if return_outputs else loss

    def _aux_weight(self) -> float:
        return float(getattr(self.accelerator.unwrap_model(self.model).config, "eidetic_aux_loss_weight", 0.0))

    def _mean_aux(self, training: bool) -> float | None:
        values, self._aux[training] = self._aux[training], []
        if not values:
            return None
        mean = torch.stack(values).mean()
        return float(self.accelerator.reduce(mean, reduction="mean")) if self.args.world_size > 1 else float(mean)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: attach the auxiliary loss of the same window
            aux = self._mean_aux(training=True)
            if aux is not None:
                logs["aux_loss"] = round(aux, 6)
        super().log(logs, start_time)

    def evaluation_loop(self, *args, **kwargs):
        self._aux[False] = []
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        loss = output.metrics.get(f"{prefix}_loss")
        if loss is not None:
            output.metrics[f"{prefix}_perplexity"] = math.exp(min(loss, 50.0))
        aux = self._mean_aux(training=False)
        if aux is not None:
            output.metrics[f"{prefix}_aux_loss"] = aux
        return output

    # ----------------------------------------------------------------------------------- checkpoints
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        config_class = type(self.accelerator.unwrap_model(model or self.model).config)
        # transformers.trainer reads the checkpoint's config.json with PreTrainedConfig only to compare
        # versions; our config class reads the same file without rejecting B'MOJO layer types.
        with mock.patch.object(hf_trainer, "PreTrainedConfig", config_class):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self.optimizer is not None and is_sharded(self.optimizer):
            consolidate(self.optimizer)  # a collective: every rank, before rank 0 reads state_dict()
        super()._save_optimizer_and_scheduler(output_dir)

    def _save_checkpoint(self, model, trial) -> None:
        """Save like ``Trainer._save_checkpoint``, but into a temporary folder that is renamed at the end.

        Every rank writes its part (model shards under FSDP, its RNG state) into the temporary folder;
        after a barrier the main process writes the manifest, renames and rotates.
        """
        step = self.state.global_step
        run_dir = Path(self._get_output_dir(trial=trial))
        final_dir = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        tmp_dir = run_dir / f"{checkpoint.TMP_PREFIX}{step}"
        if self.args.should_save and tmp_dir.exists():
            shutil.rmtree(tmp_dir)  # left over by a run killed while saving this very step
        self.accelerator.wait_for_everyone()

        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        self.save_model(str(tmp_dir), _internal_call=True)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(tmp_dir))
            self._save_scaler(str(tmp_dir))
            self._save_rng_state(str(tmp_dir))
        if self.args.should_save:
            for cb in [c for c in self.callback_handler.callbacks + [self.control] if isinstance(c, ExportableState)]:
                name = cb.__class__.__name__
                if isinstance(self.state.stateful_callbacks.get(name), list):
                    self.state.stateful_callbacks[name].append(cb.state())
                else:
                    self.state.stateful_callbacks[name] = cb.state()
            self.state.save_to_json(str(tmp_dir / TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()

        if self.args.should_save:
            checkpoint.finalize(tmp_dir, final_dir, step, hashes=self.verify_hashes)
            checkpoint.rotate(run_dir, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()


__all__ = ["BMojoTrainer"]
