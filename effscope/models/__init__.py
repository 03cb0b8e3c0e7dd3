"""Backbones assembled from blocks, with named presets; importing this module registers them all.

Look presets up through `effscope.spec.models()`.
"""

from __future__ import annotations
