"""LITv2 family: HiLo's head split and padding, the pure-torch deformable token merging, and the model zoo numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effscope.blocks.attention import attention_impl
from effscope.blocks.hilo import (
    DTM,
    ConvFFNBlock,
    DeformConv2d,
    DTMConfig,
    HiLoBlock,
    HiLoBlockConfig,
)
from effscope.blocks.vit import MHSA
from effscope.errors import InputSizeError, KnobError
from effscope.models.litv2 import LITv2, LITv2Config
from effscope.spec import models


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _WithGrid(nn.Module):
    """Binds hw so fvcore can trace a token block from one tensor."""

    def __init__(self, block: nn.Module, hw: tuple[int, int]) -> None:
        super().__init__()
        self.block, self.hw = block, hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x, self.hw)
        return out[0] if isinstance(out, tuple) else out


def _fvcore(module: nn.Module, *args):
    from fvcore.nn import FlopCountAnalysis

    with attention_impl("explicit"), torch.no_grad():
        analysis = FlopCountAnalysis(module.eval(), args)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.total()
    return analysis


# --- HiLo block -------------------------------------------------------------------------------------------------


def _hilo_params(c: int, heads: int, lofi: int, hidden: int) -> int:
    """docs/zoo.md#hilo-block: separate Hi-Fi (qkv, proj) and Lo-Fi (q, kv, proj) projections, + 2 LN + DWMlp."""
    d = c // heads
    h_dim, l_dim = (heads - lofi) * d, lofi * d
    hifi = (c * 3 * h_dim + 3 * h_dim + h_dim * h_dim + h_dim) if h_dim else 0
    lofi_p = (c * l_dim + l_dim + c * 2 * l_dim + 2 * l_dim + l_dim * l_dim + l_dim) if l_dim else 0
    mlp = c * hidden + hidden + 9 * hidden + hidden + hidden * c + c
    return hifi + lofi_p + 4 * c + mlp


@pytest.mark.parametrize(
    "knobs,lofi,params,macs",
    [
        ({"lofi_heads": 3, "window_size": 2}, 3, 197_248, 169.19e6),  # alpha 0.9 -> int(4 * 0.9) = 3
        ({"lofi_heads": 2, "window_size": 2}, 2, 195_200, 162.77e6),  # alpha 0.5
        ({"lofi_heads": 3, "window_size": 4}, 3, 197_248, 144.06e6),
        ({"lofi_heads": 0, "window_size": 1}, 4, 203_392, 316.11e6),  # s 1 = MSA whatever lofi_heads says
    ],
)
def test_hilo_block_matches_reference_table(knobs, lofi, params, macs):
    block = HiLoBlock(HiLoBlockConfig(**knobs))
    assert block.attn.l_heads == lofi and block.attn.h_heads == 4 - lofi
    assert _params(block) == params == _hilo_params(128, 4, lofi, 512)
    x, hw = block.example_args(1)
    analysis = _fvcore(_WithGrid(block, hw), x)
    # fvcore counts avg_pool2d as 0, like the official measurement: the figures agree to rounding
    assert analysis.total() == pytest.approx(macs, rel=5e-5)
    assert "aten::avg_pool2d" in analysis.unsupported_ops() or knobs["window_size"] == 1


def test_convffn_block_matches_reference_table():
    block = ConvFFNBlock()
    assert _params(block) == 137_088
    x, hw = block.example_args(1)
    assert _fvcore(_WithGrid(block, hw), x).total() == pytest.approx(106.87e6, rel=5e-5)


def test_derived_alpha_and_window_one():
    assert HiLoBlockConfig().derived()["alpha"] == 0.75
    assert HiLoBlockConfig(lofi_heads=0).derived()["hifi_heads"] == 4
    msa = HiLoBlockConfig(window_size=1, lofi_heads=1)
    assert msa.derived()["alpha"] == 1.0 and msa.lofi_heads == 4
    with pytest.raises(KnobError, match=r"`lofi_heads <= heads` must hold, but got \(lofi_heads=5, heads=4\)"):
        HiLoBlockConfig(lofi_heads=5)


def test_the_model_takes_its_lofi_heads_from_the_block_declaration():
    """LITv2's stage-3 Lo-Fi heads are the HiLo block's knob: one domain, one window-1 rule."""
    from effscope.knobs import knobs_of

    assert knobs_of(LITv2Config)["lofi_heads"].domain == knobs_of(HiLoBlockConfig)["lofi_heads"].domain
    msa = LITv2Config(window_size=1, lofi_heads=3)
    assert msa.derived()["alpha"] == 1.0 and msa.derived()["hifi_heads"] == 0
    assert LITv2Config().derived()["alpha"] == 10 / 12


def test_window_one_is_plain_msa():
    hilo = HiLoBlock(HiLoBlockConfig(window_size=1)).attn.eval()
    msa = MHSA(128, 4, 32).eval()
    with torch.no_grad():
        msa.qkv.weight.copy_(torch.cat([hilo.l_q.weight, hilo.l_kv.weight]))
        msa.qkv.bias.copy_(torch.cat([hilo.l_q.bias, hilo.l_kv.bias]))
        msa.proj.load_state_dict(hilo.l_proj.state_dict())
        x = torch.randn(2, 36, 128)
        torch.testing.assert_close(hilo(x, (6, 6)), msa(x))


def test_one_window_covering_the_map_is_plain_msa():
    hilo = HiLoBlock(HiLoBlockConfig(lofi_heads=0, window_size=8)).attn.eval()
    msa = MHSA(128, 4, 32).eval()
    with torch.no_grad():
        msa.qkv.load_state_dict(hilo.h_qkv.state_dict())
        msa.proj.load_state_dict(hilo.h_proj.state_dict())
        x = torch.randn(2, 64, 128)
        torch.testing.assert_close(hilo(x, (8, 8)), msa(x))


def test_hifi_heads_stay_inside_their_window():
    hilo = HiLoBlock(HiLoBlockConfig(lofi_heads=0, window_size=2)).attn.eval()
    x = torch.randn(1, 8 * 8, 128)
    y = x.clone()
    y[0, 3 * 8 + 5] += 1.0  # token (3, 5): window rows 2-3, cols 4-5
    with torch.no_grad():
        diff = (hilo(x, (8, 8)) - hilo(y, (8, 8))).abs().sum(-1).view(8, 8)
    changed = diff > 1e-6
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:4, 4:6] = True
    assert torch.equal(changed, expected)


def test_lofi_attends_to_average_pooled_keys():
    hilo = HiLoBlock(HiLoBlockConfig(lofi_heads=4, window_size=2)).attn.eval()
    x = torch.randn(1, 6 * 4, 128)
    with torch.no_grad():
        pooled = x.view(1, 3, 2, 2, 2, 128).mean(dim=(2, 4)).reshape(1, 6, 128)  # 2x2 block means
        q = hilo.l_q(x).view(1, 24, 4, 32).transpose(1, 2)
        k, v = hilo.l_kv(pooled).view(1, 6, 2, 4, 32).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(32)).softmax(-1)
        expected = hilo.l_proj((attn @ v).transpose(1, 2).reshape(1, 24, 128))
        torch.testing.assert_close(hilo(x, (6, 4)), expected)


@pytest.mark.parametrize("hw,ws", [((15, 17), 2), ((14, 14), 4), ((5, 3), 7)])
def test_hilo_pads_right_bottom_with_zeros_and_crops(hw, ws):
    hilo = HiLoBlock(HiLoBlockConfig(lofi_heads=2, window_size=ws)).attn.eval()
    h, w = hw
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    x = torch.randn(2, h, w, 128)
    padded = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    with torch.no_grad():
        out = hilo(x.reshape(2, h * w, 128), hw)
        expected = hilo(padded.reshape(2, hp * wp, 128), (hp, wp)).view(2, hp, wp, 128)[:, :h, :w]
    torch.testing.assert_close(out, expected.reshape(2, h * w, 128))


def test_token_count_must_match_grid():
    block = HiLoBlock()
    with pytest.raises(InputSizeError, match="H\\*W"):
        block(torch.randn(1, 50, 128), (7, 7))


# --- deformable token merging -----------------------------------------------------------------------------------


def _bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """DCN's bilinear read of a (C, H, W) map at (y, x); each corner outside the map reads 0."""
    _, h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = torch.zeros(img.shape[0], dtype=img.dtype)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                out += (1 - abs(y - yy)) * (1 - abs(x - xx)) * img[:, yy, xx]
    return out


def _deform_conv_reference(x, offset, weight, bias):
    """Direct DCNv1, kernel = stride = 2, padding 0: tap (ki, kj) of output (i, j) reads (2i+ki+dy, 2j+kj+dx)."""
    b, _, _, _ = x.shape
    ho, wo = offset.shape[-2:]
    out = torch.zeros(b, weight.shape[0], ho, wo, dtype=x.dtype)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for ki in range(2):
                    for kj in range(2):
                        t = ki * 2 + kj
                        dy, dx = offset[n, 2 * t, i, j].item(), offset[n, 2 * t + 1, i, j].item()
                        val = _bilinear(x[n], 2 * i + ki + dy, 2 * j + kj + dx)
                        out[n, :, i, j] += weight[:, :, ki, kj] @ val
    return out + bias.view(1, -1, 1, 1)


def test_deform_conv_with_zero_offsets_is_plain_conv():
    dconv = DeformConv2d(16, 32)
    x = torch.randn(2, 16, 8, 10)
    with torch.no_grad():
        torch.testing.assert_close(dconv(x), F.conv2d(x, dconv.weight, dconv.bias, stride=2), rtol=1e-5, atol=1e-5)


def test_deform_conv_samples_bilinearly():
    dconv = DeformConv2d(3, 4).double()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)  # odd height: the last row is reachable through offsets only
    with torch.no_grad():
        dconv.conv_offset.weight.normal_(0, 0.5)
        dconv.conv_offset.bias.normal_(0, 1.0)  # large enough to leave the map at the borders
        offset = dconv.conv_offset(x)
        assert offset.abs().max() > 1.5
        expected = _deform_conv_reference(x, offset, dconv.weight, dconv.bias)
        torch.testing.assert_close(dconv(x), expected)


def test_deform_conv_offsets_learn():
    dconv = DeformConv2d(8, 16)
    dconv(torch.randn(2, 8, 6, 6)).square().sum().backward()
    assert dconv.conv_offset.weight.grad.abs().sum() > 0


def test_dtm_layout_and_shapes():
    dtm = DTM(DTMConfig(dim=96))
    shapes = {n: tuple(p.shape) for n, p in dtm.named_parameters()}
    assert shapes == {
        "dconv.weight": (192, 96, 2, 2),
        "dconv.bias": (192,),
        "dconv.conv_offset.weight": (8, 96, 2, 2),
        "dconv.conv_offset.bias": (8,),
        "norm.weight": (192,),
        "norm.bias": (192,),
    }
    out, hw = dtm.eval()(torch.randn(2, 7 * 9, 96), (7, 9))
    assert hw == (3, 4) and out.shape == (2, 12, 192)
    with pytest.raises(InputSizeError, match="H >= 2 and W >= 2"):
        dtm(torch.randn(1, 5, 96), (1, 5))


def test_dtm_plain_variant_equals_deformable_at_init():
    deform, plain = DTM(DTMConfig(dim=32)).eval(), DTM(DTMConfig(dim=32, deformable=False)).eval()
    assert _params(deform) - _params(plain) == 8 * 32 * 4 + 8
    with torch.no_grad():
        plain.dconv.weight.copy_(deform.dconv.weight)
        plain.dconv.bias.copy_(deform.dconv.bias)
        x = torch.randn(2, 36, 32)
        torch.testing.assert_close(deform(x, (6, 6))[0], plain(x, (6, 6))[0], rtol=1e-5, atol=1e-5)


# --- model ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alpha,lofi,params",
    [
        (0.0, 0, 28_089_760),
        (0.2, 2, 27_844_000),
        (0.4, 4, 27_696_544),
        (0.5, 6, 27_647_392),
        (0.7, 8, 27_696_544),
        (0.9, 10, 27_844_000),
        (1.0, 12, 28_089_760),
    ],
)
def test_alpha_sweep_params(alpha, lofi, params):
    assert lofi == int(12 * alpha)  # the official split, searched as the integer it collapses to
    model = LITv2(LITv2Config(lofi_heads=lofi), device="meta")
    assert _params(model) == params
    assert model.config.derived()["alpha"] == lofi / 12


def test_preset_splits():
    got = {name: models().get(name).config.derived() for name in ("litv2_s", "litv2_m", "litv2_b")}
    assert [g["hifi_heads"] for g in got.values()] == [2, 2, 2]
    assert got["litv2_b"]["alpha"] == 14 / 16 and got["litv2_b"]["head_dims"] == (32, 32)


def test_litv2_s_fvcore_macs():
    spec = models().get("litv2_s")
    model = spec.build()
    analysis = _fvcore(model, *model.example_args(1))
    offset_convs = sum(v for k, v in analysis.by_module().items() if k.endswith("conv_offset"))
    sampling = analysis.by_operator()["grid_sampler"]
    # the reference replaced the CUDA deformable conv with its plain conv: ours adds the offset conv and
    # fvcore's 4 MACs per bilinear sample on top of exactly that
    assert offset_convs == 28 * 28 * 96 * 32 + 14 * 14 * 192 * 32 + 7 * 7 * 384 * 32
    assert sampling == 4 * (96 * 56 * 56 + 192 * 28 * 28 + 384 * 14 * 14)
    assert analysis.total() - offset_convs - sampling == pytest.approx(spec.reference.macs, rel=2e-5)
    assert analysis.total() == pytest.approx(spec.reference.macs, rel=5e-3)


def test_model_rules():
    with pytest.raises(KnobError, match=r"`lofi_heads <= num_heads\[2\]`"):
        LITv2Config(lofi_heads=13)
    with pytest.raises(KnobError, match="head width"):
        LITv2Config(num_heads=(3, 6, 5, 24))
    assert LITv2Config(window_size=1, lofi_heads=0).derived()["alpha"] == 1.0


def test_offsets_start_at_zero_after_model_init():
    model = LITv2(LITv2Config(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), lofi_heads=2))
    for dtm in model.merges:
        assert not dtm.dconv.conv_offset.weight.any() and not dtm.dconv.conv_offset.bias.any()


@pytest.mark.parametrize("window", [1, 2, 4, 7])
@pytest.mark.parametrize("size", [224, 256])
def test_searched_windows_run_at_both_sizes(window, size):
    cfg = LITv2Config(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), lofi_heads=2, window_size=window)
    model = LITv2(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
