"""PVTv2: SRA block figures of docs/zoo.md#reference-numbers, the reduction's shapes and quirks, the B0-B2-Li
presets."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from _fvcore import fvcore_macs, param_count
from torch import nn

from effscope.blocks.attention import attention_impl
from effscope.blocks.pvt import PVTBlock, PVTLinearSRABlock, PVTLinearSRAConfig, PVTSRAConfig, SRAttention
from effscope.errors import InputSizeError, KnobError
from effscope.models.pvtv2 import PVTv2, PVTv2Config
from effscope.spec import models


# docs/zoo.md#reference-numbers: C = 128, 4 heads, mlp ratio 4, 28 x 28 tokens (params exact, recomputed from the 0.1K
# figures)
@pytest.mark.parametrize(
    "sr,params,macs",
    [(1, 203_392, 316.11e6), (2, 269_312, 191.80e6), (4, 465_920, 157.38e6), (8, 1_252_352, 144.61e6)],
)
def test_sra_block_matches_reference(sr, params, macs):
    m = PVTBlock(PVTSRAConfig(sr_ratio=sr))
    assert param_count(m) == params
    assert fvcore_macs(m, m.example_args(1)) == pytest.approx(macs, rel=5e-3)


def test_linear_sra_block_matches_reference():
    m = PVTLinearSRABlock()
    assert param_count(m) == 220_160
    assert fvcore_macs(m, m.example_args(1)) == pytest.approx(145.44e6, rel=5e-3)


def test_sr_adds_a_strided_conv_and_a_layer_norm():
    dim = 128
    for r in (2, 4, 8):
        extra = param_count(PVTBlock(PVTSRAConfig(sr_ratio=r))) - param_count(PVTBlock(PVTSRAConfig(sr_ratio=1)))
        assert extra == r * r * dim * dim + dim + 2 * dim


def _keys(attn: SRAttention, hw: tuple[int, int]) -> int:
    """Number of keys the attention sees on an hw grid (captured at the kv projection)."""
    seen = []
    handle = attn.kv.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    attn(torch.randn(1, hw[0] * hw[1], attn.q.in_features), hw)
    handle.remove()
    return seen[0]


def test_reduction_floors_like_the_strided_conv():
    attn = SRAttention(64, 2, sr_ratio=4)
    assert _keys(attn, (28, 28)) == 49
    assert _keys(attn, (15, 17)) == 3 * 4  # floor(15/4) x floor(17/4)
    assert _keys(SRAttention(64, 2, sr_ratio=1), (15, 17)) == 15 * 17


def test_grid_smaller_than_sr_is_a_stated_constraint():
    m = PVTBlock(PVTSRAConfig(sr_ratio=8))
    with pytest.raises(InputSizeError, match="sr_ratio=8"):
        m(*m.example_args(1, (7, 20)))


def test_linear_sra_has_pool_squared_keys_at_any_grid():
    attn = SRAttention(64, 2, pool_size=7)
    for hw in [(28, 28), (15, 17), (5, 5)]:
        assert _keys(attn, hw) == 49
    m = PVTLinearSRABlock(PVTLinearSRAConfig(pool_size=5))
    out = m(*m.example_args(1, (3, 4)))
    assert out.shape == (1, 12, 128)


def test_official_quirks():
    sra, li = PVTBlock(), PVTLinearSRABlock()
    assert sra.norm1.eps == sra.norm2.eps == 1e-6 and sra.attn.norm.eps == 1e-5  # reduction LN keeps the default
    assert isinstance(li.attn.act, nn.GELU) and isinstance(li.mlp.relu, nn.ReLU)  # -Li: GELU on keys, ReLU in FFN
    assert isinstance(sra.mlp.relu, nn.Identity)
    assert not hasattr(PVTBlock(PVTSRAConfig(sr_ratio=1)).attn, "norm")  # R = 1: plain MHSA, no reduction


# docs/zoo.md#reference-numbers (exact params are also in the model contract)
PRESETS = {
    "pvtv2_b0": (3_666_760, 0.5720e9),
    "pvtv2_b1": (14_009_000, 2.1203e9),
    "pvtv2_b2": (25_362_856, 4.0458e9),
    "pvtv2_b2_li": (22_553_512, 3.9098e9),
}


@functools.cache
def _shallow_count(config: PVTv2Config) -> tuple[float, tuple[float, ...]]:
    """fvcore MACs of `config` with one block per stage: the total and each stage's block."""
    from fvcore.nn import FlopCountAnalysis

    m = PVTv2(dataclasses.replace(config, depths=(1, 1, 1, 1))).eval()
    with attention_impl("explicit"), torch.no_grad():
        count = FlopCountAnalysis(m, m.example_args(1))
        count.unsupported_ops_warnings(False)
        count.uncalled_modules_warnings(False)
        per_module = count.by_module()
        return count.total(), tuple(per_module[f"stages.{i}.0"] for i in range(4))


@pytest.fixture(scope="module")
def b0() -> PVTv2:
    return PVTv2().eval()


def test_b0_params_and_fvcore_macs(b0):
    m = b0
    assert param_count(m) == PRESETS["pvtv2_b0"][0]
    assert fvcore_macs(m, m.example_args(1)) == pytest.approx(PRESETS["pvtv2_b0"][1], rel=5e-3)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_fvcore_macs(name):
    """Blocks of a stage are identical, so a one-block-per-stage count extrapolates exactly (and keeps this fast)."""
    params, macs = PRESETS[name]
    spec = models().get(name)
    assert spec.reference.params == params and spec.reference.macs == macs
    total, per_block = _shallow_count(spec.config)
    total += sum((d - 1) * b for d, b in zip(spec.config.depths, per_block, strict=True))
    assert total == pytest.approx(macs, rel=5e-3)


def test_shallow_extrapolation_is_exact():
    config = PVTv2Config(depths=(2, 1, 3, 1))
    total, per_block = _shallow_count(PVTv2Config())
    m = PVTv2(config)
    assert fvcore_macs(m, m.example_args(1)) == total + per_block[0] + 2 * per_block[2]


def test_b0_every_stage_attends_to_49_keys(b0):
    seen = []
    hooks = [
        s[0].attn.kv.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1])) for s in b0.stages
    ]
    with torch.no_grad():
        b0(*b0.example_args(1))
    for h in hooks:
        h.remove()
    assert seen == [49, 49, 49, 49]


def test_head_dims_follow_dims_over_heads():
    b1 = models().get("pvtv2_b1").config
    assert b1.derived()["head_dims"] == (64, 64, 64, 64)
    assert PVTv2Config().derived()["head_dims"] == (32, 32, 32, 32)
    with pytest.raises(KnobError, match="num_heads"):
        PVTv2Config(embed_dims=(32, 64, 160, 256), num_heads=(1, 3, 5, 8))


def test_drop_path_ramps_to_the_rate_over_all_blocks():
    m = PVTv2(PVTv2Config(drop_path_rate=0.1))
    rates = [b.drop_path.p for stage in m.stages for b in stage]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)


def test_odd_resolution_runs_and_too_small_one_is_stated(b0):
    m = b0
    with torch.no_grad():
        assert m(torch.randn(1, 3, 200, 190)).shape == (1, 1000)  # the strided convs floor/pad; no constraint
        with pytest.raises(InputSizeError, match="sr_ratio"):
            m(torch.randn(1, 3, 16, 16))  # stage 1 has 4 x 4 tokens < sr 8
