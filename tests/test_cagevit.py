"""CageViT (effscope's interpretation, docs/zoo.md#cagevit-interpretation): parameter budget, analytic MACs,
selection and gating."""

from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from effscope.blocks.attention import attention_impl
from effscope.blocks.cagevit import CageViTBlock, CageViTBlockConfig, CageViTSelect, CageViTSelectConfig
from effscope.errors import InputSizeError, KnobError
from effscope.models.cagevit import CageViT, CageViTConfig
from effscope.spec import models

PAPER_PARAMS = 43_350_000  # arXiv 2305.09924 abstract


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _macs(module: torch.nn.Module, *args) -> int:
    with attention_impl("explicit"):
        count = FlopCountAnalysis(module.eval(), args)
        count.unsupported_ops_warnings(False)
        count.uncalled_modules_warnings(False)
        return count.total()


def _block_params(d: int, hidden: int) -> int:
    # q, sr, gate, proj: d x d + bias; kv: 2d x d + bias; three LNs (norm1, sr_norm, norm2); MLP
    return 6 * d * d + 12 * d + 2 * d * hidden + hidden + d


def _block_macs(c: CageViTBlockConfig) -> int:
    d, n, keys = c.dim, c.num_major + c.num_fusion, c.pool_tokens + c.num_fusion
    hidden = round(d * c.mlp_ratio)
    linear = 3 * n * d * d + c.pool_tokens * d * d + keys * d * 2 * d + 2 * n * d * hidden  # q/gate/proj, sr, kv, MLP
    matmul = 2 * n * keys * d  # q kᵀ and attn v over all heads
    norms = 5 * (2 * n * d + c.pool_tokens * d)  # fvcore: 5 per element for an affine LN
    return linear + matmul + norms


# --- the model ----------------------------------------------------------------------------------------------------


def test_cagevit_m_params_within_1_percent_of_paper():
    n = _params(models().get("cagevit_m").build(device="meta"))
    assert abs(n - PAPER_PARAMS) <= 0.01 * PAPER_PARAMS, n
    assert n == 43_413_417  # the figure the module docstring states


def test_cagevit_m_param_breakdown():
    m = models().get("cagevit_m").build(device="meta")
    c = m.config
    d, w = c.dim, c.scorer_width
    assert _params(m.scorer) == 3 * 9 * w + 2 * 9 * w * w + 3 * 2 * w + w + 1  # convs, BNs, 1x1 weighting
    assert _params(m.patch_embed) == 3 * 16 * 16 * d + d
    assert _params(m.select) == 14 * 14 * d + 2 * c.num_fusion * d + 2 * d + 3 * d * d + 3 * d
    assert all(_params(b) == _block_params(d, 4 * d) for b in m.blocks)
    assert _params(m.head) == d * 1000 + 1000


def test_cagevit_m_macs_are_the_analytic_count():
    spec = models().get("cagevit_m")
    m = spec.build(spec.configure({"depth": 2}))  # the count is per block; two keep the test fast
    c = m.config
    d, w, n_minor = c.dim, c.scorer_width, 196 - c.num_major
    scorer = 112 * 112 * 27 * w + (56 * 56 + 28 * 28) * 9 * w * w + 28 * 28 * w + 2 * (112**2 + 56**2 + 28**2) * w
    patch = 196 * 768 * d
    select = 5 * n_minor * d + n_minor * 2 * d * d + 2 * c.num_fusion * n_minor * d + c.num_fusion * d * d
    block = CageViTBlockConfig(
        num_major=c.num_major,
        num_fusion=c.num_fusion,
        pool_tokens=c.pool_tokens,
        heads=c.heads,
        head_dim=c.head_dim,
        mlp_ratio=c.mlp_ratio,
    )
    tail = 5 * (c.num_major + c.num_fusion) * d + d * 1000
    assert _macs(m, *m.example_args(1)) == scorer + patch + select + c.depth * _block_macs(block) + tail


def test_every_parameter_trains_including_the_scorer():
    cfg = CageViTConfig(
        depth=1, heads=2, head_dim=16, scorer_width=8, num_major=100, pool_tokens=10, num_fusion=2, num_classes=10
    )
    m = CageViT(cfg)
    (x,) = m.example_args(2)
    m(x).square().mean().backward()
    dead = [name for name, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not dead


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (224, 288)])
def test_model_runs_on_other_grids_by_interpolating_positions(size):
    cfg = CageViTConfig(depth=1, heads=2, head_dim=16, scorer_width=8, num_classes=10)
    out = CageViT(cfg).eval()(*CageViT(cfg).example_args(1, size))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_model_states_its_input_constraints():
    m = CageViT(CageViTConfig(depth=1, heads=2, head_dim=16, scorer_width=8)).eval()
    with pytest.raises(InputSizeError, match="divisible by patch_size=16"):
        m(torch.randn(1, 3, 230, 230))
    with pytest.raises(InputSizeError, match="more than 147 patches"):
        m(torch.randn(1, 3, 160, 160))  # 10 x 10 = 100 patches


def test_knob_rules():
    with pytest.raises(KnobError, match="pool_tokens <= num_major"):
        CageViTConfig(num_major=40)
    with pytest.raises(KnobError, match="num_major < "):
        CageViTConfig(patch_size=32)  # 7 x 7 = 49 patches at 224
    with pytest.raises(KnobError, match="pool_tokens <= num_major"):
        CageViTBlockConfig(num_major=10, pool_tokens=11)
    with pytest.raises(KnobError, match="num_major < pos_grid"):
        CageViTSelectConfig(num_major=16, pos_grid=4)


# --- the encoder block --------------------------------------------------------------------------------------------


def test_block_params_and_macs_are_analytic():
    m = CageViTBlock()
    c = m.config
    assert _params(m) == _block_params(c.dim, 4 * c.dim) == 231_552
    assert _macs(m, *m.example_args(1)) == _block_macs(c) == 118_053_504


def _small_block() -> CageViTBlock:
    cfg = CageViTBlockConfig(num_major=6, num_fusion=2, pool_tokens=3, heads=2, head_dim=16)
    return CageViTBlock(cfg).eval()


def test_keys_see_major_tokens_only_through_pooled_windows():
    # 6 major tokens pooled to 3 keys: windows {0,1}, {2,3}, {4,5}. Swapping inside a window changes no key, so the
    # other tokens' outputs stay put and the swapped pair's outputs swap.
    m = _small_block()
    x = torch.randn(2, 8, 32)
    swapped = x[:, [1, 0, 2, 3, 4, 5, 6, 7]]
    with torch.no_grad():
        out, out_swapped = m(x), m(swapped)
    torch.testing.assert_close(out_swapped, out[:, [1, 0, 2, 3, 4, 5, 6, 7]], rtol=1e-5, atol=1e-5)
    across = x[:, [2, 1, 0, 3, 4, 5, 6, 7]]  # across windows: the keys change
    with torch.no_grad():
        assert not torch.allclose(m(across)[:, 6:], out[:, 6:], atol=1e-4)


def test_gate_multiplies_the_attention_output():
    m = _small_block()
    with torch.no_grad():
        m.attn.gate.weight.zero_()
        m.attn.gate.bias.fill_(-1e4)  # sigmoid = 0: only the output projection's bias is left
        x = torch.randn(2, 8, 32)
        y = x + m.attn.proj.bias
        torch.testing.assert_close(m(x), y + m.mlp(m.norm2(y)))


def test_block_rejects_a_wrong_token_count():
    with pytest.raises(InputSizeError, match="num_major \\+ num_fusion = 8"):
        _small_block()(torch.randn(1, 9, 32))


# --- the selection block ------------------------------------------------------------------------------------------


def _small_select() -> CageViTSelect:
    m = CageViTSelect(CageViTSelectConfig(num_major=5, num_fusion=2, heads=2, head_dim=16, pos_grid=4)).eval()
    with torch.no_grad():  # score = channel 0 of each token
        m.score.weight.zero_()
        m.score.weight[0, 0] = 1.0
        m.score.bias.zero_()
    return m


def test_select_keeps_the_top_scores_in_score_order():
    m = _small_select()
    x = torch.randn(3, 16, 32)
    with torch.no_grad():
        out = m(x, (4, 4))
    assert out.shape == (3, 7, 32)
    ranked, order = x[..., 0].topk(5, dim=1)
    pos = m.rearrange.pos_embed[0][order]
    expected = torch.stack([x[i, order[i]] for i in range(3)]) * ranked.sigmoid()[..., None] + pos
    torch.testing.assert_close(out[:, :5], expected)


def test_fusion_tokens_depend_only_on_the_minor_tokens_as_a_set():
    m = _small_select()
    x = torch.randn(1, 16, 32)
    x[0, :, 0] = torch.arange(16.0).flip(0)  # tokens 0..4 are the major ones
    changed = x.clone()
    changed[0, :5, 1:] = torch.randn(5, 31)  # new major contents, same scores
    changed[0, 5:] = changed[0, 5:].roll(3, dims=0)  # minor tokens reordered
    with torch.no_grad():
        torch.testing.assert_close(m(changed, (4, 4))[:, 5:], m(x, (4, 4))[:, 5:], rtol=1e-5, atol=1e-5)


def test_select_needs_a_minor_token():
    with pytest.raises(InputSizeError, match="more than 5 patches, but got 2x2 = 4"):
        _small_select()(torch.randn(1, 4, 32), (2, 2))


def test_positions_are_the_table_on_its_grid_and_interpolated_elsewhere():
    r = _small_select().rearrange
    assert r.positions((4, 4)) is r.pos_embed
    with torch.no_grad():
        r.pos_embed.fill_(0.5)
    assert r.positions((5, 7)).shape == (1, 35, 32)
    torch.testing.assert_close(r.positions((5, 7)), torch.full((1, 35, 32), 0.5))
