"""ViT / DeiT multi-head self-attention block: the quadratic-attention baseline every efficient block is compared with.

Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021); Touvron et al., DeiT (ICML 2021).
Pre-norm: x = x + proj(MHSA(LN(x))); x = x + MLP(LN(x)), attention over all tokens (prefix tokens included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effscope.blocks._layers import DropPath, Mlp, merge_heads
from effscope.blocks.attention import attend
from effscope.knobs import Choice, Config, FloatRange, IntRange, knob
from effscope.modules import DeviceLike, TokenBlock
from effscope.spec import register_block

__all__ = ["MHSA", "ViTBlock", "ViTBlockConfig"]


class MHSA(nn.Module):
    """Multi-head self-attention on (B, N, dim) with heads x head_dim inner channels and an output projection."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        *,
        qkv_bias: bool = True,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.heads, self.head_dim = heads, head_dim
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(heads * head_dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return self.proj(merge_heads(attend(q, k, v, scale=self.scale)))


@dataclass(frozen=True)
class ViTBlockConfig(Config):
    owner_name = "vit"

    heads: int = knob(4, IntRange(1, 32), help="attention heads", unit="heads")
    head_dim: int = knob(32, Choice((16, 24, 32, 48, 64, 96, 128)), help="channels per head", unit="channels")
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="MLP hidden width / dim")
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the q, k, v projections")
    prefix_tokens: int = knob(0, IntRange(0, 8), help="tokens before the image tokens (class token)", unit="tokens")
    drop_path: float = knob(0.0, FloatRange(0.0, 0.9), help="stochastic depth rate (training only)")

    @property
    def dim(self) -> int:
        """Token width: heads x head_dim (derived, so every point is valid)."""
        return self.heads * self.head_dim

    def derived(self) -> dict[str, int]:
        return {"dim": self.dim, "mlp_hidden": round(self.dim * self.mlp_ratio)}


@register_block(
    "vit",
    family="vit",
    paper="ViT / DeiT (arXiv 2010.11929, 2012.12877)",
    summary="global multi-head self-attention + MLP (the quadratic baseline)",
)
class ViTBlock(TokenBlock):
    """Pre-norm transformer block with global MHSA.

    Input: x (B, prefix_tokens + H*W, dim) and hw = (H, W) (unused by the math; every token attends to all).
    Output: same shape.
    """

    Config = ViTBlockConfig

    def __init__(
        self,
        config: ViTBlockConfig | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(c.dim, **dd)
        self.attn = MHSA(c.dim, c.heads, c.head_dim, qkv_bias=c.qkv_bias, **dd)
        self.norm2 = nn.LayerNorm(c.dim, **dd)
        self.mlp = Mlp(c.dim, round(c.dim * c.mlp_ratio), **dd)
        self.drop_path = DropPath(c.drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def leading_tokens(self) -> int:
        return self.config.prefix_tokens
