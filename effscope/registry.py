"""One registry type for blocks, models and anything else looked up by name."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from effscope.errors import UnknownNameError

__all__ = ["Registry", "did_you_mean"]

T = TypeVar("T")


def did_you_mean(name: str, candidates: list[str] | tuple[str, ...]) -> str:
    """Return "; did you mean 'x'?" for the closest candidate, or "" when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Name -> entry map where duplicates fail and misses list what exists and suggest the closest name.

    Args:
        kind: what the entries are, used in messages ("block", "model").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register `entry` under `name`.

        Raises:
            ValueError: `name` is already registered (a programming error, not user input).
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice; names must be unique")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """Look up `name`.

        Raises:
            UnknownNameError: no such entry; the message lists the valid names and the closest one.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name (a list); it names nothing either
            names = self.names()
            if not isinstance(name, str):
                raise UnknownNameError(f"a {self.kind} name is a string, but got {name!r}") from None
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, names)} (known {self.kind}s: {', '.join(names)})"
            ) from None

    def __getitem__(self, name: str) -> T:
        """`registry[name]`, the same as `get` (an unknown name raises UnknownNameError, a LookupError)."""
        return self.get(name)

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
