"""Multi-query associative recall (MQAR), the synthetic task of Zoology (Arora et al., 2023).

An example is ``num_pairs`` key-value pairs ``k1 v1 k2 v2 ...`` followed by a query region in which
every key appears once more, at a position drawn from a power law (short gaps are likely, as in
Zoology's ``multiquery_ar``); the model must output the key's value right after the query key.
Everything else in the query region is filler: ``zeros`` (token 0) or ``random`` tokens drawn from the
whole vocabulary (Zoology's current default). Keys come from ``[1, vocab/2)`` and values from
``[vocab/2, vocab)``; within an example keys are distinct, and so are values.

Labels follow the Hugging Face convention (aligned with ``input_ids``; the model shifts them): the
label is the value at the position right after each query key and ``-100`` everywhere else, so the
loss and the accuracy count the query positions only. Generation is vectorised NumPy and depends only
on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import FILLERS  # the command-line option table owns it (it must not import torch)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class MQARSpec:
    """One MQAR setting. ``power_a`` is Zoology's power-law exponent (0.01: gaps concentrate near 0)."""

    vocab_size: int = 256
    seq_len: int = 128
    num_pairs: int = 8
    filler: str = "random"
    power_a: float = 0.01

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the setting cannot be generated."""
        if self.filler not in FILLERS:
            raise ValueError(f"mqar filler must be one of {FILLERS}, got {self.filler!r}")
        if self.num_pairs < 1:
            raise ValueError(f"mqar num_pairs must be >= 1, got {self.num_pairs}")
        if self.seq_len < 4 * self.num_pairs:
            raise ValueError(
                f"mqar seq_len ({self.seq_len}) must be at least 4 * num_pairs ({4 * self.num_pairs}): "
                "the pairs take 2 * num_pairs tokens and each query needs 2 positions after them"
            )
        if self.vocab_size // 2 - 1 < self.num_pairs:
            raise ValueError(
                f"mqar vocab_size ({self.vocab_size}) too small for {self.num_pairs} distinct keys: "
                f"need vocab_size >= {2 * (self.num_pairs + 1)}"
            )
        if not self.power_a > 0:
            raise ValueError(f"mqar power_a must be > 0, got {self.power_a}")


def _distinct(rng: np.random.Generator, n: int, low: int, high: int, k: int) -> np.ndarray:
    """``n`` rows of ``k`` distinct integers from ``[low, high)``: argsort of uniforms = random permutation."""
    return np.argsort(rng.random((n, high - low)), axis=1)[:, :k] + low


def _power_law_gaps(rng: np.random.Generator, n: int, space: int, k: int, power_a: float) -> np.ndarray:
    """``n`` rows of ``k`` distinct slots in ``[0, space)`` drawn without replacement with
    ``p(g) ~ (g + 1) ** (power_a - 1)``, like ``np.random.choice(space, k, replace=False, p=p)`` in
    Zoology. Vectorised with the exponential-race form of weighted sampling without replacement
    (Efraimidis-Spirakis): the ``k`` smallest ``Exp(1) / p`` are a draw of the same distribution.
    """
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    p /= p.sum()
    race = rng.exponential(size=(n, space)) / p
    return np.argsort(race, axis=1)[:, :k]


_BLOCK = 1024  # examples per independently seeded block (bounds memory: the argsorts are block x vocab)


def _generate_block(spec: MQARSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n, T, P = _BLOCK, spec.seq_len, spec.num_pairs
    half = spec.vocab_size // 2
    keys = _distinct(rng, n, 1, half, P)
    values = _distinct(rng, n, half, spec.vocab_size, P)

    inputs = np.zeros((n, T), dtype=np.int64)
    inputs[:, 0 : 2 * P : 2] = keys
    inputs[:, 1 : 2 * P : 2] = values

    # Query region: slot g holds a query key at position 2P + 2g; the value is due at 2P + 2g + 1.
    space = (T - 2 * P) // 2
    gaps = _power_law_gaps(rng, n, space, P, spec.power_a)
    rows = np.arange(n)[:, None]
    query_pos = 2 * P + 2 * gaps
    labels = np.full((n, T), IGNORE_INDEX, dtype=np.int64)
    labels[rows, query_pos + 1] = values

    if spec.filler == "random":
        inputs[:, 2 * P :] = rng.integers(0, spec.vocab_size, size=(n, T - 2 * P))
    inputs[rows, query_pos] = keys  # after the filler, so a query key is never overwritten
    return inputs, labels


def generate(spec: MQARSpec, num_examples: int, seed: int) -> dict[str, torch.Tensor]:
    """Generate ``num_examples`` examples: ``input_ids`` and ``labels`` of shape (num_examples, seq_len).

    Deterministic: the same ``(spec, seed)`` always gives the same examples, and the first ``n``
    examples do not depend on ``num_examples`` (blocks of examples are seeded by ``(seed, block)``).
    Use different seeds for the train and eval sets.
    """
    spec.validate()
    if num_examples < 1:
        raise ValueError(f"mqar num_examples must be >= 1, got {num_examples}")
    blocks = [_generate_block(spec, np.random.default_rng([seed, b])) for b in range(-(-num_examples // _BLOCK))]
    inputs = np.concatenate([b[0] for b in blocks])[:num_examples]
    labels = np.concatenate([b[1] for b in blocks])[:num_examples]
    return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}


class MQARDataset(torch.utils.data.Dataset):
    """A fixed, pre-generated MQAR set (a map-style dataset of dicts, as the HF Trainer expects)."""

    def __init__(self, spec: MQARSpec, num_examples: int, seed: int):
        self.spec = spec
        self.tensors = generate(spec, num_examples, seed)

    def __len__(self) -> int:
        return self.tensors["input_ids"].shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: t[i] for name, t in self.tensors.items()}


def recall_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of query positions predicted correctly.

    ``predictions[:, t]`` is the argmax of the logits at position t (the prediction of token t+1), so it
    is compared with ``labels[:, t+1]``, the same shift the loss uses.
    """
    pred, target = predictions[:, :-1], labels[:, 1:]
    mask = target != IGNORE_INDEX
    if not mask.any():
        raise ValueError("no query positions in the labels: is this an MQAR evaluation set?")
    return float((pred[mask] == target[mask]).mean())


def _queries(input_ids: torch.Tensor, labels: torch.Tensor, num_pairs: int):
    """Every query of a batch: (row, query key position, position of its pair's value token)."""
    batch_idx, answer_pos = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    query_pos = answer_pos - 1
    keys = input_ids[:, 0 : 2 * num_pairs : 2]  # (batch, pairs)
    pair = (keys[batch_idx] == input_ids[batch_idx, query_pos][:, None]).float().argmax(-1)
    return batch_idx, query_pos, 2 * pair + 1


@torch.no_grad()
def memory_hit_rate(model, input_ids: torch.Tensor, labels: torch.Tensor, num_pairs: int) -> float | None:
    """Fraction of queries whose pair's value token is in the last ``bmojo`` layer's visible memory when
    the query key arrives (docs/layer.md, "Measuring the memory": reported next to accuracy).

    The value token is the one retrieval needs: its hidden state carries the key before it. Returns None
    for a model without ``bmojo`` layers. Queries that come before any memory is visible count as misses;
    :func:`memory_hit_ceiling` is the rate a memory that kept every token would reach.

    Args:
        model: a ``BMojoForCausalLM``.
        input_ids, labels: (batch, seq) MQAR examples (:func:`generate`).
        num_pairs: the examples' number of key-value pairs (they sit at positions ``0 .. 2 * num_pairs - 1``).
    """
    memories = [m for m in model.modules() if type(m).__name__ == "BMojoEideticMemory"]
    if not memories:
        return None
    memory = memories[-1]
    memory.record = True
    try:
        model(input_ids=input_ids)
        idx, valid = memory.last_selection  # (batch, n_chunks, slots)
    finally:
        memory.record, memory.last_selection = False, None
    batch_idx, query_pos, value_pos = _queries(input_ids, labels, num_pairs)
    chunk = query_pos // memory.chunk_size
    slots, slot_valid = idx[batch_idx, chunk], valid[batch_idx, chunk]  # (queries, slots)
    hits = ((slots == value_pos[:, None]) & slot_valid).any(-1)
    return float(hits.float().mean())


def memory_hit_ceiling(
    input_ids: torch.Tensor, labels: torch.Tensor, num_pairs: int, chunk_size: int, lag: int
) -> float:
    """The largest possible :func:`memory_hit_rate`: the fraction of queries for which the memory is already
    visible over their value's chunk (a token of chunk ``c`` is visible from chunk ``c + lag`` on), i.e. the
    hit rate of a memory that never evicts. ``memory_hit_rate / memory_hit_ceiling`` is the selection's share.
    """
    _, query_pos, value_pos = _queries(input_ids, labels, num_pairs)
    return float((query_pos // chunk_size >= value_pos // chunk_size + lag).float().mean())


__all__ = [
    "FILLERS",
    "IGNORE_INDEX",
    "MQARDataset",
    "MQARSpec",
    "generate",
    "memory_hit_ceiling",
    "memory_hit_rate",
    "recall_accuracy",
]
