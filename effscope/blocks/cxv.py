"""CXV transformer layers: Nyström, Performer and linear attention on feature maps, each with a 1x1-conv FFN.

Jeevan & Sethi, "Convolutional Xformers for Vision" (arXiv 2201.10271, 2022); docs/zoo.md#cxv. The official files
(`CNV.py`, `CPV.py`, `CLTV.py`) wrap Nyströmformer (Xiong et al., AAAI 2021), Performer FAVOR+ (Choromanski et al.,
ICLR 2021) and efficient attention (Shen et al., WACV 2021) in one transformer sub-layer pair per layer, with no
pre-norm inside: x = attn(x) + x; x = ff(x) + x, ff = Conv1x1 -> GELU -> Dropout -> Conv1x1 -> Dropout.
The official modules hard-code a 32x32 token grid; these take any grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effscope.blocks._layers import merge_heads
from effscope.blocks.attention import attend
from effscope.knobs import Choice, Config, FloatRange, IntRange, knob
from effscope.modules import ConfiguredModule, DeviceLike
from effscope.spec import Reference, register_block

__all__ = [
    "CXVBlock",
    "CXVBlockConfig",
    "ConvFeedForward",
    "ImageLinearAttention",
    "LinearBlock",
    "LinearBlockConfig",
    "LinearKnobs",
    "NystromAttention",
    "NystromBlock",
    "NystromBlockConfig",
    "NystromKnobs",
    "PerformerAttention",
    "PerformerBlock",
    "PerformerBlockConfig",
    "PerformerKnobs",
    "gaussian_orthogonal_matrix",
    "iterative_pinv",
]

_PAPER = "CXV: Convolutional Xformers for Vision (arXiv 2201.10271)"


# --- small layers -----------------------------------------------------------------------------------------------


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), a view."""
    return x.flatten(2).transpose(1, 2)


def _map(tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W), a view."""
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).view(b, c, *hw)


class ConvFeedForward(nn.Module):
    """CXV's FFN on a map: Conv1x1(dim -> mult*dim) -> GELU -> Dropout -> Conv1x1 -> Dropout."""

    def __init__(
        self, dim: int, mult: int, dropout: float, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Conv2d(dim, dim * mult, 1, **dd)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Conv2d(dim * mult, dim, 1, **dd)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def iterative_pinv(x: torch.Tensor, iters: int) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of each (m, m) matrix in `x` by the Nyströmformer iteration.

    z <- 1/4 z (13 I - xz (15 I - xz (7 I - xz))), from z0 = xᵀ / (max col-sum * max row-sum). As in the official
    code, the two maxima are taken over the whole tensor (every batch item and head), not per matrix.
    """
    absx = x.abs()
    z = x.transpose(-2, -1) / (absx.sum(-1).max() * absx.sum(-2).max())
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iters):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Nyström self-attention on (B, N, dim) tokens with a depth-wise sequence-conv residual on v.

    Landmarks are means of `num_landmarks` consecutive segments of ceil(N / m) tokens (row-major); when N is not a
    multiple of m the sequence is zero-padded at the front (the padded zeros join the landmark means and the keys,
    as in the official code) and the last N outputs are kept.
    out = (softmax(q k̃ᵀ) B⁺) (softmax(q̃ kᵀ) v) + conv(v), B = softmax(q̃ k̃ᵀ), q scaled by head_dim^-½ first.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        num_landmarks: int,
        pinv_iters: int,
        res_kernel: int,
        dropout: float,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.heads, self.head_dim, self.m, self.pinv_iters = heads, head_dim, num_landmarks, pinv_iters
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False, **dd)
        # Depth-wise conv along the sequence axis, one (k, 1) kernel per head shared over the head's channels.
        self.res_conv = nn.Conv2d(
            heads, heads, (res_kernel, 1), padding=(res_kernel // 2, 0), groups=heads, bias=False, **dd
        )
        self.proj = nn.Linear(heads * head_dim, dim, **dd)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        m, h, d = self.m, self.heads, self.head_dim
        pad = -n % m
        if pad:
            x = nn.functional.pad(x, (0, 0, pad, 0))  # front padding: the last n tokens are the real ones
        n_pad = n + pad
        seg = n_pad // m
        q, k, v = self.qkv(x).view(b, n_pad, 3, h, d).permute(2, 0, 3, 1, 4)
        q = q * self.scale
        q_land = q.unflatten(2, (m, seg)).mean(3)
        k_land = k.unflatten(2, (m, seg)).mean(3)
        kernel_1 = (q @ k_land.transpose(-2, -1)).softmax(-1)  # (B, h, n, m)
        kernel_2 = (q_land @ k_land.transpose(-2, -1)).softmax(-1)  # (B, h, m, m)
        # softmax(q̃ kᵀ) v is ordinary attention of the m landmark queries over every key (q already scaled).
        context = attend(q_land, k, v, scale=1.0)  # (B, h, m, d)
        out = (kernel_1 @ iterative_pinv(kernel_2, self.pinv_iters)) @ context
        out += self.res_conv(v)  # in place, as the official code: `out` is a fresh product
        out = merge_heads(out[:, :, pad:])  # tokens are independent from here on: drop the padding before proj
        return self.drop(self.proj(out))


def gaussian_orthogonal_matrix(
    rows: int, cols: int, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Performer's random feature matrix (rows, cols): stacked orthogonal (cols x cols) blocks from the QR of
    Gaussian matrices (the last block truncated), each row rescaled by the norm of a fresh Gaussian vector.

    Drawn on the CPU in float32 from torch's default generator, then moved; an empty tensor on `meta`.
    """
    if torch.device(device or "cpu").type == "meta":
        return torch.empty(rows, cols, device=device, dtype=dtype)
    blocks = []
    for _ in range(math.ceil(rows / cols)):
        q, _ = torch.linalg.qr(torch.randn(cols, cols))
        blocks.append(q.T)
    w = torch.cat(blocks)[:rows]
    norms = torch.randn(rows, cols).norm(dim=1)
    return (norms[:, None] * w).to(device=device, dtype=dtype)


class PerformerAttention(nn.Module):
    """Performer (FAVOR+) self-attention on (B, N, dim) tokens, non-causal, positive softmax-kernel features.

    φ(x) = m^-½ (exp(x̂ Wᵀ - ‖x̂‖²/2 - max) + 1e-4), x̂ = head_dim^-¼ x, max row-wise for queries; for keys one
    max over the whole key tensor (every sample, head, token and feature) as the official code, or one per sample
    and head with key_max="per_sample". The max would cancel in the ratio but for the 1e-4, so the two differ
    (by ~1e-2 relative in the logits), and with the official global max a sample's output depends on the other
    samples of its batch. out = φ(q) (φ(k)ᵀ v) / (φ(q) Σₙ φ(k)). W is a fixed buffer drawn at init: the official
    model declares a redraw interval but never attaches the updater, so W is never redrawn.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        nb_features: int,
        dropout: float,
        *,
        key_max: str = "global",
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.heads, self.head_dim = heads, head_dim
        self.key_dims = (-2, -1) if key_max == "per_sample" else None  # None: over every dim (the official max)
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, **dd)  # the official to_q, to_k, to_v fused
        self.register_buffer("projection", gaussian_orthogonal_matrix(nb_features, head_dim, **dd))
        self.proj = nn.Linear(heads * head_dim, dim, **dd)
        self.drop = nn.Dropout(dropout)

    def _features(self, x: torch.Tensor, is_query: bool) -> torch.Tensor:
        x = x * self.head_dim**-0.25
        dash = nn.functional.linear(x, self.projection)  # (B, h, n, m)
        sq_norm = x.square().sum(-1, keepdim=True) / 2
        if is_query:
            peak = dash.amax(-1, keepdim=True)
        else:
            peak = dash.amax() if self.key_dims is None else dash.amax(self.key_dims, keepdim=True)
        return self.projection.shape[0] ** -0.5 * (torch.exp(dash - sq_norm - peak.detach()) + 1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self._features(q, True), self._features(k, False)
        context = k.transpose(-2, -1) @ v  # (B, h, m, d)
        denom = q @ k.sum(-2).unsqueeze(-1)  # (B, h, n, 1)
        out = (q @ context) / denom
        return self.drop(self.proj(merge_heads(out)))


class ImageLinearAttention(nn.Module):
    """Efficient attention (Shen et al.) on a (B, dim, H, W) map with k x k conv projections.

    q, k scaled by head_dim^-¼; k softmax over positions, q softmax over its head's channels;
    out = q-weighted sum of context = Σₙ k vᵀ (head_dim x head_dim per head), then the output conv.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        kernel_size: int,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        # The official to_q, to_k, to_v convs as one parameter (one state-dict entry).
        self.qkv = nn.Conv2d(dim, 3 * inner, kernel_size, padding=kernel_size // 2, **dd)
        self.proj = nn.Conv2d(inner, dim, kernel_size, padding=kernel_size // 2, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = x.shape
        if b == 1:  # one conv; its q, k, v slices are read in place
            q, k, v = self.qkv(x).view(b, 3, self.heads, self.head_dim, hh * ww).unbind(1)  # each (B, h, d, n)
        else:  # three convs over the weight's thirds, as the official: a batch of slices would be copied
            w, bias, pad = self.qkv.weight.chunk(3), self.qkv.bias.chunk(3), self.qkv.padding
            q, k, v = (
                F.conv2d(x, wi, bi, padding=pad).view(b, self.heads, self.head_dim, hh * ww)
                for wi, bi in zip(w, bias, strict=True)
            )
        scale = self.head_dim**-0.25
        q = (q * scale).softmax(-2)
        k = (k * scale).softmax(-1)
        context = k @ v.transpose(-2, -1)  # (B, h, d_k, d_v)
        out = context.transpose(-2, -1) @ q  # (B, h, d_v, n)
        return self.proj(out.reshape(b, self.heads * self.head_dim, hh, ww))


# --- configs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CXVBlockConfig(Config):
    """Knobs every CXV layer shares (the files' setting: dim 128, 4 heads of 32, mlp_mult 2, dropout 0.5)."""

    dim: int = knob(128, IntRange(8, 1024, step=8), help="channels of the map", unit="channels")
    heads: int = knob(4, IntRange(1, 16), help="attention heads", unit="heads")
    head_dim: int = knob(
        32, IntRange(8, 128, step=8), help="channels per head (inner width heads x head_dim)", unit="channels"
    )
    mlp_mult: int = knob(2, IntRange(1, 8), help="FFN hidden width / dim")
    dropout: float = knob(
        0.5, FloatRange(0.0, 0.9), help="dropout after the attention output and in the FFN (training only)"
    )

    @property
    def inner_dim(self) -> int:
        return self.heads * self.head_dim

    def derived(self) -> dict[str, int]:
        return {"inner_dim": self.inner_dim, "mlp_hidden": self.dim * self.mlp_mult}


# The variant knobs live in mixins so the block configs and the model configs declare them once.


@dataclass(frozen=True)
class NystromKnobs(Config):
    num_landmarks: int = knob(64, IntRange(1, 256), help="Nyström landmarks (segment means)", unit="tokens")
    pinv_iters: int = knob(6, IntRange(1, 20), help="iterations of the pseudo-inverse approximation")
    res_kernel: int = knob(
        33, IntRange(1, 65, step=2), help="length of the depth-wise conv residual on v", unit="tokens"
    )


@dataclass(frozen=True)
class PerformerKnobs(Config):
    nb_features: int = knob(
        110, IntRange(8, 512), help="random features (default int(d ln d) for head_dim 32)", unit="features"
    )
    key_max: str = knob(
        "global",
        Choice(("global", "per_sample")),
        help="FAVOR+ key stabiliser: one max over the whole batch (official; couples a batch's samples) "
        "or one per sample and head (batch-independent outputs)",
    )


@dataclass(frozen=True)
class LinearKnobs(Config):
    kernel_size: int = knob(
        3, IntRange(1, 7, step=2), help="kernel of the q/k/v and output conv projections", unit="pixels"
    )


@dataclass(frozen=True)
class NystromBlockConfig(NystromKnobs, CXVBlockConfig):
    owner_name = "cxv_nystrom"


@dataclass(frozen=True)
class PerformerBlockConfig(PerformerKnobs, CXVBlockConfig):
    owner_name = "cxv_performer"


@dataclass(frozen=True)
class LinearBlockConfig(LinearKnobs, CXVBlockConfig):
    owner_name = "cxv_linear"


# --- blocks -----------------------------------------------------------------------------------------------------


class CXVBlock(ConfiguredModule):
    """One CXV transformer sub-layer pair on a map: x = attn(x) + x; x = ff(x) + x (no norm inside).

    Input: x (B, dim, H, W), any H x W. Output: same shape.
    """

    default_size = (32, 32)

    def __init__(
        self,
        config: CXVBlockConfig | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c = self.config
        self.attn = self._attention(c, device=device, dtype=dtype)
        self.ff = ConvFeedForward(c.dim, c.mlp_mult, c.dropout, device=device, dtype=dtype)

    def _attention(self, c: CXVBlockConfig, *, device: DeviceLike | None, dtype: torch.dtype | None) -> nn.Module:
        raise NotImplementedError

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """Token attention by default: flatten the map, attend, fold back."""
        return _map(self.attn(_tokens(x)), x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._attend(x) + x
        return self.ff(x) + x

    def example_args(
        self,
        batch: int = 1,
        size: tuple[int, int] | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple:
        h, w = size or self.default_size
        return (torch.randn(batch, self.config.dim, h, w, device=device, dtype=dtype),)


def _reference(params: int, model: str) -> Reference:
    return Reference(
        params=params,
        size=(32, 32),
        source=f"docs/zoo.md#cxv-differences: {model} params minus stem, embedding convs, norms, head",
    )


@register_block(
    "cxv_nystrom",
    family="cxv",
    paper=_PAPER,
    summary="CNV layer: Nyström attention (64 segment-mean landmarks, conv residual on v) + 1x1-conv FFN on a map",
    reference=_reference(131_716, "CNV"),
)
class NystromBlock(CXVBlock):
    """CNV's transformer layer: Nyström attention then a 1x1-conv FFN, both residual, no norm inside.

    Input: x (B, dim, H, W), any H x W (H*W not a multiple of num_landmarks is front-padded). Output: same shape.
    """

    Config = NystromBlockConfig

    def _attention(self, c: NystromBlockConfig, *, device: DeviceLike | None, dtype: torch.dtype | None):
        return NystromAttention(
            c.dim,
            c.heads,
            c.head_dim,
            c.num_landmarks,
            c.pinv_iters,
            c.res_kernel,
            c.dropout,
            device=device,
            dtype=dtype,
        )


@register_block(
    "cxv_performer",
    family="cxv",
    paper=_PAPER,
    summary="CPV layer: Performer FAVOR+ attention (fixed orthogonal random features) + 1x1-conv FFN on a map",
    reference=_reference(131_968, "CPV"),
)
class PerformerBlock(CXVBlock):
    """CPV's transformer layer: Performer attention then a 1x1-conv FFN, both residual, no norm inside.

    Input: x (B, dim, H, W), any H x W. Output: same shape.
    """

    Config = PerformerBlockConfig
    revision = 2  # 2: the FAVOR+ stabiliser is one max over the whole key tensor, as the official code

    def _attention(self, c: PerformerBlockConfig, *, device: DeviceLike | None, dtype: torch.dtype | None):
        return PerformerAttention(
            c.dim, c.heads, c.head_dim, c.nb_features, c.dropout, key_max=c.key_max, device=device, dtype=dtype
        )


@register_block(
    "cxv_linear",
    family="cxv",
    paper=_PAPER,
    summary="CLTV layer: efficient (linear) attention with 3x3-conv q/k/v/out projections + 1x1-conv FFN on a map",
    reference=_reference(656_256, "CLTV"),
)
class LinearBlock(CXVBlock):
    """CLTV's transformer layer: efficient attention with conv projections then a 1x1-conv FFN, no norm inside.

    Input: x (B, dim, H, W), any H x W. Output: same shape.
    """

    Config = LinearBlockConfig

    def _attention(self, c: LinearBlockConfig, *, device: DeviceLike | None, dtype: torch.dtype | None):
        return ImageLinearAttention(c.dim, c.heads, c.head_dim, c.kernel_size, device=device, dtype=dtype)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)  # works on the map directly
