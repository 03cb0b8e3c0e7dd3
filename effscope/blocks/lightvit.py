"""LightViT: local window attention plus global aggregation tokens, and the bi-dimensional attentive FFN.

Huang et al., "LightViT: Towards Light-Weight Convolution-Free Vision Transformers" (arXiv 2207.05557).
Specification: docs/zoo.md#lightvit.

A block sees x = [NT global tokens ; H*W image tokens]. Image tokens attend within non-overlapping windows (Swin-style
relative position bias, no shift); the global tokens aggregate all image tokens, then every image token reads the
global tokens back through a separate key/value projection (`kv_global`); one output projection serves both. The FFN
is gated per channel and per token by BiAttn. Between stages, ResidualMergePatch halves the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effscope.blocks._layers import DropPath, merge_heads
from effscope.blocks.attention import attend
from effscope.errors import InputSizeError
from effscope.knobs import Choice, Config, FloatRange, IntRange, knob
from effscope.modules import DeviceLike, TokenBlock
from effscope.spec import Reference, register_block

__all__ = [
    "BiAttn",
    "BiAttnMlp",
    "LightViTAttention",
    "LightViTBlock",
    "LightViTBlockConfig",
    "LightViTMerge",
    "LightViTMergeConfig",
]

PAPER = "LightViT (arXiv 2207.05557)"
BIATTN_RATIO = 0.25  # BiAttn's reduction C' = C/4; fixed in the official code (not a constructor argument)


def _check_tokens(x: torch.Tensor, hw: tuple[int, int], num_tokens: int, owner: str) -> None:
    """Raise InputSizeError unless x holds num_tokens global tokens followed by an H x W grid."""
    h, w = hw
    if x.shape[1] != num_tokens + h * w:
        raise InputSizeError(
            f"{owner} takes num_tokens + H*W = {num_tokens} + {h}*{w} = {num_tokens + h * w} tokens, "
            f"but got {x.shape[1]}"
        )


def relative_position_index(window_size: int) -> torch.Tensor:
    """Swin's pairwise-offset index into a ((2ws-1)^2, heads) bias table, flattened to (ws^4,), built on CPU."""
    ws = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # (2, ws²)
    rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)  # offsets shifted to start at 0
    return (rel[0] * (2 * ws - 1) + rel[1]).flatten()


class LightViTAttention(nn.Module):
    """Local window attention on image tokens + global-token aggregation and broadcast, one shared projection
    (docs/zoo.md#lightvit-block).

    Args:
        dim: token width (heads x head_dim).
        heads: attention heads.
        num_tokens: global tokens at the front of the sequence (0: plain window attention, no `kv_global`).
        window_size: side of the local windows; the grid is zero-padded to a multiple of it, as LightViT's detection
            code does (padded tokens are keys of their windows, unmasked), and cropped back.
        qkv_bias: bias on `qkv` and `kv_global`.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        num_tokens: int,
        window_size: int,
        *,
        qkv_bias: bool = True,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.heads, self.head_dim = heads, dim // heads
        self.num_tokens, self.window_size = num_tokens, window_size
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        # k/v of the aggregated global tokens; the global tokens' own k/v from `qkv` are computed and discarded.
        self.kv_global = nn.Linear(dim, 2 * dim, bias=qkv_bias, **dd) if num_tokens else None
        self.proj = nn.Linear(dim, dim, **dd)
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window_size - 1) ** 2, heads, **dd))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        index = relative_position_index(window_size)
        self.register_buffer("relative_position_index", index.to(device or "cpu"), persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, ws², ws²) logits bias shared by every window, contiguous (a small copy that lets the add into
        every window's logits run on contiguous memory)."""
        n = self.window_size**2
        table = self.relative_position_bias_table[self.relative_position_index]
        return table.view(n, n, -1).permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x: (B, NT + H*W, dim) -> (B, NT + H*W, dim)."""
        nt, ws, heads, d = self.num_tokens, self.window_size, self.heads, self.head_dim
        b, _, c = x.shape
        h, w = hw
        ph, pw = (-h) % ws, (-w) % ws
        if ph or pw:
            grid = F.pad(x[:, nt:].view(b, h, w, c), (0, 0, 0, pw, 0, ph))
            x = torch.cat([x[:, :nt], grid.flatten(1, 2)], dim=1)
        hp, wp = h + ph, w + pw
        qkv = self.qkv(x)  # (B, NT + Hp*Wp, 3C) = [q | k | v], heads inside each
        grid = qkv[:, nt:].view(b, hp, wp, 3 * c)
        hg, wg = hp // ws, wp // ws

        # Local window self-attention with relative position bias. One copy gathers every window's q, k and v per
        # head, each contiguous so the products read them in place; one copy puts the result back on the map.
        windows = grid.view(b, hg, ws, wg, ws, 3, heads, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
        q, k, v = windows.reshape(3, b * hg * wg, heads, ws * ws, d)
        local = attend(q, k, v, scale=self.scale, bias=self.relative_position_bias())  # (B*nW, heads, ws², d)
        x_img = local.view(b, hg, wg, heads, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, c)
        if ph or pw:  # crop before the global steps, which see only the real tokens
            x_img, grid = x_img[:, :h, :w], grid[:, :h, :w]
        x_img = x_img.reshape(b, h * w, c)
        if not nt:
            return self.proj(x_img)

        # Global aggregation: the global queries attend to every image token (no position bias).
        q_img, k_img, v_img = grid.reshape(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
        q_glb = qkv[:, :nt, :c].view(b, nt, heads, d).transpose(1, 2)
        x_glb = merge_heads(attend(q_glb, k_img, v_img, scale=self.scale))  # (B, NT, C)
        # Global broadcast: every image query attends to the NT aggregated tokens.
        k_glb, v_glb = self.kv_global(x_glb).view(b, nt, 2, heads, d).permute(2, 0, 3, 1, 4)
        broadcast = attend(q_img, k_glb, v_glb, scale=self.scale).transpose(1, 2)  # (B, H*W, heads, d)
        x_img = x_img.view(b, h * w, heads, d)
        if torch.is_grad_enabled():  # autograd has no out= variants
            return self.proj(torch.cat([x_glb, (x_img + broadcast).reshape(b, h * w, c)], dim=1))
        # Inference: [x_glb ; x_img + broadcast] written in place, without the head-merge and concatenation copies.
        out = x_img.new_empty(b, nt + h * w, c)
        out[:, :nt] = x_glb
        torch.add(x_img, broadcast, out=out[:, nt:].view(b, h * w, heads, d))
        return self.proj(out)


class BiAttn(nn.Module):
    """Bi-dimensional gate (docs/zoo.md#lightvit-block): y * sigmoid(channel gate from the token mean) *
    sigmoid(per-token spatial gate).

    Both gates read LN(y) (its own LayerNorm, eps 1e-5) reduced to C' = C/4 channels; the mean runs over every
    token, global tokens included.
    """

    def __init__(
        self,
        dim: int,
        act_ratio: float = BIATTN_RATIO,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        reduced = int(dim * act_ratio)
        self.norm = nn.LayerNorm(dim, **dd)
        self.global_reduce = nn.Linear(dim, reduced, **dd)
        self.local_reduce = nn.Linear(dim, reduced, **dd)
        self.act = nn.GELU()
        self.channel_select = nn.Linear(reduced, dim, **dd)
        self.spatial_select = nn.Linear(2 * reduced, 1, **dd)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: (B, N, C) -> (B, N, C)."""
        z = self.norm(y)
        glb = self.act(self.global_reduce(z.mean(1, keepdim=True)))  # (B, 1, C')
        loc = self.act(self.local_reduce(z))  # (B, N, C')
        channel = self.channel_select(glb).sigmoid()  # (B, 1, C)
        spatial = self.spatial_select(torch.cat([loc, glb.expand_as(loc)], dim=-1)).sigmoid()  # (B, N, 1)
        return y * (channel * spatial)


class BiAttnMlp(nn.Module):
    """fc1 -> GELU -> fc2 -> BiAttn (docs/zoo.md#lightvit-block)."""

    def __init__(
        self, dim: int, hidden: int, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, **dd)
        self.attn = BiAttn(dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.fc2(self.act(self.fc1(x))))


@dataclass(frozen=True)
class LightViTBlockConfig(Config):
    owner_name = "lightvit"

    heads: int = knob(4, IntRange(1, 32), help="attention heads", unit="heads")
    head_dim: int = knob(
        32, Choice((16, 24, 32, 48, 64, 96, 128)), help="channels per head (32 in LightViT)", unit="channels"
    )
    num_tokens: int = knob(
        8, IntRange(0, 64), help="global aggregation tokens before the image tokens (0: none)", unit="tokens"
    )
    window_size: int = knob(
        7, IntRange(1, 14), help="local attention window side (grid padded to a multiple)", unit="tokens"
    )
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="FFN hidden width / dim")
    qkv_bias: bool = knob(True, Choice((True, False)), help="bias on the qkv and kv_global projections")
    drop_path: float = knob(0.0, FloatRange(0.0, 0.9), help="stochastic depth rate (training only)")

    @property
    def dim(self) -> int:
        """Token width: heads x head_dim (derived, so every point is valid)."""
        return self.heads * self.head_dim

    def derived(self) -> dict[str, int]:
        return {"dim": self.dim, "mlp_hidden": round(self.dim * self.mlp_ratio)}


@register_block(
    "lightvit",
    family="lightvit",
    paper=PAPER,
    summary="local window attention + global-token aggregation/broadcast, BiAttn-gated FFN",
    reference=Reference(params=244_773, macs=173.84e6, size=(28, 28), source="docs/zoo.md#reference-blocks"),
)
class LightViTBlock(TokenBlock):
    """Pre-norm LightViT block: x += DropPath(Attn(LN(x), hw)); x += DropPath(BiAttnMlp(LN(x))); LNs eps 1e-6.

    Input: x (B, num_tokens + H*W, dim), the global tokens first, then the image tokens in row-major order, and
    hw = (H, W). Any grid works: it is zero-padded to a multiple of window_size for the local attention.
    Output: same shape.
    """

    Config = LightViTBlockConfig

    def __init__(
        self,
        config: LightViTBlockConfig | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(c.dim, eps=1e-6, **dd)
        self.attn = LightViTAttention(c.dim, c.heads, c.num_tokens, c.window_size, qkv_bias=c.qkv_bias, **dd)
        self.norm2 = nn.LayerNorm(c.dim, eps=1e-6, **dd)
        self.mlp = BiAttnMlp(c.dim, round(c.dim * c.mlp_ratio), **dd)
        self.drop_path = DropPath(c.drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        _check_tokens(x, hw, self.config.num_tokens, "lightvit")
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def leading_tokens(self) -> int:
        return self.config.num_tokens


@dataclass(frozen=True)
class LightViTMergeConfig(Config):
    owner_name = "lightvit_merge"

    in_dim: int = knob(128, IntRange(16, 2048, step=16), help="input token width", unit="channels")
    out_dim: int = knob(256, IntRange(16, 2048, step=16), help="output token width", unit="channels")
    num_tokens: int = knob(
        8, IntRange(0, 64), help="global tokens before the image tokens (projected too)", unit="tokens"
    )

    @property
    def dim(self) -> int:
        """Input width (what `TokenBlock.example_args` feeds)."""
        return self.in_dim


@register_block(
    "lightvit_merge",
    family="lightvit",
    paper=PAPER,
    summary="ResidualMergePatch: 2x2 space-to-depth + LN + linear, plus max-pooled linear shortcut (stride 2)",
    reference=Reference(
        params=197_888, size=(28, 28), source="docs/zoo.md#lightvit_merge-block (LightViT-T stage-3 merge)"
    ),
)
class LightViTMerge(TokenBlock):
    """LightViT's ResidualMergePatch (docs/zoo.md#lightvit_merge-block): halves the grid and maps in_dim -> out_dim
    channels.

    Image tokens: Linear(LN(2x2 space-to-depth, order (0,0),(1,0),(0,1),(1,1))) + Linear(MaxPool 2x2 s2), both
    linears without bias; global tokens: Linear(LN(x)) without bias. An odd side is zero-padded to even before
    both branches, as LightViT's detection code does: the max pool of an edge window sees the padded zeros
    (max(x, 0) there), giving a ceil(H/2) x ceil(W/2) grid.

    Input: x (B, num_tokens + H*W, in_dim), global tokens first, and hw = (H, W).
    Output: (x (B, num_tokens + ceil(H/2)*ceil(W/2), out_dim), (ceil(H/2), ceil(W/2))).
    """

    Config = LightViTMergeConfig
    # 2: an odd grid is zero-padded before the max pool, as the official code; no global branch at num_tokens 0
    revision = 2

    def __init__(
        self,
        config: LightViTMergeConfig | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        self.norm = nn.LayerNorm(4 * c.in_dim, **dd)
        self.reduction = nn.Linear(4 * c.in_dim, c.out_dim, bias=False, **dd)
        self.res_proj = nn.Linear(c.in_dim, c.out_dim, bias=False, **dd)
        # without global tokens (an effscope extension: LightViT always has them) the global branch is not built,
        # so its parameters are not counted
        self.norm_global = nn.LayerNorm(c.in_dim, **dd) if c.num_tokens else None
        self.proj_global = nn.Linear(c.in_dim, c.out_dim, bias=False, **dd) if c.num_tokens else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        nt = self.config.num_tokens
        _check_tokens(x, hw, nt, "lightvit_merge")
        b, _, c = x.shape
        h, w = hw
        grid = x[:, nt:].reshape(b, h, w, c)
        if h % 2 or w % 2:  # zero-pad first, as the official (detection) code: the max pool sees the zeros too
            grid = F.pad(grid, (0, 0, 0, w % 2, 0, h % 2))
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        # MaxPool3d((2, 2, 1)) on the channels-last map, as the official code does.
        res = F.max_pool3d(grid, (2, 2, 1), (2, 2, 1))
        # (B, H2, a, W2, b, C) -> (B, H2, W2, b, a, C): channel block b*2 + a is offset (a, b) = the official order.
        s2d = grid.reshape(b, h2, 2, w2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h2 * w2, 4 * c)
        img = self.reduction(self.norm(s2d)) + self.res_proj(res.reshape(b, h2 * w2, c))
        if not nt:
            return img, (h2, w2)
        glb = self.proj_global(self.norm_global(x[:, :nt]))
        return torch.cat([glb, img], dim=1), (h2, w2)

    def leading_tokens(self) -> int:
        return self.config.num_tokens

    def token_width(self) -> int:
        return self.config.in_dim
