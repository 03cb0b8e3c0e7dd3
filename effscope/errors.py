"""The errors effscope raises for bad input: each message states the rule, the values and the fix.

The CLI prints an EffscopeError's message as one sentence and exits with code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "error_line",
    "error_text",
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


def error_line(e: BaseException) -> str:
    """An error's first line of text, or its type's name where it has none (a bare KeyError())."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def error_text(e: BaseException) -> str:
    """An unexpected error in one line, its type first: "ValueError: bad shape" (a bare error: its type alone)."""
    return f"{type(e).__name__}: {error_line(e)}" if str(e).strip() else type(e).__name__
