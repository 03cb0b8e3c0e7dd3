"""CXV family (docs/zoo.md#cxv): parameter breakdowns, fvcore MACs, Nyström padding and landmarks, Performer
features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from effscope.blocks._layers import merge_heads
from effscope.blocks.attention import attend, attention_impl
from effscope.blocks.cxv import (
    ImageLinearAttention,
    LinearBlock,
    NystromAttention,
    NystromBlock,
    PerformerAttention,
    PerformerBlock,
    PerformerBlockConfig,
    gaussian_orthogonal_matrix,
    iterative_pinv,
)
from effscope.models.cxv import CNV, ChannelLayerNorm, CNVConfig
from effscope.spec import models


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- parameters and MACs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls,attn,total",
    [
        # qkv 128->384 no bias, out 128->128, res conv 4 heads x 33
        (NystromBlock, 49_152 + 16_512 + 132, 131_716),
        # q, k, v, out Linear 128->128 with bias
        (PerformerBlock, 4 * 16_512, 131_968),
        # q, k, v, out 3x3 conv 128->128 with bias
        (LinearBlock, 4 * 147_584, 656_256),
    ],
)
def test_block_param_breakdown(cls, attn, total):
    m = cls(device="meta")
    assert _params(m.attn) == attn
    assert _params(m.ff) == 33_024 + 32_896  # 1x1 convs 128->256->128
    assert _params(m) == total


def test_performer_projection_is_a_buffer_not_a_parameter():
    m = PerformerBlock()
    assert "attn.projection" in m.state_dict()
    assert all("projection" not in n for n, _ in m.named_parameters())


@pytest.mark.parametrize("name", ["cxv_cnv", "cxv_cpv", "cxv_cltv"])
def test_model_param_breakdown(name):
    spec = models().get(name)
    m = spec.build(device="meta")
    assert _params(m.stem) == 896 + 18_496
    assert [_params(layer.embed) for layer in m.layers] == [73_856] + [147_584] * 4
    assert all(_params(layer.norm) == 256 for layer in m.layers)
    assert _params(m.head) == 1_290
    assert _params(m) == spec.reference.params


@pytest.mark.parametrize("name", ["cxv_cnv", "cxv_cpv", "cxv_cltv"])
def test_fvcore_macs_match_blocks_md(name):
    from fvcore.nn import FlopCountAnalysis

    spec = models().get(name)
    m = spec.build().eval()
    with attention_impl("explicit"):
        counter = FlopCountAnalysis(m, m.example_args(1, spec.reference.size))
        counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        macs = counter.total()
    # Ours is exact for CNV/CLTV; CPV is 0.02 % under because fvcore counts the official three-operand einsum's
    # D⁻¹ scaling as half a MAC per output, which our matmul-then-divide form does not have.
    assert macs == pytest.approx(spec.reference.macs, rel=5e-3)
    assert abs(macs - spec.reference.macs) < (0.5e6 if name == "cxv_cpv" else 0.1e6)


def test_model_forwards_knobs_to_its_blocks():
    cfg = CNVConfig(emb_dim=64, heads=2, head_dim=16, num_landmarks=16, pinv_iters=3, res_kernel=9, depth=2)
    m = CNV(cfg, device="meta")
    block = m.layers[1].block
    assert block.config.dim == 64 and block.config.heads == 2 and block.config.head_dim == 16
    assert block.attn.m == 16 and block.attn.pinv_iters == 3 and block.attn.res_conv.kernel_size == (9, 1)
    assert m.stem[0].out_channels == 16 and m.stem[1].out_channels == 32


@pytest.mark.parametrize("name", ["cxv_cnv", "cxv_cpv", "cxv_cltv"])
def test_model_with_strided_embeddings_runs_down_to_one_pixel(name):
    spec = models().get(name)
    m = spec.build(spec.configure({"emb_stride": 2, "emb_dim": 32, "heads": 2, "head_dim": 16})).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32))  # 32 -> 16 -> 8 -> 4 -> 2 -> 1 (Nyström front-pads 1 token to 64)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


# --- channel LayerNorm ----------------------------------------------------------------------------------------------


def test_channel_layernorm_adds_eps_to_std_not_variance():
    norm = ChannelLayerNorm(2)
    x = torch.tensor([0.0, 2e-5]).view(1, 2, 1, 1)  # std 1e-5, comparable to eps
    got = norm(x).flatten()
    torch.testing.assert_close(got, torch.tensor([-0.5, 0.5]))  # ±1e-5 / (1e-5 + 1e-5)
    x = torch.randn(2, 8, 3, 5)
    ref = (x - x.mean(1, keepdim=True)) / (x.var(1, unbiased=False, keepdim=True).sqrt() + 1e-5)
    torch.testing.assert_close(norm.__class__(8)(x), ref)


# --- Nyström --------------------------------------------------------------------------------------------------------


def _nystrom_reference(attn: NystromAttention, x: torch.Tensor) -> torch.Tensor:
    """The Nyström attention spelled out: explicit front zero tokens, segment sums / l, softmax kernels, pinv loop,
    conv residual."""
    b, n, c = x.shape
    m, h, d = attn.m, attn.heads, attn.head_dim
    seg = math.ceil(n / m)
    x = torch.cat([x.new_zeros(b, m * seg - n, c), x], dim=1)
    q, k, v = (t.reshape(b, m * seg, h, d).transpose(1, 2) for t in attn.qkv(x).chunk(3, dim=-1))
    q = q * d**-0.5
    q_l = q.reshape(b, h, m, seg, d).sum(3) / seg
    k_l = k.reshape(b, h, m, seg, d).sum(3) / seg
    a = torch.einsum("bhid,bhjd->bhij", q, k_l).softmax(-1)
    bm = torch.einsum("bhid,bhjd->bhij", q_l, k_l).softmax(-1)
    cm = torch.einsum("bhid,bhjd->bhij", q_l, k).softmax(-1)
    z = bm.transpose(-1, -2) / (bm.abs().sum(-1).max() * bm.abs().sum(-2).max())
    eye = torch.eye(m, dtype=x.dtype)
    for _ in range(attn.pinv_iters):
        xz = bm @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    out = (a @ z) @ (cm @ v)
    kernel = attn.res_conv.weight  # (h, 1, k, 1): one sequence kernel per head
    out = out + F.conv2d(v, kernel, padding=(kernel.shape[2] // 2, 0), groups=h)
    out = out.transpose(1, 2).reshape(b, m * seg, h * d)[:, -n:]
    return attn.proj(out)


@pytest.mark.parametrize("n", [255, 256, 40])
def test_nystrom_matches_reference(n):
    attn = NystromAttention(32, 2, 16, 64, 6, 33, 0.0).double().eval()
    x = torch.randn(2, n, 32, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _nystrom_reference(attn, x))


def test_nystrom_front_pads_with_zero_tokens():
    attn = NystromAttention(32, 2, 16, 16, 6, 5, 0.0).double().eval()
    x = torch.randn(1, 37, 32, dtype=torch.double)  # 37 % 16 = 5: 11 zero tokens go in front
    padded = torch.cat([x.new_zeros(1, 11, 32), x], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn(padded)[:, 11:])
        back = torch.cat([x, x.new_zeros(1, 11, 32)], dim=1)
        assert not torch.allclose(attn(x), attn(back)[:, :37])


def test_nystrom_with_one_token_per_landmark_is_softmax_attention():
    # m = n: landmarks are the tokens, A = B = C and A B⁺ C v = A v once the pseudo-inverse has converged.
    attn = NystromAttention(32, 2, 16, 16, 30, 1, 0.0).double().eval()
    with torch.no_grad():
        attn.res_conv.weight.zero_()
        attn.qkv.weight.mul_(5)  # sharper, better conditioned kernels
        x = torch.randn(2, 16, 32, dtype=torch.double)
        q, k, v = attn.qkv(x).view(2, 16, 3, 2, 16).permute(2, 0, 3, 1, 4)
        exact = attn.proj(merge_heads(attend(q, k, v, scale=16**-0.5)))
        torch.testing.assert_close(attn(x), exact, rtol=1e-8, atol=1e-8)


def test_iterative_pinv_converges_and_scales_by_the_batch_global_max():
    x = torch.rand(2, 6, 6, dtype=torch.double).softmax(-1)
    x[1] = (x[1] * 10).softmax(-1) + torch.eye(6, dtype=torch.double)  # larger column sums than x[0]
    torch.testing.assert_close(iterative_pinv(x, 40), torch.linalg.pinv(x))
    # The official z0 divides by maxima over the whole batch, so few iterations couple the items (quirk kept).
    assert not torch.allclose(iterative_pinv(x, 2)[0], iterative_pinv(x[:1], 2)[0])


# --- Performer -----------------------------------------------------------------------------------------------------


def test_performer_default_features_are_d_ln_d():
    assert PerformerBlockConfig().nb_features == int(32 * math.log(32)) == 110


def test_gaussian_orthogonal_matrix_rows_orthogonal_within_blocks():
    w = gaussian_orthogonal_matrix(110, 32, dtype=torch.double)
    assert w.shape == (110, 32)
    for start in (0, 32, 64, 96):  # three full 32-row blocks and a truncated 14-row one
        blk = w[start : start + 32]
        unit = blk / blk.norm(dim=1, keepdim=True)
        torch.testing.assert_close(unit @ unit.T, torch.eye(len(blk), dtype=torch.double), rtol=0, atol=1e-5)
    assert gaussian_orthogonal_matrix(110, 32, device="meta").device.type == "meta"


def test_performer_projection_is_fixed_through_training():
    m = PerformerBlock(PerformerBlockConfig(dim=32, heads=2, head_dim=16, nb_features=20))
    before = m.attn.projection.clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        m(*m.example_args(2, (4, 4))).square().mean().backward()
        opt.step()
    assert torch.equal(m.attn.projection, before)
    assert PerformerBlock(dtype=torch.bfloat16).attn.projection.dtype == torch.bfloat16


def _constant_values(attn: torch.nn.Module, inner: int) -> None:
    """Make v = 1 everywhere: the v third of the fused projection outputs its bias only."""
    with torch.no_grad():
        attn.qkv.weight[2 * inner :].zero_()
        attn.qkv.bias[2 * inner :].fill_(1.0)


def test_performer_normalizes_rows():
    # D⁻¹ φ(q) φ(k)ᵀ is row-stochastic, so constant values come out unchanged.
    attn = PerformerAttention(32, 2, 16, 24, 0.0).double()
    _constant_values(attn, 32)
    x = torch.randn(2, 20, 32, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn.proj(torch.ones(2, 20, 32, dtype=torch.double)))


def test_performer_features_follow_the_softmax_kernel_formula():
    attn = PerformerAttention(32, 2, 16, 24, 0.0).double()
    x = torch.randn(1, 2, 5, 16, dtype=torch.double)
    w = attn.projection
    xs = x * 16**-0.25
    raw = xs @ w.T - (xs**2).sum(-1, keepdim=True) / 2
    q_ref = 24**-0.5 * (torch.exp(raw - (xs @ w.T).amax(-1, keepdim=True)) + 1e-4)
    k_ref = 24**-0.5 * (torch.exp(raw - (xs @ w.T).amax()) + 1e-4)  # one max over the whole tensor (official)
    torch.testing.assert_close(attn._features(x, True), q_ref)
    torch.testing.assert_close(attn._features(x, False), k_ref)


def test_performer_key_max_global_couples_the_batch_and_per_sample_does_not():
    x = torch.randn(3, 20, 32, dtype=torch.double)
    x[2] *= 4  # a sample with larger keys moves the global max
    outs = {}
    for key_max in ("global", "per_sample"):
        torch.manual_seed(0)
        attn = PerformerAttention(32, 2, 16, 24, 0.0, key_max=key_max).double().eval()
        with torch.no_grad():
            outs[key_max] = (attn(x)[:1], attn(x[:1]))
    together, alone = outs["per_sample"]
    torch.testing.assert_close(together, alone)
    together, alone = outs["global"]
    assert (together - alone).abs().max() > 1e-6  # the official stabiliser makes outputs batch-dependent


# --- linear attention ----------------------------------------------------------------------------------------------


def test_linear_attention_softmaxes_keys_over_positions_and_queries_over_channels():
    # k sums to 1 over positions and q over each head's channels, so constant values come out unchanged.
    attn = ImageLinearAttention(16, 2, 8, 3).double()
    _constant_values(attn, 16)
    x = torch.randn(2, 16, 5, 7, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn.proj(torch.ones(2, 16, 5, 7, dtype=torch.double)))


def test_linear_attention_matches_per_head_einsum():
    attn = ImageLinearAttention(16, 2, 8, 3).double()
    x = torch.randn(1, 16, 4, 6, dtype=torch.double)
    with torch.no_grad():
        q, k, v = (t.reshape(1, 2, 8, 24) for t in attn.qkv(x).chunk(3, dim=1))
        q = (q * 8**-0.25).softmax(dim=-2)
        k = (k * 8**-0.25).softmax(dim=-1)
        ctx = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhdn,bhde->bhen", q, ctx).reshape(1, 16, 4, 6)
        torch.testing.assert_close(attn(x), attn.proj(out))


# --- the blocks on maps --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [NystromBlock, PerformerBlock, LinearBlock])
def test_block_is_two_plain_residuals(cls):
    m = cls().eval()
    (x,) = m.example_args(1, (6, 10))
    assert x.shape == (1, 128, 6, 10)
    with torch.no_grad():
        y = m.attn(x) if cls is LinearBlock else m.attn(x.flatten(2).transpose(1, 2)).transpose(1, 2).view_as(x)
        y = y + x
        torch.testing.assert_close(m(x), m.ff(y) + y)
