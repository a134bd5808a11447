"""B'MOJO causal language model: pre-norm decoder layers whose mixer is chosen per layer by ``layer_types``.

Mixers (``docs/layer.md``):

- ``attention`` / ``sliding_attention``: Llama-style causal attention (RoPE, GQA), full or windowed;
- ``ssm``: a Mamba-2 style selective SSM (scalar decay per head);
- ``bmojo_f``: one softmax over the raw window and the window of SSM outputs that slid out of it;
- ``bmojo``: ``bmojo_f`` plus an eidetic memory of tokens selected by their innovation.

Data flows one way: this file calls :mod:`bmojo_neuron.ops`, which dispatches to an implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from . import ops
from .cache import BMojoCache
from .configuration_bmojo import BMojoConfig
from .ops import fused
from .ops.fused import at_least_fp32

# ----------------------------------------------------------------------------------------------- building blocks


class BMojoRMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fused: saves x and the per-row rstd only (ops/fused.py has the plain reference)
        return fused.rms_norm(x, self.weight, self.eps)


class BMojoGatedRMSNorm(BMojoRMSNorm):
    """``norm(y * silu(z))``, the output gate of Mamba-2."""

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # fused: saves y, z and the per-row rstd only
        return fused.gated_rms_norm(y, z, self.weight, self.eps)


class BMojoMLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: BMojoConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fused: saves gate and up only, silu(gate) is recomputed in the backward
        return self.down_proj(fused.swiglu(self.gate_proj(x), self.up_proj(x)))


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin of the Llama rotary embedding at ``positions`` (any shape), each ``positions.shape + (head_dim,)``."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, seq, heads, dim); cos/sin: (seq, dim) or (batch, seq, dim)."""
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, :, None], sin[:, :, None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


# ----------------------------------------------------------------------------------------------- fading memory


class BMojoSSM(nn.Module):
    """Mamba-2 style selective SSM: in-projection, causal depthwise conv, scan, gated norm, out-projection.

    Used alone by ``ssm`` layers, and by ``bmojo_f``/``bmojo`` layers to produce the fading-memory
    outputs ``s`` (batch, seq, hidden) whose keys and values fill the fading window.
    """

    def __init__(self, config: BMojoConfig):
        super().__init__()
        self.num_heads = config.ssm_num_heads
        self.head_dim = config.ssm_head_dim
        self.state_size = config.ssm_state_size
        self.num_groups = config.ssm_num_groups
        self.chunk_size = config.chunk_size
        self.inner = config.ssm_inner_size
        self.conv_dim = self.inner + 2 * self.num_groups * self.state_size
        self.conv_kernel = config.conv_kernel
        self.in_proj = nn.Linear(config.hidden_size, self.inner + self.conv_dim + self.num_heads, bias=False)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, config.conv_kernel, groups=self.conv_dim, padding=config.conv_kernel - 1
        )
        self.dt_bias = nn.Parameter(torch.zeros(self.num_heads))
        self.A_log = nn.Parameter(torch.zeros(self.num_heads))
        self.D = nn.Parameter(torch.ones(self.num_heads))
        self.norm = BMojoGatedRMSNorm(self.inner, config.rms_norm_eps)
        self.out_proj = nn.Linear(self.inner, config.hidden_size, bias=False)

    def project(self, x: torch.Tensor):
        """x: (batch, seq, hidden) -> z (batch, seq, inner), xBC (batch, seq, conv_dim), dt_raw (batch, seq, heads)."""
        return torch.split(self.in_proj(x), [self.inner, self.conv_dim, self.num_heads], dim=-1)

    def convolve(self, xBC: torch.Tensor) -> torch.Tensor:
        """Causal depthwise convolution + silu. xBC: (batch, seq, conv_dim), zero history."""
        seq = xBC.shape[1]
        return F.silu(self.conv1d(xBC.transpose(1, 2))[..., :seq].transpose(1, 2))

    def scan_inputs(self, xBC: torch.Tensor, dt_raw: torch.Tensor, mask: torch.Tensor | None):
        """Split the convolved stream into the scan's (x, dt, A, B, C); padded positions get x = 0 and dt = 0."""
        batch, seq, _ = xBC.shape
        x, B, C = torch.split(xBC, [self.inner] + [self.num_groups * self.state_size] * 2, dim=-1)
        x = x.reshape(batch, seq, self.num_heads, self.head_dim)
        heads_per_group = self.num_heads // self.num_groups
        B = B.reshape(batch, seq, self.num_groups, 1, self.state_size).expand(-1, -1, -1, heads_per_group, -1)
        C = C.reshape(batch, seq, self.num_groups, 1, self.state_size).expand(-1, -1, -1, heads_per_group, -1)
        B = B.reshape(batch, seq, self.num_heads, self.state_size)
        C = C.reshape(batch, seq, self.num_heads, self.state_size)
        dt = F.softplus(at_least_fp32(dt_raw) + at_least_fp32(self.dt_bias))
        if mask is not None:
            dt = dt * mask[..., None]
            x = x * mask[..., None, None].to(x.dtype)
        A = -torch.exp(at_least_fp32(self.A_log))
        return x, dt, A, B, C

    def output(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y: (batch, seq, heads, head_dim) scan output -> (batch, seq, hidden)."""
        return self.out_proj(self.norm(y.reshape(*y.shape[:2], self.inner), z))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden: (batch, seq, hidden); mask: (batch, seq) bool, True for real tokens."""
        if mask is not None:
            hidden = hidden * mask[..., None].to(hidden.dtype)
        z, xBC, dt_raw = self.project(hidden)
        x, dt, A, B, C = self.scan_inputs(self.convolve(xBC), dt_raw, mask)
        y, _ = ops.ssd_scan(x, dt, A, B, C, at_least_fp32(self.D), None, self.chunk_size)
        return self.output(y, z)


class BMojoSSMMixer(nn.Module):
    """The ``ssm`` layer mixer: the SSM alone."""

    def __init__(self, config: BMojoConfig):
        super().__init__()
        self.ssm = BMojoSSM(config)

    def forward(self, hidden, cos, sin, mask):
        return self.ssm(hidden, mask), None


# ----------------------------------------------------------------------------------------------- eidetic memory


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


class BMojoEideticMemory(nn.Module):
    """Selects tokens by a learnable score built on their innovation and gathers their keys/values.

    ``innovation_j = mean((x_j - W_p s_{j-1})^2)``: how badly the fading memory predicted the (normalised)
    layer input. ``score_j = a * z_j + w . [x_j, s_j] + b`` with ``z`` the innovation standardised within its
    chunk (``eidetic_innovation_norm="chunk"``; the raw innovation with ``"none"``); memory slots attend with
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

    def innovation(self, x: torch.Tensor, s_prev: torch.Tensor, k_proj: nn.Linear):
        """x, s_prev: (batch, seq, hidden) -> innovation (batch, seq), per-token predictor loss (batch, seq)."""
        if self.mode == "predictor":
            prediction = self.predictor(s_prev)
            innovation = (at_least_fp32(x.detach()) - at_least_fp32(prediction)).pow(2).mean(-1)
            return innovation, innovation
        innovation = (at_least_fp32(k_proj(x)) - at_least_fp32(k_proj(s_prev))).pow(2).mean(-1)
        return innovation, None

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
        selectable = score.detach().masked_fill(~valid_tokens, float("-inf"))
        idx, valid = ops.eidetic_select(selectable, self.chunk_size, self.topk, self.slots, self.policy, self.lag)
        if self.record:
            self.last_selection = (idx, valid)
        n_chunks = idx.shape[1]
        flat = idx.reshape(batch, -1)
        mem_k = ops.gather_rows(k.reshape(batch, seq, -1), flat).view(batch, n_chunks, self.slots, kv_heads, dim)
        mem_v = ops.gather_rows(v.reshape(batch, seq, -1), flat).view(batch, n_chunks, self.slots, kv_heads, dim)
        mem_score = ops.gather_rows(score[..., None], flat).view(batch, n_chunks, self.slots)
        mem_bias = F.logsigmoid(mem_score).masked_fill(~valid, float("-inf"))
        if aux is None:
            aux_loss = score.new_zeros(())
        else:
            weights = valid_tokens.float()
            aux_loss = (aux * weights).sum() / weights.sum().clamp_min(1.0)
        return mem_k, mem_v, mem_bias, aux_loss


# ----------------------------------------------------------------------------------------------- attention family


class BMojoAttention(nn.Module):
    """Mixer of ``attention``, ``sliding_attention``, ``bmojo_f`` and ``bmojo`` layers (they share Q/K/V/O)."""

    def __init__(self, config: BMojoConfig, layer_type: str):
        super().__init__()
        self.layer_type = layer_type
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.chunk_size = config.chunk_size
        self.window = None if layer_type == "attention" else config.sliding_window
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        self.ssm = BMojoSSM(config) if layer_type in ("bmojo_f", "bmojo") else None
        self.eidetic = BMojoEideticMemory(config) if layer_type == "bmojo" else None
        # The gated current SSM output (DESIGN.md, revised 2026-12): `o_proj(attn_i) + g * s_i`. Without it
        # s_i first reaches the output w positions later (fading window) and Mamba is not a special case.
        gated = self.ssm is not None and config.ssm_output_gate == "vector"
        self.ssm_gate = nn.Parameter(torch.ones(hidden)) if gated else None

    def readout(self, attended: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        """The mixer's output from the attention's (batch, seq, heads * head_dim) and the SSM's (batch, seq,
        hidden) outputs: ``o_proj(attended) + g * s`` (``o_proj(attended)`` without the gate)."""
        out = self.o_proj(attended)
        return out if self.ssm_gate is None else out + self.ssm_gate * s

    def heads(self, proj: nn.Linear, x: torch.Tensor, n: int) -> torch.Tensor:
        return proj(x).view(*x.shape[:2], n, self.head_dim)

    def forward(self, hidden, cos, sin, mask):
        """hidden: (batch, seq, hidden); cos/sin: (seq, head_dim); mask: (batch, seq) bool or None."""
        q = apply_rotary(self.heads(self.q_proj, hidden, self.num_heads), cos, sin)
        k = apply_rotary(self.heads(self.k_proj, hidden, self.num_kv_heads), cos, sin)
        v = self.heads(self.v_proj, hidden, self.num_kv_heads)
        fade_k = fade_v = mem_k = mem_v = mem_bias = aux = s = None
        if self.ssm is not None:
            s = self.ssm(hidden, mask)
            fade_k = apply_rotary(self.heads(self.k_proj, s, self.num_kv_heads), cos, sin)
            fade_v = self.heads(self.v_proj, s, self.num_kv_heads)
            if self.eidetic is not None:
                mem_k, mem_v, mem_bias, aux = self.eidetic(hidden, s, k, v, self.k_proj, mask)
        out = ops.bmojo_attention(
            q, k, v, self.window, fade_k, fade_v, mem_k, mem_v, mem_bias, mask, self.chunk_size, None
        )
        return self.readout(out.reshape(*hidden.shape[:2], -1), s), aux


class BMojoDecoderLayer(GradientCheckpointingLayer):
    """``x = x + mixer(norm(x)); x = x + mlp(norm(x))``.

    With ``model.activation_checkpointing_enable()`` transformers recomputes the whole layer in the backward pass
    instead of keeping its activations (only the training forward calls the layer; cached decoding does not).
    """

    def __init__(self, config: BMojoConfig, layer_idx: int):
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        self.input_layernorm = BMojoRMSNorm(config.hidden_size, config.rms_norm_eps)
        if self.layer_type == "ssm":
            self.mixer = BMojoSSMMixer(config)
        else:
            self.mixer = BMojoAttention(config, self.layer_type)
        self.post_attention_layernorm = BMojoRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = BMojoMLP(config)

    def forward(self, hidden, cos, sin, mask):
        mixed, aux = self.mixer(self.input_layernorm(hidden), cos, sin, mask)
        hidden = hidden + mixed
        hidden = hidden + self.mlp(self.post_attention_layernorm(hidden))
        return hidden, aux


# ----------------------------------------------------------------------------------------------- HF models


@dataclass
class BMojoModelOutput(BaseModelOutputWithPast):
    """``aux_loss``: mean over ``bmojo`` layers of the innovation predictor's loss (None without such layers)."""

    aux_loss: torch.FloatTensor | None = None


@dataclass
class BMojoCausalLMOutput(CausalLMOutputWithPast):
    """``loss`` includes ``eidetic_aux_loss_weight * aux_loss``; ``aux_loss`` is also reported on its own."""

    aux_loss: torch.FloatTensor | None = None


class BMojoPreTrainedModel(PreTrainedModel):
    config_class = BMojoConfig
    config: BMojoConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["BMojoDecoderLayer"]
    _is_stateful = True
    # The loss is a mean over the batch's labels (plus the auxiliary loss): the Trainer must not rescale it
    # as if forward took `num_items_in_batch`.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BMojoSSM):
            # Mamba-2 initialisation: decay rates A in [1, 16], step sizes dt in [1e-3, 1e-1] (log-uniform).
            init.copy_(module.A_log, torch.log(torch.linspace(1.0, 16.0, module.num_heads)))
            dt = torch.exp(torch.linspace(math.log(1e-3), math.log(1e-1), module.num_heads))
            init.copy_(module.dt_bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            init.ones_(module.D)
            init.kaiming_uniform_(module.conv1d.weight, a=math.sqrt(5))
            init.zeros_(module.conv1d.bias)
        elif isinstance(module, BMojoAttention) and module.ssm_gate is not None:
            init.ones_(module.ssm_gate)
        elif isinstance(module, BMojoEideticMemory):
            # Start from "innovation decides" (ties broken by it), let the learned terms grow from zero.
            init.ones_(module.innovation_scale)
            init.zeros_(module.score_proj.weight)
            init.zeros_(module.score_proj.bias)


class BMojoModel(BMojoPreTrainedModel):
    def __init__(self, config: BMojoConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(BMojoDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = BMojoRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: BMojoCache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BMojoModelOutput:
        """Full forward over ``(batch, seq)`` tokens.

        Left padding is handled by rotating each row so that its real tokens start at position 0 (padding
        then trails, where causality makes it harmless), running the layers, and rotating back. Positions are
        therefore counted from each row's first real token, and ``position_ids`` is ignored.

        With ``use_cache=True`` or a ``cache`` (:class:`~bmojo_neuron.cache.BMojoCache`), the tokens are
        processed after the cache's state and the cache is updated (:mod:`bmojo_neuron.decoding`);
        ``attention_mask`` then covers past and new columns, as in HF ``generate``. ``output_attentions`` is
        accepted for the HF interface; no layer returns attention weights.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            self.config.check_input_ids(input_ids)  # empty, 1-D or 3-D ids: a clear error, not one from deep inside
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if cache is None:
            _refuse_decode_step_without_cache(attention_mask, hidden.shape[1])
        if use_cache and cache is None:
            cache = BMojoCache(self.config)
        if cache is not None:
            from .decoding import cached_forward  # decoding imports this module's rotary helpers

            hidden, all_hidden = cached_forward(self, hidden, attention_mask, cache, output_hidden_states)
            return BMojoModelOutput(last_hidden_state=hidden, cache=cache, hidden_states=all_hidden)
        batch, seq, _ = hidden.shape
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != (batch, seq):
                raise ValueError(f"attention_mask must have shape {(batch, seq)}, got {tuple(attention_mask.shape)}")
            mask = attention_mask.bool()
            leading_pads = (mask.long().cumsum(-1) == 0).sum(-1, keepdim=True)
            arange = torch.arange(seq, device=hidden.device)[None]
            order = (arange + leading_pads) % seq
            restore = (arange - leading_pads) % seq
            hidden = hidden.gather(1, order[..., None].expand_as(hidden))
            mask = mask.gather(1, order)
        cos, sin = rotary_cos_sin(
            torch.arange(seq, device=hidden.device), self.config.head_dim, self.config.rope_theta, hidden.dtype
        )

        all_hidden = [] if output_hidden_states else None
        aux_losses = []
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(hidden)
            hidden, aux = layer(hidden, cos, sin, mask)
            if aux is not None:
                aux_losses.append(aux)
        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
        if mask is not None:
            unrotate = lambda t: t.gather(1, restore[..., None].expand_as(t))  # noqa: E731
            hidden = unrotate(hidden)
            if all_hidden is not None:
                all_hidden = [unrotate(h) for h in all_hidden]
        aux_loss = torch.stack(aux_losses).mean() if aux_losses else None
        return BMojoModelOutput(
            last_hidden_state=hidden,
            cache=None,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            aux_loss=aux_loss,
        )


class BMojoForCausalLM(BMojoPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: BMojoConfig):
        super().__init__(config)
        self.model = BMojoModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: BMojoCache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> BMojoCausalLMOutput:
        """``labels``: (batch, seq) token ids, -100 to ignore; the loss is the next-token cross-entropy.

        There is no ``**kwargs``: an argument this model does not know raises ``TypeError`` instead of being
        dropped (a renamed cache argument, swallowed that way, once made every decode step start from scratch).
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, self.vocab_size), labels[:, 1:].reshape(-1), ignore_index=-100
            )
            if outputs.aux_loss is not None and self.config.eidetic_aux_loss_weight > 0:
                loss = loss + self.config.eidetic_aux_loss_weight * outputs.aux_loss
        return BMojoCausalLMOutput(
            loss=loss,
            aux_loss=outputs.aux_loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
        )

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # B'MOJO layers keep constant-size state, not a growing key/value cache

    def prepare_inputs_for_generation(
        self, input_ids, next_sequence_length=None, cache=None, attention_mask=None, inputs_embeds=None, **kwargs
    ):
        """transformers' own preparation, after checking that a decode step still has the cache it needs."""
        if kwargs.get("use_cache") and cache is None and not kwargs.get("is_first_iteration", False):
            raise _missing_cache_error("prepare_inputs_for_generation got no `cache` after the prefill")
        # `generate` leaves its stop-string tokenizers among the model's keyword arguments; they are for the
        # stopping criteria, not for forward (which refuses arguments it does not know).
        for generation_only in ("tokenizer", "assistant_tokenizer"):
            kwargs.pop(generation_only, None)
        return super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs) -> None:
        """``generate`` gets a :class:`BMojoCache` (allocated by the first forward) unless the user passed one."""
        if model_kwargs.get("cache") is None and generation_config.use_cache:
            model_kwargs["cache"] = BMojoCache(self.config)


def _missing_cache_error(detail: str) -> RuntimeError:
    return RuntimeError(
        f"a decode step arrived without a cache ({detail}): the cache of `generate` did not reach "
        f"BMojoForCausalLM under the name `cache`, and decoding from an empty state would give wrong tokens. "
        f"transformers {transformers.__version__} may pass it under another name; install a transformers "
        "version that bmojo-neuron supports (the range in its pyproject.toml)."
    )


def _refuse_decode_step_without_cache(attention_mask: torch.Tensor | None, seq: int) -> None:
    """An ``attention_mask`` longer than the input covers past tokens, which only a cache holds."""
    if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[1] > seq:
        raise _missing_cache_error(f"attention_mask covers {attention_mask.shape[1]} positions, input {seq}")


__all__ = ["BMojoForCausalLM", "BMojoModel", "BMojoPreTrainedModel"]
