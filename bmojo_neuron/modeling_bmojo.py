"""B'MOJO causal language model: pre-norm decoder layers whose mixer is chosen per layer by ``layer_types``.

The mixers live in :mod:`bmojo_neuron.layers` (one module per family; ``docs/layer.md`` states what each
computes). This file holds what is common to every layer type: the decoder layer, the one loop over the layers
that serves training, prefill and decoding, the positions of the new tokens, and the HF model classes.
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

from . import fast_decode
from .cache import BMojoCache
from .configuration_bmojo import BMojoConfig
from .layers import MIXERS, BMojoEideticMemory, BMojoMLP, BMojoRMSNorm, BMojoSSM, FadingAttention, TokenGate, Tokens
from .layers.common import permute_rows, plain_linear, rotary_cos_sin
from .ops.cross_entropy import IGNORE_INDEX, linear_cross_entropy, next_token_labels
from .ops.fused import at_least_fp32


class BMojoDecoderLayer(GradientCheckpointingLayer):
    """``x = x + mixer(norm(x)); x = x + mlp(norm(x))``.

    With ``model.activation_checkpointing_enable()`` transformers recomputes the whole layer in the backward pass
    instead of keeping its activations (only the training forward calls the layer with autograd on).
    """

    def __init__(self, config: BMojoConfig, layer_idx: int):
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        self.input_layernorm = BMojoRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mixer = MIXERS[self.layer_type](config, layer_idx)
        self.post_attention_layernorm = BMojoRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = BMojoMLP(config)

    def forward(self, hidden: torch.Tensor, tokens: Tokens, state=None):
        """hidden: (B, T, hidden); ``state``: this layer's :class:`~bmojo_neuron.cache.BMojoLayerState`, or None
        for the whole-sequence forward. Returns (hidden, auxiliary loss or None)."""
        if tokens.fused is not None:
            out = fast_decode.layer_step(self, hidden, tokens, state)
            if out is not None:
                return out, None
        mixed, aux = self.mixer(self.input_layernorm(hidden), tokens, state)
        hidden = hidden + mixed
        return hidden + self.mlp(self.post_attention_layernorm(hidden)), aux


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
        elif isinstance(module, FadingAttention) and module.ssm_gate is not None:
            init.constant_(module.ssm_gate, module.ssm_gate_start)
        elif isinstance(module, TokenGate):  # starts data-independent, at sigmoid(b) = start
            init.zeros_(module.weight)
            init.constant_(module.bias, math.log(module.start / (1 - module.start)))
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
        """Forward over ``(batch, seq)`` tokens, from scratch or after a cache.

        Without a cache, left padding is handled by rotating each row so that its real tokens start at
        position 0 (padding then trails, where causality makes it harmless), running the layers, and rotating
        back. Positions are therefore counted from each row's first real token, and ``position_ids`` is ignored.

        With ``use_cache=True`` or a ``cache`` (:class:`~bmojo_neuron.cache.BMojoCache`), the tokens are
        processed after the cache's state and the cache is updated; ``attention_mask`` then covers past and
        new columns, as in HF ``generate``. ``output_attentions`` is accepted for the HF interface; no layer
        returns attention weights.
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
        if cache is None:
            tokens, order, restore = self._whole_sequence_tokens(hidden, attention_mask)
            states = [None] * len(self.layers)
        else:
            tokens, order, restore = self._cached_tokens(hidden, attention_mask, cache)
            states = cache.layers
        if order is not None:
            hidden = permute_rows(hidden, order)

        hidden, all_hidden, aux_losses = self._run_layers(hidden, tokens, states, output_hidden_states)
        if cache is not None:
            cache.positions = tokens.start + tokens.n
            cache.steps += hidden.shape[1]
        if restore is not None:
            hidden = permute_rows(hidden, restore)
            all_hidden = [permute_rows(h, restore) for h in all_hidden] if all_hidden is not None else None
        return BMojoModelOutput(
            last_hidden_state=hidden,
            cache=cache,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            aux_loss=torch.stack(aux_losses).mean() if aux_losses else None,
        )

    def _run_layers(self, hidden: torch.Tensor, tokens: Tokens, states: list, output_hidden_states: bool | None):
        """The one loop over the layers, for training, prefill and decoding alike (``states``: None per layer
        for the whole-sequence forward). Returns (normed hidden, every layer's input or None, aux losses)."""
        all_hidden = [] if output_hidden_states else None
        aux_losses = []
        for layer, state in zip(self.layers, states):
            if all_hidden is not None:
                all_hidden.append(hidden)
            hidden, aux = layer(hidden, tokens, state)
            if aux is not None:
                aux_losses.append(aux)
        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
        return hidden, all_hidden, aux_losses

    def _whole_sequence_tokens(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None):
        """The tokens of a forward from scratch, and the row rotation that moves left padding behind them."""
        batch, seq, _ = hidden.shape
        if attention_mask is None:
            return Tokens.whole_sequence(self.config, seq, hidden.dtype, device=hidden.device), None, None
        if attention_mask.shape != (batch, seq):
            raise ValueError(f"attention_mask must have shape {(batch, seq)}, got {tuple(attention_mask.shape)}")
        mask = attention_mask.bool()
        leading_pads = (mask.long().cumsum(-1) == 0).sum(-1, keepdim=True)
        arange = torch.arange(seq, device=hidden.device)[None]
        order = (arange + leading_pads) % seq
        tokens = Tokens.whole_sequence(self.config, seq, hidden.dtype, mask.gather(1, order), hidden.device)
        return tokens, order, (arange - leading_pads) % seq

    def _cached_tokens(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None, cache: BMojoCache):
        """The tokens of a forward after ``cache``: each row's padding moved behind its real tokens (the
        compaction that :class:`Tokens` describes), their positions after the row's past, and the choice of
        the fused one-token step (:mod:`bmojo_neuron.fast_decode`), made here and nowhere else."""
        batch, seq, _ = hidden.shape
        if not cache.is_allocated:
            cache.allocate(batch, hidden.dtype, hidden.device)
        elif cache.batch_size != batch:
            raise ValueError(f"the cache holds {cache.batch_size} rows but the input has {batch}")
        mask = _new_token_mask(attention_mask, batch, seq, hidden.device)
        host_position = cache.host_position
        known = attention_mask is None and host_position is not None  # every row's position, known on the host
        cache.host_position = host_position + seq if known else None
        order = restore = None
        if seq > 1 and attention_mask is not None:  # compaction: real tokens first, padding last, order kept
            order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
            restore = torch.argsort(order, dim=1)
            mask = mask.gather(1, order)
        start = cache.positions
        positions = start[:, None] + torch.arange(seq, device=hidden.device)
        inv_freq = fast_decode.rotary_inv_freq(self)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, hidden.dtype, inv_freq)
        tokens = Tokens(mask, cos, sin, start, mask.sum(-1), positions, fresh=host_position == 0)
        if fast_decode.fast_decode_ok(hidden):
            check = not cache.fused_weights_checked
            tokens.fused = fast_decode.prepare(self, tokens, host_position if known else None, check_weights=check)
            cache.fused_weights_checked = True
        return tokens, order, restore


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

    def _fuses_loss(self, logits_to_keep) -> bool:
        """Whether the loss comes from the fused output layer and loss (``config.fuse_linear_cross_entropy``):
        only in a training step over the whole sequence through a plain output ``Linear``."""
        return (
            self.config.fuse_linear_cross_entropy
            and self.training
            and torch.is_grad_enabled()
            and isinstance(logits_to_keep, int)
            and logits_to_keep == 0
            and plain_linear(self.lm_head)
            and self.lm_head.bias is None
        )

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
        """``labels``: (batch, seq) token ids, -100 to ignore; the loss is the next-token cross-entropy. In a
        training step with labels the logits are ``None`` unless ``config.fuse_linear_cross_entropy`` is off.

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
        logits = loss = None
        if labels is not None and self._fuses_loss(logits_to_keep):
            loss = linear_cross_entropy(hidden.flatten(0, 1), self.lm_head.weight, next_token_labels(labels).flatten())
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden[:, keep])
            if labels is not None:
                loss = F.cross_entropy(
                    at_least_fp32(logits).flatten(0, 1), next_token_labels(labels).flatten(), ignore_index=IGNORE_INDEX
                )
        if loss is not None:
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


def _new_token_mask(attention_mask, batch: int, seq: int, device) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones(batch, seq, dtype=torch.bool, device=device)
    if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] < seq:
        raise ValueError(
            f"with a cache, attention_mask must be (batch, past + new) = ({batch}, >= {seq}), "
            f"got {tuple(attention_mask.shape)}"
        )
    return attention_mask[:, -seq:].bool()


def _refuse_decode_step_without_cache(attention_mask: torch.Tensor | None, seq: int) -> None:
    """An ``attention_mask`` longer than the input covers past tokens, which only a cache holds."""
    if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[1] > seq:
        raise _missing_cache_error(f"attention_mask covers {attention_mask.shape[1]} positions, input {seq}")


__all__ = ["BMojoForCausalLM", "BMojoModel", "BMojoPreTrainedModel"]
