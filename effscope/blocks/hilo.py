"""LITv2 blocks: HiLo attention, the attention-free ConvFFN block and deformable token merging (DTM).

Pan, Cai, Zhuang, "Fast Vision Transformers with HiLo Attention" (LITv2, NeurIPS 2022, arXiv 2205.13213).
HiLo splits the heads: Hi-Fi heads attend inside s x s windows (high frequencies), Lo-Fi heads attend from every
token to the s x s average-pooled map (low frequencies); the two groups have their own projections and their outputs
are concatenated. Stages 1-2 of LITv2 use ConvFFN blocks (no attention); every stage but the last ends in a DTM, a
2x2 stride-2 deformable convolution C -> 2C followed by BatchNorm and GELU (docs/zoo.md#litv2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effscope.blocks._layers import DropPath, DWConvMlp, pad_to_multiple
from effscope.blocks.attention import attend
from effscope.errors import InputSizeError
from effscope.knobs import Choice, Config, FloatRange, IntRange, knob
from effscope.modules import DeviceLike, TokenBlock
from effscope.spec import Reference, register_block

__all__ = [
    "DTM",
    "ConvFFNBlock",
    "ConvFFNConfig",
    "DTMConfig",
    "DeformConv2d",
    "HiLo",
    "HiLoBlock",
    "HiLoBlockConfig",
    "deform_sample",
    "lofi_heads_built",
]

_PAPER = "LITv2: Fast Vision Transformers with HiLo Attention (NeurIPS 2022, arXiv 2205.13213)"


def _check_tokens(x: torch.Tensor, hw: tuple[int, int], owner: str) -> None:
    if x.shape[1] != hw[0] * hw[1]:
        raise InputSizeError(
            f"{owner} takes x (B, H*W, C) on the grid hw, so x.shape[1] == H*W must hold, "
            f"but got (tokens={x.shape[1]}, hw={tuple(hw)})"
        )


# --- small layers -----------------------------------------------------------------------------------------------


def lofi_heads_built(heads: int, lofi_heads: int, window_size: int) -> int:
    """Lo-Fi heads HiLo builds: `lofi_heads`, except at window_size 1 (plain MSA), where every head is Lo-Fi."""
    return heads if window_size == 1 else lofi_heads


class HiLo(nn.Module):
    """HiLo attention on an H x W token map (docs/zoo.md#hilo-block); no joint output projection.

    Args:
        dim: token channels (= heads * head_dim).
        heads: attention heads in total.
        head_dim: channels per head (both groups).
        lofi_heads: heads on the Lo-Fi path; the other heads are Hi-Fi. Ignored when window_size == 1.
        window_size: Hi-Fi window side and Lo-Fi pooling size s. s == 1 is plain MSA: every head is Lo-Fi and the
            keys/values are not pooled (as the official code).
        qkv_bias: bias on the q/kv projections (the output projections always have one).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        lofi_heads: int,
        window_size: int,
        *,
        qkv_bias: bool = True,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.ws, self.head_dim = window_size, head_dim
        self.scale = head_dim**-0.5
        self.l_heads = lofi_heads_built(heads, lofi_heads, window_size)
        self.h_heads = heads - self.l_heads
        h_dim, l_dim = self.h_heads * head_dim, self.l_heads * head_dim
        if self.h_heads:
            self.h_qkv = nn.Linear(dim, 3 * h_dim, bias=qkv_bias, **dd)
            self.h_proj = nn.Linear(h_dim, h_dim, **dd)
        if self.l_heads:
            self.l_q = nn.Linear(dim, l_dim, bias=qkv_bias, **dd)
            self.l_kv = nn.Linear(dim, 2 * l_dim, bias=qkv_bias, **dd)
            self.l_proj = nn.Linear(l_dim, l_dim, **dd)

    def hifi(self, x: torch.Tensor) -> torch.Tensor:
        """Window attention: (B, Hp, Wp, C) with Hp, Wp multiples of s -> (B, Hp, Wp, h_dim)."""
        b, hp, wp, _ = x.shape
        s, nh, d = self.ws, self.h_heads, self.head_dim
        hg, wg = hp // s, wp // s
        # Project before partitioning (same math, one GEMM), then gather each window's tokens per head.
        qkv = self.h_qkv(x).view(b, hg, s, wg, s, 3, nh, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
        q, k, v = qkv.reshape(3, b * hg * wg, nh, s * s, d)
        out = attend(q, k, v, scale=self.scale)  # (B*nW, nh, s*s, d)
        out = out.view(b, hg, wg, nh, s, s, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, nh * d)
        return self.h_proj(out)

    def lofi(self, x: torch.Tensor) -> torch.Tensor:
        """Every token attends to the s x s average-pooled map: (B, Hp, Wp, C) -> (B, Hp, Wp, l_dim)."""
        b, hp, wp, c = x.shape
        nh, d = self.l_heads, self.head_dim
        q = self.l_q(x).view(b, hp * wp, nh, d).transpose(1, 2)
        if self.ws > 1:
            x = F.avg_pool2d(x.permute(0, 3, 1, 2), self.ws, self.ws).flatten(2).transpose(1, 2)
        else:
            x = x.reshape(b, hp * wp, c)
        k, v = self.l_kv(x).view(b, -1, 2, nh, d).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v, scale=self.scale).transpose(1, 2).reshape(b, hp, wp, nh * d)
        return self.l_proj(out)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, H*W, C); the map is zero-padded right/bottom to multiples of s, then cropped."""
        b, n, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        if self.ws > 1:
            x, _ = pad_to_multiple(x, self.ws)  # as LITv2's detection code: no mask, padded tokens are keys too
        outs = []
        if self.h_heads:
            outs.append(self.hifi(x))
        if self.l_heads:
            outs.append(self.lofi(x))
        x = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
        return x[:, :h, :w].reshape(b, n, c)


def deform_sample(x: torch.Tensor, offset: torch.Tensor, k: int) -> torch.Tensor:
    """Bilinearly sample the k x k taps of a kernel = stride = k, padding 0 deformable convolution.

    Tap (ki, kj) of output (i, j) reads x at (k*i + ki + dy, k*j + kj + dx), with dy, dx = offset channels
    2*(ki*k + kj) and 2*(ki*k + kj) + 1 (DCNv1 layout, y first); points outside the map read zeros per corner.
    The taps are laid out so that a plain stride-k conv of the result is the deformable conv.

    Args:
        x: (B, C, H, W) input map.
        offset: (B, 2*k*k, H//k, W//k) offsets in pixels.
        k: kernel size = stride.

    Returns:
        (B, C, k*(H//k), k*(W//k)), in x's dtype; sampled in fp32 at least, as the official CUDA kernel runs
        in fp32 under AMP (half-precision pixel coordinates would be off by a tenth of a pixel on a 56-wide map).
    """
    b, c, h, w = x.shape
    ho, wo = offset.shape[-2:]
    ft = torch.promote_types(x.dtype, torch.float32)
    off = offset.to(ft).view(b, k, k, 2, ho, wo).permute(0, 4, 1, 5, 2, 3).reshape(b, ho * k, wo * k, 2)
    ys = torch.arange(ho * k, device=x.device, dtype=ft).view(1, -1, 1)
    xs = torch.arange(wo * k, device=x.device, dtype=ft).view(1, 1, -1)
    # pixel p -> normalised (2p + 1) / size - 1 (align_corners=False: pixel centres, fine for size 1 too)
    grid = torch.stack(((2 * (xs + off[..., 1]) + 1) / w - 1, (2 * (ys + off[..., 0]) + 1) / h - 1), dim=-1)
    out = F.grid_sample(x.to(ft), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


class DeformConv2d(nn.Module):
    """Deformable convolution with kernel = stride = k and no padding, in pure torch (grid_sample + conv).

    Parameters are laid out as the official module's: `weight` (out, in, k, k), `bias` (out), and the offset
    predictor `conv_offset` = Conv2d(in -> 2*k*k, k, stride k), zero-initialised so the layer starts as a plain conv.
    fvcore sees the offset conv, 4 MACs per bilinear sample (its grid_sampler rule) and a plain stride-k conv over
    the sampled taps; the model figures in docs/zoo.md#litv2-dtm-counting count the plain conv only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        k: int = 2,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.k = k
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k, **dd))
        self.bias = nn.Parameter(torch.empty(out_channels, **dd))
        self.conv_offset = nn.Conv2d(in_channels, 2 * k * k, k, stride=k, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        self.reset_offsets()

    def reset_offsets(self) -> None:
        """Zero the offset predictor: the layer then equals a plain conv with the same weights."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out, H//k, W//k)."""
        sampled = deform_sample(x, self.conv_offset(x), self.k)
        return F.conv2d(sampled, self.weight, self.bias, stride=self.k)


# --- blocks -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HiLoBlockConfig(Config):
    owner_name = "hilo"

    heads: int = knob(4, IntRange(1, 64), help="attention heads (Hi-Fi + Lo-Fi)", unit="heads")
    head_dim: int = knob(32, Choice((16, 24, 32, 48, 64, 96, 128)), help="channels per head", unit="channels")
    lofi_heads: int = knob(
        3,
        IntRange(0, 64),
        help="heads on the Lo-Fi path (global attention to pooled K/V); the rest are Hi-Fi window heads; "
        "ignored when window_size = 1 (plain MSA: every head is Lo-Fi, unpooled; recorded as heads)",
        unit="heads",
    )
    window_size: int = knob(
        2,
        IntRange(1, 16),
        help="Hi-Fi window side = Lo-Fi pooling size (the map is zero-padded to a multiple)",
        unit="tokens",
    )
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="DWMlp hidden width / dim")
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the q, k, v projections")
    drop_path: float = knob(0.0, FloatRange(0.0, 0.9), help="stochastic depth rate (training only)")

    def inert_knobs(self) -> dict[str, int]:
        if self.window_size != 1:
            return {}
        return {"lofi_heads": lofi_heads_built(self.heads, self.lofi_heads, self.window_size)}

    def check(self) -> None:
        if self.lofi_heads > self.heads:
            self.fail("`lofi_heads <= heads`", lofi_heads=self.lofi_heads, heads=self.heads)

    @property
    def dim(self) -> int:
        """Token width: heads x head_dim."""
        return self.heads * self.head_dim

    def derived(self) -> dict[str, float | int]:
        return {
            "dim": self.dim,
            "alpha": self.lofi_heads / self.heads,  # LITv2's alpha; 1.0 at window_size 1
            "hifi_heads": self.heads - self.lofi_heads,
            "mlp_hidden": int(self.dim * self.mlp_ratio),
        }


@register_block(
    "hilo",
    family="litv2",
    paper=_PAPER,
    summary="HiLo attention (Hi-Fi window heads + Lo-Fi heads on pooled K/V, concatenated) + DWConv MLP",
    reference=Reference(
        params=197_200, macs=169.19e6, size=(28, 28), source="docs/zoo.md#reference-blocks (alpha 0.9, s 2)"
    ),
)
class HiLoBlock(TokenBlock):
    """LITv2 attention block: x = x + HiLo(LN(x)); x = x + DWMlp(LN(x)).

    Input: x (B, H*W, dim) and hw = (H, W); any H, W (the map is zero-padded right/bottom to a multiple of
    window_size inside HiLo and cropped back). Output: same shape.
    """

    Config = HiLoBlockConfig

    def __init__(
        self,
        config: HiLoBlockConfig | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(c.dim, **dd)
        self.attn = HiLo(c.dim, c.heads, c.head_dim, c.lofi_heads, c.window_size, qkv_bias=c.qkv_bias, **dd)
        self.norm2 = nn.LayerNorm(c.dim, **dd)
        self.mlp = DWConvMlp(c.dim, int(c.dim * c.mlp_ratio), **dd)
        self.drop_path = DropPath(c.drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        _check_tokens(x, hw, "hilo")
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


@dataclass(frozen=True)
class ConvFFNConfig(Config):
    owner_name = "convffn"

    dim: int = knob(128, IntRange(8, 2048, step=8), help="token channels", unit="channels")
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="DWMlp hidden width / dim")
    drop_path: float = knob(0.0, FloatRange(0.0, 0.9), help="stochastic depth rate (training only)")

    def derived(self) -> dict[str, int]:
        return {"mlp_hidden": int(self.dim * self.mlp_ratio)}


@register_block(
    "convffn",
    family="litv2",
    paper=_PAPER,
    summary="LITv2 stage-1/2 block: DWConv MLP only, no attention",
    reference=Reference(params=137_100, macs=106.87e6, size=(28, 28), source="docs/zoo.md#reference-numbers"),
)
class ConvFFNBlock(TokenBlock):
    """LITv2's attention-free early-stage block: x = x + DWMlp(LN(x)).

    Input: x (B, H*W, dim) and hw = (H, W), any H, W. Output: same shape.
    """

    Config = ConvFFNConfig

    def __init__(
        self, config: ConvFFNConfig | None = None, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        self.norm = nn.LayerNorm(c.dim, **dd)
        self.mlp = DWConvMlp(c.dim, int(c.dim * c.mlp_ratio), **dd)
        self.drop_path = DropPath(c.drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        _check_tokens(x, hw, "convffn")
        return x + self.drop_path(self.mlp(self.norm(x), hw))


@dataclass(frozen=True)
class DTMConfig(Config):
    owner_name = "dtm"

    dim: int = knob(128, IntRange(8, 2048, step=8), help="input channels (output has 2 x dim)", unit="channels")
    deformable: bool = knob(
        True, Choice((True, False)), help="learned offsets (False: plain 2x2 stride-2 conv, i.e. DTM at init)"
    )

    def derived(self) -> dict[str, int]:
        return {"out_dim": 2 * self.dim}


@register_block(
    "dtm",
    family="litv2",
    paper=_PAPER,
    summary="deformable token merging: 2x2 stride-2 deformable conv C -> 2C + BatchNorm + GELU",
)
class DTM(TokenBlock):
    """Deformable token merging between LITv2 stages (halves the grid, doubles the channels).

    Input: x (B, H*W, dim) and hw = (H, W) with H, W >= 2; an odd last row/column is dropped by the 2x2 stride-2
    grid (as the official conv) but can still be reached through the offsets.
    Output: (x (B, H//2 * W//2, 2*dim), (H//2, W//2)).
    """

    Config = DTMConfig

    def __init__(
        self, config: DTMConfig | None = None, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        if c.deformable:
            self.dconv = DeformConv2d(c.dim, 2 * c.dim, 2, **dd)
        else:
            self.dconv = nn.Conv2d(c.dim, 2 * c.dim, 2, stride=2, **dd)
        self.norm = nn.BatchNorm2d(2 * c.dim, **dd)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        _check_tokens(x, hw, "dtm")
        h, w = hw
        if h < 2 or w < 2:
            raise InputSizeError(f"dtm merges 2x2 patches, so H >= 2 and W >= 2 must hold, but got hw={(h, w)}")
        b, _, c = x.shape
        x = self.act(self.norm(self.dconv(x.transpose(1, 2).view(b, c, h, w))))
        return x.flatten(2).transpose(1, 2), (h // 2, w // 2)
