"""Counting: parameters and multiply-accumulates (MACs) with fvcore, completed by handles and cross-checked.

fvcore's `FlopCountAnalysis` is the primary counter (docs/measurement.md#counting): it traces the forward with torch.jit
and counts one fused multiply-add as one MAC, which is the convention of every published number
(docs/zoo.md#reference-numbers). effscope replaces fvcore's handle table with its own so that nothing FLOP-bearing is
silently zero:

- gemm (MACs): linear, matmul/mm/bmm/addmm/baddbmm/addbmm/mv/addmv/dot/vdot (prod(output) x contracted size, exact
  under broadcasting), convolution (fvcore's formula: grouped and transposed), einsum (exact, from the operand
  shapes and the contraction path torch ran, not fvcore's 3-digit parse), tensordot, bilinear, and
  `scaled_dot_product_attention` with its backend variants: B*heads*Nq*Nk*(d_qk + d_v), any batch dims, the same
  as the explicit q @ kᵀ, attn @ v path. Causal masks are not discounted (as FlopCounterMode).
  Products without a sum are gemm too, one MAC per output element (one multiply each), so the cross-check covers
  them: outer/ger n*m for vectors of n and m, kron numel(output) = numel(a) x numel(b).
  cdist of x1 (B, P, M) and x2 (B, R, M), batch dims broadcast: B*P*R*M, one MAC per (pair of rows, feature), for
  every p and compute_mode: the direct kernel's one difference and one accumulate per feature. The p=2 matmul
  kernel (_euclidean_dist, taken when compute_mode says so or when P or R > 25) runs B*P*R*(M + 2) MACs in its
  augmented matmul plus B*(P + R)*M for the squared norms; those extra terms are not counted, nor is the root.
  linalg_multi_dot / chain_matmul: the MACs of the cheapest parenthesization, which is the order torch runs (its
  3-matrix rule and its dynamic program both reach the minimum); a 1-D first (last) operand is a row (column)
  vector; one matrix (chain_matmul's copy) costs nothing.
- norm (MACs, fvcore's convention): layer/group/instance norm 5 x numel with affine (4 without), eval batch norm
  2 x numel (1 without affine).
- interp (MACs): one MAC per tap per output element: nearest 1, (bi/tri)linear 2/4/8, bicubic 16; this is fvcore's
  convention for upsample_nearest2d / upsample_bilinear2d / grid_sampler, extended to the other modes. The per-
  location weight computation of grid_sample is ignored.
- pool (its own number, never in MACs): one op per input element read, i.e. output numel x kernel volume for
  avg/max pools (padding positions included; the input numel when the kernel is not a trace constant), and the
  exact window sizes of adaptive pools (input numel when the windows tile it, e.g. a global average). fvcore adds
  adaptive_avg_pool2d's input numel to its total; effscope keeps it out of MACs, so docs/zoo.md#reference-numbers
  figures of models with a pooled head read up to 0.07 % above effscope's macs.
- elementwise (optional, its own number): numel of the output for pointwise ops (add, mul, gelu, softmax, ...) and
  numel of the input for reductions (mean, sum, var, ...). SDPA adds what `attend`'s explicit path would execute
  (the scaling of q or of the logits, whichever is smaller, the mask add, the softmax), so both attention paths
  give the same element-wise count too.
  When not counted, these ops are listed in `uncounted_ops`, like every op with work and no handle; shape-only ops
  (view, permute, cat, ...) and the tracer's size arithmetic are neither counted nor listed.
- bytes moved (an estimate, its own number, for the roofline's arithmetic intensity): every counted op above reads
  its tensor inputs and writes its outputs once, at their traced dtype sizes, with no cache reuse across ops; views
  are free, copies (contiguous/reshape of a strided tensor, cat, pad, roll, gathers, ...) are counted. A fused
  kernel moves only its operands: SDPA's lower bound is q, k, v (mask) and the output. Bytes of tensors that do not
  depend on the forward's inputs (weights, buffers, tensors made from them alone) are also reported apart, because
  they are read once per forward whatever the batch.

An executed matmul-class or attention op that no handle counts, or that a handle counts as zero, raises CountError.
Every count is cross-checked with torch's `FlopCounterMode` (with a formula for CPU SDPA, which it lacks, pytorch
issue 195460, and for the other ops it counts as zero: mv, dot, addmv, addbmm, bilinear's _trilinear, cdist's
kernels, and outer/kron, which a function mode counts because they reach it only as a broadcast mul): its total must
equal 2 x the gemm MACs (it counts neither norms, pools, interpolation nor element-wise ops). The relative
disagreement is returned; `strict=True` raises on it.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["CROSSCHECK_RTOL", "CountError", "Counts", "count", "is_elementwise_op"]

CROSSCHECK_RTOL = 1e-6  # both counters compute exact integers; any real disagreement is a missing or wrong formula

Handle = Callable[[list, list], Counter]
GemmMacs = Callable[[list, list], int]  # a gemm op's MACs; _GEMM_HANDLES says which key they are counted under


class CountError(EffscopeError, RuntimeError):
    """A FLOP-bearing op was executed but not counted, or the two counters disagree under `strict=True`."""


# --------------------------------------------------------------------------------------------- shapes of jit values


def _shape(value: Any) -> list[int] | None:
    """Static shape of a traced tensor value (None for None, non-tensors and unknown shapes)."""
    return value.type().sizes() if value.isCompleteTensor() else None


def _numel(value: Any) -> int:
    shape = _shape(value)
    return math.prod(shape) if shape is not None else 0


def _const(value: Any) -> Any:
    """A traced constant argument, lists included (None when it was computed from shapes at trace time)."""
    node = value.node()
    if node.kind() == "prim::ListConstruct":
        items = [v.toIValue() for v in node.inputs()]
        return None if any(i is None for i in items) else items
    return value.toIValue()


# ------------------------------------------------------------------------------------------------------ gemm handles


def _matmul_like(a_index: int, batch_index: int | None = None) -> GemmMacs:
    """prod(output shape) x contracted size: exact for mm/bmm/matmul (broadcast included), linear, addmm, mv, dot."""

    def macs(inputs: list, outputs: list) -> int:
        k = _shape(inputs[a_index])[-1]
        if batch_index is not None:  # addbmm sums the batch of products into one matrix
            k *= _shape(inputs[batch_index])[0]
        return _numel(outputs[0]) * k

    return macs


def _conv(inputs: list, outputs: list) -> int:
    from fvcore.nn.jit_handles import conv_flop_count

    x, w, out = _shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])
    return int(conv_flop_count(x, w, out, transposed=bool(inputs[6].toIValue())))


def _sdpa_macs(q: list[int], k: list[int], v: list[int], out: list[int]) -> int:
    """B*heads*Nq*Nk*(d_qk + d_v); the output's batch dims already include broadcasting and query heads."""
    return math.prod(out[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def _sdpa(elementwise: bool) -> Handle:
    def handle(inputs: list, outputs: list) -> Counter:
        q, k, v, out = *(_shape(inputs[i]) for i in range(3)), _shape(outputs[0])
        counts = Counter({"sdpa": _sdpa_macs(q, k, v, out)})
        masked = len(inputs) > 3 and _shape(inputs[3]) is not None
        if elementwise:  # what attend's explicit path executes around the two products
            logits = math.prod(out[:-2]) * q[-2] * k[-2]
            counts.update({"mul": min(math.prod(q), logits), "softmax": logits})  # attend scales the smaller
            if masked:
                counts["add"] += logits
        else:  # listed as attend's explicit path names its calls, so the list does not depend on the core that ran
            scale = "aten::mul" if q[-1] <= k[-2] else "aten::mul_"  # it scales q, or the fresh logits in place
            fused = (scale, "aten::softmax", *(("aten::add_",) if masked else ()))
            counts.update({_UNCOUNTED + op: 1 for op in fused})
        return counts

    return handle


def _parse_einsum(equation: str, shapes: list[list[int]]) -> tuple[list[str], str, dict[str, int]]:
    """Operand subscripts, output subscripts and letter sizes, with '...' expanded to private letters."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    ell_ndim = max(
        (len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes, strict=True) if "..." in t), default=0
    )
    ell = "".join(chr(0x3B1 + i) for i in range(ell_ndim))  # greek letters never clash with a-zA-Z
    expanded = []
    for t, s in zip(terms, shapes, strict=True):
        n = len(s) - len(t.replace("...", ""))
        expanded.append(t.replace("...", ell[ell_ndim - n :]) if "..." in t else t)
    if not arrow:  # implicit output: the letters that appear once, sorted, after the broadcast dims
        once = [c for c in sorted(set(lhs.replace("...", ""))) if lhs.count(c) == 1]
        rhs = ell + "".join(once)
    else:
        rhs = rhs.replace("...", ell)
    sizes: dict[str, int] = {}
    for t, s in zip(expanded, shapes, strict=True):
        for c, n in zip(t, s, strict=True):
            sizes[c] = max(sizes.get(c, 1), n)
    return expanded, rhs, sizes


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]], path: Sequence[int] | None = None) -> int:
    """Exact MACs of an einsum as torch runs it: pairwise products along `path` (left to right without one).

    Each pairwise product costs the product of the sizes of the letters left in the pair once letters needed by
    neither the other operand, the later operands nor the output are summed out first (as torch does).
    A single operand (a transpose or a reduction) costs no MACs.
    """
    terms, out, sizes = _parse_einsum(equation, [list(s) for s in shapes])
    ops = [set(t) for t in terms]
    # with a path, each pair's result goes last (opt_einsum's convention); without, torch folds left to right
    pairs = [(path[i], path[i + 1]) for i in range(0, len(path), 2)] if path else [(0, 1)] * (len(ops) - 1)
    macs = 0
    for i, j in pairs:
        a, b = ops[i], ops[j]
        others = [o for n, o in enumerate(ops) if n not in (i, j)]
        rest = set(out).union(*others)
        a, b = a & (b | rest), b & (a | rest)  # letters nobody else needs are summed out before the product
        macs += math.prod(sizes[c] for c in a | b)
        ops = others + [(a | b) & rest] if path else [(a | b) & rest] + others
    return macs


def _list_operands(inputs: list, index: int) -> int:
    """How many tensors an op's tensor-list argument (einsum's operands, multi_dot's matrices) holds."""
    return len(list(inputs[index].node().inputs()))


def _einsum(inputs: list, outputs: list) -> int:
    shapes = [_shape(v) for v in inputs[1].node().inputs()]
    path = _const(inputs[2]) if len(inputs) > 2 else None
    return einsum_macs(inputs[0].toIValue(), shapes, path)


def _tensordot(inputs: list, outputs: list) -> int:
    a, dims = _shape(inputs[0]), _const(inputs[2]) or []
    return _numel(outputs[0]) * math.prod(a[d] for d in dims)


def _bilinear(inputs: list, outputs: list) -> int:
    return _numel(outputs[0]) * _shape(inputs[0])[-1] * _shape(inputs[1])[-1]


def _per_output_element(inputs: list, outputs: list) -> int:
    """outer/ger and kron: one multiply per output element (each is a product of one element of either operand)."""
    return _numel(outputs[0])


def _cdist(inputs: list, outputs: list) -> int:
    """One MAC per (pair of rows, feature): B x P x R x M for x1 (B, P, M) and x2 (B, R, M), batch broadcast, any p
    and compute_mode (see the module docstring for what each of torch's two kernels actually runs)."""
    return _numel(outputs[0]) * _shape(inputs[0])[-1]


def multi_dot_macs(shapes: Sequence[Sequence[int]]) -> int:
    """Exact MACs of `torch.linalg.multi_dot` (and `chain_matmul`, which runs it): torch multiplies the matrices in
    the cheapest order (its 3-matrix rule and its dynamic program for more both reach the minimum), so this is that
    minimum. A 1-D first operand is a row vector, a 1-D last one a column vector; one matrix costs nothing."""
    dims = [list(s) for s in shapes]
    if len(dims[0]) == 1:
        dims[0] = [1, *dims[0]]
    if len(dims[-1]) == 1:
        dims[-1] = [*dims[-1], 1]
    p = [d[0] for d in dims] + [dims[-1][1]]  # matrix i is p[i] x p[i + 1]
    n = len(dims)
    cost = [[0] * n for _ in range(n)]  # cost[i][j]: the cheapest product of matrices i..j
    for length in range(1, n):
        for i in range(n - length):
            j = i + length
            cost[i][j] = min(cost[i][k] + cost[k + 1][j] + p[i] * p[k + 1] * p[j + 1] for k in range(i, j))
    return cost[0][n - 1]


def _multi_dot(inputs: list, outputs: list) -> int:
    return multi_dot_macs([_shape(v) for v in inputs[0].node().inputs()])


_SDPA_OPS = (
    "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_attention_math",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
)

# Every gemm op effscope counts: the key its MACs are counted under (the one key of the op in the gemm category) and
# a function of `elementwise` that makes its handle. A test deletes an entry to check that the missing handle is caught.
_GEMM_HANDLES: dict[str, tuple[str, Callable[[bool], GemmMacs | Handle]]] = {
    "aten::linear": ("linear", lambda ew: _matmul_like(0)),
    "aten::matmul": ("matmul", lambda ew: _matmul_like(0)),
    "aten::mm": ("mm", lambda ew: _matmul_like(0)),
    "aten::bmm": ("bmm", lambda ew: _matmul_like(0)),
    "aten::mv": ("mv", lambda ew: _matmul_like(0)),
    "aten::dot": ("dot", lambda ew: _matmul_like(0)),
    "aten::vdot": ("dot", lambda ew: _matmul_like(0)),
    "aten::addmm": ("addmm", lambda ew: _matmul_like(1)),
    "aten::addmv": ("addmv", lambda ew: _matmul_like(1)),
    "aten::baddbmm": ("baddbmm", lambda ew: _matmul_like(1)),
    "aten::addbmm": ("addbmm", lambda ew: _matmul_like(1, batch_index=1)),
    "aten::_convolution": ("conv", lambda ew: _conv),
    "aten::einsum": ("einsum", lambda ew: _einsum),
    "aten::tensordot": ("tensordot", lambda ew: _tensordot),
    "aten::bilinear": ("bilinear", lambda ew: _bilinear),
    "aten::outer": ("outer", lambda ew: _per_output_element),  # torch.ger traces as aten::outer
    "aten::ger": ("outer", lambda ew: _per_output_element),
    "aten::kron": ("kron", lambda ew: _per_output_element),
    "aten::cdist": ("cdist", lambda ew: _cdist),
    "aten::_cdist_forward": ("cdist", lambda ew: _cdist),  # cdist's two kernels, should one be called directly
    "aten::_euclidean_dist": ("cdist", lambda ew: _cdist),
    "aten::linalg_multi_dot": ("multi_dot", lambda ew: _multi_dot),
    "aten::chain_matmul": ("multi_dot", lambda ew: _multi_dot),
    **{op: ("sdpa", _sdpa) for op in _SDPA_OPS},  # with elementwise, also the ops around its two products
}


def _gemm_handle(key: str, make: Callable[[bool], GemmMacs | Handle], elementwise: bool) -> Handle:
    """The fvcore handle of one table entry: MACs under `key`, or the Counter a handle returns whole (SDPA)."""
    inner = make(elementwise)

    def handle(inputs: list, outputs: list) -> Counter:
        out = inner(inputs, outputs)
        return out if isinstance(out, Counter) else Counter({key: out})

    return handle


# Ops that must never count as zero: anything matching this that runs without a handle raises CountError.
_MATMUL_CLASS = re.compile(
    r"::_?(matmul|mm|bmm|addmm|addmv|baddbmm|addbmm|mv|dot|vdot|linear|bilinear|einsum|tensordot|chain_matmul"
    r"|linalg_multi_dot|linalg_matmul|linalg_vecdot|outer|ger|kron|cdist|convolution\w*|conv[123]d"
    r"|conv_transpose[123]d|conv_tbc|deform_conv2d|\w*attention\w*|scaled_mm|int_mm|cdist_forward|euclidean_dist)$"
)

# gemm ops with a tensor-list argument (at this index) that may hold a single tensor: a transpose, a reduction or a
# copy (chain_matmul of one matrix), which is no product, so a zero count is right
_LIST_OPERANDS = {"aten::einsum": 1, "aten::linalg_multi_dot": 0, "aten::chain_matmul": 0}

# Pure data movement the tracer records and fvcore does not already ignore: neither counted nor listed. (Copies
# such as clone, flip or pixel_shuffle are not here: they have handles that add only their bytes, see _COPY_OPS.)
_DATA_MOVEMENT = tuple(
    f"aten::{op}"
    for op in (
        "expand_as unflatten view_as reshape_as movedim moveaxis swapaxes swapdims eye ones_like empty_like rand "
        "randn rand_like randn_like linspace meshgrid lift_fresh alias"
    ).split()
)


# ------------------------------------------------------------------------------------------- norm / interp / pool


def _norm(key: str, affine_index: int) -> Handle:
    def handle(inputs: list, outputs: list) -> Counter:
        return Counter({key: _numel(inputs[0]) * (5 if _shape(inputs[affine_index]) is not None else 4)})

    return handle


def _batch_norm(inputs: list, outputs: list) -> Counter:
    if inputs[5].toIValue():  # training mode normalizes with batch statistics, like layer norm
        return _norm("batch_norm", 1)(inputs, outputs)
    return Counter({"batch_norm": _numel(inputs[0]) * (2 if _shape(inputs[1]) is not None else 1)})


def _taps(key: str, taps: int) -> Handle:
    def handle(inputs: list, outputs: list) -> Counter:
        return Counter({key: _numel(outputs[0]) * taps})

    return handle


def _grid_sampler(inputs: list, outputs: list) -> Counter:
    spatial = len(_shape(inputs[0])) - 2
    taps = {0: 2**spatial, 1: 1, 2: 16}.get(inputs[2].toIValue(), 2**spatial)  # bilinear, nearest, bicubic
    return Counter({"grid_sampler": _numel(outputs[0]) * taps})


# taps per output element; the antialiased variants read more when downscaling (counted as their plain mode)
_INTERP_TAPS = {
    **{f"upsample_nearest{d}d": 1 for d in (1, 2, 3)},
    **{f"_upsample_nearest_exact{d}d": 1 for d in (1, 2, 3)},
    "upsample_linear1d": 2,
    "upsample_bilinear2d": 4,
    "_upsample_bilinear2d_aa": 4,
    "upsample_trilinear3d": 8,
    "upsample_bicubic2d": 16,
    "_upsample_bicubic2d_aa": 16,
}


def _pool(key: str, spatial: int) -> Handle:
    def handle(inputs: list, outputs: list) -> Counter:
        kernel = _const(inputs[1])
        if kernel is None:  # the kernel was computed from shapes: read each input element once
            return Counter({key: _numel(inputs[0])})
        kernel = list(kernel) * spatial if len(kernel) == 1 else list(kernel)
        return Counter({key: _numel(outputs[0]) * math.prod(kernel)})

    return handle


def _adaptive_window_total(n_in: int, n_out: int) -> int:
    """Sum of window lengths of an adaptive pool along one dim (torch's start/end rule)."""
    return sum(-(-((i + 1) * n_in) // n_out) - (i * n_in) // n_out for i in range(n_out))


def _adaptive_pool(key: str, spatial: int) -> Handle:
    def handle(inputs: list, outputs: list) -> Counter:
        x, out = _shape(inputs[0]), _shape(outputs[0])
        reads = math.prod(x[:-spatial])
        for n_in, n_out in zip(x[-spatial:], out[-spatial:], strict=True):
            reads *= _adaptive_window_total(n_in, n_out)
        return Counter({key: reads})

    return handle


def _non_gemm_handles() -> dict[str, tuple[str, Handle]]:
    """op -> (category, handle) for norms, interpolation and pools."""
    table: dict[str, tuple[str, Handle]] = {
        "aten::layer_norm": ("norm", _norm("layer_norm", 2)),
        "aten::group_norm": ("norm", _norm("group_norm", 2)),
        "aten::instance_norm": ("norm", _norm("instance_norm", 1)),
        "aten::batch_norm": ("norm", _batch_norm),
        "aten::grid_sampler": ("interp", _grid_sampler),
    }
    for name, taps in _INTERP_TAPS.items():
        table[f"aten::{name}"] = ("interp", _taps(name.lstrip("_"), taps))
    for d in (1, 2, 3):
        for kind in ("avg", "max"):
            table[f"aten::{kind}_pool{d}d"] = ("pool", _pool(f"{kind}_pool{d}d", d))
            table[f"aten::adaptive_{kind}_pool{d}d"] = ("pool", _adaptive_pool(f"adaptive_{kind}_pool{d}d", d))
        table[f"aten::max_pool{d}d_with_indices"] = ("pool", _pool(f"max_pool{d}d", d))
    return table


# ------------------------------------------------------------------------------------------------ element-wise ops

_POINTWISE = (
    "abs add sub rsub mul div neg reciprocal square sqrt rsqrt pow exp log log2 sin cos tanh sigmoid erf "
    "relu relu6 gelu silu mish hardswish hardsigmoid hardtanh leaky_relu elu selu celu softplus clamp clamp_min "
    "clamp_max maximum minimum softmax log_softmax masked_fill where lerp addcmul addcdiv "
    # comparisons, rounding and logic: fvcore ignores these by default, so without a handle they would be neither
    # counted nor listed (a tracer's size arithmetic on them is skipped, see _is_shape_arithmetic)
    "eq ne lt le gt ge floor ceil round trunc frac sign remainder fmod floor_divide logical_and logical_or "
    "logical_not logical_xor bitwise_and bitwise_or bitwise_xor bitwise_not __and__ __or__ __xor__ isnan isinf"
).split()
_REDUCTIONS = "mean sum var std var_mean std_mean amax amin max min norm linalg_vector_norm logsumexp prod".split()


def is_elementwise_op(op: str) -> bool:
    """Whether an uncounted op ("aten::add_") is one that `count(elementwise=True)` counts."""
    name = op.removeprefix("aten::")
    return name in _POINTWISE or name.removesuffix("_") in _POINTWISE or name in _REDUCTIONS


def _is_shape_arithmetic(value: Any) -> bool:
    """The tracer records size arithmetic (h * d in a reshape) as ops on 0-dim integer tensors: not work."""
    shape = _shape(value)
    return shape == [] and value.type().scalarType() in ("Long", "Int", "Bool")


def _elementwise(op: str, name: str, use_input: bool, counting: bool) -> Handle:
    """numel of the output (or input, for reductions); when not counting, a call to list as uncounted."""

    def handle(inputs: list, outputs: list) -> Counter:
        if _is_shape_arithmetic(outputs[0]):
            return Counter()
        if not counting:
            return Counter({_UNCOUNTED + op: 1})
        return Counter({name: _numel(inputs[0] if use_input else outputs[0])})

    return handle


_UNCOUNTED = "uncounted:"  # key prefix of element-wise calls that were seen but not counted


def _elementwise_handles(counting: bool) -> dict[str, Handle]:
    table: dict[str, Handle] = {}
    for name in _POINTWISE:
        for op in (f"aten::{name}", f"aten::{name}_"):
            table[op] = _elementwise(op, name, use_input=False, counting=counting)
    for name in _REDUCTIONS:
        table[f"aten::{name}"] = _elementwise(f"aten::{name}", name, use_input=True, counting=counting)
    return table


# ------------------------------------------------------------------------------------------------- bytes moved
#
# The estimate is what a perfect, unfused execution of the traced graph would move between memory and the cores:
# each op reads each of its tensor inputs once and writes each of its outputs once, and nothing is reused from cache
# across ops. Views (view, permute, slice, expand, ...) move nothing; a copy moves its input and its output. So it is
# exact for a chain of memory-bound kernels and an upper bound where a runtime fuses ops (torch.compile), yet a
# fused kernel such as SDPA counts only its q, k, v (mask) and output: the attention matrix it keeps on chip is not
# traffic, which the explicit path (q @ kᵀ, softmax, @ v) does count. Cache reuse inside one op (a gemm re-reading
# tiles) is not counted either, and ops listed in `uncounted_ops` move bytes this estimate leaves out.

_BYTES = "bytes:"  # key prefix: bytes of input-dependent tensors an op reads or writes
_WEIGHT_BYTES = "wbytes:"  # key prefix: bytes of input-independent tensors (parameters, buffers, what they make)

# Data movement that may materialize a new tensor, by how its bytes are counted: "copy" reads the input(s) and
# writes the output; "gather" reads at most what it writes; "maybe_copy" copies only when layout or dtype changes.
_COPY_OPS: dict[str, str] = {
    **dict.fromkeys(
        (
            "cat stack clone copy_ constant_pad_nd pad reflection_pad1d reflection_pad2d reflection_pad3d "
            "replication_pad1d replication_pad2d replication_pad3d roll repeat tile flip pixel_shuffle pixel_unshuffle "
            "channel_shuffle im2col col2im repeat_interleave tril triu"
        ).split(),
        "copy",
    ),
    **dict.fromkeys("index index_select gather embedding take_along_dim".split(), "gather"),
    **dict.fromkeys("contiguous reshape flatten to type_as".split(), "maybe_copy"),
}

_OP_NAMES = {"convolution": "conv"}


def _op_name(op: str) -> str:
    """'aten::_convolution' -> 'conv', 'aten::add_' -> 'add', every SDPA variant -> 'sdpa'."""
    name = op.removeprefix("aten::").strip("_")
    return "sdpa" if "scaled_dot_product" in name else _OP_NAMES.get(name, name)


def _is_tensor_list(value: Any) -> bool:
    return value.node().kind() == "prim::ListConstruct" and "Tensor" in value.type().annotation_str


def _tensors(values: list) -> list:
    """The traced tensors among an op's inputs or outputs, list arguments (cat, einsum, index) unpacked; 0-dim
    tensors (scalars and the tracer's size arithmetic) left out."""
    found = []
    for v in values:
        if _is_tensor_list(v):
            found.extend(t for t in v.node().inputs() if _shape(t))
        elif _shape(v):
            found.append(v)
    return found


def _stored(value: Any) -> int:
    """Distinct elements behind a tensor: a broadcast (stride-0) dim is read once, not once per index."""
    sizes, strides = _shape(value), value.type().strides()
    if strides is None:
        return math.prod(sizes)
    return math.prod(n for n, s in zip(sizes, strides, strict=True) if s != 0 or n == 0)


def _is_contiguous(value: Any) -> bool:
    sizes, strides = _shape(value), value.type().strides()
    if strides is None:
        return True
    expected = 1
    for n, s in reversed(list(zip(sizes, strides, strict=True))):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _itemsize(value: Any) -> int:
    dtype = value.type().dtype()
    return dtype.itemsize if dtype is not None else 4


class _Dependence:
    """Which traced tensors depend on the forward's inputs (the first `n_inputs` graph inputs); the others are
    parameters, buffers, constants and tensors computed from them alone, whose bytes do not grow with the batch.

    Only tensor edges are followed: a parameter viewed to a shape read from the input (x.shape) stays a weight.
    """

    def __init__(self, n_inputs: int) -> None:
        self.n_inputs = n_inputs
        self.memo: dict[int, bool] = {}

    def __call__(self, value: Any) -> bool:
        stack = [value]
        while stack:  # iterative post-order: a model's graph is deeper than Python's recursion limit
            v = stack[-1]
            if v.unique() in self.memo:
                stack.pop()
                continue
            node = v.node()
            if node.kind() == "prim::Param":
                self.memo[v.unique()] = v.offset() < self.n_inputs
                stack.pop()
                continue
            pending = [u for u in self._sources(node) if u.unique() not in self.memo]
            if pending:
                stack.extend(pending)
                continue
            self.memo[v.unique()] = any(self.memo[u.unique()] for u in self._sources(node))
            stack.pop()
        return self.memo[value.unique()]

    @staticmethod
    def _sources(node: Any) -> list:
        # tensors, and lists or tuples of them (cat's input, unbind's output before prim::ListUnpack)
        return [u for u in node.inputs() if "Tensor" in u.type().annotation_str or u.type().kind() == "TensorType"]


def _bytes_moved(op: str, inputs: list, outputs: list, depends: _Dependence) -> Counter:
    """Bytes one op reads and writes, split by whether the tensor depends on the forward's inputs."""
    name = op.removeprefix("aten::").rstrip("_")
    convention = _COPY_OPS.get(name)
    reads, writes = _tensors(inputs), _tensors(outputs)
    if convention == "maybe_copy":
        src, out = reads[0], writes[0]
        copies = out.type().dtype() != src.type().dtype() or (not _is_contiguous(src) and _is_contiguous(out))
        if not copies:
            return Counter()
    if name == "copy":  # dst.copy_(src) reads only src
        reads = reads[1:]
    moved = [(v, _stored(v) * _itemsize(v)) for v in reads + writes]
    if convention == "gather":  # a lookup reads (at most) the rows it writes, not the whole table
        table, cap = reads[0], sum(_stored(w) * _itemsize(w) for w in writes)
        moved = [(v, min(n, cap) if v is table else n) for v, n in moved]
    key = _op_name(op)
    counts: Counter = Counter()
    for v, n in moved:
        counts[(_BYTES if depends(v) else _WEIGHT_BYTES) + key] += n
    return counts


def _copy_handles() -> dict[str, Handle]:
    """Data-movement ops that may copy: no operations, only the bytes added by the tagging wrapper."""
    return {f"aten::{op}": (lambda inputs, outputs: Counter()) for op in _COPY_OPS}


# ------------------------------------------------------------------------------------------------------ the result


@dataclass(frozen=True)
class Counts:
    """Parameter and operation counts of one forward (batch and input size as given), each named with its unit.

    Attributes:
        params: parameters (shared ones once).
        params_trainable: parameters with requires_grad.
        macs: fused multiply-adds, fvcore's convention: gemm + norm + interp categories.
        macs_by_category: macs split into "gemm" (linear, matmul, conv, attention), "norm" and "interp".
        macs_by_operator: macs per operator ("linear", "conv", "sdpa", "layer_norm", ...).
        macs_by_module: macs per module name at every depth ("" is the whole module).
        pool_ops: elements read by pooling ops (not in macs).
        pool_ops_by_operator: pool_ops per operator.
        elementwise_ops: element-wise and reduction ops (None unless asked for; never in macs).
        elementwise_ops_by_operator: elementwise_ops per operator (None unless asked for).
        uncounted_ops: executed ops that carry work but that no handle counts, with how often they ran
            (shape-only ops such as view or permute are not listed).
        crosscheck_flops: FlopCounterMode's total, in FLOPs (None when the cross-check was off).
        crosscheck_rel_diff: (crosscheck_flops - 2 x gemm MACs) / (2 x gemm MACs); None when off.
        bytes_moved_est: estimated bytes the forward moves to and from memory: every op reads its tensor inputs
            (weights included) and writes its outputs once, no cache reuse across ops, views free, copies counted;
            a fused kernel (SDPA) counts only its operands and output. See the "bytes moved" section above.
        bytes_weights_est: the part of bytes_moved_est that does not depend on the input (parameters, buffers and
            tensors computed from them alone): read once per forward whatever the batch.
        bytes_by_operator: bytes_moved_est per operator ("linear", "sdpa", "contiguous", "add", ...).
    """

    params: int
    params_trainable: int
    macs: int
    macs_by_category: dict[str, int]
    macs_by_operator: dict[str, int]
    macs_by_module: dict[str, int]
    pool_ops: int
    pool_ops_by_operator: dict[str, int]
    elementwise_ops: int | None = None
    elementwise_ops_by_operator: dict[str, int] | None = None
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    crosscheck_flops: int | None = None
    crosscheck_rel_diff: float | None = None
    bytes_moved_est: int | None = None
    bytes_weights_est: int | None = None
    bytes_by_operator: dict[str, int] | None = None

    @property
    def flops(self) -> int:
        """Floating-point operations: 2 per MAC."""
        return 2 * self.macs

    def summary(self) -> dict[str, Any]:
        """The headline numbers, flat and unit-named (one row of a table)."""
        return {
            "params": self.params,
            "params_trainable": self.params_trainable,
            "macs": self.macs,
            "flops": self.flops,
            "pool_ops": self.pool_ops,
            "elementwise_ops": self.elementwise_ops,
            "crosscheck_rel_diff": self.crosscheck_rel_diff,
            "bytes_moved_est": self.bytes_moved_est,
            "bytes_weights_est": self.bytes_weights_est,
        }

    def details(self) -> dict[str, Any]:
        """The breakdowns (JSON-friendly)."""
        return {
            "macs_by_category": self.macs_by_category,
            "macs_by_operator": self.macs_by_operator,
            "macs_by_module": self.macs_by_module,
            "pool_ops_by_operator": self.pool_ops_by_operator,
            "elementwise_ops_by_operator": self.elementwise_ops_by_operator,
            "uncounted_ops": self.uncounted_ops,
            "crosscheck_flops": self.crosscheck_flops,
            "bytes_by_operator": self.bytes_by_operator,
        }


# --------------------------------------------------------------------------------------------------------- count


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Count the inference forward (eval batch norm, no dropout); restore each module's mode afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _handle_table(elementwise: bool, n_inputs: int = 0) -> tuple[dict[str, Handle], dict[str, str], Counter]:
    """(op -> handle, counted key -> category, zero-counted gemm ops filled while counting).

    Every handle also adds the op's bytes moved (`_bytes_moved`); `n_inputs` is the number of traced forward inputs
    (the first graph inputs), which tells activations from weights.
    """
    handles: dict[str, Handle] = {}
    category: dict[str, str] = {}
    zeros: Counter = Counter()
    depends = _Dependence(n_inputs)

    def tag(op: str, cat: str, handle: Handle, gemm_key: str | None = None) -> Handle:
        """`handle`, adding the op's bytes and filing each key it counts under a category; a gemm op's other keys
        (SDPA's softmax, say) are element-wise."""

        def tagged(inputs: list, outputs: list) -> Counter:
            counts = handle(inputs, outputs)
            counts.update(_bytes_moved(op, inputs, outputs, depends))
            for key in counts:
                if key.startswith((_BYTES, _WEIGHT_BYTES)):
                    continue
                if key.startswith(_UNCOUNTED):
                    category.setdefault(key, "uncounted")
                else:
                    category.setdefault(key, cat if cat != "gemm" or key == gemm_key else "elementwise")
            if cat == "gemm" and not counts[gemm_key] and _numel(outputs[0]):
                if not (op in _LIST_OPERANDS and _list_operands(inputs, _LIST_OPERANDS[op]) < 2):
                    zeros[op] += 1
            return counts

        return tagged

    for op, h in _elementwise_handles(counting=elementwise).items():
        handles[op] = tag(op, "elementwise", h)
    for op, (cat, h) in _non_gemm_handles().items():
        handles[op] = tag(op, cat, h)
    for op, (key, make) in _GEMM_HANDLES.items():
        handles[op] = tag(op, "gemm", _gemm_handle(key, make, elementwise), key)
    for op, h in _copy_handles().items():
        handles[op] = tag(op, "copy", h)
    return handles, category, zeros


def count(
    module: nn.Module,
    args: Any,
    *,
    elementwise: bool = False,
    cross_check: bool = True,
    strict: bool = False,
) -> Counts:
    """Count parameters and the MACs of one inference forward `module(*args)`.

    Args:
        module: any nn.Module, on a real device (torch 2.13's tracer cannot run convolutions on `meta`).
        args: the forward's positional arguments (a tuple, or one tensor); non-tensors such as a block's (H, W)
            are bound, so the count is for exactly this input.
        elementwise: also count element-wise and reduction ops, in their own field.
        cross_check: run the forward a second time under torch's FlopCounterMode and report the disagreement.
        strict: raise CountError when the cross-check disagrees by more than CROSSCHECK_RTOL.

    Raises:
        CountError: an executed matmul-class or attention op was not counted or counted as zero; or, with
            `strict`, the cross-check disagrees.
    """
    import torch

    with warnings.catch_warnings():  # fvcore.nn scripts its losses on import, which torch now deprecates
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

    from effscope.profile.target import Bound

    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    bound, tensors = Bound(module, args), Bound.tensors(args)
    handles, category, zeros = _handle_table(elementwise, n_inputs=len(tensors))
    with _eval_mode(module), torch.no_grad(), _quiet_fvcore():
        analysis = FlopCountAnalysis(bound, tensors).clear_op_handles().set_op_handle(**handles)
        analysis.set_op_handle(**dict.fromkeys(_DATA_MOVEMENT))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        per_module = analysis.by_module_and_operator()
        uncounted = Counter(analysis.unsupported_ops())

    missed = {op: n for op, n in uncounted.items() if _MATMUL_CLASS.search(op)}
    if missed or zeros:
        what = ", ".join(f"{op} x{n}" for op, n in {**missed, **zeros}.items())
        raise CountError(
            f"matmul-class or attention ops ran but were counted as zero ({what}); every such op needs a handle "
            "in effscope/profile/counting.py (_GEMM_HANDLES) that returns its MACs"
        )

    by_cat: dict[str, dict[str, int]] = {cat: {} for cat in ("gemm", "norm", "interp", "pool", "elementwise")}
    bytes_by_operator: Counter = Counter()
    weight_bytes = 0
    for key, n in sorted(per_module[""].items()):
        if key.startswith((_BYTES, _WEIGHT_BYTES)):
            bytes_by_operator[key.partition(":")[2]] += int(n)
            weight_bytes += int(n) if key.startswith(_WEIGHT_BYTES) else 0
        elif category[key] == "uncounted":
            uncounted[key.removeprefix(_UNCOUNTED)] += int(n)
        else:
            by_cat[category[key]][key] = int(n)
    mac_keys = {k for cat in ("gemm", "norm", "interp") for k in by_cat[cat]}
    macs_by_module = {}
    for name, ops in per_module.items():
        inner = Bound.inner_name(name)
        if inner is not None:
            macs_by_module[inner] = int(sum(n for k, n in ops.items() if k in mac_keys))

    macs_by_category = {cat: sum(by_cat[cat].values()) for cat in ("gemm", "norm", "interp")}
    result_flops = rel = None
    if cross_check:
        result_flops = _flop_counter_total(bound, tensors)
        expected = 2 * macs_by_category["gemm"]
        if result_flops == expected:
            rel = 0.0
        else:
            rel = (result_flops - expected) / expected if expected else math.inf
        if strict and abs(rel) > CROSSCHECK_RTOL:
            raise CountError(
                f"the counters disagree: FlopCounterMode counts {result_flops} FLOPs, fvcore with effscope's "
                f"handles 2 x {macs_by_category['gemm']} gemm MACs = {expected} (relative difference {rel:+.3g}); "
                "an op is missing a formula in one of them"
            )

    params = {id(p): p for p in module.parameters()}.values()
    return Counts(
        params=sum(p.numel() for p in params),
        params_trainable=sum(p.numel() for p in params if p.requires_grad),
        macs=sum(macs_by_category.values()),
        macs_by_category=macs_by_category,
        macs_by_operator={k: n for cat in ("gemm", "norm", "interp") for k, n in by_cat[cat].items()},
        macs_by_module=macs_by_module,
        pool_ops=sum(by_cat["pool"].values()),
        pool_ops_by_operator=by_cat["pool"],
        elementwise_ops=sum(by_cat["elementwise"].values()) if elementwise else None,
        elementwise_ops_by_operator=by_cat["elementwise"] if elementwise else None,
        uncounted_ops=dict(uncounted),
        crosscheck_flops=result_flops,
        crosscheck_rel_diff=rel,
        bytes_moved_est=sum(bytes_by_operator.values()),
        bytes_weights_est=weight_bytes,
        bytes_by_operator=dict(bytes_by_operator.most_common()),
    )


@contextmanager
def _quiet_fvcore() -> Iterator[None]:
    """fvcore logs every unsupported op; effscope reports them itself (Counts.uncounted_ops)."""
    logger = logging.getLogger("fvcore.nn.jit_analysis")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------------ the cross-check


def _sdpa_flop(
    query: torch.Size,
    key: torch.Size,
    value: torch.Size,
    *args,
    out_shape: tuple[torch.Size, ...] | None = None,
    **kwargs,
) -> int:
    """FLOPs of CPU flash attention (FlopCounterMode has no formula for it): 2 x the MACs of the two products."""
    return 2 * math.prod(query[:-2]) * query[-2] * key[-2] * (query[-1] + value[-1])


def _mv_flop(a: torch.Size, b: torch.Size, *args, out_shape: torch.Size | None = None, **kwargs) -> int:
    return 2 * math.prod(a)


def _addmv_flop(
    bias: torch.Size, a: torch.Size, b: torch.Size, *args, out_shape: torch.Size | None = None, **kwargs
) -> int:
    return 2 * math.prod(a)


def _addbmm_flop(
    bias: torch.Size, a: torch.Size, b: torch.Size, *args, out_shape: torch.Size | None = None, **kwargs
) -> int:
    return 2 * math.prod(a) * b[-1]


def _trilinear_flop(
    i1: torch.Size,
    i2: torch.Size,
    i3: torch.Size,
    expand1: Sequence[int],
    expand2: Sequence[int],
    expand3: Sequence[int],
    sumdim: Sequence[int],
    *args,
    out_shape: torch.Size | None = None,
    **kwargs,
) -> int:
    """FLOPs of `_trilinear` (what bilinear runs; FlopCounterMode has no formula for it): one product of three
    terms per point of the three inputs' broadcast space, each input unsqueezed at its expand dims; as 2 x MACs."""
    shapes = []
    for shape, expand in ((i1, expand1), (i2, expand2), (i3, expand3)):
        dims = list(shape)
        for d in sorted(expand):
            dims.insert(d, 1)
        shapes.append(dims)
    return 2 * math.prod(max(sizes) for sizes in zip(*shapes, strict=True))


def _cdist_flop(x1: torch.Size, x2: torch.Size, *args, out_shape: torch.Size | None = None, **kwargs) -> int:
    """cdist's kernels, _cdist_forward and _euclidean_dist (p=2 through a matmul): effscope's convention, one MAC per
    (pair, feature), not the (M + 2)-wide matmul and the squared norms that _euclidean_dist runs."""
    return 2 * math.prod(out_shape) * x1[-1]


def _flop_counter_total(bound: nn.Module, tensors: tuple) -> int:
    """torch's own count (real FLOPs) of the same forward, with the formulas it lacks added.

    outer (ger) and kron never reach FlopCounterMode: they decompose into a broadcast mul (no FLOPs to it) before
    its dispatch mode runs, so a function mode counts them as they are called, 2 x output elements, and adds them
    (one called from inside another Python-level torch function escapes it: a disagreement, not a silent miss).
    linalg_multi_dot and chain_matmul need nothing: they decompose into the mm calls torch runs, in its order.
    """
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {
        aten._trilinear: _trilinear_flop,
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flop,
        aten.mv: _mv_flop,
        aten.dot: _mv_flop,
        aten.vdot: _mv_flop,
        aten.addmv: _addmv_flop,
        aten.addbmm: _addbmm_flop,
        aten._cdist_forward: _cdist_flop,
        aten._euclidean_dist: _cdist_flop,
    }
    per_output_element = (torch.outer, torch.ger, torch.kron, torch.Tensor.outer, torch.Tensor.ger, torch.Tensor.kron)
    composite_flops = 0

    class Composites(TorchFunctionMode):
        def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
            nonlocal composite_flops
            out = func(*args, **(kwargs or {}))
            if func in per_output_element:
                composite_flops += 2 * out.numel()
            return out

    with (
        _eval_mode(bound),
        torch.no_grad(),
        FlopCounterMode(display=False, custom_mapping=mapping) as counter,
        Composites(),
    ):
        bound(*tensors)
    return int(counter.get_total_flops()) + composite_flops
