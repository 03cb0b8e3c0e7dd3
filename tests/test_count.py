"""The counter against analytic ground truth, its failure modes, its cross-check, and the zoo's reference MACs."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effscope.blocks._layers import merge_heads, split_heads
from effscope.blocks.attention import attend, attention_impl
from effscope.errors import EffscopeError
from effscope.profile.counting import (
    _GEMM_HANDLES,
    _MATMUL_CLASS,
    CountError,
    Counts,
    count,
    einsum_macs,
    multi_dot_macs,
)
from effscope.spec import blocks, models


class Fn(nn.Module):
    """A module whose forward is `fn(*args)`, for counting single ops."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def macs_of(fn, *args, **kw) -> Counts:
    return count(Fn(fn), args, strict=True, **kw)


# ------------------------------------------------------------------------------------------- analytic ground truth


def test_linear():
    m = nn.Linear(7, 3)
    c = count(m, torch.randn(2, 5, 7), strict=True)
    assert c.macs == 2 * 5 * 7 * 3 and c.flops == 2 * c.macs
    assert c.params == c.params_trainable == 7 * 3 + 3
    assert c.macs_by_operator == {"linear": 2 * 5 * 7 * 3} and c.crosscheck_flops == 2 * c.macs


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_conv2d_grouped_and_strided(groups):
    m = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=groups)
    c = count(m, torch.randn(2, 4, 9, 9), strict=True)
    assert c.macs == 2 * 8 * (4 // groups) * 9 * 5 * 5
    assert c.macs_by_operator == {"conv": c.macs}


def test_conv_transpose():
    m = nn.ConvTranspose2d(4, 6, 2, stride=2)
    c = count(m, torch.randn(1, 4, 5, 5), strict=True)
    assert c.macs == 1 * 4 * 6 * 2 * 2 * 5 * 5  # each input pixel scatters a 2x2 kernel to 6 channels


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((2, 3, 4, 5), (2, 3, 5, 6), 2 * 3 * 4 * 6 * 5),
        ((3, 1, 4, 5), (2, 5, 6), 3 * 2 * 4 * 6 * 5),  # broadcast batch dims
        ((4, 5), (2, 3, 5, 6), 2 * 3 * 4 * 6 * 5),  # fvcore's own handle would count 4*5*6 here
        ((4, 5), (5,), 4 * 5),  # mv
        ((5,), (5, 6), 5 * 6),
        ((5,), (5,), 5),  # dot
    ],
)
def test_matmul_exact_under_broadcasting(a, b, expected):
    c = macs_of(torch.matmul, torch.randn(a), torch.randn(b))
    assert c.macs == expected


def test_bmm_baddbmm_addmm():
    a, b = torch.randn(3, 4, 5), torch.randn(3, 5, 6)
    assert macs_of(torch.bmm, a, b).macs == 3 * 4 * 5 * 6
    assert macs_of(lambda x, y: torch.baddbmm(torch.randn(3, 4, 6), x, y), a, b).macs == 3 * 4 * 5 * 6
    assert macs_of(lambda x, y: torch.addbmm(torch.randn(4, 6), x, y), a, b).macs == 3 * 4 * 5 * 6
    assert macs_of(lambda x, y: torch.addmm(torch.randn(4, 6), x, y), a[0], b[0]).macs == 4 * 5 * 6


@pytest.mark.parametrize(
    ("equation", "shapes", "expected"),
    [
        ("bhnd,bhmd->bhnm", [(2, 3, 10, 8), (2, 3, 12, 8)], 2 * 3 * 10 * 12 * 8),
        ("bhnm,bhmd->bhnd", [(2, 3, 10, 12), (2, 3, 12, 8)], 2 * 3 * 10 * 12 * 8),
        ("bchw,bdhw->bcd", [(2, 4, 9, 9), (2, 5, 9, 9)], 2 * 4 * 5 * 81),
        ("...ij,...jk->...ik", [(2, 3, 4, 5), (5, 6)], 2 * 3 * 4 * 5 * 6),
        ("ij,jk,kl->il", [(4, 5), (5, 6), (6, 7)], 4 * 5 * 6 + 4 * 6 * 7),  # left to right: (AB)C
        ("ij,jk", [(4, 5), (5, 6)], 4 * 5 * 6),  # implicit output
        ("ij->ji", [(4, 5)], 0),  # a transpose is not a product
    ],
)
def test_einsum_exact(equation, shapes, expected):
    assert einsum_macs(equation, shapes) == expected
    c = macs_of(lambda *ops: torch.einsum(equation, *ops), *(torch.randn(s) for s in shapes))
    assert c.macs == expected


def test_einsum_beats_fvcore_three_digit_parse():
    from fvcore.nn import FlopCountAnalysis

    q, k = torch.randn(1, 3, 1001, 7), torch.randn(1, 3, 13, 7)
    exact = 3 * 1001 * 13 * 7  # 273,273: numpy's path printout rounds it to 4 significant digits
    fn = Fn(lambda a, b: torch.einsum("bhnd,bhmd->bhnm", a, b))
    assert FlopCountAnalysis(fn, (q, k)).unsupported_ops_warnings(False).total() != exact
    assert count(fn, (q, k), strict=True).macs == exact


def _sdpa_macs(b, h, nq, nk, d, dv):
    return b * h * nq * nk * (d + dv)


@pytest.mark.parametrize("mask", [False, True])
def test_sdpa_analytic_with_and_without_bias(mask):
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 12, 8), torch.randn(2, 3, 12, 5)
    bias = torch.randn(10, 12) if mask else None
    c = macs_of(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=bias), q, k, v, elementwise=True)
    assert c.macs == c.macs_by_operator["sdpa"] == _sdpa_macs(2, 3, 10, 12, 8, 5)
    logits = 2 * 3 * 10 * 12
    expected = Counter({"mul": q.numel(), "softmax": logits, "add": logits if mask else 0})
    assert c.elementwise_ops_by_operator == {k: n for k, n in expected.items() if n}
    assert c.crosscheck_rel_diff == 0.0  # CPU flash attention needs effscope's formula in FlopCounterMode


@pytest.mark.parametrize("shape", [(6, 10, 8), (2, 2, 3, 10, 8)])
def test_sdpa_any_batch_dims(shape):
    q = torch.randn(shape)
    c = macs_of(lambda q: F.scaled_dot_product_attention(q, q, q), q)
    batch = q.numel() // (10 * 8)
    assert c.macs == batch * 10 * 10 * (8 + 8)


def test_pools_are_counted_apart_from_macs():
    x = torch.randn(1, 3, 8, 8)
    c = macs_of(lambda x: F.avg_pool2d(x, 2), x)
    assert (c.macs, c.pool_ops, c.pool_ops_by_operator) == (0, x.numel(), {"avg_pool2d": x.numel()})
    assert macs_of(lambda x: F.max_pool2d(x, 3, stride=1, padding=1), x).pool_ops == x.numel() * 9
    assert macs_of(lambda x: F.max_pool2d(x, 2, return_indices=True)[0], x).pool_ops == x.numel()
    x5 = torch.randn(1, 3, 4, 8, 8)
    assert macs_of(lambda x: F.max_pool3d(x, 2), x5).pool_ops == x5.numel()
    assert macs_of(lambda x: F.adaptive_avg_pool2d(x, 1), x).pool_ops == x.numel()
    # 8 -> 3 adaptive windows are [0,3), [2,6), [5,8): 3 + 4 + 3 = 10 reads per dim
    assert macs_of(lambda x: F.adaptive_max_pool2d(x, 3), x).pool_ops == 3 * 10 * 10
    assert macs_of(lambda x: F.adaptive_avg_pool1d(x.flatten(2), 1), x).pool_ops == x.numel()
    # a kernel computed from the input's shape is not a trace constant: each input element read once
    assert macs_of(lambda x: F.avg_pool2d(x, (x.shape[-2] // 2, x.shape[-1] // 2)), x).pool_ops == x.numel()


@pytest.mark.parametrize(("mode", "taps"), [("bilinear", 4), ("nearest", 1), ("bicubic", 16)])
def test_grid_sample_taps(mode, taps):
    x, grid = torch.randn(2, 3, 8, 8), torch.rand(2, 5, 6, 2) * 2 - 1
    c = macs_of(lambda x, g: F.grid_sample(x, g, mode=mode, align_corners=False), x, grid)
    assert c.macs == c.macs_by_category["interp"] == 2 * 3 * 5 * 6 * taps


@pytest.mark.parametrize(("mode", "taps"), [("nearest", 1), ("bilinear", 4), ("bicubic", 16)])
def test_upsample_taps(mode, taps):
    x = torch.randn(1, 3, 4, 5)
    c = macs_of(lambda x: F.interpolate(x, scale_factor=2, mode=mode), x)
    assert c.macs == c.macs_by_category["interp"] == 3 * 8 * 10 * taps


def test_norms_follow_fvcore_and_stay_out_of_the_crosscheck():
    x = torch.randn(2, 5, 7)
    c = count(nn.LayerNorm(7), x, strict=True)
    assert c.macs == c.macs_by_category["norm"] == 5 * x.numel()
    assert c.crosscheck_flops == 0 and c.crosscheck_rel_diff == 0.0
    bn = nn.BatchNorm2d(3).train()
    assert count(bn, torch.randn(2, 3, 4, 4)).macs == 2 * 2 * 3 * 4 * 4  # counted in eval mode
    assert bn.training  # ... and the mode is restored


def test_elementwise_is_optional_and_separate():
    x = torch.randn(4, 6)
    fn = Fn(lambda x: F.gelu(x).softmax(-1) + x * 2 - x.mean(-1, keepdim=True))
    off = count(fn, x)
    assert off.elementwise_ops is None and off.macs == 0
    assert off.uncounted_ops == {
        "aten::gelu": 1,
        "aten::softmax": 1,
        "aten::add": 1,
        "aten::mul": 1,
        "aten::mean": 1,
        "aten::sub": 1,
    }
    on = count(fn, x, elementwise=True)
    assert on.macs == 0 and on.uncounted_ops == {}
    assert on.elementwise_ops_by_operator == {"gelu": 24, "softmax": 24, "add": 24, "mul": 24, "mean": 24, "sub": 24}
    assert on.elementwise_ops == 6 * 24


# ------------------------------------------------------------------------------ SDPA path == explicit path


def test_vit_block_sdpa_and_explicit_paths_count_the_same():
    m = blocks().get("vit").build()
    args = m.example_args()
    with attention_impl("sdpa"):
        fast = count(m, args, elementwise=True, strict=True)
    with attention_impl("explicit"):
        slow = count(m, args, elementwise=True, strict=True)
    assert fast.macs == slow.macs > 0
    assert fast.macs_by_module == slow.macs_by_module
    assert fast.macs_by_operator.pop("sdpa") == slow.macs_by_operator.pop("matmul")
    assert fast.macs_by_operator == slow.macs_by_operator
    assert fast.elementwise_ops_by_operator == slow.elementwise_ops_by_operator


class ToyCrossAttention(nn.Module):
    """Queries on all tokens, keys/values on a pooled set, d_v != d_qk, a logits bias: attend's general case."""

    def __init__(self, dim=24, heads=2, d_qk=8, d_v=6):
        super().__init__()
        self.heads, self.scale = heads, d_qk**-0.5
        self.q = nn.Linear(dim, heads * d_qk)
        self.k = nn.Linear(dim, heads * d_qk)
        self.v = nn.Linear(dim, heads * d_v)
        self.proj = nn.Linear(heads * d_v, dim)
        self.bias = nn.Parameter(torch.zeros(heads, 1, 1))

    def forward(self, x, hw):
        kv = F.avg_pool1d(x.transpose(1, 2), 2).transpose(1, 2)  # (B, N/2, dim)
        q, k, v = (
            split_heads(self.q(x), self.heads),
            split_heads(self.k(kv), self.heads),
            split_heads(self.v(kv), self.heads),
        )
        return self.proj(merge_heads(attend(q, k, v, scale=self.scale, bias=self.bias)))


def test_toy_attention_paths_count_the_same():
    m, x = ToyCrossAttention(), torch.randn(3, 20, 24)
    with attention_impl("sdpa"):
        fast = count(m, (x, (4, 5)), elementwise=True, strict=True)
    with attention_impl("explicit"):
        slow = count(m, (x, (4, 5)), elementwise=True, strict=True)
    assert fast.macs_by_operator["sdpa"] == 3 * 2 * 20 * 10 * (8 + 6)
    assert fast.macs == slow.macs and fast.macs_by_module == slow.macs_by_module
    assert fast.elementwise_ops_by_operator == slow.elementwise_ops_by_operator
    assert fast.pool_ops == slow.pool_ops == x.numel()


def test_uncounted_ops_do_not_depend_on_the_attention_core():
    """Without --elementwise, the softmax and scaling a fused SDPA runs are listed as the explicit path lists them."""
    m, x = ToyCrossAttention(), torch.randn(3, 20, 24)
    with attention_impl("sdpa"):
        fast = count(m, (x, (4, 5)))
    with attention_impl("explicit"):
        slow = count(m, (x, (4, 5)))
    assert fast.uncounted_ops == slow.uncounted_ops and slow.uncounted_ops["aten::softmax"] == 1


class Comparisons(nn.Module):
    def forward(self, x):
        w = (x > 0).float() * x
        return torch.floor(w) + torch.remainder(w, 2) + (w == 1).float()


def test_comparisons_and_rounding_are_counted_or_listed_never_silent():
    """fvcore ignores comparisons, floor and remainder by default: effscope lists or counts them like add."""
    x = torch.randn(2, 8, 4)
    listed = count(Comparisons(), x).uncounted_ops
    assert {op: listed[op] for op in ("aten::gt", "aten::eq", "aten::floor", "aten::remainder")} == dict.fromkeys(
        ("aten::gt", "aten::eq", "aten::floor", "aten::remainder"), 1
    )
    counted = count(Comparisons(), x, elementwise=True)
    assert counted.uncounted_ops == {} and counted.elementwise_ops_by_operator["gt"] == x.numel()


def test_bilinear_is_cross_checked_without_a_false_alarm():
    m, x = nn.Bilinear(4, 8, 6), torch.randn(10, 8)
    c = count(_TwoInputs(m), x, strict=True)
    assert c.macs_by_operator["bilinear"] == 10 * 6 * 4 * 8 and c.crosscheck_rel_diff == 0.0


class _TwoInputs(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x[..., :4], x)


# --------------------------------------------------- products without a sum, distances, chains (outer, cdist, ...)


@pytest.mark.parametrize(
    ("fn", "shapes", "key", "expected"),
    [
        (torch.outer, [(5,), (7,)], "outer", 5 * 7),
        (torch.ger, [(5,), (7,)], "outer", 5 * 7),  # traced as aten::outer
        (lambda a, b: a.outer(b), [(5,), (7,)], "outer", 5 * 7),
        (torch.kron, [(2, 3), (4, 5)], "kron", 2 * 3 * 4 * 5),
        (lambda a, b: a.kron(b), [(2, 3), (4, 5, 6)], "kron", 2 * 3 * 4 * 5 * 6),  # output (4, 10, 18)
    ],
)
def test_outer_and_kron_one_mac_per_output_element(fn, shapes, key, expected):
    c = macs_of(fn, *(torch.randn(s) for s in shapes))  # strict: FlopCounterMode agrees
    assert c.macs == c.macs_by_category["gemm"] == expected and c.macs_by_operator == {key: expected}
    assert c.crosscheck_flops == 2 * expected and c.crosscheck_rel_diff == 0.0


@pytest.mark.parametrize(
    ("x1", "x2", "kw"),
    [
        ((2, 10, 8), (2, 12, 8), {}),  # P, R <= 25: the direct kernel (_cdist_forward)
        ((2, 30, 8), (2, 40, 8), {}),  # P > 25: the matmul kernel (_euclidean_dist)
        ((2, 10, 8), (2, 12, 8), {"compute_mode": "use_mm_for_euclid_dist"}),
        ((2, 30, 8), (2, 40, 8), {"compute_mode": "donot_use_mm_for_euclid_dist"}),
        ((1, 30, 8), (3, 40, 8), {}),  # broadcast batch
        ((30, 8), (40, 8), {}),  # no batch
        ((2, 3, 10, 8), (2, 3, 12, 8), {}),  # two batch dims
        ((2, 30, 8), (2, 40, 8), {"p": 1.0}),
        ((2, 30, 8), (2, 40, 8), {"p": 3.0}),
        ((2, 30, 8), (2, 40, 8), {"p": float("inf")}),
    ],
)
def test_cdist_one_mac_per_pair_and_feature(x1, x2, kw):
    c = macs_of(lambda a, b: torch.cdist(a, b, **kw), torch.randn(x1), torch.randn(x2))
    batch = max(torch.Size(x1[:-2]).numel(), torch.Size(x2[:-2]).numel())
    expected = batch * x1[-2] * x2[-2] * x1[-1]  # B x P x R x M, whichever kernel ran
    assert c.macs == c.macs_by_operator["cdist"] == expected and c.crosscheck_rel_diff == 0.0


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ([(4, 5), (5, 6)], 4 * 5 * 6),
        ([(10, 20), (20, 30), (30, 5)], 20 * 30 * 5 + 10 * 20 * 5),  # A(BC): 4,000, not (AB)C's 7,500
        ([(5, 30), (30, 20), (20, 10)], 5 * 30 * 20 + 5 * 20 * 10),  # (AB)C: 4,000, not A(BC)'s 7,500
        ([(20,), (20, 30), (30,)], 20 * 30 + 20),  # 1-D ends: a row and a column vector
        # four matrices (torch's dynamic program): (A (B C)) D, 9,375 MACs; left to right would be 19,500
        ([(30, 35), (35, 15), (15, 5), (5, 10)], 35 * 15 * 5 + 30 * 35 * 5 + 30 * 5 * 10),
    ],
)
def test_multi_dot_costs_the_order_torch_runs(shapes, expected):
    assert multi_dot_macs(shapes) == expected
    mats = [torch.randn(s) for s in shapes]
    c = macs_of(lambda *m: torch.linalg.multi_dot(list(m)), *mats)  # FlopCounterMode sees torch's mm calls
    assert c.macs == c.macs_by_operator["multi_dot"] == expected and c.crosscheck_rel_diff == 0.0
    if all(len(s) == 2 for s in shapes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # chain_matmul is deprecated
            assert macs_of(torch.chain_matmul, *mats).macs_by_operator == {"multi_dot": expected}


def test_chain_matmul_of_one_matrix_is_a_copy_not_a_missed_product():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        c = macs_of(torch.chain_matmul, torch.randn(4, 5))
    assert c.macs == 0 and c.crosscheck_rel_diff == 0.0


class _Prototypes(nn.Module):
    """Patch features against learned prototypes with cdist, then outer, kron and multi_dot: once a CountError."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.prototypes = nn.Parameter(torch.randn(10, 16))
        self.mix = nn.Parameter(torch.randn(2, 2))

    def forward(self, x):
        f = self.embed(x).flatten(2).transpose(1, 2)  # (B, 64, 16)
        d = torch.cdist(f, self.prototypes.expand(f.shape[0], -1, -1))  # (B, 64, 10): the matmul kernel
        w = torch.outer(self.prototypes.mean(1), self.prototypes.mean(0))  # (10, 16)
        k = torch.kron(self.mix, torch.eye(8))  # (16, 16)
        return torch.linalg.multi_dot([d.flatten(0, 1), w, k])  # (B*64, 16)


def test_a_module_with_cdist_outer_kron_and_multi_dot_is_counted():
    m = _Prototypes()
    c = count(m, torch.randn(1, 3, 32, 32), strict=True)
    assert c.params == 16 * 3 * 4 * 4 + 16 + 10 * 16 + 4
    conv = 16 * 48 * 64
    # multi_dot (64 x 10)(10 x 16)(16 x 16): (dw)k = 64*10*16 + 64*16*16, d(wk) = 10*16*16 + 64*10*16: the latter
    chain = 10 * 16 * 16 + 64 * 10 * 16
    expected = {"conv": conv, "cdist": 64 * 10 * 16, "outer": 10 * 16, "kron": 4 * 64, "multi_dot": chain}
    assert c.macs_by_operator == expected and c.macs == sum(expected.values())
    assert c.crosscheck_rel_diff == 0.0


# ------------------------------------------------------------------------------ reporting and failure modes


def test_non_tensor_args_are_bound_and_module_names_are_clean():
    m = blocks().get("vit").build()
    with attention_impl("sdpa"):
        c = count(m, m.example_args(1, (7, 7)))
    assert c.macs_by_module[""] == c.macs
    assert c.macs_by_module["attn.qkv"] == 49 * 128 * 384
    assert not any(name.startswith("inner") for name in c.macs_by_module)
    # not merge_heads' traced size arithmetic h * d; the fused SDPA's scaling and softmax as the explicit path's
    assert c.uncounted_ops == {"aten::add": 2, "aten::gelu": 1, "aten::mul": 1, "aten::softmax": 1}
    assert set(c.summary()) >= {"params", "macs", "flops", "pool_ops", "elementwise_ops", "crosscheck_rel_diff"}


class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)

    def forward(self, inputs: dict, scale: float) -> dict:
        x, (y, hw) = inputs["x"], inputs["pair"]
        return {"out": self.proj(x + y) * scale, "hw": hw}


def test_tensors_inside_nested_arguments_are_traced_and_constants_bound():
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    c = count(_Nested(), ({"x": x, "pair": [y, (5, 5)]}, 2.0), strict=True)
    assert c.macs == c.macs_by_module["proj"] == 2 * 4 * 3


def test_importing_the_counter_is_cheap():
    code = "import sys, effscope.profile as p; assert callable(p.count); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trainable_params():
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    m[0].requires_grad_(False)
    c = count(m, torch.randn(1, 4))
    assert (c.params, c.params_trainable) == (20 + 10, 10)


def test_missing_handle_for_a_matmul_class_op_raises(monkeypatch):
    monkeypatch.delitem(_GEMM_HANDLES, "aten::scaled_dot_product_attention")
    m = blocks().get("vit").build()
    with pytest.raises(CountError, match="scaled_dot_product_attention") as err:
        count(m, m.example_args())
    assert isinstance(err.value, EffscopeError)


def test_handle_counting_zero_raises(monkeypatch):
    monkeypatch.setitem(_GEMM_HANDLES, "aten::linear", ("linear", lambda ew: lambda i, o: 0))
    with pytest.raises(CountError, match="aten::linear x1"):
        count(nn.Linear(3, 4), torch.randn(2, 3))


def test_a_gemm_table_entry_alone_files_its_key_under_gemm(monkeypatch):
    """The table is the one place a gemm op is declared: a new key needs no second list to count as gemm."""
    _, macs = _GEMM_HANDLES["aten::linear"]
    monkeypatch.setitem(_GEMM_HANDLES, "aten::linear", ("renamed_linear", macs))
    c = count(nn.Linear(3, 4), torch.randn(2, 3))
    assert c.macs_by_operator == {"renamed_linear": 2 * 3 * 4} and c.macs_by_category["gemm"] == 24


def test_every_gemm_handle_is_matmul_class():
    assert all(_MATMUL_CLASS.search(op) for op in _GEMM_HANDLES)
    assert not any(_MATMUL_CLASS.search(f"aten::{op}") for op in ("add", "softmax", "contiguous", "mean", "gelu"))


def test_crosscheck_agrees_on_vit_and_reports_disagreement(monkeypatch):
    m = blocks().get("vit").build()
    c = count(m, m.example_args(), strict=True)
    assert c.crosscheck_rel_diff == 0.0 and c.crosscheck_flops == 2 * c.macs_by_category["gemm"]
    key, single = _GEMM_HANDLES["aten::linear"]
    monkeypatch.setitem(_GEMM_HANDLES, "aten::linear", (key, lambda ew: lambda i, o: 2 * single(ew)(i, o)))
    off = count(m, m.example_args())
    assert off.crosscheck_rel_diff < 0  # torch counts fewer: the doubled linear stands out
    with pytest.raises(CountError, match="disagree"):
        count(m, m.example_args(), strict=True)
    assert count(m, m.example_args(), cross_check=False).crosscheck_rel_diff is None


# ------------------------------------------------------------------------ the zoo against docs/zoo.md#reference-numbers

REFERENCED = [s for s in [*blocks(), *models()] if s.reference is not None and s.reference.macs]


@pytest.mark.parametrize("spec", REFERENCED, ids=[f"{s.kind}-{s.name}" for s in REFERENCED])
def test_reference_macs(spec):
    """fvcore MACs (with handles, SDPA fast path on) at the reference size, batch 1, within 0.5 % of
    docs/zoo.md#reference-numbers."""
    m = spec.build()
    c = count(m, m.example_args(1, spec.reference.size), strict=True)
    assert c.macs == pytest.approx(spec.reference.macs, rel=5e-3)


# ------------------------------------------------------------------------------ bytes moved (roofline estimate)


def test_bytes_of_a_linear_split_into_activations_and_weights():
    c = count(nn.Linear(7, 3), torch.randn(2, 5, 7), strict=True)
    assert c.bytes_moved_est == 4 * (2 * 5 * 7 + 7 * 3 + 3 + 2 * 5 * 3)  # x, W, b read; y written; fp32
    assert c.bytes_weights_est == 4 * (7 * 3 + 3)
    assert c.bytes_by_operator == {"linear": c.bytes_moved_est}
    assert c.summary()["bytes_moved_est"] == c.bytes_moved_est and "bytes_by_operator" in c.details()


def test_bytes_of_a_matmul_and_a_conv():
    c = macs_of(torch.matmul, torch.randn(2, 3, 4), torch.randn(4, 5))
    assert (c.bytes_moved_est, c.bytes_weights_est) == (4 * (24 + 20 + 30), 0)  # both operands are inputs
    conv = count(nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.randn(2, 4, 9, 9), strict=True)
    x, w, b, y = 2 * 4 * 9 * 9, 8 * 4 * 3 * 3, 8, 2 * 8 * 5 * 5
    assert conv.bytes_moved_est == 4 * (x + w + b + y) and conv.bytes_weights_est == 4 * (w + b)
    assert conv.bytes_by_operator == {"conv": conv.bytes_moved_est}


def test_bytes_follow_the_dtype():
    c = count(nn.Linear(8, 8).to(torch.bfloat16), torch.randn(4, 8, dtype=torch.bfloat16), cross_check=False)
    assert c.bytes_moved_est == 2 * (32 + 64 + 8 + 32)


def test_fused_sdpa_moves_only_its_operands_and_the_explicit_path_moves_the_scores():
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))
    fused = macs_of(F.scaled_dot_product_attention, q, k, v)
    assert fused.bytes_moved_est == 4 * 4 * 256  # q, k, v read, out written: the lower bound of a fused kernel
    with attention_impl("explicit"):
        explicit = macs_of(lambda q, k, v: attend(q, k, v, scale=8**-0.5), q, k, v)
    assert explicit.macs == fused.macs and explicit.bytes_moved_est > fused.bytes_moved_est + 4 * 2 * 16 * 16


def test_views_are_free_copies_and_broadcasts_are_counted_once():
    x = torch.randn(2, 3, 4)
    assert macs_of(lambda x: x.transpose(1, 2).contiguous(), x).bytes_by_operator == {"contiguous": 4 * 2 * 24}
    assert macs_of(lambda x: x.contiguous().view(6, 4), x).bytes_moved_est == 0  # no copy happened
    assert macs_of(lambda x: x.permute(0, 2, 1).reshape(2, 12), x).bytes_by_operator == {"reshape": 4 * 2 * 24}
    assert macs_of(lambda x: torch.cat([x, x], 1), x).bytes_by_operator == {"cat": 4 * (24 + 24 + 48)}
    b = macs_of(lambda r: r.expand(3, 4) * 2, torch.randn(1, 4))
    assert b.bytes_moved_est == 4 * (4 + 12)  # the stride-0 rows are one row in memory


class Lookup(nn.Module):
    """A table gathered with a constant index and viewed to a shape read from the input: all batch-independent."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(100, 4))
        self.register_buffer("index", torch.tensor([5, 7, 9]))

    def forward(self, x):
        bias = self.table[self.index].view(x.shape[1], 4)  # shape from x, data from the table only
        return x + bias


def test_tensors_computed_from_weights_alone_are_weights():
    c = count(Lookup(), torch.randn(2, 3, 4), elementwise=True)
    gathered = 4 * 12 + 8 * 3 + 4 * 12  # 12 table elements read (not 400), the int64 index, 12 written
    assert c.bytes_by_operator["index"] == gathered
    assert c.bytes_weights_est == gathered + 4 * 12  # + the add reading the bias
    assert c.bytes_moved_est - c.bytes_weights_est == 4 * (24 + 24)  # the add reads x and writes the sum


@pytest.mark.parametrize("name", ["vit", "lightvit"])
def test_activation_bytes_scale_with_the_batch_and_weight_bytes_do_not(name):
    m = blocks().get(name).build()
    one, two = (count(m, m.example_args(b), cross_check=False) for b in (1, 2))
    assert two.bytes_weights_est == one.bytes_weights_est > 4 * one.params * 0.99  # every weight is read
    assert two.bytes_moved_est - two.bytes_weights_est == 2 * (one.bytes_moved_est - one.bytes_weights_est)


def test_bytes_do_not_depend_on_the_elementwise_flag():
    m = blocks().get("vit").build()
    with attention_impl("sdpa"):
        on, off = (count(m, m.example_args(1, (7, 7)), elementwise=e, cross_check=False) for e in (True, False))
    assert on.bytes_moved_est == off.bytes_moved_est and on.bytes_by_operator == off.bytes_by_operator
    assert {"linear", "sdpa", "layer_norm", "gelu", "add"} <= set(on.bytes_by_operator)
