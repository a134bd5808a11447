"""Load a saved B'MOJO model and its tokenizer, with errors that say what is wrong with the directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

import bmojo_neuron  # noqa: F401  (registers model_type "bmojo" with the Auto classes)
from bmojo_neuron.tokenization import NUM_BYTES, SPECIAL_TOKENS, byte_level_tokenizer

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    """The model directory cannot be used (missing, not a saved model, or not a B'MOJO model)."""


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


def load_tokenizer(path: Path, vocab_size: int) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside the model; the project's byte-level tokenizer if none was saved."""
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(path)
    if vocab_size < NUM_BYTES + len(SPECIAL_TOKENS):
        raise ModelLoadError(f"{str(path)!r} has no tokenizer files and its vocabulary is too small for bytes")
    logger.warning("%s has no tokenizer files; using the byte-level tokenizer", path)
    return byte_level_tokenizer()


def load_model_and_tokenizer(model_dir: str | Path, dtype: str = "float32"):
    """Load ``(model, tokenizer)`` for inference (eval mode, CPU unless moved)."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = check_model_dir(model_dir)
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"cannot load the model in {str(path)!r}: {err}") from err
    model.eval()
    tokenizer = load_tokenizer(path, model.config.vocab_size)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


__all__ = ["DTYPES", "ModelLoadError", "check_model_dir", "load_model_and_tokenizer"]
