"""The eidetic memory of ``bmojo`` layers: exact keys/values of tokens selected by their innovation, in
whole-sequence form (training) and incremental form (a prompt after an empty state, more tokens after a
state, one token).

State (batch-first, float32 scores): ``s_last`` (B, hidden) the SSM output at the last position (the
innovation of the next token predicts from it); the memory the current chunk sees, ``mem_kv``
(B, M, 2, K, D), ``mem_score``/``mem_prio`` (B, M) (prio ``-inf`` = empty slot); the candidates of the
completed chunks it does not see yet (``lag - 1`` of them), ``pend_kv`` (B, lag-1, k, 2, K, D),
``pend_score``/``pend_prio`` (B, lag-1, k); and the current chunk (slot ``p % C``), ``chunk_kv``
(B, C, 2, K, D), ``chunk_score`` (B, C) the learned part of the score (``-inf`` = empty) and ``chunk_innov``
(B, C) the raw innovation (standardised within the chunk when the chunk completes, with
``eidetic_innovation_norm="chunk"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..configuration_bmojo import BMojoConfig
from ..ops.attention.incremental import KeyBlock
from ..ops.constants import MASKED_LOGIT, NEG_INF
from ..ops.eidetic import priority
from ..ops.fused import at_least_fp32
from .common import Tokens, gather_rows, scatter_rows_

# Floor of the within-chunk standard deviation, relative to the chunk's mean innovation. Differences below
# 1% of the level are not amplified further: they include float32 rounding (~1e-7 of the level, which a
# cached and a full forward do not share), and a bare standardisation would blow them up to score changes
# of 1e-4. An untrained layer's innovation varies by ~0.3% around its mean, so it enters the score at
# ~0.3 instead of ~0.003 (raw) against a learned term that starts at zero.
INNOVATION_STD_FLOOR = 1e-2


def standardise_chunks(u: torch.Tensor, valid: torch.Tensor, chunk: int) -> torch.Tensor:
    """``(u - mean) / std`` within each chunk of ``chunk`` columns, statistics over the ``valid`` entries only
    (``std`` at least :data:`INNOVATION_STD_FLOOR` of ``|mean|``).

    u, valid: (batch, L) with column 0 at a chunk boundary (L is padded up to a multiple of ``chunk``) ->
    (batch, L) float32; entries that are not valid come out finite and unspecified.
    """
    batch, length = u.shape
    pad = -length % chunk
    w = F.pad(valid, (0, pad)).view(batch, -1, chunk).float()
    x = F.pad(torch.where(valid, at_least_fp32(u), 0.0), (0, pad)).view(batch, -1, chunk)
    count = w.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (x * w).sum(-1, keepdim=True) / count
    var = ((x - mean).pow(2) * w).sum(-1, keepdim=True) / count
    floor = (INNOVATION_STD_FLOOR * mean).pow(2) + torch.finfo(torch.float32).tiny
    return ((x - mean) * torch.rsqrt(var + floor)).view(batch, -1)[:, :length]


def squared_error(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """The innovation ``mean((target - prediction)^2)`` over the last dim, in at least float32."""
    return (at_least_fp32(target) - at_least_fp32(prediction)).pow(2).mean(-1)


def slot_bias(score: torch.Tensor, prio: torch.Tensor) -> torch.Tensor:
    """Attention logit bias of memory slots: ``log sigmoid(score)``, masked where the slot is empty."""
    return torch.where(torch.isfinite(prio), F.logsigmoid(score), MASKED_LOGIT)


class BMojoEideticMemory(nn.Module):
    """Selects tokens by a learnable score built on their innovation and gathers their keys/values.

    ``innovation_j = mean((x_j - W_p s_{j-1})^2)``: how badly the fading memory predicted the (normalised)
    layer input. ``score_j = a * z_j + w . [x_j, s_j] + b`` with ``z`` the raw innovation (the default
    ``eidetic_innovation_norm="none"``) or the innovation standardised within its chunk (``"chunk"``); memory
    slots attend with
    the logit bias ``log sigmoid(score)``, which is how the score's parameters learn from what retrieval was
    worth. A chunk's scores are complete when the chunk is: selection reads them only then.
    """

    def __init__(self, config: BMojoConfig):
        super().__init__()
        self.mode = config.eidetic_innovation
        self.chunk_size = config.chunk_size
        self.topk = config.eidetic_topk
        self.slots = config.eidetic_slots
        self.policy = config.eidetic_policy
        self.lag = config.eidetic_lag
        self.innovation_norm = config.eidetic_innovation_norm
        if self.mode == "predictor":
            self.predictor = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.innovation_scale = nn.Parameter(torch.ones(()))
        self.score_proj = nn.Linear(2 * config.hidden_size, 1)
        self.record = False  # when True, keep the last selection in `last_selection` (analysis, benchmarks)
        self.last_selection: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def empty_state(config: BMojoConfig, batch: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        slots, topk, chunk, pending = (
            config.eidetic_slots,
            config.eidetic_topk,
            config.chunk_size,
            config.eidetic_lag - 1,
        )
        kv = (2, config.num_key_value_heads, config.head_dim)
        zeros = lambda *shape, dt=dtype: torch.zeros(*shape, dtype=dt, device=device)  # noqa: E731
        neg = lambda *shape: torch.full(shape, NEG_INF, dtype=torch.float32, device=device)  # noqa: E731
        return {
            "s_last": zeros(batch, config.hidden_size),
            "mem_kv": zeros(batch, slots, *kv),
            "mem_score": neg(batch, slots),
            "mem_prio": neg(batch, slots),
            "pend_kv": zeros(batch, pending, topk, *kv),
            "pend_score": neg(batch, pending, topk),
            "pend_prio": neg(batch, pending, topk),
            "chunk_kv": zeros(batch, chunk, *kv),
            "chunk_score": neg(batch, chunk),
            "chunk_innov": zeros(batch, chunk, dt=torch.float32),
        }

    # --- the score
    def innovation(self, x: torch.Tensor, s_prev: torch.Tensor, k_proj: nn.Linear):
        """x, s_prev: (batch, seq, hidden) -> innovation (batch, seq), per-token predictor loss (batch, seq)."""
        if self.mode == "predictor":
            innovation = squared_error(x.detach(), self.predictor(s_prev))
            return innovation, innovation
        return squared_error(k_proj(x), k_proj(s_prev)), None

    def score_parts(self, x: torch.Tensor, s: torch.Tensor, s_prev: torch.Tensor, k_proj: nn.Linear):
        """The learned part of the score ``w . [x_j, s_j] + b`` (batch, seq), the innovation (batch, seq),
        detached (the score must not train the predictor), and the per-token auxiliary loss or None."""
        innovation, aux = self.innovation(x, s_prev, k_proj)
        learned = self.score_proj(torch.cat([x, s], dim=-1)).squeeze(-1)
        return learned, innovation.detach(), aux

    def combine(self, learned: torch.Tensor, innovation: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Selection scores from :meth:`score_parts`' parts; all (batch, L) with column 0 at a chunk boundary,
        ``valid`` marking real tokens (the standardisation's statistics). Invalid entries are unspecified."""
        if self.innovation_norm == "chunk":
            innovation = standardise_chunks(innovation, valid, self.chunk_size)
        return learned + self.innovation_scale * innovation

    # --- whole sequence
    def forward(self, x, s, k, v, k_proj, mask):
        """Memory keys/values for every query chunk.

        Args:
            x: (batch, seq, hidden) normalised layer input; s: (batch, seq, hidden) SSM outputs.
            k, v: (batch, seq, kv_heads, dim) keys (rotary applied) and values of the raw tokens.
            mask: (batch, seq) bool, True for real tokens.

        Returns:
            mem_k, mem_v (batch, n_chunks, slots, kv_heads, dim), mem_bias (batch, n_chunks, slots),
            aux_loss (scalar tensor).
        """
        batch, seq, kv_heads, dim = k.shape
        s_prev = F.pad(s, (0, 0, 1, 0))[:, :seq]
        learned, innovation, aux = self.score_parts(x, s, s_prev, k_proj)
        valid_tokens = torch.ones_like(innovation, dtype=torch.bool) if mask is None else mask
        score = self.combine(learned, innovation, valid_tokens)
        selectable = score.detach().masked_fill(~valid_tokens, NEG_INF)
        idx, valid = ops.eidetic_select(selectable, self.chunk_size, self.topk, self.slots, self.policy, self.lag)
        if self.record:
            self.last_selection = (idx, valid)
        n_chunks = idx.shape[1]
        flat = idx.reshape(batch, -1)
        mem_k = ops.gather_rows(k.reshape(batch, seq, -1), flat).view(batch, n_chunks, self.slots, kv_heads, dim)
        mem_v = ops.gather_rows(v.reshape(batch, seq, -1), flat).view(batch, n_chunks, self.slots, kv_heads, dim)
        mem_score = ops.gather_rows(score[..., None], flat).view(batch, n_chunks, self.slots)
        mem_bias = F.logsigmoid(mem_score).masked_fill(~valid, NEG_INF)
        if aux is None:
            aux_loss = score.new_zeros(())
        else:
            weights = valid_tokens.float()
            aux_loss = (aux * weights).sum() / weights.sum().clamp_min(1.0)
        return mem_k, mem_v, mem_bias, aux_loss

    # --- incremental
    def prefill(self, x, s, k, v, k_proj, tokens: Tokens, state):
        """A prompt after an empty state (compacted: row ``b``'s real tokens at ``0 .. n[b] - 1``): the
        whole-sequence selection, and the state of row ``b`` as of chunk ``n[b] // C`` (the memory that chunk
        sees, the candidates of the ``lag - 1`` chunks before it, its own score parts and keys/values).

        Returns the whole-sequence ``mem_k, mem_v`` (B, n_chunks, M, K, D) and ``mem_bias`` (B, n_chunks, M).
        """
        C, topk, slots = self.chunk_size, self.topk, self.slots
        batch, seq, kv_heads, dim = k.shape
        mask = tokens.mask
        s_prev = F.pad(s, (0, 0, 1, 0))[:, :seq]  # the empty state's s_last is zero
        learned, innovation, _ = self.score_parts(x, s, s_prev, k_proj)
        score = self.combine(learned, innovation, mask).detach().float().masked_fill(~mask, NEG_INF)
        learned = learned.detach().float().masked_fill(~mask, NEG_INF)

        n_chunks = -(-seq // C)
        # One more (empty) chunk, so that the memory a row's next chunk sees exists when n is a multiple of C.
        ext = F.pad(score, (0, (n_chunks + 1) * C - seq), value=NEG_INF)
        idx, valid = ops.eidetic_select(ext, C, topk, slots, self.policy, self.lag)  # (B, n_chunks + 1, M)
        flat = idx[:, :n_chunks].reshape(batch, -1)
        mem_k = ops.gather_rows(k.reshape(batch, seq, -1), flat).view(batch, n_chunks, slots, kv_heads, dim)
        mem_v = ops.gather_rows(v.reshape(batch, seq, -1), flat).view(batch, n_chunks, slots, kv_heads, dim)
        mem_bias = F.logsigmoid(ext.gather(1, flat).view(batch, n_chunks, slots)).masked_fill(
            ~valid[:, :n_chunks], NEG_INF
        )

        def prio(sc, chunk):
            # A copy for topk, not an alias: state tensors sharing storage would make the first decode step's
            # graph (one input for both) differ from the next ones' (two inputs), a recompilation on XLA.
            return sc.clone() if self.policy == "topk" else priority(sc, chunk, self.policy)

        last = tokens.n // C  # (B,)
        rows = torch.arange(batch, device=k.device)
        at, ok = idx[rows, last], valid[rows, last]  # (B, M)
        state["mem_score"] = torch.where(ok, ext.gather(1, at), NEG_INF)
        state["mem_prio"] = prio(state["mem_score"], at // C)
        state["mem_kv"] = torch.stack([gather_rows(k, at), gather_rows(v, at)], dim=2)

        n_pend = self.lag - 1
        cand_score, local = ext.view(batch, n_chunks + 1, C).topk(topk, dim=-1)  # (B, n_chunks + 1, k)
        chunk = last[:, None] - n_pend + torch.arange(n_pend, device=k.device)  # (B, lag - 1)
        exists = (chunk >= 0)[..., None]
        chunk = chunk.clamp(min=0)
        pick = chunk[..., None].expand(-1, -1, topk)
        pend_score = cand_score.gather(1, pick).masked_fill(~exists, NEG_INF)
        state["pend_score"], state["pend_prio"] = pend_score, prio(pend_score, chunk[..., None])
        pos = (chunk[..., None] * C + local.gather(1, pick)).clamp(max=seq - 1).view(batch, -1)
        pend_kv = torch.stack([gather_rows(k, pos), gather_rows(v, pos)], dim=2)
        state["pend_kv"] = pend_kv.view(batch, n_pend, topk, 2, kv_heads, dim)

        # The current chunk: its score parts are combined again when it completes.
        in_chunk = last[:, None] * C + torch.arange(C, device=k.device)  # up to seq + C - 1
        state["chunk_score"] = F.pad(learned, (0, C), value=NEG_INF).gather(1, in_chunk)
        state["chunk_innov"] = F.pad(innovation.float(), (0, C)).gather(1, in_chunk)
        in_chunk = in_chunk.clamp(max=seq - 1)
        state["chunk_kv"] = torch.stack([gather_rows(k, in_chunk), gather_rows(v, in_chunk)], dim=2)
        s_last = gather_rows(s, (tokens.n - 1).clamp(min=0)[:, None])[:, 0]
        state["s_last"] = torch.where((tokens.n > 0)[:, None], s_last, state["s_last"])
        return mem_k, mem_v, mem_bias

    def extend(self, x, s, kv, k_proj, tokens: Tokens, state) -> KeyBlock:
        """New tokens after ``state``: x, s (B, T, hidden) layer input and SSM output; kv (B, T, 2, K, D).
        Returns what each new query sees of the memory (see :meth:`advance`)."""
        s_prev = torch.cat([state["s_last"][:, None], s[:, :-1]], dim=1)
        learned, innovation, _ = self.score_parts(x, s, s_prev, k_proj)
        learned = learned.detach().float().masked_fill(~tokens.mask, NEG_INF)
        if x.shape[1] == 1:
            state["s_last"] = torch.where(tokens.mask, s[:, 0], state["s_last"])
            return self.advance_one(kv, learned, innovation, tokens, state)
        state["s_last"] = gather_rows(torch.cat([state["s_last"][:, None], s], dim=1), tokens.n[:, None])[:, 0]
        return self.advance(kv, learned, innovation, tokens, state)

    def advance(self, kv, learned, innovation, tokens: Tokens, state) -> KeyBlock:
        """Advance the memory over T new tokens; return what each new query sees of it.

        Follows :func:`~bmojo_neuron.ops.eidetic.reference.eidetic_select_reference` chunk by chunk: chunk
        ``c``'s top-k candidates are merged into the memory (``topk`` or ``fifo`` priority) after the memory
        that query chunk ``c - 1 + lag`` sees.

        Args:
            kv: (B, T, 2, K, D) keys (rotary applied) and values of the new tokens.
            learned: (B, T) float32 learned part of the selection scores, ``-inf`` at padding.
            innovation: (B, T) float32 raw innovation (:meth:`combine` makes the scores, chunk by chunk).

        Returns:
            a ``KeyBlock`` over a pool of memory entries ``(B, P, 2, K, D)`` with the bias ``(B, T, P)`` of each
            query (``log sigmoid(score)`` for the slots in its memory, masked elsewhere).
        """
        C, topk, slots, lag = self.chunk_size, self.topk, self.slots, self.lag
        batch, seq = learned.shape
        device = learned.device
        chunk0, offset = tokens.start // C, torch.remainder(tokens.start, C)
        n_local = (C - 1 + seq) // C + 1  # chunks chunk0 .. chunk0 + n_local - 1 can hold new tokens

        # The new tokens, aligned to chunk boundaries behind the saved part of the current chunk:
        # aligned index u holds position chunk0 * C + u.
        u = torch.arange(n_local * C, device=device)
        rel = u[None] - offset[:, None]  # index among the new tokens
        src = torch.where(rel < 0, u[None], C + rel.clamp(max=seq - 1))
        real = (rel < 0) | (rel < tokens.n[:, None])
        a_learned = torch.cat([state["chunk_score"], learned], 1).gather(1, src).masked_fill(~real, NEG_INF)
        a_innov = torch.cat([state["chunk_innov"], innovation.float()], 1).gather(1, src)
        a_score = self.combine(a_learned, a_innov, real).masked_fill(~real, NEG_INF)
        a_kv = gather_rows(torch.cat([state["chunk_kv"], kv], 1), src)

        cand_score, local = a_score.view(batch, n_local, C).topk(topk, dim=-1)  # (B, n_local, k)
        cand_at = local + (torch.arange(n_local, device=device) * C)[:, None]
        cand_kv = gather_rows(a_kv, cand_at.reshape(batch, -1)).view(batch, n_local, topk, *kv.shape[2:])
        chunk_idx = chunk0[:, None, None] + torch.arange(n_local, device=device)[:, None]
        cand_prio = priority(cand_score, chunk_idx, self.policy)

        # Candidate sets in merge order: set j is chunk chunk0 - lag + 1 + j (pending first, then local chunks).
        seq_prio = torch.cat([state["pend_prio"], cand_prio], 1)  # (B, n_pend + n_local, k)
        seq_score = torch.cat([state["pend_score"], cand_score], 1)
        seq_kv = torch.cat([state["pend_kv"], cand_kv], 1)  # (B, n_pend + n_local, k, 2, K, D)
        pool_kv = torch.cat([state["mem_kv"], seq_kv.flatten(1, 2)], 1)  # (B, P, 2, K, D), P = M + sets * k
        seq_src = slots + torch.arange(seq_prio.shape[1] * topk, device=device).view(-1, topk)

        mem_src = torch.arange(slots, device=device).expand(batch, slots)
        mem_prio, mem_score = state["mem_prio"], state["mem_score"]
        versions = [(mem_src, mem_prio, mem_score)]  # versions[j]: the memory query chunk chunk0 + j sees
        for j in range(n_local - 1):
            top_prio, keep = torch.cat([mem_prio, seq_prio[:, j]], 1).topk(slots, dim=-1)
            merged = (chunk0 - lag + 1 + j >= 0)[:, None]  # chunks before 0 do not exist
            mem_prio = torch.where(merged, top_prio, mem_prio)
            mem_score = torch.where(merged, torch.cat([mem_score, seq_score[:, j]], 1).gather(1, keep), mem_score)
            mem_src = torch.where(
                merged, torch.cat([mem_src, seq_src[j].expand(batch, -1)], 1).gather(1, keep), mem_src
            )
            versions.append((mem_src, mem_prio, mem_score))

        src_v, prio_v, score_v = (torch.stack(t, 1) for t in zip(*versions))  # (B, n_local, M)
        bias_v = slot_bias(score_v, prio_v)

        # The state after the new tokens: row b is in chunk chunk0 + last[b].
        last = (offset + tokens.n) // C
        pick = lambda t: t[torch.arange(batch, device=device), last]  # noqa: E731
        # The keys/values of empty entries (priority or score -inf) are unspecified; attention masks them.
        state["mem_prio"], state["mem_score"] = pick(prio_v), pick(score_v)
        state["mem_kv"] = gather_rows(pool_kv, pick(src_v))
        self._keep_pending_and_chunk(state, last, (seq_prio, seq_score, seq_kv), (a_learned, a_innov, a_kv))

        query_version = (offset[:, None] + torch.arange(seq, device=device)) // C  # (B, T)
        bias = torch.full((batch, n_local, pool_kv.shape[1]), MASKED_LOGIT, device=device)
        bias = bias.scatter_(2, src_v, bias_v).gather(1, query_version[..., None].expand(-1, -1, pool_kv.shape[1]))
        return KeyBlock(pool_kv, bias=bias)

    def _keep_pending_and_chunk(self, state, last: torch.Tensor, candidates: tuple, aligned: tuple) -> None:
        """The state's pending candidate sets and current chunk after :meth:`advance`: row ``b`` is in local chunk
        ``last[b]``. candidates: (prio, score, kv) of the sets in merge order; aligned: (learned, innovation,
        kv) of the chunk-aligned tokens."""
        C, topk = self.chunk_size, self.topk
        seq_prio, seq_score, seq_kv = candidates
        pend = last[:, None] + torch.arange(self.lag - 1, device=last.device)
        state["pend_prio"] = seq_prio.gather(1, pend[..., None].expand(-1, -1, topk))
        state["pend_score"] = seq_score.gather(1, pend[..., None].expand(-1, -1, topk))
        state["pend_kv"] = gather_rows(seq_kv, pend)
        in_chunk = last[:, None] * C + torch.arange(C, device=last.device)
        a_learned, a_innov, a_kv = aligned
        state["chunk_score"] = a_learned.gather(1, in_chunk)
        state["chunk_innov"] = a_innov.gather(1, in_chunk)
        state["chunk_kv"] = gather_rows(a_kv, in_chunk)

    def advance_one(self, kv, learned, innovation, tokens: Tokens, state) -> KeyBlock:
        """:meth:`advance` for one new token (decode), in O(slots + chunk) work.

        The token is written into the current chunk; if it completes the chunk, the chunk's candidates join
        the pending sets and the oldest pending set is merged into the memory. Every row computes both
        outcomes and keeps the right one (``torch.where``): no data-dependent control flow.
        kv: (B, 1, 2, K, D); learned, innovation: (B, 1).
        """
        C, topk, slots, lag = self.chunk_size, self.topk, self.slots, self.lag
        mem_prio, mem_score = state["mem_prio"], state["mem_score"]
        block = KeyBlock(state["mem_kv"], bias=slot_bias(mem_score, mem_prio)[:, None])

        chunk0, offset = tokens.start // C, torch.remainder(tokens.start, C)
        real = tokens.mask[:, 0]
        slot = offset[:, None]
        # Write the token into its chunk slot, in place (padding writes a -inf score: the slot stays empty).
        chunk_learned = state["chunk_score"].scatter_(1, slot, learned)
        chunk_innov = state["chunk_innov"].scatter_(1, slot, innovation.float())
        chunk_kv = scatter_rows_(state["chunk_kv"], slot, kv)
        completes = real & (offset == C - 1)

        filled = torch.isfinite(chunk_learned)
        chunk_score = self.combine(chunk_learned, chunk_innov, filled).masked_fill(~filled, NEG_INF)
        cand_score, local = chunk_score.topk(topk, dim=-1)  # (B, k): chunk chunk0's candidates, if complete
        cand_kv = gather_rows(chunk_kv, local)
        cand_prio = priority(cand_score, chunk0[:, None], self.policy)
        seq_prio = torch.cat([state["pend_prio"], cand_prio[:, None]], 1)  # (B, lag, k): chunks chunk0 - lag + 1 ..
        seq_score = torch.cat([state["pend_score"], cand_score[:, None]], 1)
        seq_kv = torch.cat([state["pend_kv"], cand_kv[:, None]], 1)

        # Merge the oldest set (chunk chunk0 - lag + 1) when the chunk completes; otherwise keep slot i as slot i.
        top_prio, keep = torch.cat([mem_prio, seq_prio[:, 0]], 1).topk(slots, dim=-1)
        merged = (completes & (chunk0 - lag + 1 >= 0))[:, None]
        keep = torch.where(merged, keep, torch.arange(slots, device=keep.device))
        state["mem_prio"] = torch.where(merged, top_prio, mem_prio)
        state["mem_score"] = torch.cat([mem_score, seq_score[:, 0]], 1).gather(1, keep)
        state["mem_kv"] = gather_rows(torch.cat([state["mem_kv"], seq_kv[:, 0]], 1), keep)

        shift = completes[:, None, None]
        state["pend_prio"] = torch.where(shift, seq_prio[:, 1:], state["pend_prio"])
        state["pend_score"] = torch.where(shift, seq_score[:, 1:], state["pend_score"])
        state["pend_kv"] = torch.where(shift[..., None, None, None], seq_kv[:, 1:], state["pend_kv"])
        state["chunk_score"] = chunk_learned.masked_fill_(completes[:, None], NEG_INF)
        return block
