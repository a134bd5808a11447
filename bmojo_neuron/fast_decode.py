"""The fused one-token decode step: a faster form of the ``ssm``, ``bmojo_f`` and ``bmojo`` layers'
incremental forward, for one token per row without autograd.

The projections that read the same input are one matmul against weights concatenated once and cached on the
layer (rebuilt when a parameter changes), the softmax scale is folded into the query rows, residual adds into
``addmm``, and ring buffers are written in place. With the rows' position known on the host (no attention mask
since an empty cache), the eidetic chunk bookkeeping is a write into the chunk slot, and the merge runs only on
the token that completes a chunk. Everything that is not folded into weights calls the layers' own formulas
(rotary, the conv step, the SSD step, the innovation, ring visibility, the softmax over key blocks, the
eidetic merge), so the two forms cannot drift apart; the tests check this path against the general one and the
whole-sequence forward.

The model chooses it in one place (``BMojoModel._cached_tokens``); a layer whose weights cannot be read
directly (hooks, tensor-parallel shards) runs its general incremental form instead.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import ops
from .layers import FadingAttention, SSMMixer
from .layers.attention import ring_bias
from .layers.common import Tokens, plain_linear, rotate, signed_sin
from .layers.common import rotary_inv_freq as layer_rotary_inv_freq
from .layers.eidetic import slot_bias, squared_error
from .layers.ssm import conv_step, slide_conv_history
from .ops.attention.incremental import softmax_attention
from .ops.constants import NEG_INF


def fast_decode_ok(hidden: torch.Tensor) -> bool:
    """Whether the fused step may run: float32 and no autograd (it reads weights as constants)."""
    return hidden.shape[1] == 1 and hidden.dtype == torch.float32 and not torch.is_grad_enabled()


@dataclass
class FusedStep:
    """What every layer of one fused decode step shares (beside the model's :class:`Tokens`)."""

    phase: int | None  # every row's position, when known on the host
    cos: torch.Tensor  # (B, 1, head_dim) rotary cos at each row's position
    sin_signed: torch.Tensor  # (B, 1, head_dim) the matching layers.common.signed_sin
    ring_bias: torch.Tensor | None = None  # (B, 2R): [raw, fading] logit bias of each ring slot
    scatter_index: torch.Tensor | None = None  # (B, 1, 4, K, D) ring index of the new entry (phase unknown)
    check_weights: bool = True  # compare each layer's fused weights with its parameters (once per cache)


def rotary_inv_freq(model) -> torch.Tensor:
    """The rotary ``inv_freq`` of ``model``'s config, kept on the model (:func:`_model_constant`)."""
    config, device = model.config, model.norm.weight.device
    return _model_constant(
        model, "_bmojo_inv_freq", lambda: layer_rotary_inv_freq(config.head_dim, config.rope_theta, device)
    )


def prepare(model, tokens: Tokens, phase: int | None, check_weights: bool = True) -> FusedStep:
    """The per-step constants of the fused step for ``model``'s layers. ``check_weights``: whether the layers'
    fused weights must be compared with their parameters (the model asks once per cache: a check of every
    parameter's identity, storage and version cost ~5% of a token's time at every step)."""
    config = model.config
    step = FusedStep(phase, tokens.cos, signed_sin(tokens.sin), check_weights=check_weights)
    if any(isinstance(layer.mixer, FadingAttention) for layer in model.layers):
        w = config.sliding_window
        size = 2 * w
        if phase is not None and phase >= size:  # a full ring: the pattern of position 0, rotated
            step.ring_bias = torch.roll(_full_ring_bias(model, w), phase % size, 0).view(1, 2 * size)
            step.ring_bias = step.ring_bias.expand(tokens.start.shape[0], -1)
        else:
            step.ring_bias = ring_bias(tokens.start, tokens.start + tokens.n, w, size).flatten(1)
        if phase is None:
            slot = torch.remainder(tokens.start, size)
            step.scatter_index = slot.view(-1, 1, 1, 1, 1).expand(-1, 1, 4, config.num_key_value_heads, config.head_dim)
    return step


def layer_step(layer, hidden: torch.Tensor, tokens: Tokens, state) -> torch.Tensor | None:
    """One decoder layer for one token per row, fused: hidden (B, 1, hidden) -> (B, 1, hidden), or None when
    the layer must take its general incremental form."""
    if not isinstance(layer.mixer, (SSMMixer, FadingAttention)):
        return None
    weights = _layer_weights(layer, tokens.fused.check_weights)
    if weights is None:
        return None
    x = _mixer_step(layer, weights, hidden[:, 0], tokens, state)
    norm = layer.post_attention_layernorm
    gate, up = (F.rms_norm(x, x.shape[-1:], norm.weight, norm.eps) @ weights["mlp_t"]).chunk(2, -1)
    return torch.addmm(x, F.silu(gate) * up, layer.mlp.down_proj.weight.t())[:, None]


# ----------------------------------------------------------------------------------------------- fused weights


def _param_key(modules) -> tuple:
    """What the fused weights depend on: the parameters (identity, storage, version) and the submodules."""
    params = [p for m in modules for p in m._parameters.values() if p is not None]
    # Inference tensors have no version counter (reading it raises); they cannot change in place.
    versions = [-1 if p.is_inference() else p._version for p in params]
    children = [c for m in modules for c in m._modules.values()]
    return params, [p.data_ptr() for p in params], versions, children


def _same_key(a: tuple, b: tuple) -> bool:
    (pa, da, va, ma), (pb, db, vb, mb) = a, b
    return (
        da == db
        and va == vb
        and len(pa) == len(pb)
        and len(ma) == len(mb)
        and all(map(operator.is_, pa, pb))
        and all(map(operator.is_, ma, mb))
    )


def _layer_weights(layer, check: bool = True) -> dict | None:
    """Fused decode weights of a layer (cached on it), or None if the layer must take the general path.

    With ``check``, the cache is rebuilt when a parameter was replaced, moved or changed in place, or a
    submodule replaced (hooks added later to an unchanged module are not noticed); without, it is trusted.
    """
    if torch.compiler.is_compiling() or not _has_storage(layer.input_layernorm.weight):
        return _uncached_weights(layer)  # tracing (torch.export, torch.compile): the fusion joins the graph
    cached = layer.__dict__.get("_bmojo_decode_weights")
    if cached is not None and (not check or _same_key(_param_key(cached[2]), cached[0])):
        return cached[1]
    weights = _uncached_weights(layer)
    modules = list(layer.modules())
    layer.__dict__["_bmojo_decode_weights"] = (_param_key(modules), weights, modules)
    return weights


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


def _cacheable(model) -> bool:
    """Whether constants derived from the model may be cached across steps: only for eager tensors with
    storage. Under tracing, and on lazy devices (XLA), they are computed inside every step so that every
    step is the same graph (a cached constant would turn the second step into a new graph)."""
    return not torch.compiler.is_compiling() and _has_storage(model.norm.weight)


def _uncached_weights(layer) -> dict | None:
    mixer = layer.mixer
    attn = mixer if isinstance(mixer, FadingAttention) else None
    ssm = mixer.ssm
    linears = [layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj, ssm.in_proj, ssm.out_proj]
    if attn is not None:
        linears += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj]
        if attn.ssm_gate_proj is not None:
            linears.append(attn.ssm_gate_proj)
        if attn.eidetic is not None:
            linears.append(attn.eidetic.score_proj)
            if attn.eidetic.mode == "predictor":
                linears.append(attn.eidetic.predictor)
    if not all(plain_linear(m) for m in linears) or type(ssm.conv1d) is not torch.nn.Conv1d:
        return None
    with torch.no_grad():
        return _build_weights(layer, attn, ssm)


def _build_weights(layer, attn, ssm) -> dict:
    """The fused weights, stored as (in, out) for ``x @ w``: the fused ones are copies anyway, and kept
    transposed and contiguous they make the one-row products 10-15% faster than ``F.linear`` on the (out, in)
    layout (measured on this CPU at hidden 256); an ``ssm`` layer's in-projection stays a view, not a copy."""
    w = {
        "mlp_t": _transposed_cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]),
        "A": -torch.exp(ssm.A_log),
        "conv": ssm.conv1d.weight[:, 0],
    }
    if attn is None:
        w["x_t"] = ssm.in_proj.weight.t()
        w["x_bias"] = _dt_bias(ssm.in_proj.weight, ssm, ssm.inner + ssm.conv_dim)
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
    w["x_t"] = _transposed_cat(rows)
    w["s_t"] = _transposed_cat(srows)
    w["x_bias"] = _dt_bias(w["x_t"].t(), ssm, wq.shape[0] + wk.shape[0] + wv.shape[0] + ssm.inner + ssm.conv_dim)
    if attn.eidetic is not None:
        w["x_bias"][-1] = attn.eidetic.score_proj.bias[0]
    return w


def _transposed_cat(weights: list[torch.Tensor]) -> torch.Tensor:
    """(out_1 + out_2 + ..., in) weights stacked, as one contiguous (in, out) matrix."""
    return torch.cat(weights).t().contiguous()


def _dt_bias(weight: torch.Tensor, ssm, at: int) -> torch.Tensor:
    """A bias for the fused projection: zero, except ``dt_bias`` on the rows of ``dt_raw`` (from row ``at``)."""
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    bias[at : at + ssm.num_heads] = ssm.dt_bias
    return bias


def _full_ring_bias(model, w: int) -> torch.Tensor:
    """(2w, 2) ring bias of a query at a position that is a multiple of 2w (after its write), kept on the model."""

    def build():
        full = torch.full((1,), 2 * w, dtype=torch.long, device=model.norm.weight.device)
        return ring_bias(full, full + 1, w, 2 * w)[0]

    return _model_constant(model, "_bmojo_ring_bias", build, fits=lambda t: t.shape[0] == 2 * w)


def _model_constant(model, key: str, build, fits=lambda t: True) -> torch.Tensor:
    """``build()``, kept in ``model.__dict__[key]`` and reused while it is on the model's device and ``fits``,
    when caching is safe (:func:`_cacheable`); otherwise built afresh on every call."""
    cacheable = _cacheable(model)
    cached = model.__dict__.get(key)
    if cacheable and cached is not None and cached.device == model.norm.weight.device and fits(cached):
        return cached
    value = build()
    if cacheable:
        model.__dict__[key] = value
    return value


# ----------------------------------------------------------------------------------------------- the mixers


def _ssm_step(ssm, w: dict, zxbcdt: torch.Tensor, tokens: Tokens, fused: FusedStep, state) -> torch.Tensor:
    """The SSM of one token from its in-projection (B, inner + conv_dim + heads) -> the gated, normalised
    output before the out-projection (B, inner)."""
    batch = zxbcdt.shape[0]
    heads, groups, n = ssm.num_heads, ssm.num_groups, ssm.state_size
    real = None if fused.phase is not None else tokens.mask[:, 0]
    z, xbc, dt_raw = zxbcdt.split([ssm.inner, ssm.conv_dim, heads], dim=-1)
    history = torch.cat([state["conv"], xbc[:, :, None]], dim=-1)  # (B, conv_dim, K)
    conv = F.silu(conv_step(history, w["conv"], ssm.conv1d.bias))  # (B, conv_dim)
    state["conv"] = slide_conv_history(history, real)
    x, b, c = conv.split([ssm.inner, groups * n, groups * n], dim=-1)
    dt = F.softplus(dt_raw)  # dt_bias is in the projection's bias
    if real is not None:  # padding leaves the state as it is (dt = 0, x = 0)
        dt = dt * real[:, None]
        x = x * real[:, None]
    b, c = b.view(batch, groups, n), c.view(batch, groups, n)
    y, state["ssm"] = ops.ssd_step(x.view(batch, heads, -1), dt, w["A"], b, c, ssm.D, state["ssm"])
    gated = y.view(batch, ssm.inner) * F.silu(z)  # the gated norm of layers.common.BMojoGatedRMSNorm, unfused
    return F.rms_norm(gated, gated.shape[-1:], ssm.norm.weight, ssm.norm.eps)


def _memory_bias(state) -> torch.Tensor:
    """(B, M) logit bias of the eidetic slots, cached on the state until its memory tensors are replaced (every
    update of ``mem_score``/``mem_prio`` assigns new tensors)."""
    score, prio = state["mem_score"], state["mem_prio"]
    cached = getattr(state, "_memory_bias", None)
    if cached is not None and cached[0] is score and cached[1] is prio:
        return cached[2]
    bias = slot_bias(score, prio)
    if not torch.compiler.is_compiling():
        state._memory_bias = (score, prio, bias)
    return bias


def _rotary(t: torch.Tensor, fused: FusedStep) -> torch.Tensor:
    """Rotary embedding of t (B, n, D) at each row's position."""
    return rotate(t, fused.cos, fused.sin_signed)


def _mixer_step(layer, w: dict, x: torch.Tensor, tokens: Tokens, state) -> torch.Tensor:
    """``x + mixer(norm(x))`` for one token of an ``ssm``/``bmojo_f``/``bmojo`` layer. x: (B, hidden)."""
    fused: FusedStep = tokens.fused
    norm = layer.input_layernorm
    normed = F.rms_norm(x, x.shape[-1:], norm.weight, norm.eps)
    proj = torch.addmm(w["x_bias"], normed, w["x_t"])
    mixer = layer.mixer
    ssm = mixer.ssm
    if isinstance(mixer, SSMMixer):
        return torch.addmm(x, _ssm_step(ssm, w, proj, tokens, fused, state), ssm.out_proj.weight.t())

    batch = x.shape[0]
    heads, kv_heads, dim = mixer.num_heads, mixer.num_kv_heads, mixer.head_dim
    qk = (heads + kv_heads) * dim
    kvd = kv_heads * dim
    ssm_width = ssm.inner + ssm.conv_dim + ssm.num_heads
    qk_rot = _rotary(proj[:, :qk].view(batch, -1, dim), fused)  # (B, heads + kv_heads, D); queries carry the scale
    v = proj[:, qk : qk + kvd]
    s = F.linear(_ssm_step(ssm, w, proj[:, qk + kvd : qk + kvd + ssm_width], tokens, fused, state), ssm.out_proj.weight)
    sproj = s @ w["s_t"]
    fade_k = _rotary(sproj[:, :kvd].view(batch, -1, dim), fused)
    entry = torch.stack(
        [qk_rot[:, heads:], v.view(batch, kv_heads, dim), fade_k, sproj[:, kvd : 2 * kvd].view(batch, kv_heads, dim)],
        dim=1,
    )  # (B, 4, K, D): raw k, raw v, fading k, fading v

    ring = state["window"]
    if fused.phase is None:
        ring.scatter_(1, fused.scatter_index, entry[:, None])
    else:
        ring[:, fused.phase % ring.shape[1]].copy_(entry)
    parts = [(ring.view(batch, 2 * ring.shape[1], 2, kv_heads, dim), fused.ring_bias[:, None])]  # [raw, fading]
    if mixer.eidetic is not None:
        parts.insert(0, _eidetic_step(mixer, proj, normed, s, sproj, entry, tokens, fused, state))
    q = qk_rot[:, None, :heads]
    out = softmax_attention(q, parts, scale=1.0)  # (B, 1, heads, D)
    if mixer.ssm_gate is not None:  # the gated current SSM output (the token gate reads the layer input)
        x = torch.addcmul(x, mixer.ssm_gate_values(normed), s)
    return torch.addmm(x, out.reshape(batch, heads * dim), mixer.o_proj.weight.t())


def _eidetic_step(mixer, proj, normed, s, sproj, entry, tokens: Tokens, fused: FusedStep, state):
    """The eidetic memory for one token: (memory kv (B, M, 2, K, D), its bias (B, 1, M)) for the query."""
    eidetic = mixer.eidetic
    heads, dim = mixer.num_heads, mixer.head_dim
    if eidetic.mode == "predictor":
        innovation = squared_error(normed, F.linear(state["s_last"], eidetic.predictor.weight))
    else:
        k_raw = proj[:, heads * dim : (heads + mixer.num_kv_heads) * dim]
        innovation = squared_error(k_raw, F.linear(state["s_last"], mixer.k_proj.weight))
    learned = proj[:, -1] + sproj[:, -1]  # the innovation joins it when the chunk completes
    if fused.phase is None:
        learned = torch.where(tokens.mask[:, 0], learned, NEG_INF)
        state["s_last"] = torch.where(tokens.mask, s, state["s_last"])
    else:
        state["s_last"] = s
    offset = None if fused.phase is None else fused.phase % eidetic.chunk_size
    if offset is not None and offset != eidetic.chunk_size - 1:  # no chunk completes: write into its slot
        state["chunk_score"][:, offset].copy_(learned)
        state["chunk_innov"][:, offset].copy_(innovation)
        state["chunk_kv"][:, offset].copy_(entry[:, :2])
        return state["mem_kv"], _memory_bias(state)[:, None]
    block = eidetic.advance_one(entry[:, None, :2], learned[:, None], innovation[:, None], tokens, state)
    return block.kv, block.bias
