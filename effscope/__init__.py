"""effscope: what each efficient-ViT design choice really costs on your device, and which choices win under a budget.

`import effscope` stays cheap: torch and the zoo load on first use of `blocks()` / `models()`.
"""

from __future__ import annotations

from effscope.errors import EffscopeError, InputSizeError, KnobError, SpecError, UnknownNameError
from effscope.spec import Reference, Spec, blocks, models

__version__ = "0.1.0"

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
]
