"""B'MOJO model configuration.

A B'MOJO model is a stack of pre-norm decoder layers whose token mixer is chosen per layer by
``layer_types``. See ``docs/layer.md`` for the math of every type.
"""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import GenerationConfig, PreTrainedConfig

from .remote_code import AUTO_MAP, write_auto_module

LAYER_TYPES = ("attention", "sliding_attention", "ssm", "bmojo_f", "bmojo")
EIDETIC_POLICIES = ("topk", "fifo")
INNOVATION_MODES = ("predictor", "key")
SSM_OUTPUT_GATES = ("vector", "token", "none")
# Where each gate starts when ``ssm_output_gate_init`` is None (docs/layer.md, "The gated current SSM output").
GATE_INIT_DEFAULTS = {"vector": 1.0, "token": 0.2}
GATED_LAYER_TYPES = ("bmojo_f", "bmojo")
INNOVATION_NORMS = ("chunk", "none")
# transformers renames "attention" to "full_attention" in every config's `layer_types`; we accept both.
LAYER_TYPE_ALIASES = {"full_attention": "attention"}

# One letter per layer type, for the `layer_pattern` shorthand ("SSSA" = three ssm layers, then attention).
PATTERN_LETTERS = {"A": "attention", "W": "sliding_attention", "S": "ssm", "F": "bmojo_f", "B": "bmojo"}

# Sizes: positive integers (``num_key_value_heads`` and ``head_dim`` may be None before their defaults are set).
SIZE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "sliding_window",
    "chunk_size",
    "eidetic_topk",
    "eidetic_slots",
    "ssm_state_size",
    "ssm_num_heads",
    "ssm_head_dim",
    "ssm_num_groups",
    "conv_kernel",
    "max_position_embeddings",
)
SPECIAL_TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id")
# Keyword arguments that PreTrainedConfig.__post_init__ consumes without keeping them as fields (legacy names,
# loading options); GenerationConfig's parameters are also accepted (old configs carry them; they are dropped).
_BASE_KWARGS = {
    "torch_dtype",
    "num_labels",
    "name_or_path",
    "_commit_hash",
    "attn_implementation",
    "experts_implementation",
    "per_layer_config",
    "_attn_implementation_internal",
    "_experts_implementation_internal",
    "auto_map",  # written by save_pretrained for trust_remote_code loading (remote_code.py)
}


def expand_layer_pattern(pattern: str, num_layers: int) -> list[str]:
    """Expand a pattern string such as ``"BBBA"`` (repeated to ``num_layers``) into layer types."""
    if not pattern:
        raise ValueError("layer_pattern must be a non-empty string of letters from " + "".join(PATTERN_LETTERS))
    bad = sorted({c for c in pattern if c not in PATTERN_LETTERS})
    if bad:
        raise ValueError(
            f"layer_pattern has unknown letters {bad}; use " + ", ".join(f"{k}={v}" for k, v in PATTERN_LETTERS.items())
        )
    return [PATTERN_LETTERS[pattern[i % len(pattern)]] for i in range(num_layers)]


@strict
class BMojoConfig(PreTrainedConfig):
    r"""Configuration of a B'MOJO causal language model.

    Args:
        vocab_size: size of the token vocabulary.
        hidden_size: width of the residual stream.
        intermediate_size: width of the SwiGLU MLP.
        num_hidden_layers: number of decoder layers.
        num_attention_heads: query heads of the attention-family mixers.
        num_key_value_heads: key/value heads (grouped-query attention); defaults to ``num_attention_heads``.
        head_dim: per-head width; defaults to ``hidden_size // num_attention_heads``.
        layer_types: one of ``attention``, ``sliding_attention``, ``ssm``, ``bmojo_f``, ``bmojo`` per layer.
            Defaults to all ``bmojo``. ``layer_pattern`` (e.g. ``"BBBA"``) is a shorthand that is repeated
            to ``num_hidden_layers``.
        sliding_window: ``w``, the raw window of ``sliding_attention``, ``bmojo_f`` and ``bmojo`` (the fading
            window covers the ``w`` positions before it).
        chunk_size: ``C``, the chunk length of the eidetic memory updates and of the chunked SSM scan.
        eidetic_topk: candidates taken from each chunk.
        eidetic_slots: ``M``, the size of the eidetic memory.
        eidetic_policy: ``topk`` keeps the highest-scoring tokens, ``fifo`` the latest chunks' candidates.
        eidetic_aux_loss_weight: weight of the innovation predictor's auxiliary loss.
        eidetic_innovation: ``predictor`` (learned ``W_p s_{j-1}`` predicts ``x_j``) or ``key``
            (parameter-free: ``||W_k x_j - W_k s_{j-1}||^2``).
        eidetic_innovation_norm: ``none`` enters the raw innovation in the selection score: it ranks the
            tokens alone at step 0 (the learned term starts at zero) and with a weight that grows with what the
            predictor has learned (its spread within a chunk); ``chunk`` standardises it within each chunk (zero
            mean, unit variance over its real tokens), so that even an untrained predictor's innovation enters
            at unit scale: it then decides the selection for longer, but where the innovation carries no
            information (random tokens) it is unit-scale noise the learned term must outgrow (docs/layer.md).
        ssm_output_gate: how a ``bmojo_f``/``bmojo`` mixer reads the SSM output at the query's own position:
            ``vector`` adds ``g * s_i`` (``g`` a per-channel parameter) to the attention's output projection,
            so that a layer with that projection at zero is its SSM (Mamba as a special case); ``token`` makes
            the gate data-dependent, ``g_i = v * sigmoid(w . x_i + b)`` (``v`` per channel, one learned scalar
            per token from the layer input ``x_i``), so a layer can shut the SSM out where it reads its
            memories; ``none`` is the attention-only readout of AWS's B'MOJO-F, where ``s_i`` first reaches
            the output ``w`` positions later, through the fading window.
        ssm_output_gate_init: where the gate starts: for ``vector`` the value of every channel (1: the layer
            starts as its SSM plus the attention; 0: as the attention-only readout), for ``token`` the value
            of ``sigmoid(b)`` in (0, 1) (``v`` starts at 1, ``w`` at 0). One number for every ``bmojo_f``/
            ``bmojo`` layer, or a list with one per layer (entries of other layer types are ignored), or
            None: ``vector`` 1, ``token`` 0.2 (docs/layer.md says why).
        ssm_state_size: ``N``, the SSM state size per head.
        ssm_num_heads: ``H``, SSM heads (scalar decay per head).
        ssm_head_dim: ``P``, the SSM head width; ``H * P`` is the SSM inner width.
        ssm_num_groups: groups sharing the SSM ``B``/``C`` projections (Mamba-2 ``n_groups``).
        conv_kernel: width of the causal depthwise convolution before the scan.
        rope_theta: base of the rotary position embedding.
        rms_norm_eps: epsilon of every RMSNorm.
        max_position_embeddings: longest context the model is meant for (informational; B'MOJO layers
            other than ``attention`` have constant-size state).
        initializer_range: standard deviation of the normal weight initialisation.
        fuse_linear_cross_entropy: when training with labels (``model.train()``, autograd on), compute the
            output layer and the loss together, a chunk of tokens at a time (``ops.cross_entropy``): the same
            loss and gradients without the vocabulary-sized logits, which the output then leaves as ``None``
            (as fla's models do). ``False`` always returns the logits.
    """

    model_type = "bmojo"
    keys_to_ignore_at_inference = ["cache"]
    # Tensor parallelism (``from_pretrained(..., distributed_config=DistributedConfig(tp_size=N))``): the MLP of
    # every layer, Megatron-style. The mixers stay replicated: an exact split of a ``bmojo`` mixer would need
    # the eidetic selection's innovation score reduced across ranks (it sums over all K heads).
    base_model_tp_plan = {
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 344
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    layer_types: list[str] | None = None
    layer_pattern: str | None = None
    sliding_window: int = 32
    chunk_size: int = 32
    eidetic_topk: int = 4
    eidetic_slots: int = 32
    eidetic_policy: str = "topk"
    eidetic_aux_loss_weight: float = 0.1
    eidetic_innovation: str = "predictor"
    eidetic_innovation_norm: str = "none"
    ssm_output_gate: str = "token"
    ssm_output_gate_init: float | list[float] | None = None
    ssm_state_size: int = 16
    ssm_num_heads: int = 4
    ssm_head_dim: int = 32
    ssm_num_groups: int = 1
    conv_kernel: int = 4
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    hidden_act: str = "silu"
    use_cache: bool = True
    tie_word_embeddings: bool = False
    fuse_linear_cross_entropy: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        self._check_unknown_keys(kwargs)
        for name in SIZE_FIELDS:  # before the defaults below compute with them (a str would be a TypeError)
            if getattr(self, name) is not None or name not in ("num_key_value_heads", "head_dim"):
                _check_size(name, getattr(self, name))
        if self.layer_pattern is not None and not isinstance(self.layer_pattern, str):
            raise ValueError(f"layer_pattern must be a string of letters, got {self.layer_pattern!r}")
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and self.num_attention_heads and self.num_attention_heads > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.layer_types is None:
            if self.layer_pattern is not None:
                self.layer_types = expand_layer_pattern(self.layer_pattern, self.num_hidden_layers)
            else:
                self.layer_types = ["bmojo"] * self.num_hidden_layers
        self.layer_types = [LAYER_TYPE_ALIASES.get(t, t) for t in self.layer_types]
        self.validate_bmojo()
        layer_types = self.layer_types
        super().__post_init__(**kwargs)
        self.layer_types = layer_types  # undo the base class's renaming of "attention"

    def validate_layer_type(self):
        """Replaces the base check, which knows only transformers' own layer type names."""
        self.validate_bmojo()

    def validate_token_ids(self):
        """Replaces the base check, which only warns: an out-of-vocabulary special id is an error here."""
        self._check_special_tokens()

    @classmethod
    def _check_unknown_keys(cls, kwargs: dict) -> None:
        """Refuse keys that are neither B'MOJO fields nor fields or options of ``PreTrainedConfig`` (a typo such
        as ``eidetic_slot=64`` would otherwise become an attribute nobody reads)."""
        if not kwargs:
            return
        known = set(PreTrainedConfig().to_dict()) | {f for f in cls.__dataclass_fields__} | _BASE_KWARGS
        unknown = sorted(set(kwargs) - known - set(GenerationConfig._get_default_generation_params()))
        if unknown:
            raise ValueError(f"unknown BMojoConfig field(s): {', '.join(unknown)}")

    def _check_special_tokens(self) -> None:
        for name in SPECIAL_TOKEN_FIELDS:
            value = getattr(self, name)
            values = value if isinstance(value, list) and name == "eos_token_id" else [value]
            for token in values:
                if token is None and value is not None:
                    raise ValueError(f"{name} must list token ids, got {value!r}")
                if token is not None and (
                    isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < self.vocab_size
                ):
                    raise ValueError(
                        f"{name} must be None or a token id in [0, vocab_size={self.vocab_size}), got {value!r}"
                    )

    def validate_bmojo(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        self._check_sizes()
        self._check_layer_types()
        self._check_choices()
        self._check_lengths()
        self._check_scalars()
        self._check_special_tokens()

    def _check_sizes(self) -> None:
        """Positive sizes, and the head counts that must divide each other."""
        for name in SIZE_FIELDS:
            _check_size(name, getattr(self, name))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must divide hidden_size ({self.hidden_size})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads ({self.num_key_value_heads}) must divide "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.ssm_num_heads % self.ssm_num_groups:
            raise ValueError(f"ssm_num_groups ({self.ssm_num_groups}) must divide ssm_num_heads ({self.ssm_num_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")

    def _check_layer_types(self) -> None:
        if not isinstance(self.layer_types, (list, tuple)) or len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"layer_types must list one type per layer ({self.num_hidden_layers}), got {self.layer_types!r}"
            )
        unknown = [t for t in self.layer_types if t not in LAYER_TYPES]
        if unknown:
            raise ValueError(f"layer_types has unknown types {unknown}; valid types: {', '.join(LAYER_TYPES)}")

    def _check_choices(self) -> None:
        """Fields that take one of a few named values."""
        if self.eidetic_policy not in EIDETIC_POLICIES:
            raise ValueError(f"eidetic_policy must be one of {EIDETIC_POLICIES}, got {self.eidetic_policy!r}")
        if self.eidetic_innovation not in INNOVATION_MODES:
            raise ValueError(f"eidetic_innovation must be one of {INNOVATION_MODES}, got {self.eidetic_innovation!r}")
        if self.eidetic_innovation_norm not in INNOVATION_NORMS:
            raise ValueError(
                f"eidetic_innovation_norm must be one of {INNOVATION_NORMS}, got {self.eidetic_innovation_norm!r}"
            )
        if self.ssm_output_gate not in SSM_OUTPUT_GATES:
            raise ValueError(f"ssm_output_gate must be one of {SSM_OUTPUT_GATES}, got {self.ssm_output_gate!r}")

    def _check_lengths(self) -> None:
        """Token counts that bound each other: candidates per chunk, memory slots, windows, positions."""
        if self.eidetic_topk > self.chunk_size:
            raise ValueError(f"eidetic_topk ({self.eidetic_topk}) must not exceed chunk_size ({self.chunk_size})")
        if self.eidetic_topk > self.eidetic_slots:
            raise ValueError(
                f"eidetic_topk ({self.eidetic_topk}) must not exceed eidetic_slots ({self.eidetic_slots}): "
                "a chunk's candidates must fit in the memory"
            )
        for name in ("sliding_window", "chunk_size", "conv_kernel"):
            if getattr(self, name) > self.max_position_embeddings:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must not exceed max_position_embeddings "
                    f"({self.max_position_embeddings})"
                )

    def _check_scalars(self) -> None:
        """Floats, the activation and the booleans."""
        _check_float("eidetic_aux_loss_weight", self.eidetic_aux_loss_weight, allow_zero=True)
        self._check_gate_init()
        _check_float("rope_theta", self.rope_theta, allow_zero=False)
        _check_float("rms_norm_eps", self.rms_norm_eps, allow_zero=False)
        _check_float("initializer_range", self.initializer_range, allow_zero=True)
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act must be 'silu' (SwiGLU), got {self.hidden_act!r}")
        for name in ("tie_word_embeddings", "use_cache", "fuse_linear_cross_entropy"):
            if not isinstance(getattr(self, name), bool):  # "no" would be truthy and tie the embeddings
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def _check_gate_init(self) -> None:
        value = self.ssm_output_gate_init
        if value is None:
            return
        if isinstance(value, (list, tuple)):
            if len(value) != self.num_hidden_layers:
                raise ValueError(
                    f"ssm_output_gate_init must be a number, or a list with one number per layer "
                    f"({self.num_hidden_layers}), got {value!r}"
                )
            values = [v for v, t in zip(value, self.layer_types) if t in GATED_LAYER_TYPES]
        else:
            values = [value]
        for v in values:
            _check_float("ssm_output_gate_init", v, allow_zero=True)
            if self.ssm_output_gate == "token" and not 0 < v < 1:
                raise ValueError(f"ssm_output_gate_init of the token gate must lie in (0, 1), got {v!r}")

    def ssm_output_gate_start(self, layer_idx: int) -> float:
        """The value layer ``layer_idx``'s SSM output gate starts from (``ssm_output_gate_init``)."""
        value = self.ssm_output_gate_init
        if isinstance(value, (list, tuple)):
            return float(value[layer_idx])
        if value is not None:
            return float(value)
        return GATE_INIT_DEFAULTS.get(self.ssm_output_gate, 1.0)

    def check_input_ids(self, input_ids) -> None:
        """``ValueError`` unless ``input_ids`` is a non-empty (batch, sequence) tensor (shapes only: no host sync)."""
        if input_ids.dim() != 2 or input_ids.numel() == 0:
            raise ValueError(
                f"input_ids must be a non-empty 2-D tensor (batch, sequence) of token ids, got shape "
                f"{tuple(input_ids.shape)}; a single sequence needs a batch dimension: ids.unsqueeze(0)"
            )

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Also writes ``auto_map`` and its module, so the folder loads with ``trust_remote_code=True`` in a
        process that never imported ``bmojo_neuron`` (:mod:`bmojo_neuron.remote_code`)."""
        self.auto_map = dict(AUTO_MAP)
        write_auto_module(save_directory)
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    @property
    def ssm_inner_size(self) -> int:
        return self.ssm_num_heads * self.ssm_head_dim

    @property
    def eidetic_lag(self) -> int:
        """Chunks between a memory update and the first query chunk that sees it (docs/layer.md)."""
        return 1 + math.ceil((self.sliding_window - 1) / self.chunk_size)


def _check_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_float(name: str, value, allow_zero: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


__all__ = ["BMojoConfig", "LAYER_TYPES", "expand_layer_pattern"]
