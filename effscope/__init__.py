"""effscope: what each efficient-ViT design choice really costs on your device, and which choices win under a budget.

`import effscope` stays cheap: torch and the zoo load on first use of `blocks()` / `models()`.
"""

from __future__ import annotations

import sys
import types

from effscope._version import __version__
from effscope.errors import EffscopeError, InputSizeError, KnobError, SpecError, UnknownNameError
from effscope.spec import Reference, Spec, blocks, models


class _Package(types.ModuleType):
    """Keeps `effscope.blocks()` and `effscope.models()` callable: importing the subpackages of the same names (which
    those calls do) would otherwise replace the functions with the modules. The subpackages stay importable by their
    full names (`from effscope.models import litv2`). `effscope.profile`, `effscope.report` and `effscope.search` are
    different: the packages themselves are callable (effscope.api.callable_package), loaded on first use."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("blocks", "models") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> object:
    """`effscope.profile`, `report` and `search`: the callable packages, imported on first use (import stays cheap)."""
    if name in ("profile", "report", "search"):
        import importlib

        return importlib.import_module(f"effscope.{name}")
    raise AttributeError(f"module 'effscope' has no attribute '{name}'")


__all__ = [
    "EffscopeError",
    "InputSizeError",
    "KnobError",
    "Reference",
    "Spec",
    "SpecError",
    "UnknownNameError",
    "__version__",
    "blocks",
    "models",
    "profile",
    "report",
    "search",
]
