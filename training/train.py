"""``python -m training.train`` / ``bmojo-train``: train a B'MOJO model with the Hugging Face Trainer.

Examples::

    python -m training.train --preset tiny --task mqar --max-steps 500 --output-dir runs/mqar
    python -m training.train --preset small --task lm --data corpus/ --output-dir runs/lm --resume
    torchrun --nproc_per_node 2 -m training.train --config training/configs/tiny_lm.yaml
    python -m training.train --print-params

A run folder holds ``checkpoint-N/`` (complete ones have a ``manifest.json``), ``metrics.jsonl``,
``curves.png``, ``run_config.yaml``, and at the end the model and tokenizer (``from_pretrained``-able).
A folder that already holds a run is refused unless ``--resume`` or ``--overwrite`` says what to do with it,
and ``<run>/.lock`` keeps a second run out while one trains (``rundir.py``).
Exit status: 0 done, 2 bad configuration or data, 128 + signal number when stopped by SIGTERM/SIGINT
(after saving a checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from . import rundir
from .config import ConfigError, RunConfig, parse
from .presets import PRESETS

# torch, transformers, datasets and the model are imported where they are used, after the command line
# is parsed: `--help` and a usage error answer at once instead of after half a minute of imports.
if TYPE_CHECKING:
    from transformers import TrainingArguments

    from bmojo_neuron import BMojoConfig

    from .mqar import MQARSpec
    from .trainer import BMojoTrainer

logger = logging.getLogger("training")


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict  # final evaluation metrics (empty when stopped by a signal)
    global_step: int
    stopped_by: int | None  # signal number, if a signal ended the run


def saved_run_hit_rate(config: RunConfig, examples: int = 256, seed: int = 777) -> tuple[float, float] | None:
    """The memory hit rate (docs/layer.md) of the model saved in ``config.train.output_dir`` and its ceiling (the
    rate of a memory that never evicts), on fresh MQAR examples; None for a model without eidetic memory."""
    from transformers import AutoModelForCausalLM

    from .mqar import generate, memory_hit_ceiling, memory_hit_rate

    model = AutoModelForCausalLM.from_pretrained(config.train.output_dir).eval()
    data = generate(mqar_spec(config), examples, seed=seed)
    rate = memory_hit_rate(model, data["input_ids"], data["labels"], config.mqar.num_pairs)
    if rate is None:
        return None
    c = model.config
    ceiling = memory_hit_ceiling(data["input_ids"], data["labels"], config.mqar.num_pairs, c.chunk_size, c.eidetic_lag)
    return rate, ceiling


def mqar_spec(config: RunConfig) -> MQARSpec:
    from .mqar import MQARSpec

    m = config.mqar
    return MQARSpec(
        vocab_size=m.vocab_size, seq_len=m.seq_len, num_pairs=m.num_pairs, filler=m.filler, power_a=m.power_a
    )


def make_model_config(config: RunConfig, tokenizer) -> BMojoConfig:
    """The model's config: the preset, the layer types and overrides, and a vocabulary that covers the
    tokenizer (and the MQAR token ids), rounded up to a multiple of 8."""
    from .presets import model_config

    vocab = len(tokenizer)
    seq_len = config.data.seq_len
    if config.task == "mqar":
        vocab, seq_len = max(vocab, config.mqar.vocab_size), config.mqar.seq_len
    overrides = dict(config.model.overrides)
    if config.model.layer_types is not None:
        overrides["layer_types"] = config.model.layer_types
    elif config.model.layer_pattern is not None:
        overrides["layer_pattern"] = config.model.layer_pattern
    overrides.setdefault(
        "max_position_embeddings", max(seq_len, PRESETS[config.model.preset]["max_position_embeddings"])
    )
    try:
        return model_config(
            config.model.preset,
            vocab_size=-(-vocab // 8) * 8,
            overrides=overrides,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None


def build_datasets(config: RunConfig, tokenizer):
    """(train, eval) datasets for the task; every data error is raised here, before training."""
    from .data import build_lm_datasets
    from .mqar import MQARDataset

    if config.task == "mqar":
        spec = mqar_spec(config)
        try:
            spec.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        m = config.mqar
        return MQARDataset(spec, m.train_examples, m.seed), MQARDataset(spec, m.eval_examples, m.seed + 1)
    d = config.data
    return build_lm_datasets(
        tokenizer, d.seq_len, d.path, d.eval_path, d.text_column, d.validation_fraction, d.cache_dir, d.num_proc
    )


def make_training_arguments(config: RunConfig, device: str) -> TrainingArguments:
    from transformers import TrainingArguments

    from . import distributed

    t = config.train
    return TrainingArguments(
        output_dir=t.output_dir,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        # transformers 5.24 names gradient checkpointing "activation checkpointing" (the Trainer then calls
        # model.activation_checkpointing_enable). Non-reentrant is PyTorch's recommended form.
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        learning_rate=t.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": t.min_lr_ratio},
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        max_grad_norm=t.max_grad_norm,
        optim="adamw_torch",
        bf16=distributed.use_bf16(t.precision, device),
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        eval_strategy="steps",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        report_to="none",
        disable_tqdm=not t.tqdm,
        dataloader_num_workers=t.dataloader_workers,
        remove_unused_columns=False,
        **distributed.training_arguments_fields(config, device),
    )


def make_trainer(config: RunConfig, model, args: TrainingArguments, train_set, eval_set, **kwargs) -> BMojoTrainer:
    """The Trainer of a run of ``config``'s task: fixed-shape batches, and on MQAR the recall accuracy
    computed from argmax predictions. ``kwargs`` go to :class:`BMojoTrainer` (callbacks, hashes, ...)."""
    from transformers import default_data_collator

    from .trainer import BMojoTrainer

    mqar = config.task == "mqar"
    return BMojoTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=default_data_collator,
        compute_metrics=_mqar_metrics if mqar else None,
        preprocess_logits_for_metrics=_argmax if mqar else None,
        **kwargs,
    )


def _mqar_metrics(prediction) -> dict[str, float]:
    from .mqar import recall_accuracy

    return {"accuracy": recall_accuracy(prediction.predictions, prediction.label_ids)}


def _argmax(logits, labels):
    # Keep only the argmax: storing (examples x seq x vocab) logits for the whole eval set is wasteful.
    if isinstance(logits, tuple):  # (logits, aux_loss): the model output's tensors other than the loss
        logits = logits[0]
    return logits.argmax(dim=-1)


def print_params(config: RunConfig, tokenizer) -> None:
    """Parameter counts of every preset and of this configuration (meta device: nothing allocated), with the
    estimated time of one training step of this run's batch on a CPU: only ``tiny`` is a CPU preset."""
    from .presets import CPU_PRESETS, count_parameters, cpu_seconds_per_step, model_config

    vocab = -(-len(tokenizer) // 8) * 8
    tokens = _tokens_per_step(config)
    print(
        f"{'preset':>8}  {'parameters':>15}  layers x hidden  CPU s/step (est., {tokens} tokens)"
        f"  (vocab {vocab}, all bmojo layers)"
    )
    for name in PRESETS:
        c = model_config(name, vocab)
        n = count_parameters(c)
        fit = "CPU preset" if name in CPU_PRESETS else "not a CPU preset: use an accelerator"
        seconds = cpu_seconds_per_step(n, tokens)
        print(f"{name:>8}  {n:>15,}  {c.num_hidden_layers:>6} x {c.hidden_size:<5} {seconds:>10,.1f}      {fit}")
    from . import memory  # imports torch

    accelerators = {name: model_config(name, vocab) for name in PRESETS if name not in CPU_PRESETS}
    counts = {name: count_parameters(c) for name, c in accelerators.items()}
    print("\n" + "\n".join(memory.preset_report(accelerators, counts)))
    c = make_model_config(config, tokenizer)
    print(
        f"\nthis run: preset {config.model.preset}, layer types {c.layer_types}\n  {count_parameters(c):,} parameters"
    )


def run(config: RunConfig, dry_run: bool = False, callbacks: list | None = None) -> RunResult:
    """Train according to ``config``. Raises ConfigError / DataError for bad input (before training).

    The run folder is checked first (``rundir``): one that holds a run is refused unless ``train.resume``
    or ``train.overwrite`` says what to do with it, and the main process holds its lock for the whole run.
    ``callbacks``: extra ``TrainerCallback`` objects (for programs that embed a run, and for tests).
    """
    output_dir = Path(config.train.output_dir)
    rundir.check_free(output_dir, config.train.resume, config.train.overwrite)
    if dry_run or not rundir.is_main_process():
        return _run(config, dry_run, callbacks)
    lock = rundir.RunLock(output_dir)
    try:
        if config.train.overwrite:
            rundir.clear(output_dir)
        rundir.clean_interrupted(output_dir)
        return _run(config, dry_run, callbacks)
    finally:
        lock.release()


def _run(config: RunConfig, dry_run: bool, callbacks: list | None) -> RunResult:
    import transformers

    from . import checkpoint, distributed, neuron
    from .callbacks import METRICS_FILE, GracefulStopCallback, MetricsJSONLCallback
    from .data import load_tokenizer
    from .plotting import plot_curves
    from .presets import build_model, count_parameters

    device = distributed.resolve_device(config.train.device)
    if device in ("xla", "neuron"):
        neuron.prepare(config, device)
    output_dir = Path(config.train.output_dir)
    tokenizer = load_tokenizer(config.data.tokenizer)
    model_cfg = make_model_config(config, tokenizer)
    args = make_training_arguments(config, device)

    with args.main_process_first(desc="building the datasets"):
        train_set, eval_set = build_datasets(config, tokenizer)
    n_params = count_parameters(model_cfg)
    if args.process_index == 0:
        logger.info(
            "task %s, preset %s, %s parameters, layer types %s, device %s x %d, %d train / %d eval sequences",
            config.task,
            config.model.preset,
            f"{n_params:,}",
            model_cfg.layer_types,
            device,
            args.world_size,
            len(train_set),
            len(eval_set),
        )
        _warn_about_settings(config, device, n_params)
    if dry_run:
        return RunResult(output_dir, {"parameters": n_params}, 0, None)

    resume_from = None
    if config.train.resume:
        resume_from = checkpoint.latest_complete(output_dir, hashes=config.train.verify_hashes)
        if resume_from is None:
            logger.warning("--resume: no complete checkpoint in %s; starting from scratch", output_dir)
        else:
            logger.info("resuming from %s", resume_from)
            rundir.check_same_model(resume_from, model_cfg)
            for line in rundir.describe_changes(output_dir, config) if args.process_index == 0 else []:
                logger.warning(line)
    if args.process_index == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "run_config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    transformers.set_seed(config.train.seed)  # the model's initial weights depend on it
    model = build_model(model_cfg)
    stopper = GracefulStopCallback()
    trainer = make_trainer(
        config,
        model,
        args,
        train_set,
        eval_set,
        processing_class=tokenizer,
        callbacks=[MetricsJSONLCallback(output_dir), *(callbacks or []), stopper],
        verify_hashes=config.train.verify_hashes,
        zero1=config.train.zero1,
    )
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    if stopper.received is not None:
        logger.warning("stopped by signal at step %d; checkpoint saved in %s", trainer.state.global_step, output_dir)
        return RunResult(output_dir, {}, trainer.state.global_step, stopper.received)

    last_eval = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last_eval is not None and last_eval.get("step") == trainer.state.global_step:
        metrics = {k: v for k, v in last_eval.items() if k.startswith("eval_")}
    else:
        metrics = trainer.evaluate()
    trainer.save_model(str(output_dir))  # model (safetensors) + config + tokenizer, from_pretrained-able
    if trainer.is_world_process_zero():
        (output_dir / "final_metrics.json").write_text(json.dumps(metrics, indent=1))
        if config.train.plot and (output_dir / METRICS_FILE).exists():
            plot_curves(
                output_dir / METRICS_FILE,
                output_dir / "curves.png",
                "eval_accuracy" if config.task == "mqar" else "eval_perplexity",
            )
    return RunResult(output_dir, metrics, trainer.state.global_step, None)


def _warn_about_settings(config: RunConfig, device: str, n_params: int) -> None:
    """One line each for settings that are legal but rarely meant."""
    from .presets import CPU_PRESETS, cpu_seconds_per_step

    t = config.train
    if t.warmup_steps >= t.max_steps:
        logger.warning(
            "train.max_steps (%d) <= train.warmup_steps (%d): the learning rate never reaches its peak %g; "
            "lower --warmup-steps",
            t.max_steps,
            t.warmup_steps,
            t.lr,
        )
    if device == "cpu" and config.model.preset not in CPU_PRESETS:
        seconds = cpu_seconds_per_step(n_params, _tokens_per_step(config))
        logger.warning(
            "preset %s is not a CPU preset: about %.0f s per step here (estimated), %.1f h for %d steps; "
            "on a CPU use --preset tiny",
            config.model.preset,
            seconds,
            seconds * t.max_steps / 3600,
            t.max_steps,
        )


def _tokens_per_step(config: RunConfig) -> int:
    seq_len = config.mqar.seq_len if config.task == "mqar" else config.data.seq_len
    return config.train.batch_size * config.train.grad_accum * seq_len


def _format_metrics(metrics: dict) -> str:
    shown = {k: v for k, v in metrics.items() if k in ("eval_loss", "eval_perplexity", "eval_accuracy")}
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) and math.isfinite(v) else f"{k} {v}" for k, v in shown.items()
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config, args = parse(argv)  # no torch yet: usage errors and --help answer at once
    except ConfigError as e:
        return _error(e)
    main_process = rundir.is_main_process()
    if main_process and not args.print_params:
        logger.info("run folder: %s%s", config.train.output_dir, _origin_of_output_dir(args))
    if main_process:
        logger.info("loading torch, transformers and the model code ...")
    import transformers

    from .data import DataError, load_tokenizer

    transformers.logging.set_verbosity_warning()
    try:
        if args.print_params:
            print_params(config, load_tokenizer(config.data.tokenizer))
            return 0
        result = run(config, dry_run=args.dry_run)
    except (ConfigError, DataError) as e:
        return _error(e)
    if result.stopped_by is not None:
        return 128 + result.stopped_by
    if not args.dry_run and main_process:
        logger.info(
            "done at step %d: %s; model saved in %s",
            result.global_step,
            _format_metrics(result.metrics),
            result.output_dir,
        )
    return 0


def _error(e: Exception) -> int:
    message = " ".join(line.strip() for line in str(e).splitlines())  # one line, whatever raised it
    print(f"bmojo-train: error: {message}", file=sys.stderr)
    return 2


def _origin_of_output_dir(args) -> str:
    """Where the run folder was set, when it was not on the command line (a YAML file hides it)."""
    if "train.output_dir" in vars(args) or any(s.strip().startswith("train.output_dir=") for s in args.sets):
        return ""
    if args.config:
        from .config import load_yaml

        train = load_yaml(args.config).get("train")
        if isinstance(train, dict) and "output_dir" in train:
            return f" (train.output_dir in {args.config}; change it with --output-dir)"
    return " (the default; change it with --output-dir)"


if __name__ == "__main__":
    sys.exit(main())
