"""The errors effscope raises for bad input: each message states the rule, the values and the fix.

The CLI prints an EffscopeError's message as one sentence and exits with code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "EffscopeError",
    "KnobError",
    "UnknownNameError",
    "InputSizeError",
    "SpecError",
]


class EffscopeError(Exception):
    """Base of every user-facing failure."""


class KnobError(EffscopeError, ValueError):
    """A knob value is outside its declared domain, or knobs contradict each other."""


class UnknownNameError(EffscopeError, LookupError):
    """A name (block, model, knob, ...) is not registered."""


class InputSizeError(EffscopeError, ValueError):
    """An input's shape does not fit the module (wrong channels, a grid it cannot handle, ...)."""


class SpecError(EffscopeError, ValueError):
    """A user-supplied specification (a `--set` value, a TOML file, ...) is malformed."""
