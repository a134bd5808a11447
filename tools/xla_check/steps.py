"""The model, batches and steps that the Trainium gate checks (pure torch: any device, no torch-xla).

The training step is the one the HF ``Trainer`` runs on PyTorch/XLA (``transformers.Trainer`` with
``max_grad_norm=1.0`` and ``torch.optim.AdamW``): forward with labels, backward, gradient clipping, optimizer
step, ``zero_grad``; the Trainer's data loader then marks the step (``xm.mark_step``). It is written out
here, not run through the Trainer, so that the check sees one step at a time and nothing else (logging,
checkpoints, learning-rate schedules run on the host between steps).

The decode step is the one the inference export traces (:class:`inference.export.StaticBMojo`: a prefill
at one bucket, then one token in and the cache as explicit tensors in and out, fixed shapes).
"""

from __future__ import annotations

import torch

from bmojo_neuron import LAYER_TYPES, BMojoForCausalLM
from bmojo_neuron.testing import tiny_model
from inference.export import StaticBMojo

# Every layer type once. Window and chunk are short against the sequence so that the sliding windows, the
# fading window and the eidetic memory (visible from chunk `eidetic_lag` = 2 on) all take part.
TRAIN_LAYERS = list(LAYER_TYPES)
# Decoding: the constant-size layer types. The key/value cache of `attention` layers grows by one token per
# step (a new shape, so a new graph, every step); the export wrapper refuses them.
DECODE_LAYERS = [t for t in LAYER_TYPES if t != "attention"]

BATCH, SEQ = 2, 32
LEFT_PAD = 3  # row 1 is left-padded (static pattern): the padding paths of every mixer are in the graph
PROMPT = 16  # decode: the prompt fills one prefill bucket exactly


# The tiny test model (bmojo_neuron.testing) with the vocabulary, memory size and tied embeddings this gate was
# written with; the default initialisation (no randomised gate or eidetic score) is what training starts from.
GATE_SIZES = dict(vocab_size=128, eidetic_slots=4, tie_word_embeddings=True, initializer_range=0.02)


def build_model(layer_types: list[str], seed: int = 0) -> BMojoForCausalLM:
    return tiny_model(layer_types, seed=seed, randomize_neutral_init=False, **GATE_SIZES).float().train()


def to_device(model: BMojoForCausalLM, device) -> BMojoForCausalLM:
    """Move ``model`` to ``device`` as the HF ``Trainer`` does (``Trainer._move_model_to_device``).

    On XLA, ``Module.to`` cannot move a parameter in place, so it makes a new one per module and the tied
    embedding / output weights come apart: they would train as two matrices. Tie them again.
    """
    model = model.to(device)
    model.tie_weights()
    return model


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    # The Trainer's default optimizer on XLA (no fused AdamW there); foreach=False as on a non-CUDA device.
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, foreach=False)


def make_batches(n: int, vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` language-model batches on the CPU, all of shape (BATCH, SEQ), made with their own generator."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (BATCH, SEQ), generator=gen)
        mask = torch.ones(BATCH, SEQ, dtype=torch.long)
        mask[1, :LEFT_PAD] = 0
        labels = ids.masked_fill(mask == 0, -100)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def train_step(model, optimizer, batch: dict[str, torch.Tensor], max_grad_norm: float = 1.0) -> torch.Tensor:
    """One optimizer step; returns the loss, detached and left on the device (reading it would sync)."""
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def greedy_decode(model, prompt: torch.Tensor, steps: int, mark_step=None) -> list[torch.Tensor]:
    """Prefill ``prompt`` (batch, PROMPT: one bucket, no padding) then ``steps`` greedy decode steps through
    the export wrapper (:class:`inference.export.StaticBMojo`), all on the model's device; returns every
    decode step's logits (batch, vocab).

    ``mark_step(i)``, when given, is called after the prefill (``i = -1``) and after each decode step: on
    XLA it cuts and runs the graph there.
    """
    static = StaticBMojo(model, batch_size=prompt.shape[0])
    with torch.no_grad():
        logits, *state = static.prefill(prompt, torch.ones_like(prompt))
        if mark_step is not None:
            mark_step(-1)
        out = []
        for i in range(steps):
            token = logits.argmax(-1, keepdim=True)  # stays on the device: no host round trip per token
            logits, *state = static.decode(token, *state)
            if mark_step is not None:
                mark_step(i)
            out.append(logits)
    return out


__all__ = [
    "DECODE_LAYERS",
    "TRAIN_LAYERS",
    "build_model",
    "greedy_decode",
    "make_batches",
    "make_optimizer",
    "to_device",
    "train_step",
]
