"""PVTv2 backbones (B0, B1, B2, B2-Li): four stages of overlapping patch embedding + PVTv2 blocks.

Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer" (CVMJ 2022, arXiv 2106.13797);
docs/zoo.md#pvtv2. Stage i: OverlapPatchEmbed (7x7 stride 4 conv for stage 1, 3x3 stride 2 after; LN eps 1e-5) ->
depths[i] blocks -> LN eps 1e-6. No positional embedding, no class token; the classifier is a Linear on the mean stage-4
token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effscope.blocks._layers import init_transformer_weights
from effscope.blocks.pvt import PVTBlock, PVTLinearSRABlock, PVTLinearSRAConfig, PVTSRAConfig
from effscope.knobs import Choice, Config, FloatRange, IntRange, Seq, knob, knobs_of
from effscope.modules import DeviceLike, ImageModel
from effscope.spec import Reference, register_model

__all__ = ["OverlapPatchEmbed", "PVTv2", "PVTv2Config"]

_PAPER = "PVTv2 (arXiv 2106.13797)"


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping kernels (k = 2s - 1, padding k // 2), flattened to tokens and layer-normed."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        kernel: int,
        stride: int,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=kernel // 2, **dd)
        self.norm = nn.LayerNorm(dim, **dd)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """x: (B, Cin, H, W) -> tokens (B, H'*W', dim) and their grid (H', W')."""
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


@dataclass(frozen=True)
class PVTv2Config(Config):
    owner_name = "pvtv2"

    embed_dims: tuple[int, ...] = knob(
        (32, 64, 160, 256), Seq(IntRange(8, 1024, step=8), length=4), help="token width per stage", unit="channels"
    )
    num_heads: tuple[int, ...] = knob(
        (1, 2, 5, 8), Seq(IntRange(1, 16), length=4), help="attention heads per stage", unit="heads"
    )
    mlp_ratios: tuple[float, ...] = knob(
        (8.0, 8.0, 4.0, 4.0), Seq(FloatRange(0.5, 8.0), length=4), help="DW-FFN hidden width / dim per stage"
    )
    depths: tuple[int, ...] = knob((2, 2, 2, 2), Seq(IntRange(1, 48), length=4), help="blocks per stage", unit="blocks")
    sr_ratios: tuple[int, ...] = knob(
        (8, 4, 2, 1),
        Seq(IntRange(1, 8), length=4),
        help="SRA reduction per stage (ignored when linear: recorded as the default)",
    )
    linear: bool = knob(False, Choice((False, True)), help="linear SRA (7x7 pooled keys/values, ReLU in the FFN): -Li")
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the q and kv projections")
    drop_path_rate: float = knob(
        0.0, FloatRange(0.0, 0.9), help="stochastic depth of the last block (linear ramp; training only)"
    )
    num_classes: int = knob(1000, IntRange(1, 100_000), help="classifier outputs", unit="classes")

    def inert_knobs(self) -> dict[str, tuple[int, ...]]:
        # the linear variant pools keys and values to 7x7 at every stage; the published -Li config keeps the default
        return {"sr_ratios": knobs_of(self)["sr_ratios"].default} if self.linear else {}

    def check(self) -> None:
        for i, (dim, heads) in enumerate(zip(self.embed_dims, self.num_heads, strict=True)):
            if dim % heads or (dim // heads) % 8 or dim // heads > 128:
                self.fail(
                    "`embed_dims[i] / num_heads[i]` must be a multiple of 8 in [8, 128], so it",
                    stage=i,
                    embed_dims=dim,
                    num_heads=heads,
                )

    def derived(self) -> dict[str, tuple[int, ...]]:
        return {"head_dims": tuple(d // h for d, h in zip(self.embed_dims, self.num_heads, strict=True))}


class PVTv2(ImageModel):
    """PVTv2 image classifier (docs/zoo.md#pvtv2).

    Input: images (B, 3, H, W), any H, W for which every stage's token grid is at least its sr_ratio on each side
    (224: 56, 28, 14, 7 tokens per side).
    Output: logits (B, num_classes).
    """

    Config = PVTv2Config
    parts = (PVTBlock, PVTLinearSRABlock)

    def __init__(
        self, config: PVTv2Config | None = None, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        total = sum(c.depths)
        rates = [c.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # = torch.linspace(0, rate, total)
        self.patch_embeds = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_chans, start = self.in_chans, 0
        for i, dim in enumerate(c.embed_dims):
            kernel, stride = (7, 4) if i == 0 else (3, 2)
            self.patch_embeds.append(OverlapPatchEmbed(in_chans, dim, kernel, stride, **dd))
            common = {
                "heads": c.num_heads[i],
                "head_dim": dim // c.num_heads[i],
                "mlp_ratio": c.mlp_ratios[i],
                "qkv_bias": c.qkv_bias,
            }
            blocks = []
            for rate in rates[start : start + c.depths[i]]:
                if c.linear:
                    blocks.append(PVTLinearSRABlock(PVTLinearSRAConfig(**common, drop_path=rate), **dd))
                else:
                    blocks.append(PVTBlock(PVTSRAConfig(**common, sr_ratio=c.sr_ratios[i], drop_path=rate), **dd))
            self.stages.append(nn.ModuleList(blocks))
            self.norms.append(nn.LayerNorm(dim, eps=1e-6, **dd))
            in_chans, start = dim, start + c.depths[i]
        self.head = nn.Linear(c.embed_dims[-1], c.num_classes, **dd)
        for module in (*self.patch_embeds, *self.norms, self.head):  # the blocks initialise themselves
            module.apply(init_transformer_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> stage-4 tokens (B, H/32 * W/32, embed_dims[3]) after the final norm."""
        last = len(self.stages) - 1
        for i, (embed, blocks, norm) in enumerate(zip(self.patch_embeds, self.stages, self.norms, strict=True)):
            x, hw = embed(x)
            for block in blocks:
                x = block(x, hw)
            x = norm(x)
            if i < last:  # tokens back to a map for the next stage's patch embedding
                x = x.transpose(1, 2).reshape(x.shape[0], -1, *hw)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=1))


def _register(name: str, summary: str, params: int, macs: float, **knobs) -> None:
    register_model(
        name,
        PVTv2,
        family="pvt",
        paper=_PAPER,
        summary=summary,
        config=PVTv2Config(**knobs),
        reference=Reference(params=params, macs=macs, size=(224, 224), source="docs/zoo.md#reference-numbers"),
    )


_B1 = {"embed_dims": (64, 128, 320, 512)}
_register("pvtv2_b0", "PVTv2-B0: dims 32-256, depths 2-2-2-2, SRA 8-4-2-1", 3_666_760, 0.5720e9)
_register("pvtv2_b1", "PVTv2-B1: dims 64-512, depths 2-2-2-2, SRA 8-4-2-1", 14_009_000, 2.1203e9, **_B1)
_register(
    "pvtv2_b2", "PVTv2-B2: dims 64-512, depths 3-4-6-3, SRA 8-4-2-1", 25_362_856, 4.0458e9, **_B1, depths=(3, 4, 6, 3)
)
_register(
    "pvtv2_b2_li",
    "PVTv2-B2-Li: B2 with linear SRA (7x7 pooled keys/values)",
    22_553_512,
    3.9098e9,
    **_B1,
    depths=(3, 4, 6, 3),
    linear=True,
)
