"""CXV classifiers: CNV (Nyström), CPV (Performer), CLTV (linear attention), CIFAR setting (32x32, 10 classes).

Jeevan & Sethi, "Convolutional Xformers for Vision" (arXiv 2201.10271, 2022); docs/zoo.md#cxv-presets. A two-conv stem
(no norm, no activation), then `depth` x [conv embedding -> channel-wise LayerNorm -> one CXV transformer layer],
then global average pooling and a linear head. No class token, no positional embedding, no downsampling in the
files' config (1024 tokens of width 128 at every layer).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from effscope.blocks.cxv import (
    CXVBlock,
    CXVBlockConfig,
    LinearBlock,
    LinearKnobs,
    NystromBlock,
    NystromKnobs,
    PerformerBlock,
    PerformerKnobs,
)
from effscope.knobs import Config, FloatRange, IntRange, knob, knobs_of
from effscope.modules import DeviceLike, ImageModel
from effscope.spec import Reference, register_model

__all__ = ["CLTV", "CNV", "CPV", "CLTVConfig", "CNVConfig", "CPVConfig", "CXVConfig", "CXVNet", "ChannelLayerNorm"]

_PAPER = "CXV: Convolutional Xformers for Vision (arXiv 2201.10271)"


class ChannelLayerNorm(nn.Module):
    """CXV's LayerNorm over the channels of each pixel: (x - mean) / (std + eps) * g + b, biased variance.

    Note eps is added to the standard deviation, not to the variance as in nn.LayerNorm.
    """

    def __init__(
        self, dim: int, eps: float = 1e-5, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1, device=device, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two reductions, as the official: torch.var_mean over the channel dim measured ~2.5 % slower here.
        std = torch.var(x, dim=1, unbiased=False, keepdim=True).sqrt()
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) / (std + self.eps) * self.g + self.b


@dataclass(frozen=True)
class CXVConfig(Config):
    """Knobs every CXV model shares (defaults: the files' config)."""

    emb_dim: int = knob(128, IntRange(16, 1024, step=8), help="channels of every layer", unit="channels")
    heads: int = knob(4, IntRange(1, 16), help="attention heads", unit="heads")
    head_dim: int = knob(32, IntRange(8, 128, step=8), help="channels per head", unit="channels")
    depth: int = knob(5, IntRange(1, 12), help="layers (conv embedding + norm + transformer layer)", unit="layers")
    mlp_mult: int = knob(2, IntRange(1, 8), help="FFN hidden width / emb_dim")
    emb_kernel: int = knob(3, IntRange(1, 7, step=2), help="kernel of each layer's conv embedding", unit="pixels")
    emb_stride: int = knob(1, IntRange(1, 2), help="stride of each layer's conv embedding", unit="pixels")
    dropout: float = knob(0.5, FloatRange(0.0, 0.9), help="dropout in attention output and FFN (training only)")
    num_classes: int = 10

    def check(self) -> None:
        if self.num_classes < 1:
            self.fail("`num_classes >= 1`", num_classes=self.num_classes)


@dataclass(frozen=True)
class CNVConfig(NystromKnobs, CXVConfig):
    owner_name = "cxv_cnv"


@dataclass(frozen=True)
class CPVConfig(PerformerKnobs, CXVConfig):
    owner_name = "cxv_cpv"


@dataclass(frozen=True)
class CLTVConfig(LinearKnobs, CXVConfig):
    owner_name = "cxv_cltv"


class CXVNet(ImageModel):
    """CXV classifier: conv stem, `depth` x [conv embedding, channel LayerNorm, CXV layer], average pool, linear.

    Input: images (B, 3, H, W), any H x W (the files use 32x32). Output: logits (B, num_classes).
    """

    default_size = (32, 32)
    block: ClassVar[type[CXVBlock]]

    def __init__(
        self, config: CXVConfig | None = None, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        e = c.emb_dim
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_chans, e // 4, 3, padding=1, **dd), nn.Conv2d(e // 4, e // 2, 3, padding=1, **dd)
        )
        block_config = self.block_config()
        self.layers = nn.Sequential(
            *(
                nn.Sequential(
                    OrderedDict(
                        embed=nn.Conv2d(
                            e // 2 if i == 0 else e, e, c.emb_kernel, c.emb_stride, c.emb_kernel // 2, **dd
                        ),
                        norm=ChannelLayerNorm(e, **dd),
                        block=self.block(block_config, **dd),
                    )
                )
                for i in range(c.depth)
            )
        )
        self.head = nn.Linear(e, c.num_classes, **dd)

    def block_config(self) -> CXVBlockConfig:
        """The config of every layer's block: the model's knobs of the same names, with dim = emb_dim."""
        cls = self.block.Config
        shared = {name: getattr(self.config, name) for name in knobs_of(cls) if name != "dim"}
        return cls(dim=self.config.emb_dim, **shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        # adaptive pooling as the official head (fvcore counts it: 1 per element, which the totals in
        # docs/zoo.md#reference-models include)
        return self.head(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class CNV(CXVNet):
    __doc__ = CXVNet.__doc__
    Config = CNVConfig
    parts = (NystromBlock,)
    block = NystromBlock


class CPV(CXVNet):
    __doc__ = CXVNet.__doc__
    Config = CPVConfig
    parts = (PerformerBlock,)
    block = PerformerBlock


class CLTV(CXVNet):
    __doc__ = CXVNet.__doc__
    Config = CLTVConfig
    parts = (LinearBlock,)
    block = LinearBlock


def _reference(params: int, gmacs: float) -> Reference:
    source = "docs/zoo.md#reference-models (official files, fvcore)"
    return Reference(params=params, macs=gmacs * 1e9, size=(32, 32), source=source)


register_model(
    "cxv_cnv",
    CNV,
    family="cxv",
    paper=_PAPER,
    summary="CNV: conv embeddings + Nyström attention layers, full 32x32 resolution (CIFAR-10)",
    config=CNVConfig(),
    reference=_reference(1_344_734, 1.7722),
)
register_model(
    "cxv_cpv",
    CPV,
    family="cxv",
    paper=_PAPER,
    summary="CPV: conv embeddings + Performer attention layers, full 32x32 resolution (CIFAR-10)",
    config=CPVConfig(),
    reference=_reference(1_345_994, 1.6614),
)
register_model(
    "cxv_cltv",
    CLTV,
    family="cxv",
    paper=_PAPER,
    summary="CLTV: conv embeddings + linear attention with 3x3-conv projections, full 32x32 resolution (CIFAR-10)",
    config=CLTVConfig(),
    reference=_reference(3_967_434, 4.0968),
)
