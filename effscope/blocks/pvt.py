"""PVTv2 block: spatial-reduction attention (SRA, or its linear variant) + a depth-wise-conv FFN.

Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer" (CVMJ 2022, arXiv 2106.13797); the baseline
LightViT and LITv2 compare against (docs/zoo.md#pvtv2).
Pre-norm: x = x + SRA(LN(x)); x = x + DWConvMlp(LN(x)), both LNs eps 1e-6. SRA keeps every token as a query but
reduces the keys/values: a stride-R R x R conv (H/R x W/R keys, floored like the official strided conv), or in the
linear variant ("-Li") an adaptive average pool to a fixed pool x pool grid + 1x1 conv + LN + GELU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effscope.blocks._layers import DropPath, DWConvMlp, init_transformer_weights, merge_heads, split_heads
from effscope.blocks.attention import attend
from effscope.errors import InputSizeError
from effscope.knobs import Choice, Config, FloatRange, IntRange, knob
from effscope.modules import DeviceLike, TokenBlock
from effscope.spec import Reference, register_block

__all__ = ["PVTBlock", "PVTLinearSRABlock", "PVTLinearSRAConfig", "PVTSRAConfig", "SRAttention"]

_PAPER = "PVTv2 (arXiv 2106.13797)"


class SRAttention(nn.Module):
    """Multi-head attention whose keys/values come from a spatially reduced copy of the tokens.

    Args:
        dim: token width (heads x head_dim).
        heads: attention heads.
        sr_ratio: R of the R x R stride-R reduction conv (1 = plain MHSA); ignored when `pool_size` is set.
        pool_size: linear SRA: pool the grid to pool_size x pool_size keys whatever the input size.
        qkv_bias: bias on the q and kv projections.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        sr_ratio: int = 1,
        pool_size: int | None = None,
        qkv_bias: bool = True,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.sr_ratio = 1 if pool_size is not None else sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.reduce: nn.Module | None = None
        if pool_size is not None:
            self.reduce = nn.Sequential(nn.AdaptiveAvgPool2d(pool_size), nn.Conv2d(dim, dim, 1, **dd))
            self.act: nn.Module = nn.GELU()
        elif sr_ratio > 1:
            self.reduce = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio, **dd)
            self.act = nn.Identity()
        if self.reduce is not None:
            self.norm = nn.LayerNorm(dim, **dd)  # default eps 1e-5 here, unlike the block's norms

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x: (B, H*W, dim) -> (B, H*W, dim)."""
        b, _, c = x.shape
        q = split_heads(self.q(x), self.heads)
        x_r = x
        if self.reduce is not None:
            x_r = self.reduce(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
            x_r = self.act(self.norm(x_r))
        k, v = self.kv(x_r).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(merge_heads(attend(q, k, v, scale=self.scale)))


@dataclass(frozen=True)
class _PVTConfig(Config):
    heads: int = knob(4, IntRange(1, 16), help="attention heads", unit="heads")
    head_dim: int = knob(
        32, IntRange(8, 128, step=8), help="channels per head (every PVTv2 size uses 32 or 64)", unit="channels"
    )
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="DW-FFN hidden width / dim")
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the q and kv projections")
    drop_path: float = knob(0.0, FloatRange(0.0, 0.9), help="stochastic depth rate (training only)")

    @property
    def dim(self) -> int:
        """Token width: heads x head_dim (derived, so every point is valid)."""
        return self.heads * self.head_dim

    @property
    def hidden(self) -> int:
        return round(self.dim * self.mlp_ratio)


@dataclass(frozen=True)
class PVTSRAConfig(_PVTConfig):
    owner_name = "pvt_sra"

    sr_ratio: int = knob(
        4,
        IntRange(1, 8),
        help="spatial reduction R: keys/values from an R x R stride-R conv "
        "(1 = full MHSA); the key grid is floor(H/R) x floor(W/R)",
    )

    def derived(self) -> dict[str, int]:
        return {"dim": self.dim, "mlp_hidden": self.hidden}


@dataclass(frozen=True)
class PVTLinearSRAConfig(_PVTConfig):
    owner_name = "pvt_linear_sra"

    pool_size: int = knob(
        7,
        IntRange(1, 14),
        help="keys/values from an adaptive average pool to this side (pool_size^2 keys at any resolution)",
        unit="tokens",
    )

    def derived(self) -> dict[str, int]:
        return {"dim": self.dim, "mlp_hidden": self.hidden, "keys": self.pool_size**2}


@register_block(
    "pvt_sra",
    family="pvt",
    paper=_PAPER,
    summary="spatial-reduction attention (strided-conv keys/values) + depth-wise-conv FFN",
    reference=Reference(params=465_920, macs=157.38e6, size=(28, 28), source="docs/zoo.md#reference-blocks (sr 4)"),
)
class PVTBlock(TokenBlock):
    """PVTv2 block: pre-norm SRA + DW-conv FFN (PVTv2's Mlp), residual with stochastic depth.

    Input: x (B, H*W, dim) and hw = (H, W); H and W must be at least sr_ratio (the reduction conv floors H/R, W/R).
    Output: same shape.
    """

    Config = PVTSRAConfig

    def __init__(
        self, config: PVTSRAConfig | None = None, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        linear = isinstance(c, PVTLinearSRAConfig)
        self.norm1 = nn.LayerNorm(c.dim, eps=1e-6, **dd)
        self.attn = SRAttention(
            c.dim,
            c.heads,
            sr_ratio=1 if linear else c.sr_ratio,
            pool_size=c.pool_size if linear else None,
            qkv_bias=c.qkv_bias,
            **dd,
        )
        self.norm2 = nn.LayerNorm(c.dim, eps=1e-6, **dd)
        self.mlp = DWConvMlp(c.dim, c.hidden, relu_after_fc1=linear, **dd)
        self.drop_path = DropPath(c.drop_path)
        self.apply(init_transformer_weights)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        r = self.attn.sr_ratio
        if hw[0] < r or hw[1] < r:
            raise InputSizeError(
                f"{self.config.owner()}: the token grid must be at least sr_ratio on each side, "
                f"but got {hw[0]}x{hw[1]} with sr_ratio={r}"
            )
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


@register_block(
    "pvt_linear_sra",
    family="pvt",
    paper=_PAPER,
    summary="linear SRA (keys/values pooled to a fixed 7x7 grid) + depth-wise-conv FFN with ReLU (PVTv2-Li)",
    reference=Reference(params=220_160, macs=145.44e6, size=(28, 28), source="docs/zoo.md#reference-numbers"),
)
class PVTLinearSRABlock(PVTBlock):
    """PVTv2-Li block: pre-norm linear SRA (pool -> 1x1 conv -> LN -> GELU keys/values) + DW-conv FFN with a ReLU.

    Input: x (B, H*W, dim) and hw = (H, W), any grid (the pool fixes the number of keys at pool_size^2).
    Output: same shape.
    """

    Config = PVTLinearSRAConfig
