"""CageViT: a convolutional activation score picks the major tokens; the rest are fused; a Gated Linear SRA encoder.

Zheng et al., "CageViT: Convolutional Activation Guided Efficient Vision Transformer" (arXiv 2305.09924, 2023).
The paper reports a 43.35M-parameter model at 83.4 % ImageNet-1K top-1 (224x224). No official code exists, and the
paper body gives neither the sizes nor the exact layers to us, so this file is effscope's documented interpretation
(docs/zoo.md#cagevit-interpretation). Every choice made here:

1. Scorer ("weighted class activation"): three 3x3 stride-2 convs (bias-free) + BatchNorm + GELU, all
   `scorer_width` channels wide, take the image to 1/8 resolution; a learned 1x1 conv (with bias) weights the
   channels into one activation map (CAM's sum_k w_k A_k); the map is average-pooled over each patch's area
   (patch_size / 8 per side) into one score per patch. Its params and MACs count in the model's totals.
2. Patch embedding: a patch_size x patch_size stride-patch_size conv (ViT's linear embedding), no norm.
3. Selection (`TokenRearrange`, the `cagevit_select` block without its Linear scorer): the `num_major` highest
   scores, in descending score order, are the major tokens, multiplied by sigmoid(score) so the scorer gets a
   gradient (sort/topk alone give it none), plus the learned positional embedding of their original positions.
4. Fusion: the minor tokens are pooled into `num_fusion` fusion tokens by multi-head attention pooling with learned
   queries (heads x head_dim of the encoder), plus a learned fusion embedding.
5. Positional embedding: a learned table on the 224 / patch_size grid, bicubically interpolated to other grids
   (so the model runs at any size divisible by patch_size whose grid holds more than num_major patches).
6. Encoder: `depth` `cagevit` blocks (pre-norm Gated Linear SRA + plain MLP; docs/zoo.md#cagevit-interpretation,
   item 4). Keys/values: major tokens average-pooled to `pool_tokens` along the score order (pool, Linear, LN, GELU
   as PVTv2-Li), concatenated with the fusion tokens; gate = sigmoid(Linear(LN(x))) on the attention output before
   the output projection. Stochastic depth rises linearly to `drop_path_rate`.
7. Head: final LayerNorm (eps 1e-6), mean over all major + fusion tokens, Linear to num_classes. No class token.
8. CageViT-M sizes (chosen, not published): dim 432 = 9 heads x 48, depth 16, mlp ratio 4, 147 major tokens
   (3/4 of the 196 patches at 224), 4 fusion tokens, 49 pooled keys (PVTv2-Li's 7x7), scorer width 64, patch 16.
   Total 43,413,417 parameters: 0.15 % above the paper's 43.35M (the only published size constraint). The scorer
   is kept narrow (75.9K params, 0.17 of the model's 5.80 fvcore GMACs at 224) because it runs at 1/2 to 1/8
   resolution, where width is expensive; the parameter budget goes to the encoder.
9. Init: trunc-normal(0.02) Linear weights and learned tables, zero biases, unit LayerNorm, He-normal convs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effscope.blocks._layers import init_transformer_weights
from effscope.blocks.cagevit import CageViTBlock, CageViTBlockConfig, CageViTSelectConfig, TokenRearrange
from effscope.errors import InputSizeError
from effscope.knobs import Choice, Config, FloatRange, IntRange, knob
from effscope.modules import DeviceLike, ImageModel
from effscope.spec import Reference, register_model

__all__ = ["ActivationScorer", "CageViT", "CageViTConfig"]

_SCORER_STRIDE = 8  # three stride-2 convs


class ActivationScorer(nn.Module):
    """The "weighted class activation" scorer: a small CNN whose channels a 1x1 conv weights into one score per patch.

    Input: images (B, 3, H, W) with H, W multiples of patch_size. Output: (B, H/p * W/p) scores, row-major.
    """

    def __init__(
        self,
        in_chans: int,
        width: int,
        patch_size: int,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        for cin in (in_chans, width, width):
            layers += [
                nn.Conv2d(cin, width, 3, stride=2, padding=1, bias=False, **dd),
                nn.BatchNorm2d(width, **dd),
                nn.GELU(),
            ]
        self.features = nn.Sequential(*layers)
        self.weighting = nn.Conv2d(width, 1, 1, **dd)
        self.pool = patch_size // _SCORER_STRIDE

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cam = self.weighting(self.features(images))
        if self.pool > 1:  # average the activation over each patch's area
            cam = F.avg_pool2d(cam, self.pool)
        return cam.flatten(1)


@dataclass(frozen=True)
class CageViTConfig(Config):
    owner_name = "cagevit"

    num_major: int = knob(147, IntRange(1, 1023), help="patches kept as major tokens", unit="tokens")
    num_fusion: int = knob(4, IntRange(1, 64), help="fusion tokens the minor patches are pooled into", unit="tokens")
    pool_tokens: int = knob(49, IntRange(1, 256), help="major tokens after the SRA pooling", unit="tokens")
    depth: int = knob(16, IntRange(1, 32), help="encoder blocks", unit="blocks")
    heads: int = knob(9, IntRange(1, 32), help="attention heads", unit="heads")
    head_dim: int = knob(48, Choice((16, 24, 32, 48, 64, 96, 128)), help="channels per head", unit="channels")
    mlp_ratio: float = knob(4.0, FloatRange(0.5, 8.0), help="MLP hidden width / dim")
    scorer_width: int = knob(64, IntRange(8, 512, step=8), help="channels of the scorer CNN", unit="channels")
    patch_size: int = knob(16, Choice((8, 16, 32)), help="patch side", unit="pixels")
    num_classes: int = knob(1000, IntRange(1, 100_000), help="classifier outputs", unit="classes")
    drop_path_rate: float = knob(0.0, FloatRange(0.0, 0.9), help="stochastic depth of the last block (training only)")

    @property
    def dim(self) -> int:
        """Token width: heads x head_dim."""
        return self.heads * self.head_dim

    @property
    def pos_grid(self) -> int:
        """Side of the learned positional table: the patch grid at 224 x 224."""
        return CageViT.default_size[0] // self.patch_size

    def check(self) -> None:
        if self.pool_tokens > self.num_major:
            self.fail("`pool_tokens <= num_major`", pool_tokens=self.pool_tokens, num_major=self.num_major)
        if self.num_major >= self.pos_grid**2:
            self.fail(
                "`num_major < (224 // patch_size)**2` (minor tokens must remain at 224)",
                num_major=self.num_major,
                patch_size=self.patch_size,
            )

    def derived(self) -> dict[str, int]:
        return {"dim": self.dim, "tokens": self.num_major + self.num_fusion, "keys": self.pool_tokens + self.num_fusion}


class CageViT(ImageModel):
    """CageViT classifier (effscope's interpretation, see the module docstring).

    Input: images (B, 3, H, W), H and W multiples of patch_size, (H/p)(W/p) > num_major. Output: (B, num_classes).
    """

    Config = CageViTConfig
    parts = (CageViTBlock,)

    def __init__(
        self, config: CageViTConfig | None = None, *, device: DeviceLike | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        c, dd = self.config, {"device": device, "dtype": dtype}
        self.scorer = ActivationScorer(self.in_chans, c.scorer_width, c.patch_size, **dd)
        self.patch_embed = nn.Conv2d(self.in_chans, c.dim, c.patch_size, stride=c.patch_size, **dd)
        select = CageViTSelectConfig(
            num_major=c.num_major, num_fusion=c.num_fusion, heads=c.heads, head_dim=c.head_dim, pos_grid=c.pos_grid
        )
        self.select = TokenRearrange(select, **dd)
        rates = torch.linspace(0, c.drop_path_rate, c.depth).tolist()
        self.blocks = nn.ModuleList(
            CageViTBlock(
                CageViTBlockConfig(
                    num_major=c.num_major,
                    num_fusion=c.num_fusion,
                    pool_tokens=c.pool_tokens,
                    heads=c.heads,
                    head_dim=c.head_dim,
                    mlp_ratio=c.mlp_ratio,
                    drop_path=rate,
                ),
                **dd,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(c.dim, eps=1e-6, **dd)
        self.head = nn.Linear(c.dim, c.num_classes, **dd)
        if device is None or torch.device(device).type != "meta":
            self.apply(init_transformer_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        h, w = images.shape[-2:]
        if h % p or w % p:
            raise InputSizeError(f"CageViT needs an image size divisible by patch_size={p}, but got {h}x{w}")
        scores = self.scorer(images)
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = self.select(x, scores, (h // p, w // p))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


register_model(
    "cagevit_m",
    CageViT,
    config=CageViTConfig(),
    family="cagevit",
    paper="CageViT (arXiv 2305.09924)",
    summary="CNN activation picks 147 major tokens, the rest fuse into 4 tokens; 16 Gated Linear SRA blocks, dim 432",
    reference=Reference(
        params=None, macs=None, size=(224, 224), source="paper abstract: 43.35M params, 83.4 % top-1; no official code"
    ),
    notes=(
        "no official implementation: effscope's documented interpretation (docs/zoo.md#cagevit-interpretation); "
        "params within 1 % of "
        "the paper's 43.35M",
    ),
)
