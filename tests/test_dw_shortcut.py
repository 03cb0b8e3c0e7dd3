"""DW-conv shortcut: the module's reference figures, where the shortcut is added, span / parallel kernels,
ViT-Tiny-DW."""

from __future__ import annotations

import pytest
import torch
from _fvcore import fvcore_macs, param_count
from torch import nn

from effscope.blocks.dw_shortcut import DWShortcut, DWShortcutBlock, DWShortcutConfig
from effscope.errors import InputSizeError
from effscope.models.vit_dw import ViTDW, ViTDWConfig
from effscope.spec import models


# docs/zoo.md#reference-numbers: the shortcut module alone, C = 128 on 28 x 28 (params exact: k^2 C + C conv + 2C BN
# affine)
@pytest.mark.parametrize("k,params,macs", [(3, 1_536, 1.10e6), (5, 3_584, 2.71e6), (7, 6_656, 5.12e6)])
def test_shortcut_module_matches_reference(k, params, macs):
    m = DWShortcut(128, (k,))
    assert param_count(m) == params
    assert fvcore_macs(m, (torch.randn(1, 128, 28, 28),)) == pytest.approx(macs, rel=5e-3)


def test_parallel_kernels_are_independent_branches_summed():
    m = DWShortcut(128, (3, 5, 7)).eval()
    assert param_count(m) == 1_536 + 3_584 + 6_656
    x = torch.randn(2, 128, 9, 11)
    with torch.no_grad():
        g = nn.functional.gelu(x)
        expected = sum(branch(g) for branch in m.branches)
        torch.testing.assert_close(m(x), expected)
    assert DWShortcutConfig(kernels=(3, 5, 7)).derived()["shortcut_params"] == param_count(m)


def test_default_block_is_vit_block_plus_shortcut():
    m = DWShortcutBlock()
    assert param_count(m) == param_count(m.blocks[0]) + 1_536
    assert fvcore_macs(m, m.example_args(1)) == pytest.approx(313.60e6, rel=5e-3)


@pytest.mark.parametrize("span", [1, 3])
@pytest.mark.parametrize("prefix", [0, 1])
def test_shortcut_bypasses_the_whole_group_and_skips_prefix_tokens(span, prefix):
    m = DWShortcutBlock(DWShortcutConfig(heads=2, span=span, prefix_tokens=prefix, kernels=(3, 5))).eval()
    assert len(m.blocks) == span
    x, hw = m.example_args(2, (5, 6))
    with torch.no_grad():
        inner = x
        for block in m.blocks:
            inner = block(inner, hw)
        s = m.shortcut(x[:, prefix:].transpose(1, 2).reshape(2, -1, *hw)).flatten(2).transpose(1, 2)
        out = m(x, hw)
    torch.testing.assert_close(out[:, :prefix], inner[:, :prefix])  # zero shortcut on the class token
    torch.testing.assert_close(out[:, prefix:], inner[:, prefix:] + s)


def test_shortcut_order_is_gelu_bn_dwconv():
    m = DWShortcut(8, (3,)).eval()
    bn, conv = m.branches[0]
    assert isinstance(m.act, nn.GELU) and isinstance(bn, nn.BatchNorm2d)
    assert conv.groups == 8 and conv.kernel_size == (3, 3) and conv.bias is not None


# docs/zoo.md#vit_tiny_dw-preset: lucidrains ViT-Tiny / ViT-Small with a DW shortcut per block
@pytest.mark.parametrize(
    "knobs,params",
    [
        ({}, 5_564_452),
        ({"num_classes": 10}, 5_547_082),
        ({"num_classes": 200}, 5_583_752),
        ({"heads": 6}, 21_745_636),  # ViT-Small: 384 = 6 x 64, MLP 1536
    ],
)
def test_vit_dw_params(knobs, params):
    spec = models().get("vit_tiny_dw")
    m = spec.build(spec.configure(knobs), device="meta")
    assert param_count(m) == params
    dw = sum(param_count(b.shortcut) for b in m.blocks)
    assert dw == 12 * 12 * m.config.dim  # 27,648 for D = 192: 0.50 % of ViT-Tiny


def test_vit_tiny_dw_fvcore_macs():
    m = models().get("vit_tiny_dw").build()
    assert fvcore_macs(m, m.example_args(1)) == pytest.approx(1.2630e9, rel=5e-3)


def test_span_groups_blocks_and_keeps_the_remainder():
    assert ViTDWConfig(span=4).groups == (4, 4, 4)
    assert ViTDWConfig(depth=10, span=4).groups == (4, 4, 2)
    m = ViTDW(ViTDWConfig(depth=10, span=4), device="meta")
    assert [len(b.blocks) for b in m.blocks] == [4, 4, 2]
    saved = param_count(ViTDW(ViTDWConfig(), device="meta")) - param_count(ViTDW(ViTDWConfig(span=2), device="meta"))
    assert saved == 6 * 12 * 192  # half the shortcuts


def test_patchify_is_lucidrains_p1_p2_c_order():
    m = ViTDW(ViTDWConfig(depth=1, patch_size=8))
    x = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).view(2, 3, 16, 24)
    patches, hw = m.patchify(x)
    assert hw == (2, 3) and patches.shape == (2, 6, 8 * 8 * 3)
    # patch (row 1, col 2), pixel (p1=3, p2=5), channel 2
    assert patches[1, 1 * 3 + 2, (3 * 8 + 5) * 3 + 2] == x[1, 2, 8 + 3, 16 + 5]


def test_position_embedding_is_resized_to_other_grids():
    m = ViTDW(ViTDWConfig(depth=1))
    assert m.position_embedding((14, 14)) is m.pos_embed
    pos = m.position_embedding((16, 12))
    assert pos.shape == (1, 1 + 16 * 12, 192)
    torch.testing.assert_close(pos[:, 0], m.pos_embed[:, 0])  # the class token's position is kept
    with torch.no_grad():
        assert m(torch.randn(1, 3, 256, 192)).shape == (1, 100)
        with pytest.raises(InputSizeError, match="patch_size=16"):
            m(torch.randn(1, 3, 230, 224))
