"""``python -m inference.generate``: streams the greedy text of an independent loop (full forwards, no cache,
no ``model.generate``); clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from inference import generate as cli
from inference.loading import load_model_and_tokenizer


def greedy_without_cache(model, ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None) -> list[int]:
    """An independent greedy loop: a full forward (no cache, no ``generate``) over the whole sequence per token."""
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], 1), use_cache=False).logits
            token = int(logits[0, -1].argmax())
            new.append(token)
            if token == eos_token_id:
                break
    return new


def test_streams_the_greedy_continuation(saved_model_dir, capsys):
    assert cli.main(["--model", str(saved_model_dir), "--prompt", "Hello", "--max-new-tokens", "12"]) == 0
    printed = capsys.readouterr().out
    model, tok = load_model_and_tokenizer(saved_model_dir)
    ids = tok("Hello", return_tensors="pt").input_ids
    new = greedy_without_cache(model, ids, 12, tok.eos_token_id)
    expected = tok.decode(new, skip_special_tokens=True)
    assert printed.rstrip("\n") == expected and new


def test_sampling_is_reproducible_with_a_seed(saved_model_dir, capsys):
    args = [
        "--model",
        str(saved_model_dir),
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "10",
        "--temperature",
        "0.9",
        "--top-k",
        "40",
        "--top-p",
        "0.95",
        "--seed",
        "3",
        "--chat",
    ]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first


def dir_with_config(root, text):
    path = root / "model"
    path.mkdir()
    (path / "config.json").write_text(text)
    return path


@pytest.mark.parametrize(
    "make_dir, message",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "no config.json"),
        (lambda p: dir_with_config(p, "{oops"), "valid JSON"),
        (lambda p: dir_with_config(p, json.dumps({"model_type": "llama"})), "not a B'MOJO"),
        (lambda p: dir_with_config(p, json.dumps({"model_type": "bmojo"})), "no weights"),
    ],
    ids=["missing", "no-config", "bad-json", "other-model", "no-weights"],
)
def test_bad_model_dir_exits_with_a_message(tmp_path, capsys, make_dir, message):
    assert cli.main(["--model", str(make_dir(tmp_path)), "--prompt", "x"]) == 2
    assert message in capsys.readouterr().err


def test_bad_arguments_are_rejected(saved_model_dir):
    with pytest.raises(SystemExit):
        cli.main(["--model", str(saved_model_dir), "--prompt", "x", "--top-p", "0"])
    with pytest.raises(SystemExit):
        cli.main(["--model", str(saved_model_dir), "--prompt", "x", "--max-new-tokens", "0"])
