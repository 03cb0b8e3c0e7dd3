"""LightViT family: parameter breakdown and fvcore MACs of docs/zoo.md#reference-numbers, a loop-based reference of the
attention and the merge, padding, and the derived knobs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from effscope.blocks.attention import attention_impl
from effscope.blocks.lightvit import (
    BiAttn,
    LightViTAttention,
    LightViTBlock,
    LightViTBlockConfig,
    LightViTMerge,
    LightViTMergeConfig,
)
from effscope.errors import InputSizeError
from effscope.models.lightvit import LightViT, LightViTConfig
from effscope.spec import blocks, models


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _fvcore(module: torch.nn.Module, args: tuple) -> tuple[float, dict[str, float]]:
    from fvcore.nn import FlopCountAnalysis

    with attention_impl("explicit"):
        fa = FlopCountAnalysis(module.eval(), args)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        return fa.total(), fa.by_operator()


# ---- parameters (the LightViT-T breakdown) ----


def test_lightvit_t_params_breakdown():
    m = models().get("lightvit_t").build(device="meta")
    assert _params(m.stem) == 20_608
    assert m.global_token.numel() == 512
    s1, s2, s3 = m.stages
    assert _params(s1) == 189_990
    block = s1.blocks[0]
    assert _params(block) == 94_995
    attn = block.attn
    assert _params(attn) == 25_298
    assert (_params(attn.qkv), _params(attn.kv_global), _params(attn.proj)) == (12_480, 8_320, 4_160)
    assert attn.relative_position_bias_table.shape == (169, 2)
    assert _params(block.mlp) == 69_441
    assert (_params(block.mlp.fc1), _params(block.mlp.fc2), _params(block.mlp.attn)) == (33_280, 32_832, 3_329)
    assert _params(s2) == 1_518_430 and _params(s2.downsample) == 49_792 and _params(s2.blocks[0]) == 244_773
    assert _params(s3) == 6_035_126 and _params(s3.downsample) == 197_888 and _params(s3.blocks[0]) == 972_873
    assert (_params(m.norm), _params(m.neck), _params(m.head)) == (512, 331_520, 1_281_000)


def test_biattn_params_and_macs():
    b = BiAttn(128)
    assert _params(b) == 12_801  # reference: 12.8K
    total, _ = _fvcore(b, (torch.randn(1, 8 + 784, 128),))
    assert total == pytest.approx(3.81e6, rel=5e-3)


# ---- fvcore MACs (reference numbers) ----


@pytest.mark.parametrize("num_tokens,macs", [(8, 173.84e6), (16, 178.94e6)])
def test_block_macs(num_tokens, macs):
    m = LightViTBlock(LightViTBlockConfig(num_tokens=num_tokens))
    total, ops = _fvcore(m, m.example_args(1))
    assert total == pytest.approx(macs, rel=5e-3)
    if num_tokens == 8:
        assert ops["linear"] == pytest.approx(159.28e6, rel=5e-3)
        assert ops["matmul"] == pytest.approx(13.05e6, rel=5e-3)
        assert ops["layer_norm"] == pytest.approx(1.52e6, rel=5e-3)


def test_lightvit_t_macs():
    spec = models().get("lightvit_t")
    m = spec.build()
    total, ops = _fvcore(m, m.example_args(1))
    assert total == pytest.approx(spec.reference.macs, rel=5e-3)
    assert ops["conv"] == pytest.approx(0.0334e9, rel=5e-3)
    assert ops["matmul"] == pytest.approx(0.0424e9, rel=5e-3)


# ---- a loop-based reference of the attention (windows, relative offsets, aggregation, broadcast) ----


def _reference_attention(attn: LightViTAttention, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Straightforward per-window, per-head loops; pads the grid with zero tokens before qkv (detection code)."""
    nt, ws, heads, d = attn.num_tokens, attn.window_size, attn.heads, attn.head_dim
    b, _, c = x.shape
    h, w = hw
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    grid = torch.zeros(b, hp, wp, c)
    grid[:, :h, :w] = x[:, nt:].view(b, h, w, c)
    q, k, v = attn.qkv(grid).chunk(3, dim=-1)  # (B, Hp, Wp, C) each
    table = attn.relative_position_bias_table
    local = torch.zeros(b, hp, wp, c)
    for wy in range(0, hp, ws):
        for wx in range(0, wp, ws):
            ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
            ys, xs = ys.flatten(), xs.flatten()
            dy, dx = ys[:, None] - ys[None, :], xs[:, None] - xs[None, :]
            bias = table[(dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)]  # (n, n, heads)
            for i in range(heads):
                sl = slice(i * d, (i + 1) * d)
                qw = q[:, wy : wy + ws, wx : wx + ws, sl].reshape(b, -1, d)
                kw = k[:, wy : wy + ws, wx : wx + ws, sl].reshape(b, -1, d)
                vw = v[:, wy : wy + ws, wx : wx + ws, sl].reshape(b, -1, d)
                a = (qw @ kw.transpose(1, 2) * attn.scale + bias[..., i]).softmax(-1)
                local[:, wy : wy + ws, wx : wx + ws, sl] = (a @ vw).view(b, ws, ws, d)
    x_img = local[:, :h, :w].reshape(b, h * w, c)
    q_img, k_img, v_img = (t[:, :h, :w].reshape(b, h * w, c) for t in (q, k, v))
    q_glb = attn.qkv(x[:, :nt])[..., :c]
    x_glb = torch.zeros(b, nt, c)
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        a = (q_glb[..., sl] @ k_img[..., sl].transpose(1, 2) * attn.scale).softmax(-1)
        x_glb[..., sl] = a @ v_img[..., sl]
    k_g, v_g = attn.kv_global(x_glb).chunk(2, dim=-1)
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        a = (q_img[..., sl] @ k_g[..., sl].transpose(1, 2) * attn.scale).softmax(-1)
        x_img[..., sl] = x_img[..., sl] + a @ v_g[..., sl]
    return attn.proj(torch.cat([x_glb, x_img], dim=1))


@pytest.mark.parametrize("hw,ws", [((14, 14), 7), ((9, 11), 7), ((6, 5), 4)])
@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_attention_matches_loop_reference(hw, ws, impl):
    attn = LightViTAttention(64, 2, 3, ws).eval()
    torch.nn.init.normal_(attn.relative_position_bias_table)  # make the bias matter
    x = torch.randn(2, 3 + hw[0] * hw[1], 64)
    with torch.no_grad(), attention_impl(impl):
        out = attn(x, hw)
        ref = _reference_attention(attn, x, hw)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_padding_keeps_zero_tokens_as_unmasked_keys():
    """Padded tokens are zero *inputs* of qkv (keys = qkv bias), as in the detection code: not masked out."""
    attn = LightViTAttention(32, 1, 0, 4).eval()  # no global tokens: only the local windows see the padding
    x = torch.randn(1, 3 * 4, 32)
    with torch.no_grad():
        padded = attn(x, (3, 4))
        # The same 3x4 grid inside one 4x4 window with a 4th row of real zero tokens: identical real-token outputs.
        full = attn(torch.cat([x, torch.zeros(1, 4, 32)], dim=1), (4, 4))
        masked = attn.proj(
            F.scaled_dot_product_attention(
                *attn.qkv(x).unsqueeze(1).chunk(3, dim=-1), attn_mask=attn.relative_position_bias()[:, :12, :12]
            ).squeeze(1)
        )
    torch.testing.assert_close(padded, full[:, :12], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(padded, masked, atol=1e-4)  # masking the pad instead would give another function


def test_no_global_tokens_is_plain_window_attention():
    blk = LightViTBlock(LightViTBlockConfig(num_tokens=0))
    assert blk.attn.kv_global is None
    x, hw = blk.example_args(2, (10, 9))
    out = blk(x, hw)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_a_merge_without_global_tokens_builds_no_global_branch():
    """Parameters that nothing uses would be counted in params and searched as capacity."""
    without = LightViTMerge(LightViTMergeConfig(num_tokens=0))
    with_tokens = LightViTMerge(LightViTMergeConfig(num_tokens=8))
    assert without.norm_global is None and without.proj_global is None
    global_branch = 2 * 128 + 128 * 256  # LayerNorm(in_dim) + Linear(in_dim, out_dim) without bias
    assert sum(p.numel() for p in with_tokens.parameters()) - sum(p.numel() for p in without.parameters()) == (
        global_branch
    )
    x, hw = without.example_args(2, (7, 9))
    out, grid = without(x, hw)
    assert out.shape == (2, 4 * 5, 256) and grid == (4, 5)


def test_wrong_token_count_states_the_constraint():
    blk = LightViTBlock()
    with pytest.raises(InputSizeError, match="num_tokens"):
        blk(torch.randn(1, 28 * 28, 128), (28, 28))
    with pytest.raises(InputSizeError, match="num_tokens"):
        LightViTMerge()(torch.randn(1, 28 * 28, 128), (28, 28))


def test_biattn_gates_use_the_mean_over_all_tokens():
    b = BiAttn(32).eval()
    y = torch.randn(2, 9, 32)
    with torch.no_grad():
        z = F.layer_norm(y, (32,), b.norm.weight, b.norm.bias)
        g = F.gelu(b.global_reduce(z.mean(1, keepdim=True)))
        loc = F.gelu(b.local_reduce(z))
        gate = torch.sigmoid(b.channel_select(g)) * torch.sigmoid(
            b.spatial_select(torch.cat([loc, g.expand(-1, 9, -1)], -1))
        )
        torch.testing.assert_close(b(y), y * gate)
        # changing only the first ("global") token changes every token's output through the mean
        y2 = y.clone()
        y2[:, 0] += torch.randn(2, 32)  # LN removes a constant shift: perturb the shape
        assert not torch.allclose(b(y2)[:, 1:], b(y)[:, 1:])


# ---- merge ----


def test_merge_matches_slicing_reference():
    m = LightViTMerge(LightViTMergeConfig(in_dim=32, out_dim=48, num_tokens=2)).eval()
    x, hw = m.example_args(2, (6, 8))
    with torch.no_grad():
        out, hw2 = m(x, hw)
        grid = x[:, 2:].view(2, 6, 8, 32)
        parts = [grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]]
        s2d = torch.cat(parts, dim=-1).reshape(2, 12, 128)
        pooled = F.max_pool2d(grid.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).reshape(2, 12, 32)
        img = m.reduction(m.norm(s2d)) + m.res_proj(pooled)
        glb = m.proj_global(m.norm_global(x[:, :2]))
    assert hw2 == (3, 4)
    torch.testing.assert_close(out, torch.cat([glb, img], dim=1))


def test_merge_pads_odd_grids():
    m = LightViTMerge(LightViTMergeConfig(in_dim=32, out_dim=64, num_tokens=1)).eval()
    x, hw = m.example_args(1, (7, 5))
    with torch.no_grad():
        out, hw2 = m(x, hw)
        grid = x[:, 1:].view(1, 7, 5, 32)
        # Both branches see the zero-padded map (the official detection code pads first): the edge windows' max
        # includes the zeros, so an all-negative edge window pools to 0, not to its largest real value.
        s2d_src = F.pad(grid, (0, 0, 0, 1, 0, 1))
        pooled = F.max_pool2d(s2d_src.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).reshape(1, 12, 32)
        ceil_pooled = F.max_pool2d(grid.permute(0, 3, 1, 2), 2, ceil_mode=True).permute(0, 2, 3, 1).reshape(1, 12, 32)
        parts = [s2d_src[:, 0::2, 0::2], s2d_src[:, 1::2, 0::2], s2d_src[:, 0::2, 1::2], s2d_src[:, 1::2, 1::2]]
        img = m.reduction(m.norm(torch.cat(parts, -1).reshape(1, 12, 128))) + m.res_proj(pooled)
    assert hw2 == (4, 3) and out.shape == (1, 1 + 12, 64)
    torch.testing.assert_close(out[:, 1:], img)
    assert (pooled != ceil_pooled).any()  # the test input does reach the difference (negative edge values)


# ---- model ----


def test_model_derived_knobs_and_drop_path_ramp():
    cfg = models().get("lightvit_s").config
    assert cfg.embed_dims == (96, 192, 384)
    m = LightViT(LightViTConfig(num_layers=(1, 2, 2), drop_path_rate=0.2), device="meta")
    rates = [blk.config.drop_path for stage in m.stages for blk in stage.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert m.stages[2].blocks[0].config.mlp_ratio == 4.0 and m.stages[0].blocks[0].config.mlp_ratio == 8.0


def test_model_runs_at_256_with_padded_windows():
    m = LightViT(LightViTConfig(num_layers=(1, 1, 1))).eval()
    grids = []
    for stage in m.stages:
        stage.blocks[0].register_forward_pre_hook(lambda mod, args: grids.append(tuple(args[1])))
    with torch.no_grad():
        out = m(torch.randn(1, 3, 256, 256))
    assert grids == [(32, 32), (16, 16), (8, 8)]
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_block_registry_defaults():
    spec = blocks().get("lightvit")
    assert spec.config.dim == 128 and spec.config.num_tokens == 8 and spec.config.window_size == 7
    assert blocks().get("lightvit_merge").config.out_dim == 256
