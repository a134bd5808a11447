"""Load a saved B'MOJO model and its tokenizer, with errors that say what is wrong with the directory.

Importing this module is cheap (no torch, no transformers): the command-line tools parse their arguments
first and import the model only when they load it. Loading is strict by default: a checkpoint whose tensors
do not match its config (missing, unexpected or differently shaped), or that holds NaN/inf weights, is an
error that names the tensors, not a model with random layers and a log line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes, resolved when a model is loaded
_SHOWN = 8  # tensor names listed in an error before "..."


class ModelLoadError(ValueError):
    """The model directory cannot be used (missing, not a saved model, not a B'MOJO model, or damaged)."""


def check_model_dir(model_dir: str | Path) -> Path:
    """Return ``model_dir`` as a Path if it holds a saved B'MOJO model, else raise :class:`ModelLoadError`."""
    path = Path(model_dir)
    if not path.exists():
        raise ModelLoadError(f"model directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"{str(path)!r} is not a directory (expected a directory saved with save_pretrained)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{str(path)!r} has no config.json; save the model with model.save_pretrained(dir)")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ModelLoadError(f"{config_file} is not a valid JSON config: {err}") from err
    if model_type != "bmojo":
        raise ModelLoadError(f"{str(path)!r} holds a {model_type!r} model, not a B'MOJO ('bmojo') model")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ModelLoadError(f"{str(path)!r} has a config but no weights (*.safetensors or *.bin)")
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_weight_files(path: Path) -> None:
    """Read the header of every ``*.safetensors`` file: a truncated or corrupt one is named here."""
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as weights:
                weights.keys()
        except Exception as err:  # SafetensorError, OSError, ...: the file is what the user needs to know
            raise ModelLoadError(f"{file} is not a readable safetensors file: {_first_line(err)}") from None


def _names(names) -> str:
    names = sorted(names)
    return ", ".join(names[:_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def check_loading_info(path: Path, info: dict, tied_output: bool) -> None:
    """Raise :class:`ModelLoadError` when the checkpoint's tensors do not match the model built from its config."""
    missing = [k for k in info.get("missing_keys", ()) if not (tied_output and k == "lm_head.weight")]
    unexpected = list(info.get("unexpected_keys", ()))
    mismatched = [
        f"{entry[0]} {tuple(entry[1])} (config: {tuple(entry[2])})" if len(entry) == 3 else str(entry)
        for entry in map(tuple, info.get("mismatched_keys", ()))
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_names(unexpected)}")
    if mismatched:
        problems.append(f"tensors of another shape: {_names(mismatched)}")
    if problems:
        raise ModelLoadError(
            f"the weights in {str(path)!r} do not match its config.json ({'; '.join(problems)}); "
            "the checkpoint is damaged or was saved from another model (load with strict=False to accept it)"
        )


def non_finite_tensors(model) -> list[str]:
    """Names of the floating-point parameters and buffers that hold NaN or infinity."""
    import torch

    return [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def load_tokenizer(path: Path, vocab_size: int):
    """The tokenizer saved beside the model; the project's byte-level tokenizer if none was saved."""
    from bmojo_neuron.tokenization import NUM_BYTES, SPECIAL_TOKENS, byte_level_tokenizer

    files = [f for f in ("tokenizer.json", "tokenizer_config.json") if (path / f).is_file()]
    if files:
        from transformers import AutoTokenizer

        for file in files:  # a damaged file gives a one-line error naming it, not a parser traceback
            try:
                json.loads((path / file).read_text())
            except (ValueError, UnicodeDecodeError) as err:
                raise ModelLoadError(f"{path / file} is not valid JSON: {_first_line(err)}") from None
        try:
            return AutoTokenizer.from_pretrained(path)
        except Exception as err:  # tokenizers and transformers raise many types for a bad file
            raise ModelLoadError(
                f"cannot load the tokenizer from {' / '.join(str(path / f) for f in files)}: {_first_line(err)}"
            ) from None
    if vocab_size < NUM_BYTES + len(SPECIAL_TOKENS):
        raise ModelLoadError(f"{str(path)!r} has no tokenizer files and its vocabulary is too small for bytes")
    logger.warning("%s has no tokenizer files; using the byte-level tokenizer", path)
    return byte_level_tokenizer()


def load_model_and_tokenizer(model_dir: str | Path, dtype: str = "float32", strict: bool = True):
    """Load ``(model, tokenizer)`` for inference (eval mode, CPU unless moved).

    ``strict`` (default): tensors that do not match the config, and NaN/inf weights, raise
    :class:`ModelLoadError` naming them; with ``strict=False`` they are logged as warnings.
    """
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = check_model_dir(model_dir)
    check_weight_files(path)
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    import bmojo_neuron  # noqa: F401  (registers model_type "bmojo" with the Auto classes)

    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), output_loading_info=True)
    except (OSError, ValueError, RuntimeError, TypeError) as err:
        raise ModelLoadError(f"cannot load the model in {str(path)!r}: {_first_line(err)}") from err
    try:
        check_loading_info(path, info, bool(getattr(model.config, "tie_word_embeddings", False)))
        bad = non_finite_tensors(model)
        if bad:
            raise ModelLoadError(f"the weights in {str(path)!r} hold NaN or infinite values: {_names(bad)}")
    except ModelLoadError as err:
        if strict:
            raise
        logger.warning("%s", err)
    model.eval()
    tokenizer = load_tokenizer(path, model.config.vocab_size)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


__all__ = [
    "DTYPES",
    "ModelLoadError",
    "check_loading_info",
    "check_model_dir",
    "check_weight_files",
    "load_model_and_tokenizer",
    "non_finite_tensors",
]
