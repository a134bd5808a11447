"""Whole-model behaviour for every layer type and a hybrid: causality, losses, padding, save/load, generate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.testing import tiny_config

# Not a multiple of the window (8) or the chunk (8), and long enough to fill the eidetic memory.
SEQ = 45


def test_causality(any_layer_types):
    """Changing token t changes no output before t (and does change outputs from t on)."""
    model = BMojoForCausalLM(tiny_config(any_layer_types)).eval()
    ids = torch.randint(0, 97, (1, SEQ))
    for t in (0, 9, 30, SEQ - 1):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] + 1) % 97
        with torch.no_grad():
            a, b = model(ids).logits, model(changed).logits
        torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=0)
        assert not torch.allclose(a[:, t], b[:, t])


def test_auto_classes_build_every_type(any_layer_types, tmp_path):
    fields = {k: v for k, v in tiny_config(any_layer_types).to_diff_dict().items() if k != "model_type"}
    config = AutoConfig.for_model("bmojo", **fields)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert isinstance(model, BMojoForCausalLM)
    ids = torch.randint(0, 97, (2, SEQ))
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (2, SEQ, 97) and torch.isfinite(logits).all()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, logits)


def test_labels_give_shifted_cross_entropy(any_layer_types):
    config = tiny_config(any_layer_types, eidetic_aux_loss_weight=0.0)
    model = BMojoForCausalLM(config).eval()
    ids = torch.randint(0, 97, (2, 20))
    labels = ids.clone()
    labels[:, :5] = -100
    out = model(ids, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 97), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_aux_loss_is_added_with_its_weight():
    model = BMojoForCausalLM(tiny_config(["bmojo", "attention"], eidetic_aux_loss_weight=0.5)).eval()
    ids = torch.randint(0, 97, (2, 20))
    out = model(ids, labels=ids)
    assert out.aux_loss is not None and out.aux_loss > 0
    ce = F.cross_entropy(out.logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, ce + 0.5 * out.aux_loss)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_each_sequence_alone(any_layer_types, side):
    model = BMojoForCausalLM(tiny_config(any_layer_types)).eval()
    lengths = [SEQ, 23, 9]
    seqs = [torch.randint(1, 97, (n,)) for n in lengths]
    ids = torch.zeros(len(seqs), SEQ, dtype=torch.long)
    mask = torch.zeros(len(seqs), SEQ, dtype=torch.long)
    for row, s in enumerate(seqs):
        span = slice(SEQ - len(s), SEQ) if side == "left" else slice(0, len(s))
        ids[row, span] = s
        mask[row, span] = 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for row, s in enumerate(seqs):
            alone = model(s[None]).logits[0]
            span = slice(SEQ - len(s), SEQ) if side == "left" else slice(0, len(s))
            torch.testing.assert_close(batched[row, span], alone, rtol=1e-4, atol=1e-5)


def test_generate_greedy_matches_manual_argmax():
    model = BMojoForCausalLM(tiny_config(["bmojo", "ssm"])).eval()
    prompt = torch.randint(0, 97, (1, 11))
    out = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    ids = prompt
    with torch.no_grad():
        for _ in range(6):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=-1)
    assert torch.equal(out, ids)


def test_gradients_reach_every_parameter():
    model = BMojoForCausalLM(tiny_config(["bmojo", "bmojo_f", "ssm", "sliding_attention", "attention"]))
    ids = torch.randint(0, 97, (2, SEQ))
    model(ids, labels=ids).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
