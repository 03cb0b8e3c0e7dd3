"""Backbones assembled from blocks, with named presets; importing this module registers them all.

Imported in the order `effscope models list` shows them (the PVTv2 baseline first).
Look presets up through `effscope.spec.models()`.
"""

from __future__ import annotations

# The import order is the listing order, so keep isort away from it.
# isort: off
from effscope.models import pvtv2, lightvit, litv2, vit_dw, cxv, cagevit  # noqa: F401  (register on import)
