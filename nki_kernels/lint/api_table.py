"""Hand-kept table of the NKI API the kernels may call: names, parameters and defaults (facts only).

Source of every entry unless its ``source`` says otherwise: the NKI API reference of Neuron SDK 2.32 /
NKI 0.6.0 (the doc stubs ``nki/api/nki/{__init__,isa/__init__,language/__init__}.py`` of
github.com/aws-neuron/aws-neuron-sdk at commit 81ce03a, 2026-08-21). Only signatures were taken (parameter
names, order and default expressions); no documentation text. Entries checked against the 2.33 pages
(NKI 0.7.0, awsdocs-neuron v2.33.x) carry ``source="2.33"`` where that page was read.

Update rule: when an SDK changes a signature, edit the entry and its ``source``; the lint then checks the
kernels against the new API.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCES = {
    "2.32": "Neuron SDK 2.32 / NKI 0.6.0 API reference (aws-neuron-sdk 81ce03a, nki/api/nki/*)",
    "2.33": "Neuron SDK 2.33 / NKI 0.7.0 API reference (awsdocs-neuron v2.33.0 generated pages)",
}


@dataclass(frozen=True)
class Signature:
    """Positional-or-keyword parameters without defaults (``required``), with defaults (``optional``: name and
    default expression), keyword-only parameters, and whether ``*args`` / ``**kwargs`` are accepted."""

    required: tuple
    optional: tuple = ()
    kwonly: tuple = ()
    varargs: bool = False
    varkw: bool = False
    source: str = "2.32"
    params: tuple = field(init=False)

    def __post_init__(self):
        names = tuple(self.required) + tuple(n for n, _ in self.optional) + tuple(n for n, _ in self.kwonly)
        object.__setattr__(self, "params", names)


def _f(required, optional=(), kwonly=(), varargs=False, varkw=False, source="2.32"):
    return Signature(tuple(required), tuple(optional), tuple(kwonly), varargs, varkw, source)


NKI_FUNCTIONS = {
    "jit": _f((), (("fn", "None"),), varkw=True),
    "simulate": _f(("kernel",), ()),
}
NKI_VALUES = {}
ISA_FUNCTIONS = {
    "get_nc_sub_version": _f((), ()),
    "get_nc_version": _f((), ()),
    "dma_copy": _f(
        ("dst", "src"),
        (
            ("priority", "None"),
            ("oob_mode", "oob_mode.error"),
            ("dge_mode", "dge_mode.unknown"),
            ("engine", "engine.unknown"),
            ("name", "None"),
        ),
    ),
    "tensor_copy": _f(("dst", "src"), (("engine", "engine.unknown"), ("name", "None"))),
    "memset": _f(("dst", "value"), (("engine", "engine.unknown"), ("name", "None"))),
    "tensor_copy_predicated": _f(("dst", "src", "predicate"), (("reverse_pred", "False"), ("name", "None"))),
    "nc_matmul": _f(
        ("dst", "stationary", "moving"),
        (
            ("is_stationary_onezero", "False"),
            ("is_moving_onezero", "False"),
            ("is_transpose", "False"),
            ("accumulate", "None"),
            ("tile_position", "()"),
            ("tile_size", "()"),
            ("perf_mode", "matmul_perf_mode.none"),
            ("name", "None"),
        ),
    ),
    "nc_matmul_mx": _f(
        ("dst", "stationary", "moving", "stationary_scale", "moving_scale"),
        (("tile_position", "None"), ("tile_size", "None"), ("accumulate", "None"), ("name", "None")),
    ),
    "nc_transpose": _f(("dst", "data"), (("engine", "engine.unknown"), ("name", "None"))),
    "dma_transpose": _f(
        ("dst", "src"),
        (
            ("axes", "None"),
            ("priority", "None"),
            ("dge_mode", "dge_mode.unknown"),
            ("oob_mode", "oob_mode.error"),
            ("name", "None"),
        ),
    ),
    "tensor_tensor": _f(("dst", "data1", "data2", "op"), (("engine", "engine.unknown"), ("name", "None"))),
    "tensor_scalar": _f(
        ("dst", "data", "op0", "operand0"),
        (
            ("reverse0", "False"),
            ("op1", "None"),
            ("operand1", "None"),
            ("reverse1", "False"),
            ("engine", "engine.unknown"),
            ("name", "None"),
        ),
    ),
    "tensor_reduce": _f(("dst", "op", "data", "axis"), (("negate", "False"), ("keepdims", "False"), ("name", "None"))),
    "tensor_partition_reduce": _f(("dst", "op", "data"), (("name", "None"),)),
    "tensor_scalar_cumulative": _f(
        ("dst", "src", "op0", "op1", "imm0"),
        (("imm1", "None"), ("reduce_cmd", "reduce_cmd.reset_reduce"), ("name", "None")),
    ),
    "activation": _f(
        ("dst", "op", "data"),
        (
            ("bias", "None"),
            ("scale", "1.0"),
            ("reduce_op", "None"),
            ("reduce_res", "None"),
            ("reduce_cmd", "reduce_cmd.idle"),
            ("name", "None"),
        ),
    ),
    "activation_reduce": _f(
        ("dst", "op", "data", "reduce_op", "reduce_res"), (("bias", "None"), ("scale", "1.0"), ("name", "None"))
    ),
    "activate2": _f(
        ("dst", "op", "data", "imm0", "imm1", "op0", "op1"),
        (
            ("relu_param", "0.0"),
            ("reverse0", "False"),
            ("reverse1", "False"),
            ("reduce_op", "None"),
            ("reduce_res", "None"),
            ("reduce_cmd", "reduce_cmd.idle"),
            ("name", "None"),
        ),
    ),
    "iota": _f(("dst", "pattern"), (("offset", "0"), ("channel_multiplier", "0"), ("name", "None"))),
    "affine_select": _f(
        ("dst", "pattern", "channel_multiplier", "on_true_tile", "on_false_value"),
        (("cmp_op", "equal"), ("offset", "0"), ("name", "None")),
    ),
    "local_gather": _f(
        ("dst", "src_buffer", "index"), (("num_elem_per_idx", "1"), ("num_valid_indices", "None"), ("name", "None"))
    ),
    "nc_n_gather": _f(("dst", "data", "indices"), (("name", "None"),)),
    "bn_stats": _f(("dst", "data"), (("name", "None"),)),
    "bn_aggr": _f(("dst", "data"), (("name", "None"),)),
    "tensor_tensor_scan": _f(
        ("dst", "data0", "data1", "initial", "op0", "op1"),
        (("reverse0", "False"), ("reverse1", "False"), ("name", "None")),
    ),
    "nc_stream_shuffle": _f(("dst", "src", "shuffle_mask"), (("name", "None"),)),
    "rng": _f(("dst",), (("engine", "engine.vector"), ("name", "None"))),
    "dropout": _f(("dst", "data", "prob"), (("name", "None"),)),
    "set_rng_seed": _f(("src_seeds",), (("name", "None"),)),
    "rand_set_state": _f(("src_seeds",), (("engine", "engine.gpsimd"), ("name", "None"))),
    "rand_get_state": _f(("dst",), (("engine", "engine.gpsimd"), ("name", "None"))),
    "rand2": _f(("dst", "min", "max"), (("name", "None"),)),
    "exponential": _f(
        ("dst", "src"),
        (
            ("max_value", "0.0"),
            ("reduce_res", "None"),
            ("reduce_cmd", "reduce_cmd.idle"),
            ("reduce_init", "0.0"),
            ("name", "None"),
        ),
    ),
    "reciprocal": _f(("dst", "data"), (("name", "None"),)),
    "max8": _f(("dst", "src"), (("name", "None"),)),
    "sequence_bounds": _f(("dst", "segment_ids"), (("name", "None"),)),
    "scalar_tensor_tensor": _f(
        ("dst", "data", "op0", "operand0", "op1", "operand1"),
        (("reverse0", "False"), ("reverse1", "False"), ("name", "None")),
    ),
    "tensor_scalar_reduce": _f(
        ("dst", "data", "op0", "operand0", "reduce_op"),
        (
            ("reduce_res", "None"),
            ("reverse0", "False"),
            ("reduce_cmd", "reduce_cmd.reset_reduce"),
            ("reduce_init", "None"),
            ("reduce_res_negate", "False"),
            ("name", "None"),
        ),
    ),
    "core_barrier": _f(("data", "cores"), (("engine", "engine.gpsimd"), ("name", "None"))),
    "dma_compute": _f(
        ("dst", "srcs", "reduce_op"),
        (("scales", "None"), ("unique_indices", "True"), ("oob_mode", "oob_mode.error"), ("name", "None")),
    ),
    "quantize_mx": _f(("dst", "src", "dst_scale"), (("name", "None"),)),
    "range_select": _f(
        ("dst", "on_true_tile", "comp_op0", "comp_op1", "bound0", "bound1"),
        (
            ("reduce_cmd", "reduce_cmd.reset_reduce"),
            ("reduce_res", "None"),
            ("reduce_op", "maximum"),
            ("range_start", "0"),
            ("on_false_value", "..."),
            ("name", "None"),
        ),
    ),
    "select_reduce": _f(
        ("dst", "predicate", "on_true", "on_false"),
        (
            ("reduce_res", "None"),
            ("reduce_cmd", "reduce_cmd.idle"),
            ("reduce_op", "maximum"),
            ("reverse_pred", "False"),
            ("name", "None"),
        ),
    ),
    "sendrecv": _f(
        ("src", "dst", "send_to_rank", "recv_from_rank", "pipe_id"),
        (("dma_engine", "dma_engine.dma"), ("name", "None")),
    ),
    "register_alloc": _f((), (("x", "None"),)),
    "register_move": _f(("dst", "src"), ()),
    "register_load": _f(("dst", "src"), ()),
    "register_store": _f(("dst", "src"), ()),
    "nc_find_index8": _f(("dst", "data", "vals"), (("name", "None"),)),
    "nc_match_replace8": _f(("dst", "data", "vals", "imm"), (("dst_idx", "None"), ("name", "None"))),
    "nonzero_with_count": _f(("dst", "src"), (("index_offset", "0"), ("padding_val", "-1"), ("name", "None"))),
    "topk": _f(("val_dst", "idx_dst", "src", "n"), (("name", "None"),)),
}
ISA_VALUES = {
    "tensor_engine": None,
    "vector_engine": None,
    "scalar_engine": None,
    "gpsimd_engine": None,
    "unknown_engine": None,
    "engine": ("tensor", "vector", "scalar", "gpsimd", "dma", "sync", "unknown"),
    "reduce_cmd": ("idle", "reset", "reduce", "reset_reduce", "load_reduce"),
    "dge_mode": ("unknown", "swdge", "hwdge", "none"),
    "oob_mode": ("error", "skip"),
    "matmul_perf_mode": ("none", "double_row"),
    "nc_version": ("gen2", "gen3", "gen4"),
    "dma_engine": ("dma", "gpsimd_dma"),
    "NkiInstruction": ("depends_on",),
    "NkiValidationError": (),
    "VirtualRegister": (),
}
LANGUAGE_FUNCTIONS = {
    "is_hbm": _f(("buffer",), ()),
    "is_on_chip": _f(("buffer",), ()),
    "is_psum": _f(("buffer",), ()),
    "is_sbuf": _f(("buffer",), ()),
    "add": _f(("x", "y"), (("dtype", "None"),)),
    "subtract": _f(("x", "y"), (("dtype", "None"),)),
    "multiply": _f(("x", "y"), (("dtype", "None"),)),
    "divide": _f(("x", "y"), (("dtype", "None"),)),
    "maximum": _f(("x", "y"), (("dtype", "None"),)),
    "minimum": _f(("x", "y"), (("dtype", "None"),)),
    "abs_max": _f(("x", "y"), (("dtype", "None"),)),
    "abs_min": _f(("x", "y"), (("dtype", "None"),)),
    "abs": _f(("x",), (("dtype", "None"),)),
    "square": _f(("x",), (("dtype", "None"),)),
    "power": _f(("x", "y"), (("dtype", "None"),)),
    "equal": _f(("x", "y"), (("dtype", "None"),)),
    "not_equal": _f(("x", "y"), (("dtype", "None"),)),
    "less": _f(("x", "y"), (("dtype", "None"),)),
    "less_equal": _f(("x", "y"), (("dtype", "None"),)),
    "greater": _f(("x", "y"), (("dtype", "None"),)),
    "greater_equal": _f(("x", "y"), (("dtype", "None"),)),
    "bitwise_and": _f(("x", "y"), (("dtype", "None"),)),
    "bitwise_or": _f(("x", "y"), (("dtype", "None"),)),
    "bitwise_xor": _f(("x", "y"), (("dtype", "None"),)),
    "invert": _f(("x",), (("dtype", "None"),)),
    "left_shift": _f(("x", "y"), (("dtype", "None"),)),
    "right_shift": _f(("x", "y"), (("dtype", "None"),)),
    "logical_and": _f(("x", "y"), (("dtype", "None"),)),
    "logical_or": _f(("x", "y"), (("dtype", "None"),)),
    "logical_xor": _f(("x", "y"), (("dtype", "None"),)),
    "logical_not": _f(("x",), (("dtype", "None"),)),
    "exp": _f(("x",), (("dtype", "None"),)),
    "log": _f(("x",), (("dtype", "None"),)),
    "sqrt": _f(("x",), (("dtype", "None"),)),
    "rsqrt": _f(("x",), (("dtype", "None"),)),
    "tanh": _f(("x",), (("dtype", "None"),)),
    "sigmoid": _f(("x",), (("dtype", "None"),)),
    "relu": _f(("x",), (("dtype", "None"),)),
    "gelu": _f(("x",), (("dtype", "None"),)),
    "gelu_apprx_sigmoid": _f(("x",), (("dtype", "None"),)),
    "gelu_apprx_tanh": _f(("x",), (("dtype", "None"),)),
    "gelu_dx": _f(("x",), (("dtype", "None"),)),
    "gelu_apprx_sigmoid_dx": _f(("x",), (("dtype", "None"),)),
    "silu": _f(("x",), (("dtype", "None"),)),
    "silu_dx": _f(("x",), (("dtype", "None"),)),
    "softplus": _f(("x",), (("dtype", "None"),)),
    "mish": _f(("x",), (("dtype", "None"),)),
    "erf": _f(("x",), (("dtype", "None"),)),
    "erf_dx": _f(("x",), (("dtype", "None"),)),
    "reciprocal": _f(("x",), (("dtype", "None"),)),
    "copy": _f(("x",), (("dtype", "None"),)),
    "sin": _f(("x",), (("dtype", "None"),)),
    "cos": _f(("x",), (("dtype", "None"),)),
    "tan": _f(("x",), (("dtype", "None"),)),
    "arctan": _f(("x",), (("dtype", "None"),)),
    "ceil": _f(("x",), (("dtype", "None"),)),
    "floor": _f(("x",), (("dtype", "None"),)),
    "trunc": _f(("x",), (("dtype", "None"),)),
    "negative": _f(("x",), (("dtype", "None"),)),
    "sign": _f(("x",), (("dtype", "None"),)),
    "fmod": _f(("x", "y"), (("dtype", "None"),)),
    "mod": _f(("x", "y"), (("dtype", "None"),)),
    "sum": _f(("x", "axis"), (("dtype", "None"), ("keepdims", "False"))),
    "max": _f(("x", "axis"), (("dtype", "None"), ("keepdims", "False"))),
    "min": _f(("x", "axis"), (("dtype", "None"), ("keepdims", "False"))),
    "mean": _f(("x", "axis"), (("dtype", "None"), ("keepdims", "False"))),
    "prod": _f(("x", "axis"), (("dtype", "None"), ("keepdims", "False"))),
    "var": _f(("x", "axis"), (("dtype", "None"), ("keepdims", "False"))),
    "all": _f(("x", "axis"), (("dtype", "None"),)),
    "softmax": _f(("x",), (("axis", "-1"), ("dtype", "None"))),
    "rms_norm": _f(("x", "w", "axis", "n"), (("epsilon", "1e-06"), ("dtype", "None"), ("compute_dtype", "None"))),
    "where": _f(("condition", "x", "y"), (("dtype", "None"),)),
    "dropout": _f(("x", "rate"), (("dtype", "None"),)),
    "ones": _f(("shape", "dtype"), (("buffer", "sbuf"), ("name", "''"))),
    "full": _f(("shape", "fill_value", "dtype"), (("buffer", "sbuf"), ("name", "''"))),
    "zeros_like": _f(("x",), (("dtype", "None"), ("buffer", "None"), ("name", "''"))),
    "empty_like": _f(("x",), (("dtype", "None"), ("buffer", "None"), ("name", "''"))),
    "random_seed": _f(("seed",), ()),
    "expand_dims": _f(("x", "axis"), ()),
    "broadcast_to": _f(("x", "shape"), (("dtype", "None"),)),
    "transpose": _f(("x",), (("dtype", "None"),)),
    "matmul": _f(("x", "y"), (("transpose_x", "False"),)),
    "no_reorder": _f((), ()),
    "load_transpose2d": _f(("src",), (("dtype", "None"),)),
    "gather_flattened": _f(("data", "indices"), (("axis", "0"), ("dtype", "None"))),
    "ds": _f(("start", "size"), ()),
    "affine_range": _f(("start",), (("stop", "None"), ("step", "1"))),
    "sequential_range": _f(("start",), (("stop", "None"), ("step", "1"))),
    "static_range": _f(("start",), (("stop", "None"), ("step", "1"))),
    "dynamic_range": _f(("start",), (("stop", "None"), ("step", "1"))),
    "fori_loop": _f(("lower", "upper", "body_fun"), (("step", "1"),), source="2.33"),
    "while_loop": _f(("init", "body_fun"), ()),
    "ndarray": _f(("shape", "dtype"), (("buffer", "sbuf"), ("name", "''"), ("address", "None"))),
    "zeros": _f(("shape", "dtype"), (("buffer", "sbuf"), ("name", "''"))),
    "load": _f(("src",), (("dtype", "None"),)),
    "store": _f(("dst", "value"), ()),
    "program_id": _f((), (("axis", "0"),)),
    "num_programs": _f((), (("axes", "0"),)),
    "program_ndim": _f((), ()),
    "shared_constant": _f(("constant",), ()),
    "shared_identity_matrix": _f(("n",), (("dtype", "uint8"), ("dst", "None"))),
    "device_print": _f(("print_prefix", "tensor"), ()),
    "rand": _f(("shape", "dtype"), (("buffer", "sbuf"), ("name", "''"))),
}
LANGUAGE_VALUES = {
    "DType": None,
    "bool_": None,
    "int8": None,
    "int16": None,
    "int32": None,
    "uint8": None,
    "uint16": None,
    "uint32": None,
    "float16": None,
    "float32": None,
    "bfloat16": None,
    "tfloat32": None,
    "float8_e4m3": None,
    "float8_e4m3fn": None,
    "float8_e5m2": None,
    "float8_e5m2_x4": None,
    "float8_e4m3fn_x4": None,
    "float8_e8m0fnu": None,
    "float4_e2m1fn_x4": None,
    "sbuf": None,
    "psum": None,
    "hbm": None,
    "private_hbm": None,
    "shared_hbm": None,
    "tile_size": (
        "pmax",
        "psum_fmax",
        "psum_bank_fmax",
        "psum_bank_fmax_bytes",
        "gemm_stationary_fmax",
        "gemm_moving_fmax",
        "bn_stats_fmax",
        "psum_min_align",
        "sbuf_min_align",
        "psum_num_banks",
        "sbuf_size_bytes",
        "sbuf_fmax",
        "sbuf_fmax_bytes",
        "total_available_sbuf_size",
    ),
    "average": None,
    "prelu": None,
    "bypass": None,
    "MemoryRegion": ("sbuf", "psum", "private_hbm", "shared_hbm"),
    "NKIObject": (),
    "NkiTensor": (
        "shape",
        "strides",
        "offset",
        "name",
        "dtype",
        "buffer",
        "ndim",
        "size",
        "is_contiguous",
        "get_pattern",
        "is_indirect",
        "permute",
        "broadcast",
        "expand_dim",
        "squeeze_dim",
        "reshape_dim",
        "flatten_dims",
        "reshape",
        "rearrange",
        "slice",
        "select",
        "vector_select",
        "ap",
        "view",
        "reinterpret_cast",
        "indirect",
    ),
}
TENSOR_METHODS = {
    "is_contiguous": _f((), ()),
    "get_pattern": _f((), ()),
    "is_indirect": _f((), ()),
    "permute": _f(("dims",), ()),
    "broadcast": _f(("dim", "size"), ()),
    "expand_dim": _f(("dim",), ()),
    "squeeze_dim": _f(("dim",), ()),
    "reshape_dim": _f(("dim", "shape"), ()),
    "flatten_dims": _f(("start_dim", "end_dim"), ()),
    "reshape": _f(("shape",), ()),
    "rearrange": _f(("src_pattern", "dst_pattern"), (("fixed_sizes", "None"),)),
    "slice": _f(("dim", "start", "end"), (("step", "1"),)),
    "select": _f(("dim", "index"), ()),
    "vector_select": _f(("dim", "vector_offset"), ()),
    "ap": _f(
        ("pattern",),
        (
            ("offset", "None"),
            ("scalar_offset", "None"),
            ("vector_offset", "None"),
            ("indirect_dim", "0"),
            ("dtype", "None"),
        ),
    ),
    "view": _f(("dtype",), ()),
    "indirect": _f(("index",), (("num_elem", "None"),)),
}

# Namespaces by the module a kernel imports them as (``import nki``, ``nki.isa as nisa``, ``nki.language as nl``).
NAMESPACES = {
    "nki": (NKI_FUNCTIONS, NKI_VALUES),
    "nki.isa": (ISA_FUNCTIONS, ISA_VALUES),
    "nki.language": (LANGUAGE_FUNCTIONS, LANGUAGE_VALUES),
}
