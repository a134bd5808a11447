"""Memory-lean fused ops for training: RMSNorm, gated RMSNorm and SwiGLU as ``torch.autograd.Function``s.

Plain autograd keeps every intermediate of these elementwise chains alive until the backward (an RMSNorm
keeps its input *and* the normalised input; SwiGLU keeps ``gate``, ``silu(gate)`` and ``up``). The Functions
here save only their inputs (plus one fp32 ``rstd`` per row for the norms) and recompute the rest in the
backward, which is a few cheap elementwise passes over tensors that are already there.

Numerics follow the modules in :mod:`bmojo_neuron.modeling_bmojo` exactly: half-precision inputs are upcast to
fp32 for the reductions and the gate (fp64 stays fp64), the normalised value is rounded back to the input
dtype before the weight multiplies it (Llama's order), and the backward replays the same casts, so the
forward values are bit-identical to the reference and the gradients agree up to rounding. Each fused op has
a plain-autograd ``*_reference`` beside it with the same signature (used by the tests).

Everything is static-shape torch (no ``.item()``, no data-dependent control flow), so ``torch.compile``
(Dynamo traces autograd.Functions) and XLA both take it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def keeps_autocast(function: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """Class decorator: the Function's backward runs under the autocast state its forward ran under.

    Autograd runs backwards outside any ``torch.autocast`` region, so a backward that multiplies a bf16
    gradient (the output of an autocast forward) by an fp32 weight fails. ``torch.amp.custom_fwd`` /
    ``custom_bwd`` fix this for one device type named in advance; these Functions run on CPU, XLA and Neuron
    devices, so the device type is read from the first tensor argument instead."""
    forward, backward = function.forward, function.backward

    def forward_keeping_autocast(ctx, *args):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        enabled = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
        ctx.autocast = (device, torch.get_autocast_dtype(device)) if enabled else None
        return forward(ctx, *args)

    def backward_under_forward_autocast(ctx, *grads):
        if ctx.autocast is None:
            return backward(ctx, *grads)
        device, dtype = ctx.autocast
        with torch.autocast(device, dtype=dtype):
            return backward(ctx, *grads)

    function.forward = staticmethod(forward_keeping_autocast)
    function.backward = staticmethod(backward_under_forward_autocast)
    return function


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to fp32 for reductions and exponentials; keep fp64 as it is."""
    if t.dtype in (torch.float32, torch.float64):
        return t  # no cast dispatched: the one-token decode step calls this dozens of times per token
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _sum_to_weight(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Sum ``t (..., H)`` over its leading dims to ``weight``'s shape ``(H,)`` and dtype."""
    return t.reshape(-1, t.shape[-1]).sum(0).to(weight.dtype)


def _rms_norm_forward(xf: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype):
    """``xf (..., H)`` at least fp32 -> ``(weight * (xf * rstd).to(dtype), rstd (..., 1))``."""
    rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (xf * rstd).to(dtype), rstd


def _rms_norm_backward(grad_out, xf, rstd, weight, dtype, need_weight_grad: bool):
    """Gradients of ``weight * (xf * rstd).to(dtype)`` w.r.t. ``xf`` (in xf's dtype) and ``weight`` (or None).

    The casts replay plain autograd's: the gradient of ``normed.to(dtype)`` is rounded to ``dtype`` and then
    taken back to ``xf``'s dtype."""
    normed = xf * rstd
    grad_weight = _sum_to_weight(grad_out * normed.to(dtype), weight) if need_weight_grad else None
    grad_normed = (grad_out * weight).to(dtype).to(xf.dtype)
    # d/dx [x * rstd(x)] applied to g:  rstd * (g - normed * mean(g * normed))
    grad_xf = rstd * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))
    return grad_xf, grad_weight


# ------------------------------------------------------------------------------------------------- RMSNorm


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / sqrt(mean(x^2) + eps)``, reduced in at least fp32.

    x: (..., H); weight: (H,). Returns (..., H) in ``promote(weight.dtype, x.dtype)``."""
    xf = at_least_fp32(x)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


@keeps_autocast
class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        out, rstd = _rms_norm_forward(at_least_fp32(x), weight, eps, x.dtype)
        ctx.save_for_backward(x, weight, rstd)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        grad_xf, grad_weight = _rms_norm_backward(
            grad_out, at_least_fp32(x), rstd, weight, x.dtype, ctx.needs_input_grad[1]
        )
        grad_x = grad_xf.to(x.dtype) if ctx.needs_input_grad[0] else None
        return grad_x, grad_weight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Fused :func:`rms_norm_reference` (same shapes and dtypes); saves ``x`` and ``rstd (..., 1)`` only."""
    if x.dtype == weight.dtype == torch.float32 and not torch.is_grad_enabled():
        return F.rms_norm(x, x.shape[-1:], weight, eps)  # nothing to save: torch's kernel, no Function to call
    return _RMSNorm.apply(x, weight, eps)


# ------------------------------------------------------------------------------------------ gated RMSNorm


def gated_rms_norm_reference(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``rms_norm(y * silu(z))``, the output gate of Mamba-2; the gate is computed in at least fp32 and rounded
    to ``y.dtype`` before the norm.

    y, z: (..., H); weight: (H,). Returns (..., H) in ``promote(weight.dtype, y.dtype)``."""
    gated = (at_least_fp32(y) * F.silu(at_least_fp32(z))).to(y.dtype)
    return rms_norm_reference(gated, weight, eps)


@keeps_autocast
class _GatedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        gated = at_least_fp32((at_least_fp32(y) * F.silu(at_least_fp32(z))).to(y.dtype))
        out, rstd = _rms_norm_forward(gated, weight, eps, y.dtype)
        ctx.save_for_backward(y, z, weight, rstd)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        y, z, weight, rstd = ctx.saved_tensors
        yf, zf = at_least_fp32(y), at_least_fp32(z)
        sig = torch.sigmoid(zf)
        silu = zf * sig
        gated = at_least_fp32((yf * silu).to(y.dtype))
        grad_gated, grad_weight = _rms_norm_backward(grad_out, gated, rstd, weight, y.dtype, ctx.needs_input_grad[2])
        # the gated value was rounded to y.dtype: its gradient is too
        grad_gated = grad_gated.to(y.dtype).to(yf.dtype)
        grad_y = (grad_gated * silu).to(y.dtype) if ctx.needs_input_grad[0] else None
        grad_z = None
        if ctx.needs_input_grad[1]:
            grad_z = (grad_gated * yf * (sig * (1 + zf * (1 - sig)))).to(z.dtype)
        return grad_y, grad_z, grad_weight, None


def gated_rms_norm(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Fused :func:`gated_rms_norm_reference` (same shapes and dtypes); saves ``y``, ``z`` and ``rstd (..., 1)``."""
    return _GatedRMSNorm.apply(y, z, weight, eps)


# ----------------------------------------------------------------------------------------------------- SwiGLU


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` in the inputs' dtype (as ``BMojoMLP`` and Llama's MLP compute it).

    gate, up: (..., I), same dtype. Returns (..., I)."""
    return F.silu(gate) * up


@keeps_autocast
class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        gate, up = ctx.saved_tensors
        # recompute in at least fp32 (what autograd's silu backward does internally for half inputs)
        return _swiglu_backward(grad_out, gate, up, ctx.needs_input_grad)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Fused :func:`swiglu_reference` (same shapes and dtype); saves ``gate`` and ``up`` only."""
    return _SwiGLU.apply(gate, up)


def _swiglu_backward(grad_h: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, needs: tuple[bool, bool]):
    """Gradients of ``silu(gate) * up`` w.r.t. gate and up from the gradient of the product."""
    gf, ghf = at_least_fp32(gate), at_least_fp32(grad_h)
    sig = torch.sigmoid(gf)
    grad_gate = (ghf * at_least_fp32(up) * (sig * (1 + gf * (1 - sig)))).to(gate.dtype) if needs[0] else None
    grad_up = (grad_h * F.silu(gate)).to(up.dtype) if needs[1] else None
    return grad_gate, grad_up


# ---------------------------------------------------------------------------------------- SwiGLU + down proj


def swiglu_down_reference(gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``linear(silu(gate) * up, weight)``: the SwiGLU MLP after its input projections.

    gate, up: (..., I); weight: (H, I) as ``nn.Linear(I, H).weight``. Returns (..., H)."""
    return F.linear(F.silu(gate) * up, weight)


@keeps_autocast
class _SwiGLUDown(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up, weight)
        return F.linear(F.silu(gate) * up, weight)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        gate, up, weight = ctx.saved_tensors
        grad_h = grad_out @ weight  # (..., I)
        grad_weight = None
        if ctx.needs_input_grad[2]:  # the product is recomputed: one elementwise pass instead of (T, I) kept
            h = F.silu(gate) * up
            grad_weight = grad_out.reshape(-1, grad_out.shape[-1]).t() @ h.reshape(-1, h.shape[-1])
        grad_gate, grad_up = _swiglu_backward(grad_h, gate, up, ctx.needs_input_grad[:2])
        return grad_gate, grad_up, grad_weight


def swiglu_down(gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Fused :func:`swiglu_down_reference` (same shapes and dtype); saves ``gate``, ``up`` and the weight only:
    the product ``silu(gate) * up`` that the down projection reads is recomputed in the backward."""
    return _SwiGLUDown.apply(gate, up, weight)


# ---------------------------------------------------------------------------------- causal depthwise conv + silu


def causal_conv_silu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``silu(conv1d(x))``: the causal depthwise convolution of Mamba-2 (zero history) and its activation.

    x: (batch, seq, channels); weight: (channels, 1, K) as ``nn.Conv1d(groups=channels)``; bias: (channels,).
    Returns (batch, seq, channels) in x's dtype."""
    seq, kernel = x.shape[1], weight.shape[-1]
    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=kernel - 1, groups=x.shape[-1])
    return F.silu(y[..., :seq].transpose(1, 2))


def _causal_conv(xp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, seq: int) -> torch.Tensor:
    """``bias + sum_k weight[:, 0, k] * xp[:, t + k]`` for t < seq, in xp's layout: xp (B, seq + K - 1, C) is the
    input with K - 1 zero rows in front; no transposes, K multiply-adds over (B, seq, C)."""
    y = torch.addcmul(bias, xp[:, :seq], weight[:, 0, 0])
    for k in range(1, weight.shape[-1]):
        y.addcmul_(xp[:, k : k + seq], weight[:, 0, k])
    return y


def _padded_causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """x with its K - 1 zero rows in front and the conv before the silu, both in at least fp32."""
    xp = F.pad(at_least_fp32(x), (0, 0, weight.shape[-1] - 1, 0))
    return xp, _causal_conv(xp, at_least_fp32(weight), at_least_fp32(bias), x.shape[1])


@keeps_autocast
class _CausalConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        _, y = _padded_causal_conv(x, weight, bias)
        ctx.save_for_backward(x, weight, bias)
        return F.silu(y).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, bias = ctx.saved_tensors
        seq, kernel = x.shape[1], weight.shape[-1]
        wf = at_least_fp32(weight)
        xp, y = _padded_causal_conv(x, weight, bias)  # recomputed: K multiply-adds, nothing was saved
        sig = torch.sigmoid(y)
        grad_y = at_least_fp32(grad_out) * sig * (1 + y * (1 - sig))
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_xp = torch.zeros_like(xp)
            for k in range(kernel):
                grad_xp[:, k : k + seq].addcmul_(grad_y, wf[:, 0, k])
            grad_x = grad_xp[:, kernel - 1 :].to(x.dtype)
        if ctx.needs_input_grad[1]:
            taps = [(xp[:, k : k + seq] * grad_y).sum((0, 1)) for k in range(kernel)]
            grad_w = torch.stack(taps, -1)[:, None].to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = grad_y.sum((0, 1)).to(bias.dtype)
        return grad_x, grad_w, grad_b


def causal_conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Fused :func:`causal_conv_silu_reference` (same shapes and dtype) in the (batch, seq, channels) layout:
    no transposed copies, and it saves its input only (the conv is recomputed in the backward)."""
    return _CausalConvSiLU.apply(x, weight, bias)
