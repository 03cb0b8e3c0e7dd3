"""Load the official implementations from local checkouts, with small shims for the imports that do not load here.

Used by `make_official_goldens.py` and `vs_official.py`; not part of effscope or its test suite. The official code
is read from the checkouts and run as it is; nothing of it is copied here. The shims stand in for libraries that do
not load beside this torch (timm, mmcv/mmdet, apex) and for LITv2's compiled deformable-convolution extension.

The checkouts live side by side under one folder (`--official DIR`), named as their repositories:

    DIR/image_classification_sota   hunto/image_classification_sota  lib/models/lightvit.py (LightViT, classification)
    DIR/LightViT                    hunto/LightViT                   detection/lightvit.py (pads odd grids)
    DIR/LITv2                       zip-group/LITv2                  classification/models/*, hilo.py, detection HiLo
    DIR/PVT                         whai362/PVT (branch v2)          classification/pvt_v2.py
    DIR/Efficient_ViT_with_DW       ZTX-100/Efficient_ViT_with_DW    models/vit.py
    DIR/CXV                         pranavphoenix/CXV                CNV.py, CPV.py, CLTV.py (notebook exports)

The CXV and Efficient_ViT_with_DW files need einops (`pip install einops`), which effscope itself does not use.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["REPOS", "Official", "commits", "deform_conv2d_im2col", "set_grid"]

REPOS = {
    "lightvit": "image_classification_sota",
    "lightvit_det": "LightViT",
    "litv2": "LITv2",
    "pvt": "PVT",
    "dw_shortcut": "Efficient_ViT_with_DW",
    "cxv": "CXV",
}


def commits(root: Path) -> dict[str, str]:
    """The checked-out commit of each official repository under root, read from its own .git folder: a GPU machine
    may lack the git program, and `git -C` in a folder without .git would answer with an enclosing repository's."""
    return {repo: checked_out_commit(root / repo) for repo in sorted(set(REPOS.values()))}


def checked_out_commit(path: Path) -> str:
    """HEAD's commit of the checkout at path (detached, or a branch as a loose or packed ref)."""
    unknown = "unknown (not a git checkout)"
    git = path / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    except OSError:
        return unknown
    return unknown


# --- shims -----------------------------------------------------------------------------------------------------


class _DropPath(nn.Module):
    """timm's DropPath at inference: the identity (every official module here is run in eval mode)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_prob:
            raise RuntimeError("the timm shim's DropPath is for inference only")
        return x


def _identity_decorator(*args: Any, **kwargs: Any) -> Any:
    """Works bare (@register_model) and called (@BACKBONES.register_module(), @auto_fp16())."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda fn: fn


class _BaseModule(nn.Module):
    """mmcv's BaseModule without its init_cfg machinery."""

    def __init__(self, init_cfg: Any = None) -> None:
        super().__init__()
        self.init_cfg = init_cfg


def deform_conv2d_im2col(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    offset: torch.Tensor,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    group: int,
    deformable_group: int,
    im2col_step: int,
) -> torch.Tensor:
    """The forward of LITv2's DCN extension (src/cuda/deform_conv2d_cuda.cu + deform_2d_im2col_cuda.cuh) in torch.

    The official CPU path raises "Not implemented on the CPU", so this stands in for the compiled module `DCN`.
    Written from the kernel's arithmetic, independently of effscope's grid_sample formulation: per output pixel
    and tap (i, j), sample at h = h_in + i*dilation + offset[2(i*kw+j)], w = w_in + j*dilation + offset[2(i*kw+j)+1]
    (h_in = h_out*stride - pad); zero unless -1 < h < H and -1 < w < W; bilinear over the four integer corners,
    each corner outside the map reading 0; then columns @ weight + bias, per group.
    """
    b, c, height, width = input.shape
    out_c = weight.shape[0]
    ho, wo = offset.shape[-2:]
    dg = deformable_group
    off = offset.view(b, dg, kernel_h * kernel_w, 2, ho, wo)
    base_h = (torch.arange(ho, dtype=input.dtype, device=input.device) * stride_h - pad_h).view(ho, 1)
    base_w = (torch.arange(wo, dtype=input.dtype, device=input.device) * stride_w - pad_w).view(1, wo)
    flat = input.reshape(b, dg, c // dg, height * width)
    taps = []
    for i in range(kernel_h):
        for j in range(kernel_w):
            t = i * kernel_w + j
            h_im = base_h + i * dilation_h + off[:, :, t, 0]  # (B, dg, ho, wo)
            w_im = base_w + j * dilation_w + off[:, :, t, 1]
            inside = (h_im > -1) & (w_im > -1) & (h_im < height) & (w_im < width)
            h_low, w_low = torch.floor(h_im), torch.floor(w_im)
            lh, lw = h_im - h_low, w_im - w_low
            val = torch.zeros(b, dg, c // dg, ho, wo, dtype=input.dtype, device=input.device)
            for dh, dw, wt in (
                (0, 0, (1 - lh) * (1 - lw)),
                (0, 1, (1 - lh) * lw),
                (1, 0, lh * (1 - lw)),
                (1, 1, lh * lw),
            ):
                hh, ww = (h_low + dh).long(), (w_low + dw).long()
                ok = inside & (hh >= 0) & (hh <= height - 1) & (ww >= 0) & (ww <= width - 1)
                idx = (hh.clamp(0, height - 1) * width + ww.clamp(0, width - 1)).view(b, dg, 1, ho * wo)
                corner = torch.gather(flat, 3, idx.expand(b, dg, c // dg, ho * wo)).view(b, dg, c // dg, ho, wo)
                val = val + (wt * ok).unsqueeze(2) * corner
            taps.append(val.reshape(b, c, ho, wo))
    # columns: (B, C * kh * kw, ho*wo) in the kernel's channel-major, tap-minor order (c_col = c * kh*kw + tap)
    cols = torch.stack(taps, dim=2).reshape(b, group, (c // group) * kernel_h * kernel_w, ho * wo)
    w = weight.view(group, out_c // group, -1)
    out = torch.einsum("gok,bgkn->bgon", w, cols).reshape(b, out_c, ho, wo)
    return out + bias.view(1, -1, 1, 1)


def _install_shims() -> None:
    """Register stand-in modules for timm, mmcv/mmdet/mmengine, apex and LITv2's DCN extension."""

    def module(name: str, **attrs: Any) -> types.ModuleType:
        m = sys.modules.get(name) or types.ModuleType(name)
        m.__dict__.update(attrs)
        m.__path__ = []  # a package, so submodules resolve
        sys.modules[name] = m
        return m

    def to_2tuple(x: Any) -> Any:
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    module("timm")
    module("timm.models")
    module(
        "timm.models.layers",
        DropPath=_DropPath,
        to_2tuple=to_2tuple,
        trunc_normal_=nn.init.trunc_normal_,
        lecun_normal_=nn.init.xavier_normal_,  # init only; effscope's weights are loaded over it
        drop_path=lambda x, *a, **k: x,
    )
    module("timm.models.registry", register_model=_identity_decorator)
    module("timm.models.vision_transformer", _cfg=lambda **kw: kw)
    registry = types.SimpleNamespace(register_module=_identity_decorator)
    module("mmdet")
    module("mmdet.models")
    module("mmdet.models.builder", BACKBONES=registry)
    module("mmdet.registry", MODELS=registry)
    module("mmcv")
    module("mmcv.runner", auto_fp16=_identity_decorator, force_fp32=_identity_decorator, BaseModule=_BaseModule)
    module("mmengine")
    module("mmengine.runner")
    module("mmengine.runner.checkpoint", load_state_dict=None, CheckpointLoader=None)
    module("mmengine.logging", MMLogger=None)
    module("apex", amp=types.SimpleNamespace(float_function=lambda fn: fn))
    module("DCN", deform_conv2d_forward=deform_conv2d_im2col)


def _exec_file(path: Path, name: str, *, header: str = "", drop_imports: tuple[str, ...] = ()) -> types.ModuleType:
    """Execute an official source file as module `name`.

    Args:
        header: imports prepended (CXV's notebook exports use torch, einops and math before importing them).
        drop_imports: top-level imports of these packages are removed (unused and not installable here), as are
            notebook shell lines (`!pip ...`) and a top-level `model = ...` demo instantiation.
    """
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("!")]
    tree = ast.parse(header + "\n".join(lines), filename=str(path))

    def keep(node: ast.stmt) -> bool:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            return not any(n.split(".")[0] in drop_imports for n in names)
        if isinstance(node, ast.Assign):
            return not any(isinstance(t, ast.Name) and t.id == "model" for t in node.targets)
        return True

    tree.body = [n for n in tree.body if keep(n)]
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    sys.modules[name] = mod
    exec(compile(tree, str(path), "exec"), mod.__dict__)
    return mod


_CXV_HEADER = (
    "import math\nfrom math import ceil\nimport torch\nfrom torch import nn, einsum\nimport torch.nn.functional as F\n"
    "from einops import rearrange, repeat, reduce\nfrom einops.layers.torch import Rearrange\n"
)


class Official:
    """The official modules, loaded from the checkouts under `root`.

    Attributes (modules):
        lightvit: lib/models/lightvit.py (classification; even grids that are multiples of the window only).
        lightvit_det: detection/lightvit.py (pads the windows and the merge's odd grids).
        litv2: LITv2 classification/models (attentions, blocks, patch_embed with the real DeformConv2dPack).
        hilo_det: LITv2 detection backbone (its HiLo pads to the window).
        pvt: classification/pvt_v2.py.
        dw_vit: Efficient_ViT_with_DW models/vit.py.
        cnv, cpv, cltv: the CXV files.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        missing = [r for r in REPOS.values() if not (self.root / r).is_dir()]
        if missing:
            raise SystemExit(
                f"official checkouts missing under {self.root}: {', '.join(missing)} (see this file's doc)"
            )
        try:
            importlib.import_module("einops")
        except ImportError as e:
            raise SystemExit("the official CXV and DW-shortcut code needs einops: pip install einops") from e
        _install_shims()
        r = self.root
        self.lightvit = _exec_file(r / REPOS["lightvit"] / "lib/models/lightvit.py", "official_lightvit")
        self.lightvit_det = _exec_file(r / REPOS["lightvit_det"] / "detection/lightvit.py", "official_lightvit_det")
        self.pvt = _exec_file(r / REPOS["pvt"] / "classification/pvt_v2.py", "official_pvt_v2")
        cls_dir = str(r / REPOS["litv2"] / "classification")
        sys.path.insert(0, cls_dir)  # LITv2 imports its own `models` and `mm_modules` packages
        try:
            self.litv2 = importlib.import_module("models.blocks")
            self.litv2_embed = importlib.import_module("models.patch_embed")
            self.litv2_model = importlib.import_module("models.litv2")
            self.hilo_det = _exec_file(
                r / REPOS["litv2"] / "detection/mmdet/models/backbones/litv2.py", "official_litv2_det"
            )
        finally:
            sys.path.remove(cls_dir)
        self.dw_vit = _exec_file(r / REPOS["dw_shortcut"] / "models/vit.py", "official_dw_vit")
        drop = ("local_attention", "axial_positional_embedding", "performer_pytorch")
        cxv = r / REPOS["cxv"]
        self.cnv = _exec_file(cxv / "CNV.py", "official_cnv", header=_CXV_HEADER, drop_imports=drop)
        self.cpv = _exec_file(cxv / "CPV.py", "official_cpv", header=_CXV_HEADER, drop_imports=drop)
        self.cltv = _exec_file(cxv / "CLTV.py", "official_cltv", header=_CXV_HEADER, drop_imports=drop)


def set_grid(module: nn.Module, hw: tuple[int, int]) -> nn.Module:
    """Point the CXV attention's hard-coded 32 x 32 `convert` reshape at another grid (the only change made)."""
    from einops.layers.torch import Rearrange

    for m in module.modules():
        if hasattr(m, "convert"):
            m.convert = nn.Sequential(Rearrange("b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=hw[0], w=hw[1], p1=1, p2=1))
    return module
