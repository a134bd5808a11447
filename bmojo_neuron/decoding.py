"""Cached forward of a B'MOJO model: process new tokens after everything a :class:`BMojoCache` has seen.

One code path serves prefill (an empty cache), chunked prefill (a prompt chunk after a non-empty cache) and
token-by-token decoding (one new token); the tests check all three against the full forward of
:class:`~bmojo_neuron.modeling_bmojo.BMojoModel`, which stays the specification.

Conventions of this file. The new tokens of a call are ``(B, T)``; a row's padding (``attention_mask`` 0) is
moved behind its real tokens ("compaction", the same rotation as the full forward does for left padding),
so row ``b`` has ``n[b]`` real tokens at indices ``0 .. n[b] - 1``, at positions ``start[b] + i``, where
``start[b]`` counts the real tokens the row has seen. Trailing padding then never reaches a real token:
its positions come after every real one, and causal visibility (key position <= query position) hides it.
State updates use ``n`` (a tensor): nothing here reads a tensor's value on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import ops
from .cache import NEG_INF, BMojoCache, BMojoLayerState

# Largest number of queries attended at once: bounds the (queries x keys) logits of a long prefill.
QUERY_BLOCK = 256


@dataclass
class NewTokens:
    """The tokens of one cached forward, after compaction (see the module docstring)."""

    mask: torch.Tensor  # (B, T) bool, True for real tokens (the first n[b] of each row)
    n: torch.Tensor  # (B,) int64 real tokens per row
    start: torch.Tensor  # (B,) int64 position of each row's first new token
    positions: torch.Tensor  # (B, T) int64 start + arange(T)
    cos: torch.Tensor  # (B, T, head_dim) rotary cos at `positions`
    sin: torch.Tensor  # (B, T, head_dim)


@dataclass
class KeyBlock:
    """Keys/values a query may attend to, and the rule that says which.

    With ``bias`` None a key at distance ``d = query position - key position`` is visible iff
    ``lo <= d < hi`` (``hi`` None: unbounded) and its position is ``>= 0``. ``new`` marks the keys of the
    new tokens themselves (key ``j`` at position ``start + j``), which lets long prefills skip key ranges
    a query block cannot see. With ``bias`` (B, T, S) given, that additive bias is the rule.
    """

    kv: torch.Tensor  # (B, S, 2, kv_heads, head_dim): keys then values
    pos: torch.Tensor | None = None  # (B, S) int64 key positions, -1 for none
    lo: int = 0
    hi: int | None = None
    new: bool = False
    bias: torch.Tensor | None = None


def most_negative(dtype: torch.dtype = torch.float32) -> float:
    return torch.finfo(dtype).min


# ----------------------------------------------------------------------------------------------- the model


def cached_forward(
    model,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor | None,
    cache: BMojoCache,
    output_hidden_states: bool = False,
):
    """Run ``model`` (a ``BMojoModel``) over ``hidden`` (B, T, hidden) after the state in ``cache``.

    ``attention_mask`` is (B, L) with ``L >= T`` (HF convention: past and new columns), its last ``T`` columns
    mark the new tokens' padding. Updates ``cache`` and returns ``(hidden (B, T, hidden), all_hidden or None)``
    in the input's column order.

    Three paths, one contract: one new token without autograd runs :func:`decode_step` (fused projections,
    in-place ring writes); a prompt after an empty cache runs the whole-prompt ops of the full forward
    (:func:`attention_prefill`) and fills the state from their results; anything else runs the general
    per-layer extension below.
    """
    from .decode_step import decode_step, fast_decode_ok  # imports this module
    from .modeling_bmojo import rotary_cos_sin

    batch, seq, _ = hidden.shape
    if not cache.is_allocated:
        cache.allocate(batch, hidden.dtype, hidden.device)
    elif cache.batch_size != batch:
        raise ValueError(f"the cache holds {cache.batch_size} rows but the input has {batch}")
    mask = _new_token_mask(attention_mask, batch, seq, hidden.device)
    host_position = cache.host_position
    fresh = host_position == 0  # every row is at position 0: nothing to attend to but the new tokens
    known = attention_mask is None and host_position is not None  # every row's position, known on the host
    cache.host_position = host_position + seq if known else None
    if seq == 1 and fast_decode_ok(model, hidden):
        hidden, all_hidden = decode_step(
            model, hidden, mask, cache, host_position if known else None, output_hidden_states
        )
        cache.steps += 1
        return hidden, all_hidden

    restore = None
    if seq > 1 and attention_mask is not None:  # compaction: real tokens first, padding last, order kept
        order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
        restore = torch.argsort(order, dim=1)
        hidden = hidden.gather(1, order[..., None].expand_as(hidden))
        mask = mask.gather(1, order)
    start = cache.positions
    positions = start[:, None] + torch.arange(seq, device=hidden.device)
    cos, sin = rotary_cos_sin(positions, model.config.head_dim, model.config.rope_theta, hidden.dtype)
    step = NewTokens(mask, mask.sum(-1), start, positions, cos, sin)

    all_hidden = [] if output_hidden_states else None
    for layer, state in zip(model.layers, cache.layers):
        if all_hidden is not None:
            all_hidden.append(hidden)
        normed = layer.input_layernorm(hidden)
        if layer.layer_type == "ssm":
            mixed = ssm_extend(layer.mixer.ssm, normed, step, state)
        elif fresh and layer.layer_type in ("bmojo_f", "bmojo"):
            mixed = attention_prefill(layer.mixer, normed, step, state)
        else:
            mixed = attention_extend(layer.mixer, normed, step, state)
        hidden = hidden + mixed
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    hidden = model.norm(hidden)
    if all_hidden is not None:
        all_hidden.append(hidden)
    cache.positions = start + step.n
    cache.steps += seq
    if restore is not None:
        unrotate = lambda t: t.gather(1, restore[..., None].expand_as(t))  # noqa: E731
        hidden = unrotate(hidden)
        all_hidden = [unrotate(h) for h in all_hidden] if all_hidden is not None else None
    return hidden, (tuple(all_hidden) if all_hidden is not None else None)


def _new_token_mask(attention_mask, batch: int, seq: int, device) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones(batch, seq, dtype=torch.bool, device=device)
    if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] < seq:
        raise ValueError(
            f"with a cache, attention_mask must be (batch, past + new) = ({batch}, >= {seq}), "
            f"got {tuple(attention_mask.shape)}"
        )
    return attention_mask[:, -seq:].bool()


# ----------------------------------------------------------------------------------------------- fading memory


def ssm_extend(ssm, hidden: torch.Tensor, step: NewTokens, state: BMojoLayerState) -> torch.Tensor:
    """``BMojoSSM`` over new tokens from the saved conv and scan states. hidden: (B, T, hidden) -> (B, T, hidden)."""
    hidden = hidden * step.mask[..., None].to(hidden.dtype)
    z, xBC, dt_raw = ssm.project(hidden)
    history = torch.cat([state["conv"], xBC.transpose(1, 2)], dim=-1)  # (B, conv_dim, K - 1 + T)
    if hidden.shape[1] == 1:  # decode: one output, the window slides by one if the token is real
        conv = (history * ssm.conv1d.weight[:, 0]).sum(-1, keepdim=True) + ssm.conv1d.bias[:, None]
        state["conv"] = torch.where(step.mask[:, :, None], history[..., 1:], history[..., :-1])
    else:
        conv = F.conv1d(history, ssm.conv1d.weight, ssm.conv1d.bias, groups=ssm.conv_dim)  # (B, conv_dim, T)
        keep = step.n[:, None] + torch.arange(ssm.conv_kernel - 1, device=hidden.device)  # last K-1 real inputs
        state["conv"] = history.gather(2, keep[:, None, :].expand(-1, ssm.conv_dim, -1))
    x, dt, A, B, C = ssm.scan_inputs(F.silu(conv).transpose(1, 2), dt_raw, step.mask)
    if hidden.shape[1] == 1:
        y, state["ssm"] = ops.ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], ssm.D.float(), state["ssm"])
        y = y[:, None]
    else:
        y, state["ssm"] = ops.ssd_scan(x, dt, A, B, C, ssm.D.float(), state["ssm"], ssm.chunk_size)
    return ssm.output(y, z)


# ----------------------------------------------------------------------------------------------- windows


def ring_positions(end: torch.Tensor, size: int) -> torch.Tensor:
    """Position held by each slot of a ring buffer after positions ``< end`` were written.

    end: (B,) -> (B, size); slot ``s`` holds the largest ``p < end`` with ``p % size == s`` (negative: empty).
    """
    last = end[:, None] - 1
    slots = torch.arange(size, device=end.device)
    return last - torch.remainder(last - slots, size)


def ring_extend(ring: torch.Tensor, new: torch.Tensor, step: NewTokens) -> torch.Tensor:
    """Write the real new entries into a ring buffer. ring: (B, R, ...); new: (B, T, ...) -> (B, R, ...)."""
    size, seq = ring.shape[1], new.shape[1]
    if seq == 1:  # decode: one slot per row, in place
        slot = torch.remainder(step.start, size).view(-1, 1, *([1] * (ring.dim() - 2))).expand(-1, 1, *ring.shape[2:])
        keep_old = ~step.mask.view(-1, 1, *([1] * (ring.dim() - 2)))
        return ring.scatter_(1, slot, torch.where(keep_old, ring.gather(1, slot), new))
    held = ring_positions(step.start + step.n, size)
    from_new = held >= step.start[:, None]
    src = torch.where(from_new, size + held - step.start[:, None], torch.arange(size, device=ring.device))
    src = src.view(*src.shape, *([1] * (ring.dim() - 2))).expand(-1, -1, *ring.shape[2:])
    return torch.cat([ring, new], dim=1).gather(1, src)


def attention_extend(attn, hidden: torch.Tensor, step: NewTokens, state: BMojoLayerState) -> torch.Tensor:
    """``BMojoAttention`` over new tokens. hidden: (B, T, hidden) normalised layer input -> (B, T, hidden)."""
    from .modeling_bmojo import apply_rotary

    batch, seq, _ = hidden.shape
    heads, kv_heads = attn.num_heads, attn.num_kv_heads
    q, k, v = (
        attn.heads(p, hidden, n) for p, n in ((attn.q_proj, heads), (attn.k_proj, kv_heads), (attn.v_proj, kv_heads))
    )
    fade_v = s = None
    if attn.ssm is not None:
        s = ssm_extend(attn.ssm, hidden, step, state)
        fade_k, fade_v = attn.heads(attn.k_proj, s, kv_heads), attn.heads(attn.v_proj, s, kv_heads)
        q, k, fade_k = apply_rotary(torch.cat([q, k, fade_k], 2), step.cos, step.sin).split(
            [heads, kv_heads, kv_heads], 2
        )
    else:
        q, k = apply_rotary(torch.cat([q, k], 2), step.cos, step.sin).split([heads, kv_heads], 2)
    kv = torch.stack([k, v], dim=2)  # (B, T, 2, K, D)

    if attn.layer_type == "attention":
        blocks = [KeyBlock(state["kv"], state["key_pos"]), KeyBlock(kv, step.positions, new=True)]
        state["kv"] = torch.cat([state["kv"], kv], dim=1)
        state["key_pos"] = torch.cat([state["key_pos"], torch.where(step.mask, step.positions, -1)], dim=1)
        if seq == 1:  # one block over the updated cache
            blocks = [KeyBlock(state["kv"], state["key_pos"])]
        return attn.o_proj(attend(q, blocks, step).reshape(batch, seq, -1))

    entries = kv if s is None else torch.cat([kv, torch.stack([fade_k, fade_v], dim=2)], dim=2)
    memory = None
    if attn.eidetic is not None:
        s_prev = torch.cat([state["s_last"][:, None], s[:, :-1]], dim=1)
        learned, innovation, _ = attn.eidetic.score_parts(hidden, s, s_prev, attn.k_proj)
        learned = learned.detach().float().masked_fill(~step.mask, NEG_INF)
        memory = (eidetic_step if seq == 1 else eidetic_extend)(attn.eidetic, kv, learned, innovation, step, state)
        if seq == 1:
            state["s_last"] = torch.where(step.mask, s[:, 0], state["s_last"])
        else:
            state["s_last"] = torch.cat([state["s_last"][:, None], s], dim=1)[torch.arange(batch), step.n]
    if seq == 1:
        out = _window_step(q, entries, attn.window, step, state, memory)
    else:
        out = _window_extend(q, entries, attn.window, step, state, memory)
    return attn.readout(out.reshape(batch, seq, -1), s)


def _window_extend(q, entries, w: int, step: NewTokens, state: BMojoLayerState, memory: KeyBlock | None):
    """Attention of T new queries over the ring buffer, the new tokens and the memory; then the ring update.

    entries: (B, T, S, K, D) with streams S = [raw k, raw v] or [raw k, raw v, fading k, fading v].
    """
    ring = state["window"]
    ring_pos = ring_positions(step.start, ring.shape[1])
    blocks = [KeyBlock(ring[:, :, 0:2], ring_pos, 0, w), KeyBlock(entries[:, :, 0:2], step.positions, 0, w, new=True)]
    if entries.shape[2] == 4:
        blocks += [
            KeyBlock(ring[:, :, 2:4], ring_pos, w, 2 * w),
            KeyBlock(entries[:, :, 2:4], step.positions, w, 2 * w, new=True),
        ]
    if memory is not None:
        blocks.insert(0, memory)
    out = attend(q, blocks, step)
    state["window"] = ring_extend(ring, entries, step)
    return out


def _window_step(q, entries, w: int, step: NewTokens, state: BMojoLayerState, memory: KeyBlock | None):
    """:func:`_window_extend` for one query: write the token into the ring first, then attend over the ring.

    After the write the ring holds exactly the query's windows (the last ``w`` or ``2w`` positions): a slot's
    raw entries are visible if it is among the last ``w``, its fading entries otherwise.
    """
    ring = state["window"] = ring_extend(state["window"], entries, step)
    dist = step.start[:, None] - ring_positions(step.start + step.n, ring.shape[1])  # (B, R); >= 0
    filled = dist <= step.start[:, None]  # the slot holds a position >= 0
    raw = filled & (dist < w)
    parts = [] if memory is None else [(memory.kv, memory.bias)]
    parts.append((ring[:, :, 0:2], torch.where(raw, 0.0, most_negative())[:, None]))
    if ring.shape[2] == 4:
        parts.append((ring[:, :, 2:4], torch.where(filled & ~raw, 0.0, most_negative())[:, None]))
    return _softmax_attention(q, parts)


# ----------------------------------------------------------------------------------------------- eidetic memory


def eidetic_extend(
    eidetic, kv: torch.Tensor, learned: torch.Tensor, innovation: torch.Tensor, step: NewTokens, state: BMojoLayerState
) -> KeyBlock:
    """Advance the eidetic memory over the new tokens; return what each new query sees of it.

    Follows :func:`~bmojo_neuron.ops.eidetic.reference.eidetic_select_reference` chunk by chunk: chunk ``c``'s
    top-k candidates are merged into the memory (``topk`` or ``fifo`` priority) after the memory that
    query chunk ``c - 1 + lag`` sees. The state holds the memory the current chunk sees, the candidates
    of the ``lag - 1`` completed chunks not merged yet, and the current chunk's score parts and keys/values.

    Args:
        kv: (B, T, 2, K, D) keys (rotary applied) and values of the new tokens.
        learned: (B, T) float32 learned part of the selection scores, ``-inf`` at padding.
        innovation: (B, T) float32 raw innovation (``eidetic.combine`` makes the scores, chunk by chunk).

    Returns:
        a ``KeyBlock`` over a pool of memory entries ``(B, P, 2, K, D)`` with the bias ``(B, T, P)`` of each
        query (``log sigmoid(score)`` for the slots in its memory, the float minimum elsewhere).
    """
    C, topk, slots, lag = eidetic.chunk_size, eidetic.topk, eidetic.slots, eidetic.lag
    batch, seq = learned.shape
    device = learned.device
    n_pend = lag - 1
    chunk0, offset = step.start // C, torch.remainder(step.start, C)
    n_local = (C - 1 + seq) // C + 1  # chunks chunk0 .. chunk0 + n_local - 1 can hold new tokens

    # The new tokens, aligned to chunk boundaries behind the saved part of the current chunk:
    # aligned index u holds position chunk0 * C + u.
    u = torch.arange(n_local * C, device=device)
    rel = u[None] - offset[:, None]  # index among the new tokens
    src = torch.where(rel < 0, u[None], C + rel.clamp(max=seq - 1))
    real = (rel < 0) | (rel < step.n[:, None])
    a_learned = torch.cat([state["chunk_score"], learned], 1).gather(1, src).masked_fill(~real, NEG_INF)
    a_innov = torch.cat([state["chunk_innov"], innovation.float()], 1).gather(1, src)
    a_score = eidetic.combine(a_learned, a_innov, real).masked_fill(~real, NEG_INF)
    a_kv = _gather_rows(torch.cat([state["chunk_kv"], kv], 1), src)

    cand_score, local = a_score.view(batch, n_local, C).topk(topk, dim=-1)  # (B, n_local, k)
    cand_at = local + (torch.arange(n_local, device=device) * C)[:, None]
    cand_kv = _gather_rows(a_kv, cand_at.reshape(batch, -1)).view(batch, n_local, topk, *kv.shape[2:])
    if eidetic.policy == "topk":
        cand_prio = cand_score
    else:  # fifo: newer chunks first, inside a chunk the higher score (as the reference)
        chunk_idx = chunk0[:, None, None] + torch.arange(n_local, device=device)[:, None]
        cand_prio = torch.where(torch.isinf(cand_score), cand_score, chunk_idx + torch.sigmoid(cand_score))

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
        pool_prio = torch.cat([mem_prio, seq_prio[:, j]], 1)
        top_prio, keep = pool_prio.topk(slots, dim=-1)
        merged = (chunk0 - lag + 1 + j >= 0)[:, None]  # chunks before 0 do not exist
        mem_prio = torch.where(merged, top_prio, mem_prio)
        mem_score = torch.where(merged, torch.cat([mem_score, seq_score[:, j]], 1).gather(1, keep), mem_score)
        mem_src = torch.where(merged, torch.cat([mem_src, seq_src[j].expand(batch, -1)], 1).gather(1, keep), mem_src)
        versions.append((mem_src, mem_prio, mem_score))

    src_v, prio_v, score_v = (torch.stack(t, 1) for t in zip(*versions))  # (B, n_local, M)
    bias_v = torch.where(torch.isfinite(prio_v), F.logsigmoid(score_v), most_negative())

    # The state after the new tokens: row b is in chunk chunk0 + last[b].
    last = (offset + step.n) // C
    pick = lambda t: t[torch.arange(batch, device=device), last]  # noqa: E731
    # The keys/values of empty entries (priority or score -inf) are unspecified; attention masks them.
    state["mem_prio"], state["mem_score"] = pick(prio_v), pick(score_v)
    state["mem_kv"] = _gather_rows(pool_kv, pick(src_v))
    pend = last[:, None] + torch.arange(n_pend, device=device)
    state["pend_prio"] = seq_prio.gather(1, pend[..., None].expand(-1, -1, topk))
    state["pend_score"] = seq_score.gather(1, pend[..., None].expand(-1, -1, topk))
    state["pend_kv"] = _gather_rows(seq_kv, pend)
    in_chunk = last[:, None] * C + torch.arange(C, device=device)
    state["chunk_score"] = a_learned.gather(1, in_chunk)
    state["chunk_innov"] = a_innov.gather(1, in_chunk)
    state["chunk_kv"] = _gather_rows(a_kv, in_chunk)

    if seq == 1:  # one query, in chunk chunk0: it sees versions[0], the saved memory
        return KeyBlock(pool_kv[:, :slots], bias=bias_v[:, :1])
    query_version = (offset[:, None] + torch.arange(seq, device=device)) // C  # (B, T)
    bias = torch.full((batch, n_local, pool_kv.shape[1]), most_negative(), device=device).scatter_(2, src_v, bias_v)
    bias = bias.gather(1, query_version[..., None].expand(-1, -1, pool_kv.shape[1]))
    return KeyBlock(pool_kv, bias=bias)


def eidetic_step(
    eidetic, kv: torch.Tensor, learned: torch.Tensor, innovation: torch.Tensor, step: NewTokens, state: BMojoLayerState
) -> KeyBlock:
    """:func:`eidetic_extend` for one new token (decode), in O(slots + chunk) work.

    The token is written into the current chunk; if it completes the chunk, the chunk's candidates join
    the pending sets and the oldest pending set is merged into the memory. Every row computes both outcomes
    and keeps the right one (``torch.where``): no data-dependent control flow.
    """
    C, topk, slots, lag = eidetic.chunk_size, eidetic.topk, eidetic.slots, eidetic.lag
    mem_prio, mem_score = state["mem_prio"], state["mem_score"]
    block = KeyBlock(
        state["mem_kv"], bias=torch.where(torch.isfinite(mem_prio), F.logsigmoid(mem_score), most_negative())[:, None]
    )

    chunk0, offset = step.start // C, torch.remainder(step.start, C)
    real = step.mask[:, 0]
    slot = offset[:, None]
    # Write the token into its chunk slot, in place (padding writes a -inf score: the slot stays empty).
    chunk_learned = state["chunk_score"].scatter_(1, slot, learned)
    chunk_innov = state["chunk_innov"].scatter_(1, slot, innovation.float())
    chunk_kv = _scatter_rows_(state["chunk_kv"], slot, kv)
    completes = real & (offset == C - 1)

    filled = torch.isfinite(chunk_learned)
    chunk_score = eidetic.combine(chunk_learned, chunk_innov, filled).masked_fill(~filled, NEG_INF)
    cand_score, local = chunk_score.topk(topk, dim=-1)  # (B, k): chunk chunk0's candidates, if complete
    cand_kv = _gather_rows(chunk_kv, local)
    if eidetic.policy == "topk":
        cand_prio = cand_score
    else:
        cand_prio = torch.where(torch.isinf(cand_score), cand_score, chunk0[:, None] + torch.sigmoid(cand_score))
    seq_prio = torch.cat([state["pend_prio"], cand_prio[:, None]], 1)  # (B, lag, k): chunks chunk0 - lag + 1 ..
    seq_score = torch.cat([state["pend_score"], cand_score[:, None]], 1)
    seq_kv = torch.cat([state["pend_kv"], cand_kv[:, None]], 1)

    # Merge the oldest set (chunk chunk0 - lag + 1) when the chunk completes; otherwise keep slot i as slot i.
    top_prio, keep = torch.cat([mem_prio, seq_prio[:, 0]], 1).topk(slots, dim=-1)
    merged = (completes & (chunk0 - lag + 1 >= 0))[:, None]
    keep = torch.where(merged, keep, torch.arange(slots, device=keep.device))
    state["mem_prio"] = torch.where(merged, top_prio, mem_prio)
    state["mem_score"] = torch.cat([mem_score, seq_score[:, 0]], 1).gather(1, keep)
    state["mem_kv"] = _gather_rows(torch.cat([state["mem_kv"], seq_kv[:, 0]], 1), keep)

    shift = completes[:, None, None]
    state["pend_prio"] = torch.where(shift, seq_prio[:, 1:], state["pend_prio"])
    state["pend_score"] = torch.where(shift, seq_score[:, 1:], state["pend_score"])
    state["pend_kv"] = torch.where(shift[..., None, None, None], seq_kv[:, 1:], state["pend_kv"])
    state["chunk_score"] = chunk_learned.masked_fill_(completes[:, None], NEG_INF)
    return block


def _scatter_rows_(dst: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """In place: ``dst[b, idx[b, i]] = src[b, i]`` for dst (B, S, ...), idx (B, N), src (B, N, ...)."""
    return dst.scatter_(1, idx.view(*idx.shape, *([1] * (dst.dim() - 2))).expand(-1, -1, *dst.shape[2:]), src)


def _gather_rows(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, i] = src[b, idx[b, i]]`` for src (B, S, ...) and idx (B, N) -> (B, N, ...)."""
    return src.gather(1, idx.view(*idx.shape, *([1] * (src.dim() - 2))).expand(-1, -1, *src.shape[2:]))


# ----------------------------------------------------------------------------------------------- prefill


def attention_prefill(attn, hidden: torch.Tensor, step: NewTokens, state: BMojoLayerState) -> torch.Tensor:
    """A ``bmojo_f``/``bmojo`` layer over a prompt after an empty state: the whole-prompt ops of the full
    forward (chunked scan, eidetic selection, blocked attention), then the state filled from their results.

    hidden: (B, T, hidden) normalised layer input, compacted (row ``b``'s real tokens at ``0 .. n[b] - 1``).
    """
    from .modeling_bmojo import apply_rotary

    batch, seq, _ = hidden.shape
    heads, kv_heads = attn.num_heads, attn.num_kv_heads
    q = apply_rotary(attn.heads(attn.q_proj, hidden, heads), step.cos, step.sin)
    k = apply_rotary(attn.heads(attn.k_proj, hidden, kv_heads), step.cos, step.sin)
    v = attn.heads(attn.v_proj, hidden, kv_heads)
    s = ssm_extend(attn.ssm, hidden, step, state)  # conv and scan states from zero: fills both
    fade_k = apply_rotary(attn.heads(attn.k_proj, s, kv_heads), step.cos, step.sin)
    fade_v = attn.heads(attn.v_proj, s, kv_heads)
    mem_k = mem_v = mem_bias = None
    if attn.eidetic is not None:
        s_prev = F.pad(s, (0, 0, 1, 0))[:, :seq]  # the empty state's s_last is zero
        learned, innovation, _ = attn.eidetic.score_parts(hidden, s, s_prev, attn.k_proj)
        score = attn.eidetic.combine(learned, innovation, step.mask)  # chunks start at position 0 here
        score = score.detach().float().masked_fill(~step.mask, NEG_INF)
        learned = learned.detach().float().masked_fill(~step.mask, NEG_INF)
        mem_k, mem_v, mem_bias = _eidetic_prefill(attn.eidetic, k, v, score, step, state)
        # The current chunk's parts: its scores are combined again when it completes.
        C = attn.chunk_size
        in_chunk = (step.n // C)[:, None] * C + torch.arange(C, device=hidden.device)  # up to seq + C - 1
        state["chunk_score"] = F.pad(learned, (0, C), value=NEG_INF).gather(1, in_chunk)
        state["chunk_innov"] = F.pad(innovation.float(), (0, C)).gather(1, in_chunk)
        last = (step.n - 1).clamp(min=0)
        s_last = s.gather(1, last[:, None, None].expand(-1, 1, s.shape[-1]))[:, 0]
        state["s_last"] = torch.where((step.n > 0)[:, None], s_last, state["s_last"])
    out = ops.bmojo_attention(
        q, k, v, attn.window, fade_k, fade_v, mem_k, mem_v, mem_bias, step.mask, attn.chunk_size, None
    )
    # The ring: slot r holds the largest position p < n with p % R == r.
    ring = state["window"]
    held = ring_positions(step.n, ring.shape[1])
    src = held.clamp(min=0)
    new = torch.stack([_gather_rows(t, src) for t in (k, v, fade_k, fade_v)], dim=2)
    state["window"] = torch.where((held >= 0)[..., None, None, None], new, ring)
    return attn.readout(out.reshape(batch, seq, -1), s)


def _eidetic_prefill(eidetic, k, v, score: torch.Tensor, step: NewTokens, state: BMojoLayerState):
    """The eidetic memory over a whole prompt after an empty state (see :func:`eidetic_extend`).

    Returns the full forward's ``mem_k, mem_v`` (B, n_chunks, M, K, D) and ``mem_bias`` (B, n_chunks, M), and
    sets the state of row ``b`` as of chunk ``n[b] // C``: the memory that chunk sees, the candidates of the
    ``lag - 1`` chunks before it, and its own scores and keys/values.
    """
    C, topk, slots, lag = eidetic.chunk_size, eidetic.topk, eidetic.slots, eidetic.lag
    batch, seq = score.shape
    kv_heads, dim = k.shape[2:]
    n_chunks = -(-seq // C)
    # One more (empty) chunk, so that the memory a row's next chunk sees exists when n is a multiple of C.
    ext = F.pad(score, (0, (n_chunks + 1) * C - seq), value=NEG_INF)
    idx, valid = ops.eidetic_select(ext, C, topk, slots, eidetic.policy, lag)  # (B, n_chunks + 1, M)

    flat = idx[:, :n_chunks].reshape(batch, -1)
    mem_k = ops.gather_rows(k.reshape(batch, seq, -1), flat).view(batch, n_chunks, slots, kv_heads, dim)
    mem_v = ops.gather_rows(v.reshape(batch, seq, -1), flat).view(batch, n_chunks, slots, kv_heads, dim)
    mem_score = ext.gather(1, flat).view(batch, n_chunks, slots)
    mem_bias = F.logsigmoid(mem_score).masked_fill(~valid[:, :n_chunks], NEG_INF)

    def prio(sc, chunk):
        if eidetic.policy == "topk":
            # A copy, not an alias: state tensors sharing storage would make the first decode step's graph
            # (one input for both) differ from the next ones' (two inputs), a recompilation on XLA.
            return sc.clone()
        return torch.where(torch.isinf(sc), sc, chunk + torch.sigmoid(sc))

    last = step.n // C  # (B,)
    rows = torch.arange(batch, device=score.device)
    at, ok = idx[rows, last], valid[rows, last]  # (B, M)
    state["mem_score"] = torch.where(ok, ext.gather(1, at), NEG_INF)
    state["mem_prio"] = prio(state["mem_score"], at // C)
    state["mem_kv"] = torch.stack([_gather_rows(k, at), _gather_rows(v, at)], dim=2)

    n_pend = lag - 1
    cand_score, local = ext.view(batch, n_chunks + 1, C).topk(topk, dim=-1)  # (B, n_chunks + 1, k)
    chunk = last[:, None] - n_pend + torch.arange(n_pend, device=score.device)  # (B, lag - 1)
    exists = (chunk >= 0)[..., None]
    chunk = chunk.clamp(min=0)
    pick = chunk[..., None].expand(-1, -1, topk)
    pend_score = cand_score.gather(1, pick).masked_fill(~exists, NEG_INF)
    state["pend_score"], state["pend_prio"] = pend_score, prio(pend_score, chunk[..., None])
    pos = (chunk[..., None] * C + local.gather(1, pick)).clamp(max=seq - 1).view(batch, -1)
    pend_kv = torch.stack([_gather_rows(k, pos), _gather_rows(v, pos)], dim=2)
    state["pend_kv"] = pend_kv.view(batch, n_pend, topk, 2, kv_heads, dim)

    # chunk_score/chunk_innov (the current chunk's score parts) are set by the caller
    in_chunk = (last[:, None] * C + torch.arange(C, device=score.device)).clamp(max=seq - 1)
    state["chunk_kv"] = torch.stack([_gather_rows(k, in_chunk), _gather_rows(v, in_chunk)], dim=2)
    return mem_k, mem_v, mem_bias


# ----------------------------------------------------------------------------------------------- attention


def attend(q: torch.Tensor, blocks: list[KeyBlock], step: NewTokens, query_block: int = QUERY_BLOCK):
    """One softmax over every block's visible keys. q: (B, T, heads, D), rotary applied -> (B, T, heads, D)."""
    seq = q.shape[1]
    outs = []
    for i0 in range(0, seq, query_block):
        i1 = min(seq, i0 + query_block)
        qpos = step.positions[:, i0:i1, None]
        parts = []
        for blk in blocks:
            if blk.bias is not None:
                parts.append((blk.kv, blk.bias[:, i0:i1]))
                continue
            kv, kpos = blk.kv, blk.pos
            if blk.new:  # keys of the new tokens: key j is visible from query i only if lo <= i - j < hi
                j0 = 0 if blk.hi is None else max(0, i0 - blk.hi + 1)
                j1 = min(seq, i1 - blk.lo)
                if j1 <= j0:
                    continue
                kv, kpos = kv[:, j0:j1], kpos[:, j0:j1]
            elif blk.hi is not None and i0 + 1 >= blk.hi:
                continue  # saved keys are at distance >= i + 1 from query i
            dist = qpos - kpos[:, None]
            visible = (kpos[:, None] >= 0) & (dist >= blk.lo)
            if blk.hi is not None:
                visible = visible & (dist < blk.hi)
            parts.append((kv, torch.where(visible, 0.0, most_negative())))
        outs.append(_softmax_attention(q[:, i0:i1], parts))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


def _softmax_attention(q: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """q: (B, T, H, D); parts: [(kv (B, S, 2, K, D), bias (B, T, S))] -> (B, T, H, D), one softmax over all S.

    ``matmul`` on permuted views reads strided keys/values in place (no copies of the ring buffer).
    """
    batch, seq, heads, dim = q.shape
    kv_heads = parts[0][0].shape[3]
    groups = heads // kv_heads
    qg = (q.float() * dim**-0.5).view(batch, seq, kv_heads, groups, dim).permute(0, 2, 3, 1, 4)
    qg = qg.reshape(batch, kv_heads, groups * seq, dim)
    logits = [
        (qg @ kv[:, :, 0].float().permute(0, 2, 3, 1)).view(batch, kv_heads, groups, seq, -1) + bias[:, None, None]
        for kv, bias in parts
    ]
    probs = torch.softmax(torch.cat(logits, -1), dim=-1).split([x.shape[-1] for x in logits], dim=-1)
    out = sum(
        p.reshape(batch, kv_heads, groups * seq, -1) @ kv[:, :, 1].float().permute(0, 2, 1, 3)
        for p, (kv, _) in zip(probs, parts)
    )
    out = out.view(batch, kv_heads, groups, seq, dim).permute(0, 3, 1, 2, 4)
    return out.reshape(batch, seq, heads, dim).to(q.dtype)


__all__ = ["cached_forward"]
