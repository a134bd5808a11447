"""The output layer and the next-token cross-entropy in one ``torch.autograd.Function``, chunked over tokens.

The plain loss materialises the logits (tokens x vocabulary), their log-softmax, the gradient of both and the
zero-filled buffers of the gather and slice backwards: at 8192 tokens and a 8192 vocabulary that is 256 MB a
copy, more than the rest of a small model's activations. Here the logits of ``chunk_rows`` tokens at a time
are computed, turned into their loss and their gradient (``softmax - one_hot``) at once, and multiplied back
into the gradients of the hidden states and of the output weight, which are all the backward returns (scaled
by the incoming gradient). Nothing of vocabulary size outlives a chunk. This is the "fused linear cross-entropy"
of fla and Liger; the matmuls are the plain loss's three, the elementwise passes fewer.

The gradients are computed in the forward, so the Function is for training steps (the model calls it only when
it trains with labels and autograd on); :func:`linear_cross_entropy_reference` is the plain loss it equals.
Static shapes: the chunk loop depends on the number of tokens only, the ignored labels are a mask, and the
count of kept labels stays a tensor (no ``.item()``), so XLA and ``torch.compile`` take it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fused import at_least_fp32, keeps_autocast

IGNORE_INDEX = -100
# Logits of at most this many elements exist at a time: 16 MB in fp32, 512 tokens of a 8192 vocabulary. On this
# CPU (2048 tokens, hidden 256, forward + backward, one thread) 512 was the fastest chunk: 0.70x the time of the
# model's former loss, which sliced the logits (256 and 1024 tokens: ~0.75x), 0.81x the plain loss on whole ones.
CHUNK_ELEMENTS = 2**22


def next_token_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The label each position predicts: ``labels`` shifted left by one, ``ignore_index`` at the end.

    labels: (batch, seq) -> (batch, seq). Shifting the labels instead of slicing the logits keeps the logits
    whole (no copy, no zero-filled slice gradient)."""
    return F.pad(labels[:, 1:], (0, 1), value=ignore_index)


def linear_cross_entropy_reference(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``labels`` over the labels that are not ignored.

    hidden: (tokens, hidden); weight: (vocab, hidden); labels: (tokens,) int64. The logits are computed in the
    inputs' dtype and the loss in at least fp32. No kept label gives NaN (as ``F.cross_entropy``)."""
    logits = at_least_fp32(F.linear(hidden, weight))
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


def chunk_rows(vocab_size: int) -> int:
    """Tokens per chunk for a vocabulary: :data:`CHUNK_ELEMENTS` logits, at least 16 tokens."""
    return max(16, CHUNK_ELEMENTS // max(vocab_size, 1))


@keeps_autocast
class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index: int, rows: int):
        keep = labels != ignore_index
        safe = labels.masked_fill(~keep, 0)  # an index the gather may read; its row is masked out
        compute = torch.promote_types(hidden.dtype, torch.float32)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=compute, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=compute, device=weight.device) if need_weight else None
        for start in range(0, hidden.shape[0], rows):
            h = hidden[start : start + rows]
            index = safe[start : start + rows, None]
            kept = keep[start : start + rows, None]
            logits = at_least_fp32(F.linear(h, weight))
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            total = total + ((lse - logits.gather(1, index)) * kept).sum()
            # d loss_row / d logits = softmax - one_hot(label), zero on ignored rows (the 1/count comes later):
            # an ignored row subtracts +inf, so its exponentials are exactly 0 without a pass over the chunk.
            grad = logits.sub_(lse.masked_fill(~kept, float("inf"))).exp_()
            grad.scatter_add_(1, index, -kept.to(grad.dtype))
            grad = grad.to(weight.dtype)
            if need_hidden:
                grad_hidden[start : start + rows] = grad @ weight
            if need_weight:
                grad_weight.addmm_(grad.t().to(compute), h.to(compute))
        count = keep.sum()
        ctx.save_for_backward(grad_hidden, grad_weight, count)
        ctx.weight_dtype = weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, count = ctx.saved_tensors
        scale = grad_loss / count
        gh = None if grad_hidden is None else grad_hidden * scale.to(grad_hidden.dtype)
        gw = None if grad_weight is None else (grad_weight * scale).to(ctx.weight_dtype)
        return gh, gw, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Same contract as :func:`linear_cross_entropy_reference`, chunked: no tensor of vocabulary size is kept."""
    if hidden.dim() != 2 or labels.shape != hidden.shape[:1] or weight.shape[1:] != hidden.shape[1:]:
        raise ValueError(
            f"linear_cross_entropy: expected hidden (tokens, d), weight (vocab, d), labels (tokens,); got "
            f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(labels.shape)}"
        )
    return _LinearCrossEntropy.apply(hidden, weight, labels, ignore_index, chunk_rows(weight.shape[0]))
