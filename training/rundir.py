"""The run folder: one run per folder, said out loud.

- A folder that already holds a run (checkpoints, metrics, a saved model) is refused unless the user says
  what to do with it: ``--resume`` continues it, ``--overwrite`` deletes that run's files first. Without
  this a second run wrote over the first one's metrics and model, and its checkpoint rotation deleted the
  new checkpoints in favour of the old run's higher-numbered ones.
- A lock (``<run>/.lock``, held with ``fcntl.flock`` for the whole run and released by the kernel when the
  process ends, even on kill -9) keeps two runs out of one folder.
- On resume, the checkpoint's model must be the model this run builds (else a clear error, not a
  shape-mismatch traceback from ``load_state_dict``), and every changed training setting is named in one
  line with what happens to it.

Only the main process (rank 0) locks and deletes; every rank runs the read-only checks so that all of
them stop on the same error.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from . import checkpoint
from .config import ConfigError

logger = logging.getLogger("training")

LOCK_FILE = ".lock"
RUN_CONFIG = "run_config.yaml"
# Files a run writes at its top level (the final model and tokenizer, metrics, plots, the run's settings).
RUN_FILES = (
    RUN_CONFIG,
    "metrics.jsonl",
    "final_metrics.json",
    "curves.png",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "training_args.bin",
)

# Config fields that define the model's parameters or what its layers compute: a checkpoint saved with other
# values is another model. (Loss weights, initialisation and the informational maximum length may change.)
MODEL_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "layer_types",
    "sliding_window",
    "chunk_size",
    "eidetic_topk",
    "eidetic_slots",
    "eidetic_policy",
    "eidetic_innovation",
    "ssm_state_size",
    "ssm_num_heads",
    "ssm_head_dim",
    "ssm_num_groups",
    "conv_kernel",
    "rope_theta",
    "tie_word_embeddings",
)

# What a changed training setting does on --resume (the others are named as "applies from here on").
_ON_RESUME = {
    "lr": "the new peak rate replaces the checkpoint's in the restored schedule",
    "max_steps": "the cosine schedule is recomputed for the new length",
    "warmup_steps": "the schedule is recomputed",
    "min_lr_ratio": "the schedule is recomputed",
    "weight_decay": "kept from the checkpoint: the optimizer's settings are restored with its state",
    "adam_beta1": "kept from the checkpoint: the optimizer's settings are restored with its state",
    "adam_beta2": "kept from the checkpoint: the optimizer's settings are restored with its state",
    "seed": "the restored random state wins; the seed only affected the start",
}
# Settings that do not change what is trained (where it goes, how it is shown or checked).
_NOT_TRAINING = {"resume", "overwrite", "output_dir", "tqdm", "plot", "verify_hashes", "dataloader_workers"}


def is_main_process() -> bool:
    """Rank 0, from torchrun's environment (the Trainer's process group does not exist yet)."""
    return int(os.environ.get("RANK", "0")) == 0


def previous_run(output_dir: Path) -> list[str]:
    """The names of a run's files and checkpoints found in ``output_dir`` (empty if it holds no run)."""
    if not output_dir.is_dir():
        return []
    found = [name for name in RUN_FILES if (output_dir / name).exists()]
    found += [path.name for _, path in sorted(checkpoint.list_checkpoints(output_dir))]
    return found


def check_free(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds a run when neither ``resume`` nor ``overwrite`` says what to do with it."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"train.output_dir {output_dir} exists and is not a folder")
    found = previous_run(output_dir)
    if found and not (resume or overwrite):
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ConfigError(
            f"{output_dir} already holds a run ({shown}); pass --resume to continue it, --overwrite to delete it "
            "and start again, or choose another --output-dir"
        )


def clear(output_dir: Path) -> None:
    """Delete the previous run's files and checkpoints (``--overwrite``); other files are left alone."""
    found = previous_run(output_dir)
    if not found:
        return
    logger.warning("--overwrite: deleting the previous run in %s (%s)", output_dir, ", ".join(found))
    for name in found:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for path in output_dir.glob(checkpoint.TMP_PREFIX + "*"):
        shutil.rmtree(path, ignore_errors=True)


class RunLock:
    """An exclusive ``flock`` on ``<output_dir>/.lock``; raises :class:`ConfigError` if another run holds it."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / LOCK_FILE
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"cannot create the run folder {output_dir}: {e.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise ConfigError(
                f"another run (pid {holder}) is using {output_dir}; wait for it to end or choose another --output-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        # The file stays: deleting it while another process waits on it would let two runs hold two locks.
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def clean_interrupted(output_dir: Path) -> None:
    """Remove what an interrupted save or rotation left behind.

    Temporary folders (a save or a deletion in progress) are never a checkpoint. An incomplete
    ``checkpoint-N`` older than a complete one is the remains of a rotation killed half-way (saves are
    renamed into place only when complete), superseded by the newer checkpoint. An incomplete checkpoint
    newer than every complete one is left for inspection (resume skips it).
    """
    for path in output_dir.glob(checkpoint.TMP_PREFIX + "*"):
        logger.warning("removing %s, left by an interrupted checkpoint save or rotation", path)
        shutil.rmtree(path, ignore_errors=True)
    newest_complete = None
    for step, path in checkpoint.list_checkpoints(output_dir):  # newest first
        problem = checkpoint.verify(path, hashes=False)
        if problem is None:
            newest_complete = newest_complete or step
        elif newest_complete is not None:
            logger.warning("removing %s (%s), left by an interrupted checkpoint rotation", path, problem)
            shutil.rmtree(path, ignore_errors=True)


def check_same_model(resume_from: Path, model_config: Any) -> None:
    """Refuse to resume a checkpoint of another model, naming the fields that differ."""
    try:
        saved = json.loads((resume_from / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: cannot read {resume_from / 'config.json'}: {e}") from None
    wanted = model_config.to_dict()
    changed = [
        f"{name} {saved.get(name)!r} (this run: {wanted.get(name)!r})"
        for name in MODEL_FIELDS
        if name in saved and saved[name] != wanted.get(name)
    ]
    if changed:
        raise ConfigError(
            f"--resume: {resume_from} holds a different model: {'; '.join(changed)}. Resume with the model "
            "settings it was trained with, or start a new run (--overwrite or another --output-dir)"
        )


def describe_changes(output_dir: Path, config: Any) -> list[str]:
    """One line per training setting that differs from the previous launch's ``run_config.yaml``."""
    try:
        before = yaml.safe_load((output_dir / RUN_CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    now = config.to_dict()
    lines = []
    for section in ("task", "data", "mqar", "train"):
        old, new = before.get(section), now.get(section)
        pairs = {section: (old, new)} if section == "task" else {}
        if isinstance(old, dict) and isinstance(new, dict):
            pairs = {f"{section}.{k}": (old.get(k), v) for k, v in new.items() if k not in _NOT_TRAINING}
        if section == "mqar" and now.get("task") != "mqar" or section == "data" and now.get("task") == "mqar":
            continue
        for name, (was, is_now) in pairs.items():
            if was is not None and was != is_now:
                effect = _ON_RESUME.get(name.rpartition(".")[2], "applies from here on")
                lines.append(f"resuming with {name} {is_now!r} (the checkpoint's run had {was!r}): {effect}")
    return lines


__all__ = [
    "RunLock",
    "check_free",
    "check_same_model",
    "clean_interrupted",
    "clear",
    "describe_changes",
    "is_main_process",
    "previous_run",
]
