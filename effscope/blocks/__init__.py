"""Every block variant of the efficient-ViT papers effscope profiles; importing this module registers them all.

One file per family. Look blocks up through `effscope.spec.blocks()`.
"""

from __future__ import annotations

from effscope.blocks import vit  # noqa: F401  (each import registers its family's blocks)
