"""Raw fvcore counts, the convention docs/zoo.md#reference-numbers was measured in (attention written out, so fvcore
sees it)."""

from __future__ import annotations

import torch
from torch import nn

from effscope.blocks.attention import attention_impl


def param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def fvcore_macs(m: nn.Module, args) -> float:
    """fvcore's total with effscope's explicit attention path (no effscope handles: what the numbers of
    docs/zoo.md#reference-numbers are)."""
    from fvcore.nn import FlopCountAnalysis

    with attention_impl("explicit"), torch.no_grad():
        count = FlopCountAnalysis(m.eval(), args)
        count.unsupported_ops_warnings(False)
        count.uncalled_modules_warnings(False)
        return count.total()
