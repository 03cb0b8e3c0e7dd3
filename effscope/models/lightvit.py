"""LightViT-T/S/B: ConvStem, global tokens, three stages of LightViT blocks with residual patch merging, neck, head.

Huang et al., "LightViT: Towards Light-Weight Convolution-Free Vision Transformers" (arXiv 2207.05557).
Specification: docs/zoo.md#lightvit-presets and docs/zoo.md#lightvit-flops; exact official counts in
docs/zoo.md#reference-models.

Note: the official analytic `flops()` under-counts the window attention by ws² and omits kv_global and the norms
(docs/zoo.md#lightvit-flops); effscope counts the forward as it runs, so fvcore gives 0.781 / 1.839 / 4.129 GMACs,
not the published 0.7 / 1.7 / 3.9 G.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effscope.blocks.lightvit import (
    PAPER,
    LightViTBlock,
    LightViTBlockConfig,
    LightViTMerge,
    LightViTMergeConfig,
)
from effscope.knobs import Choice, Config, FloatRange, IntRange, Seq, knob
from effscope.modules import DeviceLike, ImageModel
from effscope.spec import Reference, register_model

__all__ = ["ConvStem", "LightViT", "LightViTConfig"]


def _conv_bn_gelu(cin: int, cout: int, stride: int, groups: int, dd: dict) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False, **dd),
        nn.BatchNorm2d(cout, **dd),
        nn.GELU(),
    ]


class ConvStem(nn.Module):
    """Stride-8 convolutional stem (docs/zoo.md#lightvit-presets) -> LN'd tokens (B, H/8 * W/8, dim).

    Conv3x3 s2 (in -> dim/2) then three depth-wise 3x3 (s1, s1, s2), each with BN + GELU, then a biased
    Conv3x3 s2 (dim/2 -> dim) and LayerNorm (eps 1e-5) over the flattened tokens.
    """

    def __init__(
        self, in_chans: int, dim: int, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        mid = dim // 2
        self.stem = nn.Sequential(
            *_conv_bn_gelu(in_chans, mid, 2, 1, dd),
            *_conv_bn_gelu(mid, mid, 1, mid, dd),
            *_conv_bn_gelu(mid, mid, 1, mid, dd),
            *_conv_bn_gelu(mid, mid, 2, mid, dd),
        )
        self.proj = nn.Conv2d(mid, dim, 3, 2, 1, **dd)
        self.norm = nn.LayerNorm(dim, **dd)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """images (B, C, H, W) -> tokens (B, h*w, dim) and their grid (h, w)."""
        x = self.proj(self.stem(x))
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


@dataclass(frozen=True)
class LightViTConfig(Config):
    owner_name = "lightvit model"

    num_heads: tuple[int, ...] = knob(
        (2, 4, 8), Seq(IntRange(1, 32), length=3), help="attention heads per stage", unit="heads"
    )
    head_dim: int = knob(32, Choice((16, 32, 64)), help="channels per head in every stage", unit="channels")
    num_layers: tuple[int, ...] = knob(
        (2, 6, 6), Seq(IntRange(1, 16), length=3), help="blocks per stage", unit="blocks"
    )
    num_tokens: int = knob(8, IntRange(0, 64), help="global aggregation tokens (same in every stage)", unit="tokens")
    window_size: int = knob(7, IntRange(1, 14), help="local attention window side (all stages)", unit="tokens")
    mlp_ratios: tuple[float, ...] = knob(
        (8.0, 4.0, 4.0), Seq(FloatRange(0.5, 8.0), length=3), help="FFN hidden width / dim per stage"
    )
    neck_dim: int = knob(
        1280, IntRange(64, 4096, step=64), help="width of the Linear-LN-GELU neck before pooling", unit="channels"
    )
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the qkv and kv_global projections")
    drop_path_rate: float = knob(
        0.1, FloatRange(0.0, 0.9), help="stochastic depth of the last block (linear ramp; training only)"
    )
    num_classes: int = 1000

    @property
    def embed_dims(self) -> tuple[int, ...]:
        """Stage widths: heads x head_dim (derived, so every point is valid)."""
        return tuple(h * self.head_dim for h in self.num_heads)

    def derived(self) -> dict[str, tuple[int, ...]]:
        return {"embed_dims": self.embed_dims}


class _Stage(nn.Module):
    """An optional merge followed by blocks, all on the same (global + grid) token sequence."""

    def __init__(self, downsample: LightViTMerge | None, blocks: list[LightViTBlock]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)
        for block in self.blocks:
            x = block(x, hw)
        return x, hw


class LightViT(ImageModel):
    """LightViT classifier (docs/zoo.md#lightvit-presets).

    Input: images (B, 3, H, W), any size (stride 8 stem, windows padded, odd grids padded at merges).
    Output: logits (B, num_classes), from the mean over all tokens (global ones included) after the neck.
    """

    Config = LightViTConfig
    parts = (LightViTBlock, LightViTMerge)

    def __init__(
        self,
        config: LightViTConfig | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        dims = c.embed_dims
        self.stem = ConvStem(self.in_chans, dims[0], **dd)
        self.global_token = nn.Parameter(torch.zeros(1, c.num_tokens, dims[0], **dd))
        rates = torch.linspace(0, c.drop_path_rate, sum(c.num_layers)).tolist()
        stages = []
        for i, (heads, depth, ratio) in enumerate(zip(c.num_heads, c.num_layers, c.mlp_ratios, strict=True)):
            merge = None
            if i:
                merge_cfg = LightViTMergeConfig(in_dim=dims[i - 1], out_dim=dims[i], num_tokens=c.num_tokens)
                merge = LightViTMerge(merge_cfg, **dd)
            first = sum(c.num_layers[:i])
            blocks = [
                LightViTBlock(
                    LightViTBlockConfig(
                        heads=heads,
                        head_dim=c.head_dim,
                        num_tokens=c.num_tokens,
                        window_size=c.window_size,
                        mlp_ratio=ratio,
                        qkv_bias=c.qkv_bias,
                        drop_path=rates[first + j],
                    ),
                    **dd,
                )
                for j in range(depth)
            ]
            stages.append(_Stage(merge, blocks))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6, **dd)
        self.neck = nn.Sequential(nn.Linear(dims[-1], c.neck_dim, **dd), nn.LayerNorm(c.neck_dim, **dd), nn.GELU())
        self.head = nn.Linear(c.neck_dim, c.num_classes, **dd)
        self._init_weights()

    def _init_weights(self) -> None:
        """trunc-normal(0.02) for Linear, global tokens and position-bias tables; unit LN; convs keep PyTorch's."""
        nn.init.trunc_normal_(self.global_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, hw = self.stem(images)
        x = torch.cat([self.global_token.expand(x.shape[0], -1, -1), x], dim=1)
        for stage in self.stages:
            x, hw = stage(x, hw)
        x = self.neck(self.norm(x))  # per token, global tokens included
        return self.head(x.mean(1))


_NOTES = (
    "fvcore MACs exceed the published 0.7/1.7/3.9 G: the official analytic flops() under-counts window attention "
    "by ws² and omits kv_global and norms (docs/zoo.md#lightvit-flops)",
)

register_model(
    "lightvit_t",
    LightViT,
    family="lightvit",
    paper=PAPER,
    summary="LightViT-Tiny: dims 64/128/256, depths 2/6/6, 8 global tokens",
    config=LightViTConfig(),
    reference=Reference(params=9_377_698, macs=0.7810e9, size=(224, 224), source="docs/zoo.md#reference-numbers"),
    notes=_NOTES,
)
register_model(
    "lightvit_s",
    LightViT,
    family="lightvit",
    paper=PAPER,
    summary="LightViT-Small: dims 96/192/384, depths 2/6/6, 16 global tokens",
    config=LightViTConfig(num_heads=(3, 6, 12), num_tokens=16),
    reference=Reference(params=19_200_248, macs=1.8390e9, size=(224, 224), source="docs/zoo.md#reference-numbers"),
    notes=_NOTES,
)
register_model(
    "lightvit_b",
    LightViT,
    family="lightvit",
    paper=PAPER,
    summary="LightViT-Base: dims 128/256/512, depths 3/8/6, 24 global tokens",
    config=LightViTConfig(num_heads=(4, 8, 16), num_layers=(3, 8, 6), num_tokens=24, drop_path_rate=0.3),
    reference=Reference(params=35_195_653, macs=4.1287e9, size=(224, 224), source="docs/zoo.md#reference-numbers"),
    notes=_NOTES,
)
