"""Run configuration: dataclasses with defaults, a YAML file on top, then command-line overrides.

Order of precedence (last wins): the defaults below, ``--config FILE.yaml``, the named flags
(``--max-steps 100``), then ``--set section.key=value`` (any field, values parsed as YAML). The YAML
file has the sections ``model``, ``data``, ``mqar`` and ``train``, and ``task`` at the top level; see
``training/configs/*.yaml``. Every field is documented where it is declared.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .presets import PRESETS  # a plain table: this module and the parser never import torch

TASKS = ("lm", "mqar")
FILLERS = ("zeros", "random")  # MQAR filler tokens (training.mqar)
PRECISIONS = ("auto", "fp32", "bf16")
STRATEGIES = ("auto", "ddp", "fsdp")
DEVICES = ("auto", "cpu", "cuda", "xla", "neuron")


class ConfigError(ValueError):
    """A bad configuration value; the message names the field."""


@dataclass
class ModelSection:
    preset: str = "tiny"  # one of PRESETS (tiny, small, 125m, 350m, 760m, 1.4b)
    layer_pattern: str | None = None  # shorthand, one letter per layer, repeated: A W S F B (see BMojoConfig)
    layer_types: list[str] | None = None  # explicit list, one per layer (wins over layer_pattern)
    overrides: dict[str, Any] = field(default_factory=dict)  # any other BMojoConfig field


@dataclass
class DataSection:
    path: str | None = None  # text file, folder or save_to_disk folder; None = the bundled KJV corpus
    eval_path: str | None = None  # evaluation data (same kinds); default: the dataset's own split or a tail
    text_column: str = "text"  # column of a saved dataset holding the text
    tokenizer: str = "byte"  # "byte" (the project's) or a local HF tokenizer folder
    seq_len: int = 256  # tokens per packed block
    validation_fraction: float = 0.01  # tail of the packed blocks held out when there is no eval data
    cache_dir: str | None = None  # datasets cache (default: HF_DATASETS_CACHE)
    num_proc: int | None = None  # processes for tokenization


@dataclass
class MQARSection:
    vocab_size: int = 256  # keys in [1, vocab/2), values in [vocab/2, vocab)
    seq_len: int = 128
    num_pairs: int = 8
    filler: str = "random"  # "random" (Zoology's default) or "zeros"
    power_a: float = 0.01  # power-law exponent of the query gaps
    train_examples: int = 20000
    eval_examples: int = 1000
    seed: int = 0  # train set uses seed, eval set seed + 1


@dataclass
class TrainSection:
    output_dir: str = "runs/train"
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # per device
    eval_batch_size: int | None = None  # per device; default batch_size
    grad_accum: int = 1  # gradient-accumulation steps
    lr: float = 1e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100  # linear warm-up
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0  # gradient clipping
    precision: str = "auto"  # auto (bf16 on Neuron/XLA and bf16-capable GPUs, fp32 on CPU), fp32, bf16
    seed: int = 42
    logging_steps: int = 10
    eval_steps: int = 200  # evaluate every N steps (and at the end)
    save_steps: int = 500  # checkpoint every N steps (and at the end)
    save_total_limit: int = 3  # complete checkpoints kept
    resume: bool = False  # continue from the newest complete checkpoint in output_dir
    overwrite: bool = False  # delete a previous run in output_dir (else a used folder is refused)
    verify_hashes: bool = True  # SHA-256 of checkpoint files (sizes are always checked)
    dataloader_workers: int = 0
    strategy: str = "auto"  # under torchrun: auto (= ddp), ddp or fsdp
    fsdp_config: dict[str, Any] = field(default_factory=dict)  # merged into the FSDP defaults
    device: str = "auto"  # auto, cpu, cuda, xla (torch-neuronx / PyTorch-XLA), neuron (native TorchNeuron)
    zero1: bool = False  # DDP under torchrun, or XLA: shard the AdamW state across ranks (ZeRO-1, zero1.py)
    gradient_checkpointing: bool = False  # recompute each decoder layer in the backward pass: less memory
    tqdm: bool = True  # progress bar
    plot: bool = True  # write curves.png at the end


@dataclass
class RunConfig:
    task: str = "lm"  # "lm" (text) or "mqar" (associative recall)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    mqar: MQARSection = field(default_factory=MQARSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field: choices, types, ranges, finiteness.

        Numbers given as strings (YAML reads ``1e-3`` as a string) are converted; booleans must be
        booleans (``resume: "no"`` is refused, not taken as true).
        """
        self._check_choices()
        self._check_integers()
        self._check_numbers()
        self._check_flags_and_paths()

    def _check_choices(self) -> None:
        t, m = self.train, self.mqar
        _choice("task", self.task, TASKS)
        _choice("model.preset", self.model.preset, tuple(PRESETS))
        _choice("mqar.filler", m.filler, FILLERS)
        _choice("train.precision", t.precision, PRECISIONS)
        _choice("train.strategy", t.strategy, STRATEGIES)
        _choice("train.device", t.device, DEVICES)

    def _check_integers(self) -> None:
        t, d, m = self.train, self.data, self.mqar
        positive = {
            "data.seq_len": d.seq_len,
            "mqar.vocab_size": m.vocab_size,
            "mqar.seq_len": m.seq_len,
            "mqar.num_pairs": m.num_pairs,
            "mqar.train_examples": m.train_examples,
            "mqar.eval_examples": m.eval_examples,
            "train.max_steps": t.max_steps,
            "train.batch_size": t.batch_size,
            "train.grad_accum": t.grad_accum,
            "train.logging_steps": t.logging_steps,
            "train.eval_steps": t.eval_steps,
            "train.save_steps": t.save_steps,
            "train.save_total_limit": t.save_total_limit,
        }
        for name, value in positive.items():
            _integer(name, value, minimum=1)
        for name, value in {"train.eval_batch_size": t.eval_batch_size, "data.num_proc": d.num_proc}.items():
            if value is not None:
                _integer(name, value, minimum=1)
        _integer("train.warmup_steps", t.warmup_steps, minimum=0)
        _integer("train.dataloader_workers", t.dataloader_workers, minimum=0)
        _integer("train.seed", t.seed, minimum=0, maximum=2**32 - 1)  # numpy's seed range
        _integer("mqar.seed", m.seed, minimum=0, maximum=2**32 - 1)

    def _check_numbers(self) -> None:
        """Floats in their intervals; numbers given as strings are converted in place."""
        # (low, high, low included, high included); every value must also be finite.
        ranges = {
            ("train", "lr"): (0, 1, False, True),
            ("train", "min_lr_ratio"): (0, 1, True, True),
            ("train", "weight_decay"): (0, 1, True, True),
            ("train", "adam_beta1"): (0, 1, True, False),
            ("train", "adam_beta2"): (0, 1, True, False),
            ("train", "max_grad_norm"): (0, math.inf, False, False),
            ("data", "validation_fraction"): (0, 1, False, False),
            ("mqar", "power_a"): (0, math.inf, False, False),
        }
        for (section, name), bounds in ranges.items():
            value = _number(f"{section}.{name}", getattr(getattr(self, section), name), *bounds)
            setattr(getattr(self, section), name, value)

    def _check_flags_and_paths(self) -> None:
        t, d = self.train, self.data
        for name in ("resume", "overwrite", "verify_hashes", "zero1", "tqdm", "plot"):
            if not isinstance(getattr(t, name), bool):
                raise ConfigError(f"train.{name} must be true or false, got {getattr(t, name)!r}")
        if t.resume and t.overwrite:
            raise ConfigError("train.resume and train.overwrite exclude each other: continue the run or replace it")
        for name, value in {"train.output_dir": t.output_dir, "data.tokenizer": d.tokenizer}.items():
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        for name, value in {"data.path": d.path, "data.eval_path": d.eval_path, "data.cache_dir": d.cache_dir}.items():
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a path (a string) or null, got {value!r}")
        for name, value in {"model.overrides": self.model.overrides, "train.fsdp_config": t.fsdp_config}.items():
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a mapping, got {value!r}")
        types = self.model.layer_types
        if types is not None and (not isinstance(types, list) or not all(isinstance(x, str) for x in types)):
            raise ConfigError(f"model.layer_types must be a list of layer type names, got {types!r}")


def _integer(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value!r}")


def _number(name: str, value: Any, low: float, high: float, low_in: bool, high_in: bool) -> float:
    """``value`` as a finite float in the interval, else :class:`ConfigError` naming ``name``."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    inside = (low <= value if low_in else low < value) and (value <= high if high_in else value < high)
    if not math.isfinite(value) or not inside:
        interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise ConfigError(f"{name} must be a finite number in {interval}, got {value!r}")
    return float(value)


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _section_types() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(RunConfig) if f.name != "task"}


def apply(config: RunConfig, key: str, value: Any) -> None:
    """Set the dotted ``key`` (``train.max_steps``, ``model.overrides.eidetic_slots``, ``task``)."""
    parts = key.split(".")
    if parts == ["task"]:
        config.task = value
        return
    sections = _section_types()
    if len(parts) < 2 or parts[0] not in sections:
        raise ConfigError(f"unknown setting {key!r}: use task or {', '.join(s + '.<field>' for s in sections)}")
    section = getattr(config, parts[0])
    names = {f.name for f in dataclasses.fields(section)}
    if parts[1] not in names:
        raise ConfigError(f"unknown setting {key!r}; fields of {parts[0]}: {', '.join(sorted(names))}")
    if len(parts) == 2:
        setattr(section, parts[1], value)
    elif isinstance(getattr(section, parts[1]), dict):
        target = getattr(section, parts[1])
        for part in parts[2:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    else:
        raise ConfigError(f"{parts[0]}.{parts[1]} has no sub-fields (in {key!r})")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded


def merge_dict(config: RunConfig, values: dict[str, Any], origin: str) -> None:
    """Apply a nested mapping (as read from YAML) onto ``config``."""
    for key, value in values.items():
        if key != "task" and isinstance(value, dict) and key in _section_types():
            for sub, sub_value in value.items():
                apply(config, f"{key}.{sub}", sub_value)
        else:
            try:
                apply(config, key, value)
            except ConfigError as e:
                raise ConfigError(f"{origin}: {e}") from None


# ------------------------------------------------------------------------------------------------ CLI
# (flag, setting, type, help). Flags default to "not given", so only what the user types overrides.
FLAGS: list[tuple[str, str, Any, str]] = [
    ("--task", "task", str, f"training task: {' or '.join(TASKS)} (default lm)"),
    ("--preset", "model.preset", str, f"model size: {', '.join(PRESETS)} (default tiny)"),
    (
        "--layer-pattern",
        "model.layer_pattern",
        str,
        "layer types as letters repeated to the depth: A=attention W=sliding_attention S=ssm F=bmojo_f B=bmojo "
        "(e.g. BBBA); default: all bmojo",
    ),
    (
        "--layer-types",
        "model.layer_types",
        lambda s: [t.strip() for t in s.split(",")],
        "comma-separated layer types, one per layer (wins over --layer-pattern)",
    ),
    ("--data", "data.path", str, "training text: file, folder or save_to_disk folder (default: bundled KJV corpus)"),
    ("--eval-data", "data.eval_path", str, "evaluation data (default: the dataset's split or a held-out tail)"),
    ("--text-column", "data.text_column", str, "text column of a saved dataset (default text)"),
    ("--tokenizer", "data.tokenizer", str, "'byte' (built-in byte-level) or a local HF tokenizer folder"),
    ("--seq-len", "data.seq_len", int, "tokens per training sequence for --task lm (default 256)"),
    ("--mqar-vocab", "mqar.vocab_size", int, "MQAR vocabulary size (default 256)"),
    ("--mqar-seq-len", "mqar.seq_len", int, "MQAR sequence length (default 128)"),
    ("--mqar-pairs", "mqar.num_pairs", int, "MQAR key-value pairs per example (default 8)"),
    ("--mqar-filler", "mqar.filler", str, "MQAR filler tokens: random or zeros (default random)"),
    ("--mqar-train-examples", "mqar.train_examples", int, "MQAR training examples (default 20000)"),
    ("--mqar-eval-examples", "mqar.eval_examples", int, "MQAR evaluation examples (default 1000)"),
    ("--output-dir", "train.output_dir", str, "run folder: checkpoints, metrics.jsonl, curves.png, final model"),
    ("--max-steps", "train.max_steps", int, "optimizer steps (default 1000)"),
    ("--batch-size", "train.batch_size", int, "sequences per device per micro-batch (default 16)"),
    ("--grad-accum", "train.grad_accum", int, "gradient-accumulation steps (default 1)"),
    ("--lr", "train.lr", float, "peak learning rate (default 1e-3)"),
    ("--warmup-steps", "train.warmup_steps", int, "linear warm-up steps before the cosine decay (default 100)"),
    ("--weight-decay", "train.weight_decay", float, "AdamW weight decay (default 0.1)"),
    ("--max-grad-norm", "train.max_grad_norm", float, "gradient clipping norm (default 1.0)"),
    ("--precision", "train.precision", str, "auto, fp32 or bf16 (auto: bf16 on Neuron/XLA, fp32 on CPU)"),
    ("--seed", "train.seed", int, "random seed (default 42)"),
    ("--logging-steps", "train.logging_steps", int, "log every N steps (default 10)"),
    ("--eval-steps", "train.eval_steps", int, "evaluate every N steps (default 200)"),
    ("--save-steps", "train.save_steps", int, "checkpoint every N steps (default 500)"),
    ("--save-total-limit", "train.save_total_limit", int, "complete checkpoints to keep (default 3)"),
    ("--strategy", "train.strategy", str, "under torchrun: auto, ddp or fsdp (default auto = ddp)"),
    ("--device", "train.device", str, f"{', '.join(DEVICES)} (default auto)"),
]


# Flags without a value: (flag, config field, argparse action, help).
SWITCHES = [
    ("--resume", "train.resume", "store_true",
     "continue from the newest complete checkpoint in --output-dir (incomplete ones are skipped)"),
    ("--overwrite", "train.overwrite", "store_true",
     "delete the previous run in --output-dir (checkpoints, metrics, model) and start again; without this or "
     "--resume a folder that holds a run is refused"),
    ("--zero1", "train.zero1", "store_true", "shard the AdamW state across the data-parallel ranks (ZeRO-1): DDP under torchrun, or --device xla"),
    ("--gradient-checkpointing", "train.gradient_checkpointing", "store_true",
     "recompute each decoder layer in the backward pass instead of keeping its activations (less memory, ~1/3 more compute)"),
    ("--no-tqdm", "train.tqdm", "store_false", "no progress bar"),
    ("--no-plot", "train.plot", "store_false", "do not write curves.png"),
]  # fmt: skip


# Shown in the usage as {a,b,...}; the values are checked by RunConfig.validate (one error message style).
_CHOICES = {
    "task": TASKS,
    "model.preset": tuple(PRESETS),
    "mqar.filler": FILLERS,
    "train.precision": PRECISIONS,
    "train.strategy": STRATEGIES,
    "train.device": DEVICES,
}
_METAVARS = {"data.path": "PATH", "data.eval_path": "PATH", "data.tokenizer": "byte|DIR", "train.output_dir": "DIR"}


def _default(dest: str) -> Any:
    section, _, name = dest.rpartition(".")
    config = RunConfig()
    return getattr(getattr(config, section) if section else config, name)


def _with_default(text: str, dest: str) -> str:
    """Help text ending with the field's default (from the dataclasses above, so it cannot drift)."""
    if "default" in text:
        return text
    value = _default(dest)
    return f"{text} (default: {'none' if value is None else value})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmojo-train",
        description="Train a B'MOJO model on text (--task lm) or associative recall (--task mqar) "
        "with the Hugging Face Trainer. Distributed: launch with torchrun (see README). Defaults come from "
        "the dataclasses in training/config.py, then --config, then the flags, then --set (last wins).",
    )
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="YAML file with sections task/model/data/mqar/train (default: none)"
    )
    for flag, dest, kind, text in FLAGS:
        choices = _CHOICES.get(dest)
        metavar = "{" + ",".join(choices) + "}" if choices else _METAVARS.get(dest, dest.rpartition(".")[2].upper())
        parser.add_argument(
            flag, dest=dest, type=kind, default=argparse.SUPPRESS, metavar=metavar, help=_with_default(text, dest)
        )
    for flag, dest, action, text in SWITCHES:
        parser.add_argument(flag, dest=dest, action=action, default=argparse.SUPPRESS, help=text)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting, e.g. --set model.overrides.eidetic_slots=64 --set train.weight_decay=0.1 "
        "(value parsed as YAML; repeatable)",
    )
    parser.add_argument(
        "--print-params",
        action="store_true",
        help="print the parameter count of every preset and of this configuration, then exit "
        "(counted on the meta device: nothing is allocated)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the configuration and the data, count parameters, and exit without training",
    )
    return parser


def parse(argv: list[str] | None = None) -> tuple[RunConfig, argparse.Namespace]:
    """Parse the command line into a validated :class:`RunConfig` (raises :class:`ConfigError`)."""
    args = build_parser().parse_args(argv)
    config = RunConfig()
    if args.config:
        merge_dict(config, load_yaml(args.config), origin=args.config)
    for dest, value in vars(args).items():
        if dest == "task" or "." in dest:
            apply(config, dest, value)
    for item in args.sets:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        apply(config, key.strip(), value)
    config.validate()
    return config, args


__all__ = ["ConfigError", "RunConfig", "build_parser", "parse"]
