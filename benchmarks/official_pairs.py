"""Pairs of (effscope module, official module) with the same weights, for the goldens and the speed comparison.

A pair is built from an effscope target (registry name + knobs): the official module is constructed with the
matching arguments, and effscope's state dict is copied into it through an explicit key map (renames, and splits
of the projections effscope fuses, e.g. CXV's to_q/to_k/to_v into one `qkv`). Every official parameter and
buffer must be covered, so a map that forgets a weight fails loudly instead of leaving the official init.

Used by `make_official_goldens.py` and `vs_official.py`; not part of effscope or its tests.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from official_code import Official, set_grid
from torch import nn

import effscope.blocks  # noqa: F401  (fills the registries)
import effscope.models  # noqa: F401
from effscope.modules import ConfiguredModule
from effscope.spec import blocks, models

__all__ = [
    "BLOCK_BENCH_CASES",
    "BLOCK_CASES",
    "MODEL_CASES",
    "PRESET_CASES",
    "Case",
    "Pair",
    "build_pair",
    "randomize_",
]

# Official-only state that the official module computes itself (effscope keeps it non-persistent or has none).
_OFFICIAL_ONLY = re.compile(r"(^|\.)(relative_position_index|num_batches_tracked)$")


@dataclass(frozen=True)
class Case:
    """One effscope target at one config, and how to build and call its official counterpart.

    Attributes:
        name: golden file stem, `<family>_<config>`.
        target: effscope block or model name.
        knobs: knob overrides on the registered config.
        size: token grid (blocks) or image size (models).
        batch: items in the input.
        official: (Official, effscope config, size) -> the official module (fresh weights).
        call: (official module, effscope's example args) -> the official output tensor.
        rules: (regex, replacement) renames from effscope keys to official keys, applied in order (re.sub).
        splits: renamed key prefix (its last dotted parts) -> the names its dim-0 chunks go to (effscope's fused
            projections, e.g. "layers.0.0.qkv" -> to_q, to_k, to_v).
        source: official file and class, for the golden's metadata.
    """

    name: str
    target: str
    knobs: dict[str, Any]
    size: tuple[int, int]
    batch: int
    official: Callable[[Official, Any, tuple[int, int]], nn.Module]
    call: Callable[[nn.Module, tuple], torch.Tensor]
    rules: tuple[tuple[str, Any], ...] = ()
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""


@dataclass
class Pair:
    case: Case
    ours: ConfiguredModule
    theirs: nn.Module
    args: tuple

    def run_ours(self, args: tuple | None = None) -> torch.Tensor:
        out = self.ours(*(args or self.args))
        return out[0] if isinstance(out, tuple) else out

    def run_theirs(self, args: tuple | None = None) -> torch.Tensor:
        return self.case.call(self.theirs, args or self.args)


def _spec(target: str):
    return blocks().get(target) if target in blocks() else models().get(target)


def official_state(case: Case, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """effscope's state dict under the official names (fused projections split)."""
    out = {}
    for key, value in state.items():
        for pattern, repl in case.rules:
            key = re.sub(pattern, repl, key)
        prefix, _, leaf = key.rpartition(".")
        suffix = next((s for s in case.splits if prefix == s or prefix.endswith("." + s)), None)
        if suffix is None:
            out[key] = value
            continue
        names = case.splits[suffix]
        for name, chunk in zip(names, value.chunk(len(names), dim=0), strict=True):
            out[f"{prefix[: len(prefix) - len(suffix)]}{name}.{leaf}"] = chunk
    return out


def load_official(case: Case, theirs: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy effscope's `state` into the official module; every official entry must be covered, shapes equal."""
    mapped = official_state(case, state)
    target = theirs.state_dict()
    unknown = sorted(set(mapped) - set(target))
    uncovered = sorted(k for k in set(target) - set(mapped) if not _OFFICIAL_ONLY.search(k))
    if unknown or uncovered:
        raise KeyError(f"{case.name}: key map incomplete: not in official {unknown}; official not covered {uncovered}")
    for k, v in mapped.items():
        if target[k].shape != v.shape:
            raise ValueError(f"{case.name}: {k}: official shape {tuple(target[k].shape)} != {tuple(v.shape)}")
    target.update(mapped)
    theirs.load_state_dict(target)


def randomize_(module: nn.Module, generator: torch.Generator) -> None:
    """Give every weight a random, non-trivial value (non-zero biases, non-unit norms, real BN statistics), so a
    golden exercises each parameter; effscope's init leaves many at 0 or 1. Fixed buffers (Performer's random
    features) keep their values."""

    def rnd(t: torch.Tensor, scale: float, shift: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.dtype) * scale + shift)

    with torch.no_grad():
        for m in module.modules():
            own = dict(m.named_parameters(recurse=False))
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)) or {"g", "b"} == set(own):
                for name, p in own.items():
                    rnd(p, 0.2, 1.0 if name in ("weight", "g") else 0.0)
                if isinstance(m, nn.BatchNorm2d):
                    rnd(m.running_mean, 0.2)
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator, dtype=torch.float64))
                continue
            for name, p in own.items():
                if p.ndim >= 2:
                    rnd(p, p[0].numel() ** -0.5)  # fan-in scaling keeps activations O(1)
                else:
                    rnd(p, 0.2 if name == "bias" else 0.5)


def build_pair(
    case: Case,
    official: Official,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    randomize: bool = True,
    state: dict[str, torch.Tensor] | None = None,
    batch: int | None = None,
    device: str | torch.device = "cpu",
) -> Pair:
    """Build effscope's module (random weights from `seed`, or `state`), the official one with the same weights,
    and effscope's example input (`batch` items, default the case's), all in `dtype` on `device`, in eval mode.
    Random weights and inputs are fp32-representable."""
    spec = _spec(case.target)
    config = dataclasses.replace(spec.config, **case.knobs)  # validated; also reaches plain fields (num_classes)
    torch.manual_seed(seed)
    ours = spec.build(config, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    if state is not None:
        ours.load_state_dict(state)
    elif randomize:
        randomize_(ours, gen)
        # fp32-representable values: the goldens store weights and inputs in fp32 without loss (half the bytes)
        ours.load_state_dict({k: v.float().to(v.dtype) for k, v in ours.state_dict().items()})
    theirs = case.official(official, config, case.size).to(torch.float64)
    load_official(case, theirs, ours.state_dict())
    torch.manual_seed(seed + 1)
    args = ours.example_args(batch or case.batch, case.size, dtype=torch.float32)
    ours, theirs = ours.to(device, dtype).eval(), theirs.to(device, dtype).eval()
    args = tuple(a.to(device, dtype) if isinstance(a, torch.Tensor) else a for a in args)
    return Pair(case, ours, theirs, args)


# --- official constructors and calls, per family ----------------------------------------------------------------


def _ln6(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


def _pvt_block(o: Official, c, size) -> nn.Module:
    linear = hasattr(c, "pool_size")
    block = o.pvt.Block(
        c.dim,
        c.heads,
        mlp_ratio=c.mlp_ratio,
        qkv_bias=c.qkv_bias,
        norm_layer=_ln6,
        sr_ratio=1 if linear else c.sr_ratio,
        linear=linear,
    )
    if linear and c.pool_size != 7:
        block.attn.pool = nn.AdaptiveAvgPool2d(c.pool_size)  # the official hard-codes 7; set the knob's value
    return block


def _call_x_hw(m: nn.Module, args: tuple) -> torch.Tensor:
    x, (h, w) = args
    out = m(x, h, w)
    return out[0] if isinstance(out, tuple) else out


def _call_x_set_hw(m: nn.Module, args: tuple) -> torch.Tensor:
    """LITv2's detection blocks read H, W from attributes that their stage sets before each call."""
    x, (h, w) = args
    m.H, m.W = h, w
    return m(x)


def _call_x(m: nn.Module, args: tuple) -> torch.Tensor:
    return m(args[0])


def _lightvit_block(module_name: str):
    def build(o: Official, c, size) -> nn.Module:
        mod = getattr(o, module_name)
        return mod.Block(
            c.dim,
            c.heads,
            num_tokens=c.num_tokens,
            window_size=c.window_size,
            mlp_ratio=c.mlp_ratio,
            qkv_bias=c.qkv_bias,
            norm_layer=_ln6,
            attention=getattr(mod, "LightViTAttention", None) or mod.Attention,
        )

    return build


def _lightvit_merge(module_name: str):
    def build(o: Official, c, size) -> nn.Module:
        return getattr(o, module_name).ResidualMergePatch(c.in_dim, c.out_dim, num_tokens=c.num_tokens)

    return build


def _alpha(lofi: int, heads: int) -> float:
    """An alpha whose int(heads * alpha) is exactly `lofi` (the official split rounds down)."""
    return (lofi + 0.5) / heads


def _hilo_block(detection: bool):
    def build(o: Official, c, size) -> nn.Module:
        cls = o.hilo_det.Block if detection else o.litv2.Block
        kw = dict(mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, local_ws=c.window_size)
        return cls(dim=c.dim, input_resolution=size, num_heads=c.heads, alpha=_alpha(c.lofi_heads, c.heads), **kw)

    return build


def _convffn_block(detection: bool):
    def build(o: Official, c, size) -> nn.Module:
        cls = o.hilo_det.ConvFFNBlock if detection else o.litv2.ConvFFNBlock
        return cls(dim=c.dim, input_resolution=size, num_heads=1, mlp_ratio=c.mlp_ratio)

    return build


def _dtm(detection: bool):
    def build(o: Official, c, size) -> nn.Module:
        return (o.hilo_det.DTM if detection else o.litv2_embed.DTM)(size, c.dim)

    return build


def _dw_transformer(o: Official, c, size) -> nn.Module:
    hidden = round(c.dim * c.mlp_ratio)
    return o.dw_vit.Transformer(c.dim, 1, c.heads, c.head_dim, hidden, size[0], size[1])


def _cxv(kind: str):
    def build(o: Official, c, size) -> nn.Module:
        if kind == "nystrom":
            t = o.cnv.Transformer(c.dim, c.heads, c.head_dim, c.mlp_mult, c.dropout)
            attn = o.cnv.NystromAttention(
                c.dim,
                c.heads,
                dim_head=c.head_dim,
                num_landmarks=c.num_landmarks,
                pinv_iterations=c.pinv_iters,
                residual_conv_kernel=c.res_kernel,
                dropout=c.dropout,
            )
        elif kind == "performer":
            t = o.cpv.Transformer(c.dim, c.heads, mlp_mult=c.mlp_mult, dropout=c.dropout)
            attn = o.cpv.SelfAttention(
                c.dim,
                heads=c.heads,
                dim_head=c.head_dim,
                nb_features=c.nb_features,
                dropout=c.dropout,
                qkv_bias=True,
                attn_out_bias=True,
            )
        else:
            t = o.cltv.Transformer(c.dim, c.heads, mlp_mult=c.mlp_mult, dropout=c.dropout)
            k = c.kernel_size
            attn = o.cltv.ImageLinearAttention(
                c.dim, kernel_size=k, padding=k // 2, key_dim=c.head_dim, value_dim=c.head_dim, heads=c.heads
            )
        # The Transformer fixes its attention's sub-knobs (landmarks, dim_head 32, ...); put in the configured one.
        t.layers[0][0] = attn
        return set_grid(t, size)

    return build


# --- key maps -----------------------------------------------------------------------------------------------------

# Block-level renames are anchored at a dotted boundary, (^|\.), so the model maps below can reuse them after
# renaming the model's own prefixes.
_PVT_RULES = (
    (r"(^|\.)attn\.reduce\.1\.", r"\1attn.sr."),  # linear SRA: reduce = (pool, 1x1 conv)
    (r"(^|\.)attn\.reduce\.", r"\1attn.sr."),
    (r"(^|\.)mlp\.dwconv\.", r"\1mlp.dwconv.dwconv."),
)
_MERGE_RULES = ((r"(^|\.)norm_global\.", r"\1norm2."), (r"(^|\.)proj_global\.", r"\1proj."))
_HILO_RULES = ((r"(^|\.)mlp\.dwconv\.", r"\1mlp.dwconv.dwconv."),)
_CONVFFN_RULES = ((r"^norm\.", "norm2."), *_HILO_RULES)
_DTM_RULES = ((r"^norm\.", "norm_layer."),)
_DW_BLOCK = (
    (r"\.blocks\.0\.norm1\.", ".0.norm."),
    (r"\.blocks\.0\.attn\.qkv\.", ".0.fn.to_qkv."),
    (r"\.blocks\.0\.attn\.proj\.", ".0.fn.to_out.0."),
    (r"\.blocks\.0\.norm2\.", ".1.norm."),
    (r"\.blocks\.0\.mlp\.fc1\.", ".1.fn.net.0."),
    (r"\.blocks\.0\.mlp\.fc2\.", ".1.fn.net.3."),
)
_DW_RULES = (
    (r"^blocks\.", "layers.0.blocks."),
    *_DW_BLOCK,
    (r"^shortcut\.branches\.0\.0\.", "batchnorms.0."),
    (r"^shortcut\.branches\.0\.1\.", "convs.0."),
)
_CXV_ATTN = (
    (r"(^|\.)attn\.projection$", r"\1layers.0.0.fast_attention.projection_matrix"),
    (r"(^|\.)attn\.res_conv\.", r"\1layers.0.0.res_conv."),
    (r"(^|\.)ff\.fc1\.", r"\1layers.0.1.net.0."),
    (r"(^|\.)ff\.fc2\.", r"\1layers.0.1.net.3."),
)
_NYSTROM_RULES = (
    (r"(^|\.)attn\.qkv\.", r"\1layers.0.0.to_qkv."),
    (r"(^|\.)attn\.proj\.", r"\1layers.0.0.to_out.0."),
    *_CXV_ATTN,
)
_PERFORMER_RULES = (
    (r"(^|\.)attn\.qkv\.", r"\1layers.0.0.qkv."),
    (r"(^|\.)attn\.proj\.", r"\1layers.0.0.to_out."),
    *_CXV_ATTN,
)
_LINEAR_RULES = _PERFORMER_RULES
_QKV_SPLIT = {"layers.0.0.qkv": ("layers.0.0.to_q", "layers.0.0.to_k", "layers.0.0.to_v")}

_LV_CLS = "lightvit (lib/models/lightvit.py)"
_LV_DET = "LightViT (detection/lightvit.py)"
_LIT_CLS = "LITv2 (classification/models)"
_LIT_DET = "LITv2 (detection/mmdet/models/backbones/litv2.py)"

# Blocks: one small config per family, and non-default ones (odd grids, other knobs). Sizes keep the goldens small.
# fmt: off
BLOCK_CASES: tuple[Case, ...] = (
    Case("pvt_sra_small", "pvt_sra", {"heads": 2, "head_dim": 16, "sr_ratio": 2, "mlp_ratio": 2.0}, (8, 8), 2,
         _pvt_block, _call_x_hw, _PVT_RULES, source="PVT classification/pvt_v2.py Block"),
    Case("pvt_sra_r4_odd_nobias", "pvt_sra",
         {"heads": 3, "head_dim": 8, "sr_ratio": 4, "mlp_ratio": 3.0, "qkv_bias": False}, (10, 9), 2, _pvt_block,
         _call_x_hw, _PVT_RULES, source="PVT classification/pvt_v2.py Block"),
    Case("pvt_sra_r1", "pvt_sra", {"heads": 2, "head_dim": 8, "sr_ratio": 1, "mlp_ratio": 2.0}, (5, 6), 2, _pvt_block,
         _call_x_hw, _PVT_RULES, source="PVT classification/pvt_v2.py Block"),
    Case("pvt_linear_sra_small", "pvt_linear_sra", {"heads": 2, "head_dim": 16, "mlp_ratio": 2.0}, (8, 8), 2,
         _pvt_block, _call_x_hw, _PVT_RULES, source="PVT classification/pvt_v2.py Block(linear=True)"),
    Case("pvt_linear_sra_pool3_odd", "pvt_linear_sra", {"heads": 1, "head_dim": 24, "pool_size": 3, "mlp_ratio": 2.0},
         (11, 7), 2, _pvt_block, _call_x_hw, _PVT_RULES,
         source="PVT classification/pvt_v2.py Block(linear=True), attn.pool set to AdaptiveAvgPool2d(3)"),
    Case("lightvit_block_small", "lightvit",
         {"heads": 2, "head_dim": 16, "num_tokens": 4, "window_size": 4, "mlp_ratio": 2.0}, (8, 8), 2,
         _lightvit_block("lightvit"), _call_x_hw, source=f"{_LV_CLS} Block"),
    Case("lightvit_block_odd_padded", "lightvit",
         {"heads": 3, "head_dim": 16, "num_tokens": 2, "window_size": 3, "mlp_ratio": 1.5, "qkv_bias": False}, (7, 8),
         2, _lightvit_block("lightvit_det"), _call_x_hw, source=f"{_LV_DET} Block"),
    Case("lightvit_merge_even", "lightvit_merge", {"in_dim": 16, "out_dim": 32, "num_tokens": 2}, (6, 8), 2,
         _lightvit_merge("lightvit"), _call_x_hw, _MERGE_RULES, source=f"{_LV_CLS} ResidualMergePatch"),
    Case("lightvit_merge_odd", "lightvit_merge", {"in_dim": 32, "out_dim": 48, "num_tokens": 3}, (7, 9), 2,
         _lightvit_merge("lightvit_det"), _call_x_hw, _MERGE_RULES, source=f"{_LV_DET} ResidualMergePatch"),
    Case("litv2_hilo_small", "hilo", {"heads": 3, "head_dim": 16, "lofi_heads": 2, "window_size": 2, "mlp_ratio": 2.0},
         (6, 6), 2, _hilo_block(False), _call_x, _HILO_RULES, source=f"{_LIT_CLS} Block (HiLo)"),
    Case("litv2_hilo_padded_nobias", "hilo",
         {"heads": 3, "head_dim": 16, "lofi_heads": 1, "window_size": 3, "mlp_ratio": 2.0, "qkv_bias": False}, (7, 10),
         1, _hilo_block(True), _call_x_set_hw, _HILO_RULES, source=f"{_LIT_DET} Block (HiLo, padded)"),
    Case("litv2_hilo_msa", "hilo", {"heads": 2, "head_dim": 16, "lofi_heads": 0, "window_size": 1, "mlp_ratio": 2.0},
         (5, 6), 2, _hilo_block(True), _call_x_set_hw, _HILO_RULES, source=f"{_LIT_DET} Block (HiLo, s = 1)"),
    Case("litv2_hilo_hifi_only", "hilo", {"heads": 2, "head_dim": 16, "lofi_heads": 0, "window_size": 2}, (6, 6), 2,
         _hilo_block(False), _call_x, _HILO_RULES, source=f"{_LIT_CLS} Block (HiLo, alpha 0)"),
    Case("litv2_convffn_small", "convffn", {"dim": 32, "mlp_ratio": 2.0}, (8, 8), 2, _convffn_block(False), _call_x,
         _CONVFFN_RULES, source=f"{_LIT_CLS} ConvFFNBlock"),
    Case("litv2_convffn_odd", "convffn", {"dim": 24, "mlp_ratio": 3.0}, (5, 7), 2, _convffn_block(True), _call_x_set_hw,
         _CONVFFN_RULES, source=f"{_LIT_DET} ConvFFNBlock"),
    Case("litv2_dtm_offsets", "dtm", {"dim": 16}, (8, 8), 2, _dtm(False), _call_x, _DTM_RULES,
         source=f"{_LIT_CLS} patch_embed.DTM (DeformConv2dPack; DCN forward transcribed in official_code.py)"),
    Case("litv2_dtm_odd_offsets", "dtm", {"dim": 24}, (7, 9), 2, _dtm(True), _call_x_hw, _DTM_RULES,
         source=f"{_LIT_DET} DTM (DeformConv2dPack; DCN forward transcribed in official_code.py)"),
    Case("dw_shortcut_small", "dw_shortcut",
         {"heads": 2, "head_dim": 16, "mlp_ratio": 2.0, "qkv_bias": False, "prefix_tokens": 1}, (6, 6), 2,
         _dw_transformer, _call_x, _DW_RULES, source="Efficient_ViT_with_DW models/vit.py Transformer (depth 1)"),
    Case("dw_shortcut_odd", "dw_shortcut",
         {"heads": 3, "head_dim": 16, "mlp_ratio": 1.5, "qkv_bias": False, "prefix_tokens": 1}, (5, 7), 2,
         _dw_transformer, _call_x, _DW_RULES, source="Efficient_ViT_with_DW models/vit.py Transformer (depth 1)"),
    Case("cxv_nystrom_small", "cxv_nystrom",
         {"dim": 32, "heads": 2, "head_dim": 16, "num_landmarks": 16, "res_kernel": 9}, (8, 8), 2, _cxv("nystrom"),
         _call_x, _NYSTROM_RULES, source="CXV CNV.py Transformer + NystromAttention"),
    Case("cxv_nystrom_padded", "cxv_nystrom",
         {"dim": 24, "heads": 3, "head_dim": 8, "num_landmarks": 7, "pinv_iters": 4, "res_kernel": 5, "mlp_mult": 3},
         (5, 6), 2, _cxv("nystrom"), _call_x, _NYSTROM_RULES, source="CXV CNV.py Transformer + NystromAttention"),
    Case("cxv_performer_small", "cxv_performer", {"dim": 32, "heads": 2, "head_dim": 16, "nb_features": 24}, (8, 8), 3,
         _cxv("performer"), _call_x, _PERFORMER_RULES, _QKV_SPLIT, source="CXV CPV.py Transformer + SelfAttention"),
    Case("cxv_performer_files_heads", "cxv_performer", {"dim": 64, "heads": 2, "head_dim": 32, "mlp_mult": 1}, (5, 6),
         2, _cxv("performer"), _call_x, _PERFORMER_RULES, _QKV_SPLIT,
         source="CXV CPV.py Transformer + SelfAttention (dim_head 32, 110 features as in the file)"),
    Case("cxv_linear_small", "cxv_linear", {"dim": 16, "heads": 2, "head_dim": 8}, (8, 8), 2, _cxv("linear"), _call_x,
         _LINEAR_RULES, _QKV_SPLIT, source="CXV CLTV.py Transformer + ImageLinearAttention"),
    Case("cxv_linear_k1_odd", "cxv_linear", {"dim": 24, "heads": 3, "head_dim": 8, "kernel_size": 1, "mlp_mult": 1},
         (5, 7), 2, _cxv("linear"), _call_x, _LINEAR_RULES, _QKV_SPLIT,
         source="CXV CLTV.py Transformer + ImageLinearAttention"),
)
# fmt: on


# --- models ---------------------------------------------------------------------------------------------------------


def _pvt_model(o: Official, c, size) -> nn.Module:
    return o.pvt.PyramidVisionTransformerV2(
        img_size=size[0],
        num_classes=c.num_classes,
        embed_dims=list(c.embed_dims),
        num_heads=list(c.num_heads),
        mlp_ratios=list(c.mlp_ratios),
        qkv_bias=c.qkv_bias,
        norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),
        depths=list(c.depths),
        sr_ratios=list(c.sr_ratios),
        linear=c.linear,
    )


def _lightvit_model(o: Official, c, size) -> nn.Module:
    return o.lightvit.LightViT(
        img_size=size[0],
        num_classes=c.num_classes,
        embed_dims=list(c.embed_dims),
        num_layers=list(c.num_layers),
        num_heads=list(c.num_heads),
        mlp_ratios=list(c.mlp_ratios),
        num_tokens=c.num_tokens,
        window_size=c.window_size,
        neck_dim=c.neck_dim,
        qkv_bias=c.qkv_bias,
    )


def _litv2_model(o: Official, c, size) -> nn.Module:
    return o.litv2_model.LITv2(
        img_size=size[0],
        num_classes=c.num_classes,
        embed_dim=c.embed_dim,
        depths=list(c.depths),
        num_heads=list(c.num_heads),
        mlp_ratio=c.mlp_ratio,
        qkv_bias=c.qkv_bias,
        alpha=_alpha(c.lofi_heads, c.num_heads[2]),
        local_ws=[0, 0, c.window_size, 1],
    )


def _vit_dw_model(o: Official, c, size) -> nn.Module:
    return o.dw_vit.ViT(
        image_size=size,
        patch_size=c.patch_size,
        num_classes=c.num_classes,
        dim=c.dim,
        depth=c.depth,
        heads=c.heads,
        mlp_dim=round(c.dim * c.mlp_ratio),
        dim_head=c.head_dim,
    )


def _cxv_model(kind: str):
    def build(o: Official, c, size) -> nn.Module:
        cls = {"nystrom": o.cnv.CNV, "performer": o.cpv.CPV, "linear": o.cltv.CLTV}[kind]
        model = cls(
            num_classes=c.num_classes,
            emb_dim=c.emb_dim,
            emb_kernel=c.emb_kernel,
            emb_stride=c.emb_stride,
            heads=c.heads,
            depth=c.depth,
            mlp_mult=c.mlp_mult,
            dropout=c.dropout,
        )
        return set_grid(model, (size[0] // c.emb_stride**c.depth, size[1] // c.emb_stride**c.depth))

    return build


def _stage_block(m: re.Match) -> str:
    """LightViT: effscope's stage i block j is the official stage's entry j (+1 after the stage's merge)."""
    i, j = int(m.group(1)), int(m.group(2))
    return f"stages.{i}.{j + (1 if i else 0)}."


_PVT_MODEL = (
    (r"^patch_embeds\.(\d+)\.", lambda m: f"patch_embed{int(m.group(1)) + 1}."),
    (r"^stages\.(\d+)\.", lambda m: f"block{int(m.group(1)) + 1}."),
    (r"^norms\.(\d+)\.", lambda m: f"norm{int(m.group(1)) + 1}."),
    *_PVT_RULES,
)
_LIGHTVIT_MODEL = (
    (r"^stem\.", "patch_embed."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", _stage_block),
    (r"^stages\.(\d+)\.downsample\.", r"stages.\1.0."),
    *_MERGE_RULES,
)
_LITV2_MODEL = (
    (r"^patch_embed\.", "patch_embed.proj."),
    (r"^embed_norm\.", "patch_embed.norm."),
    (r"^merges\.(\d+)\.norm\.", r"layers.\1.downsample.norm_layer."),
    (r"^merges\.(\d+)\.", r"layers.\1.downsample."),
    (r"^stages\.(\d+)\.(\d+)\.norm\.", r"layers.\1.blocks.\2.norm2."),  # ConvFFN blocks
    (r"^stages\.(\d+)\.(\d+)\.", r"layers.\1.blocks.\2."),
    *_HILO_RULES,
)
_VIT_DW_MODEL = (
    (r"^pos_embed$", "pos_embedding"),
    (r"^patch_embed\.", "to_patch_embedding.1."),
    (r"^blocks\.(\d+)\.blocks\.", r"transformer.layers.\1.blocks."),
    *_DW_BLOCK,
    (r"^blocks\.(\d+)\.shortcut\.branches\.0\.0\.", r"transformer.batchnorms.\1."),
    (r"^blocks\.(\d+)\.shortcut\.branches\.0\.1\.", r"transformer.convs.\1."),
    (r"^head\.", "mlp_head."),
)
_CXV_MODEL = (
    (r"^stem\.", "conv."),
    (r"^layers\.(\d+)\.embed\.", r"layers.\1.0."),
    (r"^layers\.(\d+)\.norm\.", r"layers.\1.1."),
    (r"^layers\.(\d+)\.block\.", r"layers.\1.2."),
    (r"^head\.", "head.2."),
)
_PVT_SMALL = {
    "embed_dims": (16, 16, 24, 32),
    "num_heads": (1, 1, 1, 2),
    "mlp_ratios": (2.0, 2.0, 2.0, 2.0),
    "depths": (1, 1, 1, 1),
    "num_classes": 5,
}
_LV_SMALL = {
    "num_heads": (1, 2, 3),
    "head_dim": 16,
    "num_layers": (1, 1, 1),
    "num_tokens": 2,
    "window_size": 2,
    "mlp_ratios": (2.0, 2.0, 2.0),
}
_CXV_SMALL = {"emb_dim": 16, "heads": 1, "head_dim": 32, "depth": 2, "num_classes": 5}

# Models: the presets' wiring (stems, merges, heads, global tokens) at tiny widths; the official presets at full
# size are compared in vs_official.py (their weights would not fit the goldens' budget).
# fmt: off
MODEL_CASES: tuple[Case, ...] = (
    Case("pvt_model_tiny", "pvtv2_b0", _PVT_SMALL, (64, 64), 1, _pvt_model, _call_x, _PVT_MODEL,
         source="PVT classification/pvt_v2.py PyramidVisionTransformerV2"),
    Case("pvt_model_tiny_li", "pvtv2_b2_li", _PVT_SMALL, (64, 64), 1, _pvt_model, _call_x, _PVT_MODEL,
         source="PVT classification/pvt_v2.py PyramidVisionTransformerV2(linear)"),
    Case("lightvit_model_tiny", "lightvit_t", {**_LV_SMALL, "neck_dim": 64, "num_classes": 5}, (64, 64), 1,
         _lightvit_model, _call_x, _LIGHTVIT_MODEL, source=f"{_LV_CLS} LightViT"),
    Case("litv2_model_tiny", "litv2_s",
         {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 4), "lofi_heads": 1, "mlp_ratio": 1.0,
          "num_classes": 5},
         (64, 64), 1, _litv2_model, _call_x, _LITV2_MODEL,
         source=f"{_LIT_CLS} litv2.LITv2 (random DTM offsets; DCN forward transcribed in official_code.py)"),
    Case("cxv_cnv_tiny", "cxv_cnv", {**_CXV_SMALL, "num_landmarks": 64}, (16, 16), 1, _cxv_model("nystrom"), _call_x,
         (*_CXV_MODEL, *_NYSTROM_RULES), source="CXV CNV.py CNV"),
    Case("cxv_cpv_tiny", "cxv_cpv", _CXV_SMALL, (16, 16), 2, _cxv_model("performer"), _call_x,
         (*_CXV_MODEL, *_PERFORMER_RULES), _QKV_SPLIT, source="CXV CPV.py CPV"),
    Case("cxv_cltv_tiny", "cxv_cltv", _CXV_SMALL, (16, 16), 1, _cxv_model("linear"), _call_x,
         (*_CXV_MODEL, *_LINEAR_RULES), _QKV_SPLIT, source="CXV CLTV.py CLTV"),
)
# fmt: on

# The presets as registered, for the speed comparison (weights copied the same way; not saved).
PRESET_CASES: dict[str, Case] = {
    **{
        n: Case(n, n, {}, (224, 224), 1, _pvt_model, _call_x, _PVT_MODEL)
        for n in ("pvtv2_b0", "pvtv2_b1", "pvtv2_b2", "pvtv2_b2_li")
    },
    **{
        n: Case(n, n, {}, (224, 224), 1, _lightvit_model, _call_x, _LIGHTVIT_MODEL)
        for n in ("lightvit_t", "lightvit_s", "lightvit_b")
    },
    **{
        n: Case(n, n, {}, (224, 224), 1, _litv2_model, _call_x, _LITV2_MODEL) for n in ("litv2_s", "litv2_m", "litv2_b")
    },
    "vit_tiny_dw": Case("vit_tiny_dw", "vit_tiny_dw", {}, (224, 224), 1, _vit_dw_model, _call_x, _VIT_DW_MODEL),
    "cxv_cnv": Case(
        "cxv_cnv", "cxv_cnv", {}, (32, 32), 1, _cxv_model("nystrom"), _call_x, (*_CXV_MODEL, *_NYSTROM_RULES)
    ),
    "cxv_cpv": Case(
        "cxv_cpv",
        "cxv_cpv",
        {},
        (32, 32),
        1,
        _cxv_model("performer"),
        _call_x,
        (*_CXV_MODEL, *_PERFORMER_RULES),
        _QKV_SPLIT,
    ),
    "cxv_cltv": Case(
        "cxv_cltv",
        "cxv_cltv",
        {},
        (32, 32),
        1,
        _cxv_model("linear"),
        _call_x,
        (*_CXV_MODEL, *_LINEAR_RULES),
        _QKV_SPLIT,
    ),
}


def _block_bench(target: str, official, call, rules=(), splits=None, knobs=None, size=(28, 28)) -> Case:
    return Case(target, target, knobs or {}, size, 1, official, call, rules, splits or {})


# Every block with official code at its registered config and grid, for the speed comparison. The DW-shortcut
# block runs with a class token and no qkv bias, as the official ViT (the registered default has neither).
BLOCK_BENCH_CASES: dict[str, Case] = {
    c.name: c
    for c in (
        _block_bench("pvt_sra", _pvt_block, _call_x_hw, _PVT_RULES),
        _block_bench("pvt_linear_sra", _pvt_block, _call_x_hw, _PVT_RULES),
        _block_bench("lightvit", _lightvit_block("lightvit"), _call_x_hw),
        _block_bench("lightvit_merge", _lightvit_merge("lightvit"), _call_x_hw, _MERGE_RULES),
        _block_bench("hilo", _hilo_block(False), _call_x, _HILO_RULES),
        _block_bench("convffn", _convffn_block(False), _call_x, _CONVFFN_RULES),
        _block_bench("dtm", _dtm(False), _call_x, _DTM_RULES),
        _block_bench("dw_shortcut", _dw_transformer, _call_x, _DW_RULES, knobs={"prefix_tokens": 1, "qkv_bias": False}),
        _block_bench("cxv_nystrom", _cxv("nystrom"), _call_x, _NYSTROM_RULES, size=(32, 32)),
        _block_bench("cxv_performer", _cxv("performer"), _call_x, _PERFORMER_RULES, _QKV_SPLIT, size=(32, 32)),
        _block_bench("cxv_linear", _cxv("linear"), _call_x, _LINEAR_RULES, _QKV_SPLIT, size=(32, 32)),
    )
}
