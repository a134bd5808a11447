"""The fused one-token decode step of a cached B'MOJO model (:func:`decode_step`).

One token per row, no autograd: the projections that read the same input are one matmul against weights
concatenated once and cached on the layer (rebuilt when a parameter changes), the rotary "rotate half" is
folded into extra weight rows, the softmax scale into the query rows, residual adds into ``addmm``, and ring
buffers are written in place. With the rows' position known on the host (no attention mask since an empty
cache), the eidetic chunk bookkeeping is a write into the chunk slot, and the merge runs only on the token
that completes a chunk; otherwise every step runs the branch-free :func:`eidetic_step`.

:func:`bmojo_neuron.decoding.cached_forward` calls it for one new token without autograd; the tests check it
against the general cached path and the full forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cache import NEG_INF, BMojoCache, BMojoLayerState
from .decoding import NewTokens, attention_extend, eidetic_step, most_negative, ring_positions, ssm_extend


def fast_decode_ok(model, hidden: torch.Tensor) -> bool:
    return hidden.dtype == torch.float32 and not torch.is_grad_enabled()


def _plain_linear(m) -> bool:
    """An ``nn.Linear`` whose weight the fused step may read directly: no hooks, and a plain parameter
    (a tensor-parallel shard is a ``DTensor``, whose forward goes through its own collectives)."""
    plain_weight = type(m.weight) is torch.nn.Parameter
    return type(m) is torch.nn.Linear and plain_weight and not (m._forward_hooks or m._forward_pre_hooks)


def _param_key(modules) -> tuple:
    """What the fused weights depend on: every parameter's identity, storage and version, and the submodules."""

    def version(p):
        try:
            return p._version
        except RuntimeError:  # inference tensors have no version counter; they cannot change in place
            return -1

    params = tuple((p, p.data_ptr(), version(p)) for m in modules for p in m._parameters.values() if p is not None)
    return params, tuple(c for m in modules for c in m._modules.values())


def _layer_weights(layer) -> dict | None:
    """Fused decode weights of a layer (cached on it), or None if the layer must take the general path.

    The cache is rebuilt when a parameter is replaced, moved or changed in place, or a submodule replaced
    (hooks added later to an unchanged module are not noticed).
    """
    if torch.compiler.is_compiling() or not _has_storage(layer.input_layernorm.weight):
        return _uncached_weights(layer)  # tracing (torch.export, torch.compile): the fusion joins the graph
    cached = layer.__dict__.get("_bmojo_decode_weights")
    if cached is not None and _same_key(_param_key(cached[2]), cached[0]):
        return cached[1]
    weights = _uncached_weights(layer)
    modules = list(layer.modules())
    layer.__dict__["_bmojo_decode_weights"] = (_param_key(modules), weights, modules)
    return weights


def _cacheable(model) -> bool:
    """Whether constants derived from the model may be cached across steps: only for eager tensors with
    storage. Under tracing, and on lazy devices (XLA), they are computed inside every step so that every
    step is the same graph (a cached constant would turn the second step into a new graph)."""
    return not torch.compiler.is_compiling() and _has_storage(model.norm.weight)


# Lazy devices record a graph instead of running: a constant cached by step 1 becomes a graph input from step 2.
_LAZY_DEVICES = ("xla", "lazy", "meta")


def _has_storage(t: torch.Tensor) -> bool:
    if t.device.type in _LAZY_DEVICES:
        return False
    try:
        t.data_ptr()
    except RuntimeError:  # fake or functional tensors
        return False
    return True


def _uncached_weights(layer) -> dict | None:
    mixer = layer.mixer
    attn = mixer if layer.layer_type in ("bmojo_f", "bmojo") else None
    ssm = mixer.ssm
    linears = [layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj, ssm.in_proj, ssm.out_proj]
    if attn is not None:
        linears += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj]
        if attn.eidetic is not None:
            linears.append(attn.eidetic.score_proj)
            if attn.eidetic.mode == "predictor":
                linears.append(attn.eidetic.predictor)
    if not all(_plain_linear(m) for m in linears) or type(ssm.conv1d) is not torch.nn.Conv1d:
        return None
    with torch.no_grad():
        return _build_weights(layer, attn, ssm)


def _same_key(a: tuple, b: tuple) -> bool:
    (pa, ma), (pb, mb) = a, b
    return (
        len(pa) == len(pb)
        and len(ma) == len(mb)
        and all(x[0] is y[0] and x[1:] == y[1:] for x, y in zip(pa, pb))
        and all(x is y for x, y in zip(ma, mb))
    )


def _build_weights(layer, attn, ssm) -> dict:
    w = {
        "mlp": torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]),
        "A": -torch.exp(ssm.A_log),
        "conv": ssm.conv1d.weight[:, 0],
    }
    if attn is None:
        w["x"] = ssm.in_proj.weight
        w["x_bias"] = _dt_bias(w["x"], ssm, ssm.inner + ssm.conv_dim)
        return w
    scale = attn.head_dim**-0.5  # the softmax scale, folded into the query rows
    wq, wk, wv = attn.q_proj.weight * scale, attn.k_proj.weight, attn.v_proj.weight
    rows = [wq, wk, wv, ssm.in_proj.weight]
    srows = [wk, wv]
    if attn.eidetic is not None:
        hidden = wq.shape[1]
        score_w = attn.eidetic.score_proj.weight  # (1, 2 hidden): [x | s]
        rows.append(score_w[:, :hidden])
        srows.append(score_w[:, hidden:])
    w["x"] = torch.cat(rows)
    w["s"] = torch.cat(srows)
    w["x_bias"] = _dt_bias(w["x"], ssm, wq.shape[0] + wk.shape[0] + wv.shape[0] + ssm.inner + ssm.conv_dim)
    if attn.eidetic is not None:
        w["x_bias"][-1] = attn.eidetic.score_proj.bias[0]
    return w


def _dt_bias(weight: torch.Tensor, ssm, at: int) -> torch.Tensor:
    """A bias for the fused projection: zero, except ``dt_bias`` on the rows of ``dt_raw`` (from row ``at``)."""
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    bias[at : at + ssm.num_heads] = ssm.dt_bias
    return bias


@dataclass
class _Step:
    """What every layer of one decode step shares."""

    real: torch.Tensor  # (B,) bool, the token is real
    start: torch.Tensor  # (B,) int64 position of the token
    phase: int | None  # every row's position, when known on the host
    cos: torch.Tensor  # (B, 1, head_dim)
    sin: torch.Tensor
    sin_rot: torch.Tensor  # sin with its first half negated: rotate_half(x) * sin == swap_halves(x) * sin_rot
    slot: torch.Tensor | None = None  # (B,) ring slot of the new token
    ring_bias: torch.Tensor | None = None  # (B, 2R): [raw, fading] logit bias of each ring slot
    scatter_index: torch.Tensor | None = None  # (B, 1, 4, K, D) ring index of the new entry


def decode_step(model, hidden, mask, cache: BMojoCache, phase: int | None, output_hidden_states: bool = False):
    """One token per row through ``model``: hidden (B, 1, hidden) -> (hidden (B, 1, hidden), all_hidden or None).

    ``phase``: every row's position when the host knows it (no padding since the cache was empty), else None.
    """
    config = model.config
    start = cache.positions
    real = mask[:, 0]
    inv_freq, sign = _rotary_constants(model, config)
    freqs = start.float()[:, None, None] * inv_freq  # (B, 1, D)
    cos, sin = freqs.cos(), freqs.sin()
    sh = _Step(real, start, phase, cos, sin, sin * sign)
    n = real.long()
    general = None
    if any(t in ("bmojo_f", "bmojo") for t in config.layer_types):
        w = config.sliding_window
        size = 2 * w
        if phase is not None and phase >= size:  # a full ring: the pattern of position 0, rotated
            sh.ring_bias = torch.roll(_full_ring_bias(model, w), phase % size, 0).view(1, 2 * size)
            sh.ring_bias = sh.ring_bias.expand(start.shape[0], -1)
        else:
            sh.ring_bias = _ring_bias(start, n, w)
        if phase is None:
            sh.slot = torch.remainder(start, size)
            sh.scatter_index = sh.slot.view(-1, 1, 1, 1, 1).expand(
                -1, 1, 4, config.num_key_value_heads, config.head_dim
            )

    x = hidden[:, 0]
    all_hidden = [] if output_hidden_states else None
    for layer, state in zip(model.layers, cache.layers):
        if all_hidden is not None:
            all_hidden.append(x[:, None])
        weights = None if layer.layer_type in ("attention", "sliding_attention") else _layer_weights(layer)
        if weights is None:  # the general path, for this layer only
            if general is None:
                general = NewTokens(mask, n, start, start[:, None], cos, sin)
            normed = layer.input_layernorm(x[:, None])
            if layer.layer_type == "ssm":
                x = x + ssm_extend(layer.mixer.ssm, normed, general, state)[:, 0]
            else:
                x = x + attention_extend(layer.mixer, normed, general, state)[:, 0]
            x = x + layer.mlp(layer.post_attention_layernorm(x))
            continue
        x = _mixer_step(layer, weights, x, sh, state)
        norm = layer.post_attention_layernorm
        gate, up = F.linear(F.rms_norm(x, x.shape[-1:], norm.weight, norm.eps), weights["mlp"]).chunk(2, -1)
        x = torch.addmm(x, F.silu(gate) * up, layer.mlp.down_proj.weight.t())
    x = F.rms_norm(x, x.shape[-1:], model.norm.weight, model.norm.eps)[:, None]
    if all_hidden is not None:
        all_hidden.append(x)
    cache.positions = start + n
    return x, (tuple(all_hidden) if all_hidden is not None else None)


def _rotary_constants(model, config) -> tuple[torch.Tensor, torch.Tensor]:
    """``cat([inv_freq, inv_freq])`` of the rotary embedding (as
    :func:`~bmojo_neuron.modeling_bmojo.rotary_cos_sin`) and the sign ``[-1] * D/2 + [1] * D/2``."""
    device = model.norm.weight.device
    cached = model.__dict__.get("_bmojo_rotary")
    if cached is None or cached[0].device != device or not _cacheable(model):
        d = config.head_dim
        inv = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
        sign = torch.ones(d, device=device)
        sign[: d // 2] = -1.0
        cached = (torch.cat([inv, inv]), sign)
        if _cacheable(model):
            model.__dict__["_bmojo_rotary"] = cached
    return cached


def _ring_bias(start: torch.Tensor, n: torch.Tensor, w: int) -> torch.Tensor:
    """(B, 4w) logit bias of the ring slots [raw, fading] for the query at ``start`` after ``n`` (0 or 1) writes."""
    held = ring_positions(start + n, 2 * w)
    dist = start[:, None] - held
    filled = held >= 0
    raw = filled & (dist < w)
    bias = torch.stack([torch.where(raw, 0.0, most_negative()), torch.where(filled & ~raw, 0.0, most_negative())], -1)
    return bias.view(start.shape[0], 4 * w)


def _full_ring_bias(model, w: int) -> torch.Tensor:
    """(2w, 2) ring bias of a query at a position that is a multiple of 2w (after its write), cached."""
    device = model.norm.weight.device
    cached = model.__dict__.get("_bmojo_ring_bias")
    if cached is None or cached.shape[0] != 2 * w or cached.device != device or not _cacheable(model):
        one = torch.ones(1, dtype=torch.long, device=device)
        cached = _ring_bias(one * 2 * w, one, w).view(2 * w, 2)
        if _cacheable(model):
            model.__dict__["_bmojo_ring_bias"] = cached
    return cached


def _ssm_step(ssm, w: dict, zxbcdt: torch.Tensor, sh: _Step, state: BMojoLayerState) -> torch.Tensor:
    """The SSM of one token from its in-projection (B, inner + conv_dim + heads) -> the output (B, hidden)."""
    batch = zxbcdt.shape[0]
    heads, p, n, groups = ssm.num_heads, ssm.head_dim, ssm.state_size, ssm.num_groups
    z, xbc, dt_raw = zxbcdt.split([ssm.inner, ssm.conv_dim, heads], dim=-1)
    history = torch.cat([state["conv"], xbc[:, :, None]], dim=-1)  # (B, conv_dim, K)
    conv = F.silu(torch.linalg.vecdot(history, w["conv"]) + ssm.conv1d.bias)  # (B, conv_dim); no conv1d call

    if sh.phase is None:
        state["conv"] = torch.where(sh.real[:, None, None], history[..., 1:], history[..., :-1])
    else:
        state["conv"] = history[..., 1:]
    x, b, c = conv.split([ssm.inner, groups * n, groups * n], dim=-1)
    dt = F.softplus(dt_raw)  # dt_bias is in the projection's bias
    if sh.phase is None:  # padding leaves the state as it is (dt = 0, x = 0)
        dt = dt * sh.real[:, None]
        x = x * sh.real[:, None]
    hpg = heads // groups
    x = x.view(batch, groups, hpg, p, 1)
    h = state["ssm"].view(batch, groups, hpg, p, n) * torch.exp(dt * w["A"]).view(batch, groups, hpg, 1, 1)
    h = torch.addcmul(h, x * dt.view(batch, groups, hpg, 1, 1), b.view(batch, groups, 1, 1, n))
    state["ssm"] = h.view(batch, heads, p, n)
    y = torch.addcmul(h @ c.view(batch, groups, 1, n, 1), ssm.D.view(groups, hpg, 1, 1), x)
    g = y.view(batch, ssm.inner) * F.silu(z)
    return F.rms_norm(g, g.shape[-1:], ssm.norm.weight, ssm.norm.eps)


def _memory_bias(state: BMojoLayerState) -> torch.Tensor:
    """(B, M) logit bias of the eidetic slots, cached on the state until its memory tensors are replaced (every
    update of ``mem_score``/``mem_prio`` in this module assigns new tensors)."""
    score, prio = state["mem_score"], state["mem_prio"]
    cached = getattr(state, "_memory_bias", None)
    if cached is not None and cached[0] is score and cached[1] is prio:
        return cached[2]
    bias = torch.where(torch.isfinite(prio), F.logsigmoid(score), most_negative())
    if not torch.compiler.is_compiling():
        state._memory_bias = (score, prio, bias)
    return bias


def _rotary(t: torch.Tensor, sh: _Step) -> torch.Tensor:
    """The rotary embedding of t (B, n, D): ``t cos + rotate_half(t) sin``, with the halves swapped by a flip."""
    swapped = t.unflatten(-1, (2, -1)).flip(-2).flatten(-2)
    return torch.addcmul(t * sh.cos, swapped, sh.sin_rot)


def _mixer_step(layer, w: dict, x: torch.Tensor, sh: _Step, state: BMojoLayerState) -> torch.Tensor:
    """``x + mixer(norm(x))`` for one token of an ``ssm``/``bmojo_f``/``bmojo`` layer. x: (B, hidden)."""
    norm = layer.input_layernorm
    normed = F.rms_norm(x, x.shape[-1:], norm.weight, norm.eps)
    proj = F.linear(normed, w["x"], w["x_bias"])
    mixer = layer.mixer
    ssm = mixer.ssm
    if layer.layer_type == "ssm":
        return torch.addmm(x, _ssm_step(ssm, w, proj, sh, state), ssm.out_proj.weight.t())

    batch = x.shape[0]
    heads, kv_heads, dim = mixer.num_heads, mixer.num_kv_heads, mixer.head_dim
    qk = (heads + kv_heads) * dim
    kvd = kv_heads * dim
    ssm_width = ssm.inner + ssm.conv_dim + ssm.num_heads
    qk_rot = _rotary(proj[:, :qk].view(batch, -1, dim), sh)  # (B, heads + kv_heads, D); queries carry the scale
    v = proj[:, qk : qk + kvd]
    s = F.linear(_ssm_step(ssm, w, proj[:, qk + kvd : qk + kvd + ssm_width], sh, state), ssm.out_proj.weight)
    sproj = F.linear(s, w["s"])
    fade_k = _rotary(sproj[:, :kvd].view(batch, -1, dim), sh)
    entry = torch.stack(
        [
            qk_rot[:, heads:],
            v.view(batch, kv_heads, dim),
            fade_k,
            sproj[:, kvd : 2 * kvd].view(batch, kv_heads, dim),
        ],
        dim=1,
    )  # (B, 4, K, D): raw k, raw v, fading k, fading v

    ring = state["window"]
    if sh.phase is None:
        ring.scatter_(1, sh.scatter_index, entry[:, None])
    else:
        ring[:, sh.phase % ring.shape[1]].copy_(entry)
    size = ring.shape[1]
    ring = ring.view(batch, 2 * size, 2, kv_heads, dim)  # [raw, fading] pairs of each slot
    keys, values, bias = [ring[:, :, 0]], [ring[:, :, 1]], [sh.ring_bias]

    eidetic = mixer.eidetic
    if eidetic is not None:
        if eidetic.mode == "predictor":
            innovation = (normed - F.linear(state["s_last"], eidetic.predictor.weight)).pow(2).mean(-1)
        else:
            k_raw = proj[:, heads * dim : qk]
            innovation = (k_raw - F.linear(state["s_last"], mixer.k_proj.weight)).pow(2).mean(-1)
        learned = proj[:, -1] + sproj[:, -1]  # the innovation joins it when the chunk completes
        if sh.phase is None:
            learned = torch.where(sh.real, learned, NEG_INF)
            state["s_last"] = torch.where(sh.real[:, None], s, state["s_last"])
        else:
            state["s_last"] = s
        offset = None if sh.phase is None else sh.phase % eidetic.chunk_size
        if offset is not None and offset != eidetic.chunk_size - 1:  # no chunk completes: write into its slot
            state["chunk_score"][:, offset].copy_(learned)
            state["chunk_innov"][:, offset].copy_(innovation)
            state["chunk_kv"][:, offset].copy_(entry[:, :2])
            mem_kv = state["mem_kv"]
            mem_bias = _memory_bias(state)
        else:
            step = NewTokens(sh.real[:, None], sh.real.long(), sh.start, sh.start[:, None], sh.cos, sh.sin)
            block = eidetic_step(eidetic, entry[:, None, :2], learned[:, None], innovation[:, None], step, state)
            mem_kv, mem_bias = block.kv, block.bias[:, 0]
        keys.insert(0, mem_kv[:, :, 0])
        values.insert(0, mem_kv[:, :, 1])
        bias.insert(0, mem_bias)

    q = qk_rot[:, :heads].view(batch, kv_heads, heads // kv_heads, dim)
    logits = [q @ kk.permute(0, 2, 3, 1) for kk in keys]  # (B, K, G, S)
    logits = torch.cat(logits, -1) if len(logits) > 1 else logits[0]
    bias = torch.cat(bias, -1) if len(bias) > 1 else bias[0]
    probs = torch.softmax(logits + bias[:, None, None], dim=-1)
    out = None
    at = 0
    for vv in values:
        part = probs[..., at : at + vv.shape[1]] @ vv.transpose(1, 2)  # (B, K, G, D)
        out = part if out is None else out + part
        at += vv.shape[1]
    if mixer.ssm_gate is not None:  # the gated current SSM output
        x = torch.addcmul(x, mixer.ssm_gate, s)
    return torch.addmm(x, out.reshape(batch, heads * dim), mixer.o_proj.weight.t())
