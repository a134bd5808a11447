"""Constants shared by the ops, the layers and the cached paths (one spelling each).

Two different "minus infinity"s exist on purpose:

- :data:`NEG_INF` (``-inf``) is a *score*: a token that may never be selected, an empty memory slot. Top-k
  and the priority merges order it below every real score, and ``isfinite`` tells an empty slot apart.
- :data:`MASKED_LOGIT` (the float32 minimum, finite) is an attention *logit bias* for an invisible key. It is
  finite so that a query row with no visible key (a padded row) stays finite through the softmax instead of
  turning into NaN, which would then reach the gradients of every row through a shared reduction.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")
MASKED_LOGIT = torch.finfo(torch.float32).min

__all__ = ["MASKED_LOGIT", "NEG_INF"]
