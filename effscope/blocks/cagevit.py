"""CageViT blocks: token rearrangement into major + fusion tokens, and the Gated Linear SRA encoder block.

Zheng et al., "CageViT: Convolutional Activation Guided Efficient Vision Transformer" (arXiv 2305.09924, 2023).
No official code exists (docs/zoo.md#cagevit-interpretation): everything here is effscope's documented interpretation of
the abstract.

- `cagevit_select` (interpretation items 2-3): patches are ranked by an activation score; the `num_major` best are
  kept as major tokens (in score order, scaled by sigmoid(score) so the scorer is trained, plus the positional
  embedding of their original positions); the remaining minor tokens are pooled into `num_fusion` fusion tokens by
  multi-head attention with learned queries, plus a learned fusion embedding.
- `cagevit` (items 4-5): pre-norm block, Gated Linear SRA + plain MLP over [major tokens, fusion tokens]. Keys and
  values come from the major tokens average-pooled to `pool_tokens` along the score order (PVTv2-Li's reduction:
  pool, 1x1 projection, LN, GELU; docs/zoo.md#pvt_linear_sra-block) concatenated with the fusion tokens; the attention
  output is gated by sigmoid(Linear(x)) before the output projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effscope.blocks._layers import DropPath, Mlp, merge_heads, split_heads
from effscope.blocks.attention import attend
from effscope.errors import InputSizeError
from effscope.knobs import Choice, Config, FloatRange, IntRange, knob
from effscope.modules import ConfiguredModule, DeviceLike, TokenBlock
from effscope.spec import Reference, register_block

__all__ = [
    "CageViTBlock",
    "CageViTBlockConfig",
    "CageViTSelect",
    "CageViTSelectConfig",
    "FusionPool",
    "GatedLinearSRA",
    "TokenRearrange",
]

_PAPER = "CageViT (arXiv 2305.09924)"
_NOTES = ("no official implementation: effscope's documented interpretation (docs/zoo.md#cagevit-interpretation)",)
_REFERENCE = Reference(
    size=(28, 28), source="no official implementation (docs/zoo.md#cagevit-interpretation): no reference numbers"
)
_HEAD_DIMS = (16, 24, 32, 48, 64, 96, 128)


# --- token rearrangement ------------------------------------------------------------------------------------------


class FusionPool(nn.Module):
    """Multi-head attention pooling of the minor tokens into `num_fusion` tokens with learned queries.

    The queries are learned directly in head space (a query projection of learned parameters would be redundant);
    keys and values are a Linear of the layer-normed minor tokens.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        num_fusion: int,
        *,
        qkv_bias: bool = True,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.query = nn.Parameter(torch.zeros(num_fusion, dim, **dd))
        self.norm = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N_minor, dim) -> (B, num_fusion, dim)."""
        b, n, _ = x.shape
        k, v = self.kv(self.norm(x)).view(b, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = split_heads(self.query.unsqueeze(0), self.heads).expand(b, -1, -1, -1)
        return self.proj(merge_heads(attend(q, k, v, scale=self.scale)))


@dataclass(frozen=True)
class CageViTSelectConfig(Config):
    owner_name = "cagevit_select"

    num_major: int = knob(588, IntRange(1, 4095), help="patches kept as major tokens (highest scores)", unit="tokens")
    num_fusion: int = knob(4, IntRange(1, 64), help="fusion tokens the minor patches are pooled into", unit="tokens")
    heads: int = knob(4, IntRange(1, 32), help="heads of the fusion attention pooling", unit="heads")
    head_dim: int = knob(32, Choice(_HEAD_DIMS), help="channels per head", unit="channels")
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the fusion pooling's key/value projection")
    pos_grid: int = knob(
        28, IntRange(1, 64), help="side of the learned positional table (others interpolate)", unit="patches"
    )

    @property
    def dim(self) -> int:
        """Token width: heads x head_dim."""
        return self.heads * self.head_dim

    def check(self) -> None:
        if self.num_major >= self.pos_grid**2:
            self.fail(
                "`num_major < pos_grid**2` (minor tokens must remain on the design grid)",
                num_major=self.num_major,
                pos_grid=self.pos_grid,
            )

    def derived(self) -> dict[str, int]:
        return {"dim": self.dim, "tokens_out": self.num_major + self.num_fusion}


class TokenRearrange(nn.Module):
    """Split patch tokens by score into major tokens and fused minor tokens (the scorer lives outside).

    Major tokens: the `num_major` highest scores in descending score order, multiplied by sigmoid(score) (the
    scorer's only gradient path: topk/sort alone is not differentiable) plus the gathered positional embedding.
    Fusion tokens: `FusionPool` over the rest, plus a learned fusion embedding. The positional table is learned on a
    `pos_grid` x `pos_grid` grid and bicubically interpolated to other grids.
    """

    def __init__(
        self, config: CageViTSelectConfig, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        c, dd = config, {"device": device, "dtype": dtype}
        self.num_major, self.pos_grid = c.num_major, c.pos_grid
        self.pos_embed = nn.Parameter(torch.zeros(1, c.pos_grid**2, c.dim, **dd))
        self.fusion_pool = FusionPool(c.dim, c.heads, c.num_fusion, qkv_bias=c.qkv_bias, **dd)
        self.fusion_embed = nn.Parameter(torch.zeros(1, c.num_fusion, c.dim, **dd))
        for p in (self.pos_embed, self.fusion_embed, self.fusion_pool.query):
            if p.device.type != "meta":
                nn.init.trunc_normal_(p, std=0.02)

    def positions(self, hw: tuple[int, int]) -> torch.Tensor:
        """The positional table for an H x W grid: (1, H*W, dim)."""
        g = self.pos_grid
        if hw == (g, g):
            return self.pos_embed
        table = self.pos_embed.view(1, g, g, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=hw, mode="bicubic", align_corners=False)
        return table.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, scores: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x: (B, H*W, dim) patch tokens, scores: (B, H*W) -> (B, num_major + num_fusion, dim)."""
        b, n, c = x.shape
        if self.num_major >= n:
            raise InputSizeError(
                f"cagevit_select keeps num_major={self.num_major} major tokens and needs at least one minor token, "
                f"so the grid must hold more than {self.num_major} patches, but got {hw[0]}x{hw[1]} = {n}"
            )
        # one full sort = topk(num_major) for the major tokens plus the minor tokens, in one gather
        ranked, order = scores.sort(dim=1, descending=True)
        index = order.unsqueeze(-1).expand(-1, -1, c)
        tokens = x.gather(1, index)
        m = self.num_major
        pos = self.positions(hw).expand(b, -1, -1).gather(1, index[:, :m])
        major = tokens[:, :m] * ranked[:, :m, None].sigmoid() + pos
        fusion = self.fusion_pool(tokens[:, m:]) + self.fusion_embed
        return torch.cat([major, fusion], dim=1)


@register_block(
    "cagevit_select",
    family="cagevit",
    paper=_PAPER,
    summary="score patches, keep the top num_major as major tokens, attention-pool the rest into fusion tokens",
    reference=_REFERENCE,
    notes=_NOTES,
)
class CageViTSelect(TokenBlock):
    """CageViT's token rearrangement with a per-token Linear(dim -> 1) scorer (the model uses a CNN scorer instead).

    Input: x (B, H*W, dim) patch tokens on an H x W grid and hw = (H, W); H*W must exceed num_major.
    Output: (B, num_major + num_fusion, dim): major tokens in descending score order, then the fusion tokens.
    """

    Config = CageViTSelectConfig

    def __init__(
        self,
        config: CageViTSelectConfig | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        dd = {"device": device, "dtype": dtype}
        self.score = nn.Linear(self.config.dim, 1, **dd)
        self.rearrange = TokenRearrange(self.config, **dd)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.rearrange(x, self.score(x).squeeze(-1), hw)


# --- encoder block ------------------------------------------------------------------------------------------------


class GatedLinearSRA(nn.Module):
    """Attention of all tokens to [major tokens pooled to `pool_tokens`, fusion tokens], gated by sigmoid(Linear(x)).

    Reduction of the major tokens as PVTv2-Li (docs/zoo.md#pvt_linear_sra-block): adaptive average pool (here along the
    score-ordered sequence, which has no grid) -> 1x1 projection (a Linear) -> LayerNorm (eps 1e-5) -> GELU.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        num_major: int,
        pool_tokens: int,
        *,
        qkv_bias: bool = True,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        inner = heads * head_dim
        self.heads, self.scale = heads, head_dim**-0.5
        self.num_major, self.pool_tokens = num_major, pool_tokens
        self.q = nn.Linear(dim, inner, bias=qkv_bias, **dd)
        self.sr = nn.Linear(dim, dim, **dd)
        self.sr_norm = nn.LayerNorm(dim, **dd)
        self.act = nn.GELU()
        self.kv = nn.Linear(dim, 2 * inner, bias=qkv_bias, **dd)
        self.gate = nn.Linear(dim, inner, **dd)
        self.proj = nn.Linear(inner, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, num_major + num_fusion, dim), already normed -> same shape."""
        b, n, _ = x.shape
        m = self.num_major
        pooled = F.adaptive_avg_pool1d(x[:, :m].transpose(1, 2), self.pool_tokens).transpose(1, 2)
        keys_in = torch.cat([self.act(self.sr_norm(self.sr(pooled))), x[:, m:]], dim=1)
        k, v = self.kv(keys_in).view(b, keys_in.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = merge_heads(attend(split_heads(self.q(x), self.heads), k, v, scale=self.scale))
        return self.proj(out * self.gate(x).sigmoid())


@dataclass(frozen=True)
class CageViTBlockConfig(Config):
    owner_name = "cagevit"

    num_major: int = knob(588, IntRange(1, 4096), help="major tokens at the start of the sequence", unit="tokens")
    num_fusion: int = knob(4, IntRange(1, 64), help="fusion tokens after the major tokens", unit="tokens")
    pool_tokens: int = knob(
        49, IntRange(1, 256), help="major tokens after the SRA pooling (keys = this + fusion)", unit="tokens"
    )
    heads: int = knob(4, IntRange(1, 32), help="attention heads", unit="heads")
    head_dim: int = knob(32, Choice(_HEAD_DIMS), help="channels per head", unit="channels")
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="MLP hidden width / dim")
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the q, k, v projections")
    drop_path: float = knob(0.0, FloatRange(0.0, 0.9), help="stochastic depth rate (training only)")

    @property
    def dim(self) -> int:
        """Token width: heads x head_dim."""
        return self.heads * self.head_dim

    def check(self) -> None:
        if self.pool_tokens > self.num_major:
            self.fail("`pool_tokens <= num_major`", pool_tokens=self.pool_tokens, num_major=self.num_major)

    def derived(self) -> dict[str, int]:
        return {
            "dim": self.dim,
            "mlp_hidden": round(self.dim * self.mlp_ratio),
            "tokens": self.num_major + self.num_fusion,
            "keys": self.pool_tokens + self.num_fusion,
        }


@register_block(
    "cagevit",
    family="cagevit",
    paper=_PAPER,
    summary="Gated Linear SRA (keys: pooled major + fusion tokens) + MLP over major and fusion tokens",
    reference=_REFERENCE,
    notes=_NOTES,
)
class CageViTBlock(ConfiguredModule):
    """Pre-norm CageViT encoder block: x += GatedLinearSRA(LN(x)); x += MLP(LN(x)) (block LNs eps 1e-6).

    The FFN is a plain MLP, not PVTv2's DW-FFN: after selection the major tokens are in score order, no longer on
    a grid, so there is nothing for a depth-wise conv to run over.

    Input: x (B, num_major + num_fusion, dim), major tokens then fusion tokens; no grid (`size` is ignored).
    The token count is fixed by the knobs, not by the image grid, so `example_args` builds it from the knobs alone.
    Output: same shape.
    """

    Config = CageViTBlockConfig

    def __init__(
        self,
        config: CageViTBlockConfig | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(c.dim, eps=1e-6, **dd)
        self.attn = GatedLinearSRA(c.dim, c.heads, c.head_dim, c.num_major, c.pool_tokens, qkv_bias=c.qkv_bias, **dd)
        self.norm2 = nn.LayerNorm(c.dim, eps=1e-6, **dd)
        self.mlp = Mlp(c.dim, round(c.dim * c.mlp_ratio), **dd)
        self.drop_path = DropPath(c.drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.config.num_major + self.config.num_fusion
        if x.shape[1] != n:
            raise InputSizeError(f"cagevit takes num_major + num_fusion = {n} tokens, but got {x.shape[1]}")
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def example_args(
        self,
        batch: int = 1,
        size: tuple[int, int] | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple:
        # a token grid given (--tokens) is taken as given: forward refuses it unless it holds num_major + num_fusion
        n = size[0] * size[1] if size else self.config.num_major + self.config.num_fusion
        return (torch.randn(batch, n, self.config.dim, device=device, dtype=dtype),)
