"""``python -m inference.export --target cpu``: the reloaded graphs give the eager model's outputs."""

from __future__ import annotations

import json

import pytest
import torch

from bmojo_neuron.cache import BMojoCache
from bmojo_neuron.testing import tiny_model
from inference import export as exporter
from inference.loading import load_model_and_tokenizer
from tests.helpers.cache import SHORT_WINDOWS, comparable_state, full_logits

BUCKETS = [8, 16]


@pytest.fixture(scope="module")
def exported(saved_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    args = ["--model", str(saved_model_dir), "--out", str(out), "--target", "cpu", "--buckets", "16,8"]
    assert exporter.main(args) == 0
    model, _ = load_model_and_tokenizer(saved_model_dir)
    return exporter.ExportedBMojo(out), model, out


def test_manifest_lists_buckets_and_state(exported):
    runner, model, out = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["buckets"] == BUCKETS
    cache = BMojoCache(model.config)
    cache.allocate(1, torch.float32, torch.device("cpu"))
    assert [s["name"] for s in manifest["state"]] == cache.state_names()
    assert [tuple(s["shape"]) for s in manifest["state"]] == [tuple(t.shape) for t in cache.to_tensors()]
    assert (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("length", [3, 8, 11, 16, 21])  # padded and full buckets, and longer than the largest
@torch.no_grad()
def test_prefill_of_every_bucket_matches_eager(exported, length):
    runner, model, _ = exported
    ids = torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(length))
    logits, state = runner.prefill(ids)
    torch.testing.assert_close(logits, full_logits(model, ids)[:, -1], atol=1e-4, rtol=0)
    cache = BMojoCache(model.config)
    model(ids, cache=cache, use_cache=True)
    want = comparable_state(cache.state_names(), cache.to_tensors())
    for name, got in comparable_state(cache.state_names(), state).items():
        torch.testing.assert_close(got, want[name], atol=1e-4, rtol=0, msg=name)


@torch.no_grad()
def test_decode_loop_matches_eager_generate(exported):
    runner, model, _ = exported
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(0))
    tokens = runner.generate(ids, max_new_tokens=12)
    eager = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=256,
    )
    assert torch.equal(tokens, eager[:, 6:])
    # and the logits of every step equal the full forward's
    seq = torch.cat([ids, tokens], 1)
    logits, state = runner.prefill(ids)
    full = full_logits(model, seq)
    for i in range(12):
        torch.testing.assert_close(logits, full[:, 5 + i], atol=1e-4, rtol=0)
        logits, *state = runner.decode_step(tokens[:, i : i + 1], *state)


def test_attention_layers_and_missing_neuron_sdk_are_clear_errors(tmp_path, saved_model_dir, capsys):
    with pytest.raises(ValueError, match="growing key/value cache"):
        exporter.StaticBMojo(tiny_model(["bmojo", "attention"], **SHORT_WINDOWS))
    try:
        import torch_neuronx  # noqa: F401
    except ImportError:
        args = ["--model", str(saved_model_dir), "--out", str(tmp_path), "--target", "neuron", "--buckets", "8"]
        assert exporter.main(args) == 2
        assert "torch-neuronx" in capsys.readouterr().err
