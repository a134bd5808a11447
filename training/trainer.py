"""The HF ``Trainer``, with crash-safe checkpoints and B'MOJO's auxiliary loss reported on its own.

What is changed, and why:

- ``_save_checkpoint`` writes into a temporary folder, adds a manifest, renames (``checkpoint.py``);
  the stock one writes ``checkpoint-N`` in place and rotates by modification time.
- ``compute_loss`` keeps the eidetic auxiliary loss (``outputs.aux_loss``) so it is logged as
  ``aux_loss``; in evaluation the reported ``eval_loss`` is the language-model cross-entropy alone
  (the auxiliary term removed), so ``eval_perplexity = exp(eval_loss)`` is a true perplexity.
- ``_load_from_checkpoint`` reads ``config.json`` with the model's config class: the stock one uses the
  base ``PreTrainedConfig``, whose ``layer_types`` check rejects B'MOJO's types, so resuming would fail.
- ``zero1=True``: the optimizer is ZeRO-1's (``zero1.py``). With ``torch.distributed`` its shards are
  consolidated on rank 0 before the optimizer file is written, so checkpoints keep the unsharded format.
  On PyTorch/XLA the optimizer reduce-scatters and clips the gradients in its step, so the Trainer's
  all-reduce and clipping are skipped (``_clip_grad_norm``, ``_get_grad_norm``), and each rank saves and
  loads its own shard file.
- the model's ``forward`` takes ``**kwargs`` but does not use ``num_items_in_batch``, so the loss must be
  averaged over gradient-accumulation steps by the Trainer (``model_accepts_loss_kwargs = False``).
- on resume, a tied ``lm_head.weight`` (not saved: it is the embedding) is not reported as a missing key,
  and a changed ``--lr`` replaces the peak rate restored with the scheduler (the stock Trainer silently
  keeps the checkpoint's; ``rundir.describe_changes`` says so in one line), and the first resumed step
  uses this run's schedule (the stock one uses the rate the old schedule gave last).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from unittest import mock

import torch
import transformers.trainer as hf_trainer
from transformers import Trainer
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import checkpoint
from .config import ConfigError
from .zero1 import consolidate, is_sharded, is_sharded_xla, sharded, sharded_xla, unwrap, xla_shard_file

TRAINER_STATE_NAME = "trainer_state.json"


class BMojoTrainer(Trainer):
    """``Trainer`` with atomic, verified checkpoints (see the module docstring)."""

    def __init__(self, *args, verify_hashes: bool = True, zero1: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.verify_hashes = verify_hashes
        if zero1:
            optimizer_class, defaults = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            if self.args.device.type == "xla":
                optimizer_class = sharded_xla(optimizer_class, self.args.max_grad_norm)
            else:
                optimizer_class = sharded(optimizer_class)
            self.optimizer_cls_and_kwargs = (optimizer_class, defaults)
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

    # ------------------------------------------------------------------------------ ZeRO-1 on XLA
    def _xla_zero1(self) -> bool:
        return self.optimizer is not None and is_sharded_xla(self.optimizer)

    def _clip_grad_norm(self, model):
        if self._xla_zero1():
            return None  # the optimizer clips in its step, after reducing the gradients
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):
        if self._xla_zero1():
            # The optimizer's step reduce-scatters the gradients: accelerate's all-reduce before it would
            # double the traffic. Its norm is computed in that step, and filled in before it is logged.
            self.accelerator.gradient_state.is_xla_gradients_synced = True
            return unwrap(self.optimizer).last_grad_norm
        return super()._get_grad_norm(model, grad_norm)

    def _save_xla_shards(self, output_dir: str) -> None:
        import torch_xla.core.xla_model as xm

        xm.rendezvous("saving_optimizer_shards")
        shard = os.path.join(output_dir, xla_shard_file(self.args.process_index, self.args.world_size))
        xm.save(self.optimizer.state_dict(), shard, master_only=False)
        xm.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, hf_trainer.SCHEDULER_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self._xla_zero1():
            super()._load_optimizer_and_scheduler(checkpoint)
            if checkpoint is not None:
                self._apply_learning_rate()
            return
        shard = os.path.join(checkpoint, xla_shard_file(self.args.process_index, self.args.world_size))
        if not os.path.isfile(shard):
            raise ConfigError(
                f"--resume with train.zero1 on XLA: {checkpoint} has no optimizer shard {os.path.basename(shard)} "
                "(saved without ZeRO-1 or with another number of processes); resume it as it was saved"
            )
        self.optimizer.load_state_dict(torch.load(shard, map_location="cpu", weights_only=True))
        scheduler = torch.load(os.path.join(checkpoint, hf_trainer.SCHEDULER_NAME), weights_only=True)
        self.lr_scheduler.load_state_dict(scheduler)

    def _apply_learning_rate(self) -> None:
        """Make the restored schedule this run's: its peak rate (``args.learning_rate``) and its shape.

        The scheduler's state restores the checkpoint's peak rate and the optimizer's the checkpoint's current
        rate, computed with the old schedule; the multiplier functions are this run's (max_steps, warm-up), so
        the next step's rate is recomputed from them (it equals the restored one when nothing changed).
        """
        scheduler = self.lr_scheduler
        restored, multipliers = getattr(scheduler, "base_lrs", None), getattr(scheduler, "lr_lambdas", None)
        if not restored or not multipliers or len(multipliers) != len(self.optimizer.param_groups):
            return
        peak = self.args.learning_rate
        scheduler.base_lrs = [peak] * len(restored)
        for group, multiplier in zip(self.optimizer.param_groups, multipliers):
            group["initial_lr"] = peak
            group["lr"] = peak * multiplier(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def train(self, *args, **kwargs):
        # On resume the stock Trainer lists the changed logging/eval/save intervals in a block of its own;
        # training.rundir.describe_changes has already said, in one line each, what changed and what it does.
        with mock.patch.object(hf_trainer, "compare_trainer_and_checkpoint_args", lambda *a, **k: None):
            return super().train(*args, **kwargs)

    # ----------------------------------------------------------------------------------- checkpoints
    def _issue_warnings_after_load(self, load_result) -> None:
        """The stock warning, without the tied output embedding (saved once, as the input embedding)."""
        model = self.accelerator.unwrap_model(self.model)
        if getattr(model.config, "tie_word_embeddings", False) and "lm_head.weight" in load_result.missing_keys:
            model.tie_weights()
            missing = [k for k in load_result.missing_keys if k != "lm_head.weight"]
            load_result = load_result._replace(missing_keys=missing)
        super()._issue_warnings_after_load(load_result)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        config_class = type(self.accelerator.unwrap_model(model or self.model).config)
        # transformers.trainer reads the checkpoint's config.json with PreTrainedConfig only to compare
        # versions; our config class reads the same file without rejecting B'MOJO layer types.
        with mock.patch.object(hf_trainer, "PreTrainedConfig", config_class):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self._xla_zero1():
            return self._save_xla_shards(output_dir)
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
