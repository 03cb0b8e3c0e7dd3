"""LITv2 backbones: ConvFFN stages 1-2, HiLo stage 3, MSA stage 4, deformable token merging in between.

Pan, Cai, Zhuang, "Fast Vision Transformers with HiLo Attention" (LITv2, NeurIPS 2022, arXiv 2205.13213);
architecture and presets in docs/zoo.md#litv2-presets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effscope.blocks._layers import init_transformer_weights
from effscope.blocks.hilo import (
    DTM,
    ConvFFNBlock,
    ConvFFNConfig,
    DeformConv2d,
    DTMConfig,
    HiLoBlock,
    HiLoBlockConfig,
    lofi_heads_built,
)
from effscope.errors import InputSizeError
from effscope.knobs import Choice, Config, FloatRange, IntRange, Seq, knob, knobs_of
from effscope.modules import DeviceLike, ImageModel
from effscope.spec import Reference, register_model

__all__ = ["LITv2", "LITv2Config"]

_PAPER = "LITv2: Fast Vision Transformers with HiLo Attention (NeurIPS 2022, arXiv 2205.13213)"
_HILO = knobs_of(HiLoBlockConfig)  # the stage-3 block's knobs: the model's head width and Lo-Fi heads follow them
_HEAD_DIMS = _HILO["head_dim"].domain
_ATTENTION_STAGES = (2, 3)  # stages 1-2 hold ConvFFN blocks only (HAS_MSA = [0, 0, 1, 1])


@dataclass(frozen=True)
class LITv2Config(Config):
    owner_name = "litv2"

    embed_dim: int = knob(
        96, IntRange(16, 256, step=8), help="stage-1 channels (stage i has embed_dim * 2^i)", unit="channels"
    )
    depths: tuple[int, ...] = knob((2, 2, 6, 2), Seq(IntRange(1, 32), length=4), help="blocks per stage")
    num_heads: tuple[int, ...] = knob(
        (3, 6, 12, 24),
        Seq(IntRange(1, 64), length=4),
        help="attention heads per stage (stages 1-2 have no attention: kept as in the official config, unused)",
        unit="heads",
    )
    lofi_heads: int = knob(
        10,
        _HILO["lofi_heads"].domain,
        help="Lo-Fi heads of the stage-3 HiLo blocks (alpha = lofi_heads / num_heads[2]); ignored when "
        "window_size = 1 (recorded as num_heads[2]). Stage 4 is always plain MSA (window 1, every head Lo-Fi, "
        "unpooled)",
        unit="heads",
    )
    window_size: int = knob(
        2, IntRange(1, 16), help="stage-3 HiLo window / pooling size (1 = plain MSA)", unit="tokens"
    )
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="DWMlp hidden width / dim")
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the q, k, v projections")
    num_classes: int = knob(1000, IntRange(1, 100_000), help="classifier outputs", unit="classes")
    drop_path_rate: float = knob(
        0.0, FloatRange(0.0, 0.9), help="stochastic depth at the last block (linear ramp; training only)"
    )

    def inert_knobs(self) -> dict[str, int]:
        if self.window_size != 1:
            return {}
        return {"lofi_heads": lofi_heads_built(self.num_heads[2], self.lofi_heads, self.window_size)}

    def check(self) -> None:
        for i in _ATTENTION_STAGES:
            dim, heads = self.dims[i], self.num_heads[i]
            if dim % heads or not _HEAD_DIMS.contains(dim // heads):
                self.fail(
                    f"`embed_dim * 2**{i} / num_heads[{i}]` (stage {i + 1}'s head width) is {_HEAD_DIMS.describe()}",
                    embed_dim=self.embed_dim,
                    num_heads=self.num_heads,
                )
        if self.lofi_heads > self.num_heads[2]:
            self.fail("`lofi_heads <= num_heads[2]`", lofi_heads=self.lofi_heads, num_heads=self.num_heads)

    @property
    def dims(self) -> tuple[int, ...]:
        """Channels of each stage."""
        return tuple(self.embed_dim * 2**i for i in range(4))

    def derived(self) -> dict[str, float | int | tuple[int, ...]]:
        return {
            "dims": self.dims,
            "head_dims": tuple(self.dims[i] // self.num_heads[i] for i in _ATTENTION_STAGES),
            "alpha": self.lofi_heads / self.num_heads[2],  # stage 3's LITv2 alpha; 1.0 at window_size 1
            "hifi_heads": self.num_heads[2] - self.lofi_heads,
        }


def _blocks(c: LITv2Config) -> list[tuple[int, Config]]:
    """(stage, config) of every block in forward order, a stage's DTM after its blocks (stages 1-3): the one place
    the stage loop lives (the module builds from it, `LITv2.block_layout` adds the grids)."""
    n = sum(c.depths)
    rates = [c.drop_path_rate * j / max(n - 1, 1) for j in range(n)]  # linear ramp, as timm's linspace
    out: list[tuple[int, Config]] = []
    for i, (dim, depth, heads) in enumerate(zip(c.dims, c.depths, c.num_heads, strict=True)):
        first = sum(c.depths[:i])
        for j in range(depth):
            if i in _ATTENTION_STAGES:
                ws, lofi = (c.window_size, c.lofi_heads) if i == 2 else (1, heads)
                cfg: Config = HiLoBlockConfig(
                    heads=heads,
                    head_dim=dim // heads,
                    lofi_heads=lofi,
                    window_size=ws,
                    mlp_ratio=c.mlp_ratio,
                    qkv_bias=c.qkv_bias,
                    drop_path=rates[first + j],
                )
            else:
                cfg = ConvFFNConfig(dim, c.mlp_ratio, rates[first + j])
            out.append((i, cfg))
        if i < 3:
            out.append((i, DTMConfig(dim)))
    return out


class LITv2(ImageModel):
    """LITv2 classifier: 4x4 patch embedding + LN, four stages with DTM between them, LN, token mean, linear head.

    Input: images (B, 3, H, W), H and W >= 32 (each DTM needs a 2 x 2 map; non-multiples of 32 are floored by the
    stride-4 stem and the stride-2 merges, HiLo pads its windows). Output: logits (B, num_classes).
    """

    Config = LITv2Config
    parts = (HiLoBlock, ConvFFNBlock, DTM)

    def __init__(
        self, config: LITv2Config | None = None, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        dims = c.dims
        self.patch_embed = nn.Conv2d(self.in_chans, dims[0], 4, stride=4, **dd)
        self.embed_norm = nn.LayerNorm(dims[0], **dd)
        self.stages = nn.ModuleList(nn.ModuleList() for _ in dims)
        self.merges = nn.ModuleList()
        for stage, cfg in _blocks(c):
            if isinstance(cfg, DTMConfig):
                self.merges.append(DTM(cfg, **dd))
            elif isinstance(cfg, HiLoBlockConfig):
                self.stages[stage].append(HiLoBlock(cfg, **dd))
            else:
                self.stages[stage].append(ConvFFNBlock(cfg, **dd))
        self.norm = nn.LayerNorm(dims[-1], **dd)
        self.head = nn.Linear(dims[-1], c.num_classes, **dd)
        self.apply(init_transformer_weights)
        for m in self.modules():
            if isinstance(m, DeformConv2d):
                m.reset_offsets()  # the generic conv init above must not give the merges random offsets

    @classmethod
    def block_layout(
        cls, config: LITv2Config, size: tuple[int, int] | None = None
    ) -> list[tuple[Config, tuple[int, int]]]:
        """Every block and merge in forward order with its token grid: the stride-4 stem, each DTM halves the grid."""
        h, w = size or cls.default_size
        hw = (h // 4, w // 4)
        layout: list[tuple[Config, tuple[int, int]]] = []
        for _, cfg in _blocks(config):
            layout.append((cfg, hw))
            if isinstance(cfg, DTMConfig):
                hw = (hw[0] // 2, hw[1] // 2)
        return layout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        if h < 32 or w < 32:  # three DTMs halve the stride-4 map: below 32 px the last one has no 2 x 2 map
            raise InputSizeError(f"LITv2 needs images of at least 32x32 pixels, but got {h}x{w}")
        x = self.patch_embed(images)
        hw = (x.shape[2], x.shape[3])
        x = self.embed_norm(x.flatten(2).transpose(1, 2))
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                x = block(x, hw)
            if i < 3:
                x, hw = self.merges[i](x, hw)
        return self.head(self.norm(x).mean(dim=1))


# --- presets (docs/zoo.md#litv2-presets; drop_path_rate is the training setting, inert at inference) -----

_NOTE = (
    "fvcore MACs in the reference count the deformable conv as a plain conv; this pure-torch DTM also shows "
    "its offset conv and grid_sample to fvcore",
)

register_model(
    "litv2_s",
    LITv2,
    family="litv2",
    paper=_PAPER,
    summary="LITv2-S: C 96, depths 2-2-6-2, stage-3 HiLo 10 Lo-Fi / 2 Hi-Fi heads, s 2",
    config=LITv2Config(drop_path_rate=0.2),
    reference=Reference(params=27_844_000, macs=3.7314e9, size=(224, 224), source="docs/zoo.md#reference-numbers"),
    notes=_NOTE,
)
register_model(
    "litv2_m",
    LITv2,
    family="litv2",
    paper=_PAPER,
    summary="LITv2-M: C 96, depths 2-2-18-2, stage-3 HiLo 10 Lo-Fi / 2 Hi-Fi heads, s 2",
    config=LITv2Config(depths=(2, 2, 18, 2), drop_path_rate=0.3),
    reference=Reference(params=48_830_368, macs=7.4799e9, size=(224, 224), source="docs/zoo.md#reference-numbers"),
    notes=_NOTE,
)
register_model(
    "litv2_b",
    LITv2,
    family="litv2",
    paper=_PAPER,
    summary="LITv2-B: C 128, depths 2-2-18-2, stage-3 HiLo 14 Lo-Fi / 2 Hi-Fi heads, s 2",
    config=LITv2Config(
        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), lofi_heads=14, drop_path_rate=0.5
    ),
    reference=Reference(params=86_520_704, macs=13.1944e9, size=(224, 224), source="docs/zoo.md#reference-numbers"),
    notes=_NOTE,
)
