"""Layers shared by several block families: heads, FFNs, windows, padding, stochastic depth, init."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from effscope.modules import DeviceLike

__all__ = [
    "DWConvMlp",
    "DropPath",
    "Mlp",
    "init_transformer_weights",
    "merge_heads",
    "pad_to_multiple",
    "split_heads",
    "window_partition",
    "window_reverse",
]


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads*d) -> (B, heads, N, d)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads*d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ws -> (B * H/ws * W/ws, ws*ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad a (B, H, W, C) map on the right and bottom so H and W are multiples of `multiple`.

    Returns:
        the padded map and its (H, W); the input itself when no padding is needed.
    """
    _, h, w, _ = x.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    return x, (h + ph, w + pw)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability `p` while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear on the last dim."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        out: int | None = None,
        *,
        bias: bool = True,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(dim, hidden, bias=bias, **dd)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DWConvMlp(nn.Module):
    """PVTv2's Mlp / LITv2's DWMlp: fc1 -> 3x3 depth-wise conv -> GELU -> fc2 on tokens of an H x W grid.

    Args:
        dim: input and output channels.
        hidden: channels of fc1's output (mlp_ratio * dim).
        relu_after_fc1: PVTv2-Li's extra ReLU between fc1 and the conv.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        relu_after_fc1: bool = False,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.relu = nn.ReLU(inplace=True) if relu_after_fc1 else nn.Identity()  # in place, as the official Mlp
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, **dd)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, **dd)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x: (B, H*W, dim) -> (B, H*W, dim)."""
        x = self.relu(self.fc1(x))
        b, n, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, *hw)
        x = self.dwconv(x).flatten(2).transpose(1, 2)
        return self.fc2(self.act(x))


def init_transformer_weights(module: nn.Module) -> None:
    """The init PVTv2 and LITv2 share: trunc-normal(0.02) Linear, unit LayerNorm, He-normal conv.

    Apply with `model.apply(init_transformer_weights)`.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
