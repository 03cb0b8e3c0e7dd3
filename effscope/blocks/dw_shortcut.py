"""Depth-wise-convolution shortcut around transformer blocks, with the paper's two variants.

Zhang et al., "Efficient Vision Transformer with Depth-Wise Convolution shortcut" (arXiv 2407.19394);
docs/zoo.md#dw-shortcut-variants. The shortcut takes the input of a group of `span` consecutive ViT blocks, runs GELU ->
BatchNorm2d -> depth-wise conv on its image tokens, and adds the result after the group's last block (bypassing every
inner residual). Prefix (class) tokens get a zero shortcut.
- span 1 is the released code (one shortcut per block); spans 2-4 are the paper's variant 1 (one shortcut over 2-4
  blocks), known only from a figure.
- `kernels` with several sizes is variant 2 (figure only): parallel branches summed. effscope's interpretation: each
  branch is an independent BatchNorm2d + depth-wise conv of its own kernel size, after one shared GELU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effscope.blocks.vit import ViTBlock, ViTBlockConfig
from effscope.knobs import Choice, Config, FloatRange, IntRange, knob
from effscope.modules import DeviceLike, TokenBlock
from effscope.spec import Reference, register_block

__all__ = ["KERNEL_CHOICES", "DWShortcut", "DWShortcutBlock", "DWShortcutConfig"]

KERNEL_CHOICES: tuple[tuple[int, ...], ...] = ((3,), (5,), (7,), (3, 5), (3, 7), (5, 7), (3, 5, 7))


class DWShortcut(nn.Module):
    """GELU -> [BatchNorm2d -> depth-wise conv k x k] per kernel size, branches summed, on a (B, dim, H, W) map.

    Args:
        dim: channels.
        kernels: one kernel size per parallel branch (odd, 'same' padding).
    """

    def __init__(
        self,
        dim: int,
        kernels: tuple[int, ...] = (3,),
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.act = nn.GELU()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(dim, **dd), nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, **dd))
            for k in kernels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, dim, H, W) -> (B, dim, H, W)."""
        x = self.act(x)
        out = self.branches[0](x)
        for branch in self.branches[1:]:  # at most 3 branches
            out = out + branch(x)
        return out


@dataclass(frozen=True)
class DWShortcutConfig(Config):
    owner_name = "dw_shortcut"

    heads: int = knob(4, IntRange(1, 32), help="attention heads of each wrapped ViT block", unit="heads")
    head_dim: int = knob(32, Choice((16, 24, 32, 48, 64, 96, 128)), help="channels per head", unit="channels")
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="MLP hidden width / dim")
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the q, k, v projections")
    prefix_tokens: int = knob(
        0, IntRange(0, 8), help="tokens before the image tokens (class token); their shortcut is zero", unit="tokens"
    )
    span: int = knob(
        1, IntRange(1, 4), help="consecutive ViT blocks one DW shortcut spans (1 = released code)", unit="blocks"
    )
    kernels: tuple[int, ...] = knob(
        (3,),
        Choice(KERNEL_CHOICES),
        help="kernel sizes of the parallel DW branches (summed; several = the paper's variant 2)",
    )
    drop_path: float = knob(0.0, FloatRange(0.0, 0.9), help="stochastic depth rate of the inner blocks (training only)")

    @property
    def dim(self) -> int:
        """Token width: heads x head_dim."""
        return self.heads * self.head_dim

    def derived(self) -> dict[str, int]:
        return {"dim": self.dim, "shortcut_params": sum(self.dim * (k * k + 3) for k in self.kernels)}


@register_block(
    "dw_shortcut",
    family="dw_shortcut",
    paper="Efficient ViT with DW shortcut (arXiv 2407.19394)",
    summary="ViT block(s) bypassed by a GELU-BN-depth-wise-conv shortcut (span and parallel kernels as knobs)",
    reference=Reference(
        params=199_808,
        macs=313.60e6,
        size=(28, 28),
        source="docs/zoo.md#reference-blocks, derived: ViT block = PVTv2 sr-1 block (203.4K, 316.11 M) minus its "
        "FFN DW conv (5.1K, 3.61 M), plus the DW-shortcut module k 3 (1.5K, 1.10 M)",
    ),
)
class DWShortcutBlock(TokenBlock):
    """`span` pre-norm ViT blocks (global MHSA + MLP) plus one DW-conv shortcut from their input to their output.

    Input: x (B, prefix_tokens + H*W, dim) and hw = (H, W); any grid ('same'-padded convs).
    Output: same shape.
    """

    Config = DWShortcutConfig
    parts = (ViTBlock,)

    def __init__(
        self,
        config: DWShortcutConfig | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        inner = ViTBlockConfig(
            heads=c.heads,
            head_dim=c.head_dim,
            mlp_ratio=c.mlp_ratio,
            qkv_bias=c.qkv_bias,
            prefix_tokens=c.prefix_tokens,
            drop_path=c.drop_path,
        )
        self.blocks = nn.ModuleList(ViTBlock(inner, **dd) for _ in range(c.span))
        self.shortcut = DWShortcut(c.dim, c.kernels, **dd)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        p = self.config.prefix_tokens
        b, _, c = x.shape
        s = self.shortcut(x[:, p:].transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x, hw)
        if p:  # zero shortcut on the prefix tokens
            return torch.cat([x[:, :p], x[:, p:] + s], dim=1)
        return x + s

    def leading_tokens(self) -> int:
        return self.config.prefix_tokens
