"""Held-out perplexity of a causal LM at several sequence lengths, on the same tokens at every length.

The validation split is one token stream. At length ``L`` its first ``eval_tokens`` tokens are cut into
``eval_tokens // L`` sequences of ``L`` tokens, each evaluated from an empty state, and every
position's next-token loss counts (the first token of a sequence has no prediction). So the tokens
are the same at every length and only the context differs; beyond the training length most positions
sit farther from the sequence start than any position seen in training, which is what length
extrapolation asks (the B'MOJO and Mamba papers plot perplexity against the evaluation length the
same way).

Units: ``nll`` is nats per predicted token; ``perplexity = exp(nll)``; ``bits_per_byte`` divides the
summed loss in bits by the number of predicted tokens that are bytes (ids < 256 of the byte-level
tokenizer; the rest are the ``eos`` separators between documents).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bmojo_neuron.tokenization import NUM_BYTES


@dataclass(frozen=True)
class LengthResult:
    """Perplexity at one evaluation length."""

    seq_len: int
    sequences: int
    predicted_tokens: int
    nll: float  # nats per predicted token
    perplexity: float
    bits_per_byte: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def sequences_at(stream: torch.Tensor, seq_len: int, eval_tokens: int) -> torch.Tensor:
    """The first ``eval_tokens`` tokens of ``stream`` (1-D) as a ``(eval_tokens // seq_len, seq_len)`` batch."""
    if stream.dim() != 1:
        raise ValueError(f"stream must be 1-D token ids, got shape {tuple(stream.shape)}")
    n = min(eval_tokens, stream.numel()) // seq_len
    if n < 1:
        raise ValueError(
            f"not enough evaluation tokens for one sequence of {seq_len}: "
            f"{min(eval_tokens, stream.numel())} available (eval_tokens {eval_tokens}, stream {stream.numel()})"
        )
    return stream[: n * seq_len].reshape(n, seq_len)


@torch.no_grad()
def evaluate_length(model: torch.nn.Module, stream: torch.Tensor, seq_len: int, eval_tokens: int, batch_tokens: int):
    """``LengthResult`` of ``model`` at ``seq_len``; batches hold about ``batch_tokens`` tokens (at least one row)."""
    was_training = model.training
    model.eval()
    ids = sequences_at(stream, seq_len, eval_tokens)
    rows = max(1, batch_tokens // seq_len)
    nll_sum, count, byte_count = 0.0, 0, 0
    for start in range(0, ids.shape[0], rows):
        batch = ids[start : start + rows]
        logits = model(input_ids=batch, use_cache=False).logits  # (rows, seq_len, vocab)
        target = batch[:, 1:]
        nll_sum += float(F.cross_entropy(logits[:, :-1].float().flatten(0, 1), target.flatten(), reduction="sum"))
        count += target.numel()
        byte_count += int((target < NUM_BYTES).sum())
    model.train(was_training)
    nll = nll_sum / count
    return LengthResult(
        seq_len=seq_len,
        sequences=int(ids.shape[0]),
        predicted_tokens=count,
        nll=nll,
        perplexity=math.exp(nll),
        bits_per_byte=nll_sum / math.log(2) / max(1, byte_count),
    )


def evaluate_lengths(
    model: torch.nn.Module, stream: torch.Tensor, lengths: list[int], eval_tokens: int, batch_tokens: int
) -> list[LengthResult]:
    """``evaluate_length`` at every length of ``lengths``, on the same ``eval_tokens`` tokens."""
    return [evaluate_length(model, stream, n, eval_tokens, batch_tokens) for n in lengths]


__all__ = ["LengthResult", "evaluate_length", "evaluate_lengths", "sequences_at"]
