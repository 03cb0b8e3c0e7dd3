"""ViT with depth-wise-convolution shortcuts (the released ViT-Tiny of "Efficient ViT with DW shortcut").

Zhang et al., arXiv 2407.19394; docs/zoo.md#dw-shortcut. The backbone is lucidrains-style ViT: 16x16 patches cut by a
reshape and embedded by one Linear (no norm), a randn class token and a randn learnable position embedding (N + 1),
pre-norm blocks with bias-free qkv, no final transformer norm, head = LN + Linear on the class token. Every group of
`span` blocks is wrapped by one GELU-BN-DWConv shortcut (span 1 = the released code: one per block).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effscope.blocks.dw_shortcut import KERNEL_CHOICES, DWShortcutBlock, DWShortcutConfig
from effscope.errors import InputSizeError
from effscope.knobs import Choice, Config, FloatRange, IntRange, knob
from effscope.modules import DeviceLike, ImageModel
from effscope.spec import Reference, register_model

__all__ = ["ViTDW", "ViTDWConfig"]


@dataclass(frozen=True)
class ViTDWConfig(Config):
    owner_name = "vit_dw"

    depth: int = knob(12, IntRange(1, 24), help="transformer blocks", unit="blocks")
    heads: int = knob(3, IntRange(1, 16), help="attention heads", unit="heads")
    head_dim: int = knob(
        64, Choice((16, 24, 32, 48, 64, 96, 128)), help="channels per head; width = heads x head_dim", unit="channels"
    )
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="MLP hidden width / width")
    patch_size: int = knob(16, Choice((8, 14, 16, 28, 32)), help="patch side (divides 224)", unit="pixels")
    span: int = knob(
        1,
        IntRange(1, 4),
        help="consecutive blocks one DW shortcut spans; a last group of depth % span blocks gets its own shortcut; "
        "a span beyond depth is one shortcut around every block (recorded as span = depth)",
        unit="blocks",
    )
    kernels: tuple[int, ...] = knob((3,), Choice(KERNEL_CHOICES), help="kernel sizes of the parallel DW branches")
    num_classes: int = knob(100, IntRange(1, 100_000), help="classifier outputs", unit="classes")

    def inert_knobs(self) -> dict[str, int]:
        return {"span": self.depth} if self.span >= self.depth else {}  # one shortcut around all the blocks

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def groups(self) -> tuple[int, ...]:
        """Blocks per DW shortcut, in order."""
        full, rest = divmod(self.depth, self.span)
        return (self.span,) * full + ((rest,) if rest else ())

    def derived(self) -> dict[str, int]:
        return {"dim": self.dim, "mlp_hidden": round(self.dim * self.mlp_ratio), "shortcuts": len(self.groups)}


class ViTDW(ImageModel):
    """ViT classifier with a DW-conv shortcut around every group of `span` blocks.

    Input: images (B, 3, H, W) with H and W multiples of patch_size; the position embedding (learned for 224 x 224)
    is bicubically resized to other grids.
    Output: logits (B, num_classes).
    """

    Config = ViTDWConfig
    parts = (DWShortcutBlock,)

    def __init__(
        self, config: ViTDWConfig | None = None, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        self.grid = (self.default_size[0] // c.patch_size, self.default_size[1] // c.patch_size)
        self.patch_embed = nn.Linear(self.in_chans * c.patch_size**2, c.dim, **dd)
        self.cls_token = nn.Parameter(torch.randn(1, 1, c.dim, **dd))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid[0] * self.grid[1], c.dim, **dd))
        self.blocks = nn.ModuleList(
            DWShortcutBlock(
                DWShortcutConfig(
                    heads=c.heads,
                    head_dim=c.head_dim,
                    mlp_ratio=c.mlp_ratio,
                    qkv_bias=False,
                    prefix_tokens=1,
                    span=span,
                    kernels=c.kernels,
                ),
                **dd,
            )
            for span in c.groups
        )
        self.head = nn.Sequential(nn.LayerNorm(c.dim, **dd), nn.Linear(c.dim, c.num_classes, **dd))

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) -> patches (B, H/p * W/p, p*p*C) in lucidrains' (p1 p2 c) order, and the patch grid."""
        b, c, h, w = x.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise InputSizeError(f"vit_dw: image height and width must be multiples of patch_size={p}, but got {h}x{w}")
        x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c), (h // p, w // p)

    def position_embedding(self, hw: tuple[int, int]) -> torch.Tensor:
        """The (1, 1 + H*W, dim) position embedding for an H x W patch grid (bicubic resize of the grid part)."""
        if hw == self.grid:
            return self.pos_embed
        cls_pos, grid_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid_pos = grid_pos.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=hw, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid_pos.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self.patchify(x)
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position_embedding(hw)
        for block in self.blocks:
            x = block(x, hw)
        return self.head(x[:, 0])


register_model(
    "vit_tiny_dw",
    ViTDW,
    family="dw_shortcut",
    paper="Efficient ViT with DW shortcut (arXiv 2407.19394)",
    summary="lucidrains ViT-Tiny (192 wide, 12 blocks, 3 heads) with a GELU-BN-DWConv shortcut per block, 100 classes",
    config=ViTDWConfig(),
    reference=Reference(params=5_564_452, macs=1.2630e9, size=(224, 224), source="docs/zoo.md#reference-models"),
)
