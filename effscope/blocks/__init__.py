"""Every block variant of the efficient-ViT papers effscope profiles; importing this module registers them all.

One file per family, imported in the order `effscope blocks list` shows them (baselines first).
Look blocks up through `effscope.spec.blocks()`.
"""

from __future__ import annotations

# The import order is the listing order, so keep isort away from it.
# isort: off
from effscope.blocks import vit, pvt, dw_shortcut, lightvit, hilo, cxv, cagevit  # noqa: F401  (register on import)
