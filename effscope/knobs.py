"""Knobs: the design choices of a block or model, each declared once as a field of a frozen config dataclass.

A knob's field carries its domain, help text and unit. Validation, the CLI's `--set`, `blocks show`, search spaces
and Optuna distributions all read that one declaration.

    @dataclass(frozen=True)
    class HiLoConfig(Config):
        window_size: int = knob(2, IntRange(1, 14), help="Hi-Fi window side", unit="tokens")

        def check(self) -> None:  # rules that tie knobs together
            ...

        def inert_knobs(self) -> dict[str, Any]:  # knobs the others make ignored, with the value built
            return {"lofi_heads": self.heads} if self.window_size == 1 else {}
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from effscope.errors import KnobError, SpecError, UnknownNameError
from effscope.registry import did_you_mean

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = [
    "Choice",
    "Config",
    "Domain",
    "FloatRange",
    "IntRange",
    "Knob",
    "Seq",
    "format_value",
    "knob",
    "knobs_of",
    "parse_assignments",
    "plain_number",
    "to_jsonable",
    "with_knobs",
]

_KNOB_KEY = "effscope_knob"
_BOOL_SPELLINGS = {True: ("true", "1", "yes", "on"), False: ("false", "0", "no", "off")}


def format_value(value: Any) -> str:
    """Render a knob value the way the CLI accepts it back (tuples as "2,2,6,2")."""
    if isinstance(value, tuple | list):  # lists: tuples after a JSON round trip
        return ",".join(format_value(v) for v in value)
    return str(value)


def plain_number(value: Any) -> Any:
    """A number or bool from numpy or pandas (np.int64, np.float32, np.bool_, ...) as the Python int, float or bool
    it stands for; anything else as it is. Checked as Python's own, it then goes into JSON (a Record, a cache key, a
    study attribute), which refuses numpy's. bool stays bool, and is refused where a number is wanted."""
    if type(value) in (bool, int, float):
        return value
    if getattr(getattr(value, "dtype", None), "kind", None) == "b" and getattr(value, "ndim", None) == 0:
        return bool(value)  # np.bool_ is no numbers.Integral
    if isinstance(value, numbers.Integral):
        return operator.index(value)
    if isinstance(value, numbers.Real):
        # np.float32(1.1) is 1.100000023841858 as a double; its shortest text, "1.1", is the number that was meant
        # (and what a resumed search given 1.1 compares with). A Fraction has no such text: its exact value.
        try:
            return float(str(value))
        except ValueError:
            return float(value)
    return value


def _shown(value: Any) -> str:
    """A rejected knob value as a message shows it: numbers as the CLI takes them, anything else (a string "4", a
    None) with its quotes and type, so it does not read as the number it looks like."""
    items = value if isinstance(value, tuple | list) else (value,)
    if all(isinstance(v, numbers.Real) for v in items):  # numpy's too: 4, not np.int64(4)
        return format_value(value)
    return f"{value!r} (a {type(value).__name__})"


class Domain:
    """The set of values a knob may take."""

    def normalize(self, value: Any) -> Any:
        """Return the canonical form of `value` (lists become tuples), or raise ValueError if it is outside."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short phrase naming the allowed values, e.g. "int in [1, 14]"."""
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        """Parse a command-line string; raise ValueError when it does not parse."""
        raise NotImplementedError

    def to_optuna(self, name: str) -> dict[str, BaseDistribution]:
        """Optuna distributions sampling this domain, keyed by parameter name."""
        raise NotImplementedError

    def from_params(self, name: str, params: Mapping[str, Any]) -> Any:
        """Rebuild a value from the Optuna parameters made by `to_optuna(name)`."""
        return params[name]

    def contains(self, value: Any) -> bool:
        try:
            self.normalize(value)
        except ValueError:
            return False
        return True


def _as_int(value: Any) -> int:
    value = plain_number(value)
    if isinstance(value, float) and value.is_integer():  # 4.0 is 4; inf and nan are not integers
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


@dataclass(frozen=True)
class IntRange(Domain):
    """Integers low, low + step, ..., high (inclusive)."""

    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        if not (self.low <= self.high and self.step >= 1 and (self.high - self.low) % self.step == 0):
            raise ValueError(
                f"IntRange needs low <= high, step >= 1 and step dividing high - low, "
                f"but got (low={self.low}, high={self.high}, step={self.step})"
            )

    def normalize(self, value: Any) -> int:
        v = _as_int(value)
        if not (self.low <= v <= self.high and (v - self.low) % self.step == 0):
            raise ValueError(f"{v} is outside")
        return v

    def describe(self) -> str:
        step = f" step {self.step}" if self.step != 1 else ""
        return f"int in [{self.low}, {self.high}]{step}"

    def parse(self, text: str) -> int:
        return int(text.strip())

    def to_optuna(self, name: str) -> dict[str, BaseDistribution]:
        from optuna.distributions import IntDistribution

        return {name: IntDistribution(self.low, self.high, step=self.step)}


@dataclass(frozen=True)
class FloatRange(Domain):
    """Real numbers in [low, high]; `log` samples them log-uniformly in a search."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (self.low <= self.high and (not self.log or self.low > 0)):
            raise ValueError(
                f"FloatRange needs low <= high (and low > 0 when log), but got (low={self.low}, high={self.high})"
            )

    def normalize(self, value: Any) -> float:
        value = plain_number(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ValueError(f"{value!r} is not a number")
        if not self.low <= value <= self.high:
            raise ValueError(f"{value} is outside")
        return float(value)

    def describe(self) -> str:
        return f"float in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")

    def parse(self, text: str) -> float:
        return float(text.strip())

    def to_optuna(self, name: str) -> dict[str, BaseDistribution]:
        from optuna.distributions import FloatDistribution

        return {name: FloatDistribution(self.low, self.high, log=self.log)}


@dataclass(frozen=True)
class Choice(Domain):
    """One of a fixed set of options (ints, strings, bools or tuples of them)."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError("Choice needs at least one option")

    def normalize(self, value: Any) -> Any:
        value = plain_number(_to_tuple(value))  # np.int64(4) is the option 4
        for option in self.options:
            if type(option) is type(value) and option == value:
                return option
        raise ValueError(f"{value!r} is not an option")

    def describe(self) -> str:
        return (
            "one of {"
            + ", ".join(repr(format_value(o)) if isinstance(o, tuple) else str(o) for o in self.options)
            + "}"
        )

    def parse(self, text: str) -> Any:
        wanted = text.replace(" ", "")
        for option in self.options:
            if format_value(option).replace(" ", "") == wanted:
                return option
            if isinstance(option, bool) and wanted.lower() in _BOOL_SPELLINGS[option]:
                return option  # true/false as TOML writes them, and the other usual spellings
        raise ValueError(f"{text!r} is not an option")

    def to_optuna(self, name: str) -> dict[str, BaseDistribution]:
        from optuna.distributions import CategoricalDistribution

        # Optuna stores only scalars, so tuple options travel as their CLI spelling.
        return {name: CategoricalDistribution([_scalar(o) for o in self.options])}

    def from_params(self, name: str, params: Mapping[str, Any]) -> Any:
        raw = params[name]
        return self.parse(raw) if isinstance(raw, str) and not any(o == raw for o in self.options) else raw


def to_jsonable(value: Any) -> Any:
    """Knob values as JSON types (tuples as lists, recursively), for storage and Optuna attributes."""
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def _scalar(option: Any) -> Any:
    return format_value(option) if isinstance(option, tuple) else option


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list | tuple) else value


@dataclass(frozen=True)
class Seq(Domain):
    """A fixed-length tuple whose items each lie in `item` (e.g. per-stage depths)."""

    item: Domain
    length: int

    def normalize(self, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple) or len(value) != self.length:
            raise ValueError(f"{value!r} is not a sequence of {self.length}")
        return tuple(self.item.normalize(v) for v in value)

    def describe(self) -> str:
        return f"{self.length} x ({self.item.describe()})"

    def parse(self, text: str) -> tuple[Any, ...]:
        return tuple(self.item.parse(part) for part in text.strip().strip("()[]").split(","))

    def to_optuna(self, name: str) -> dict[str, BaseDistribution]:
        out: dict[str, BaseDistribution] = {}
        for i in range(self.length):
            out.update(self.item.to_optuna(f"{name}[{i}]"))
        return out

    def from_params(self, name: str, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(self.item.from_params(f"{name}[{i}]", params) for i in range(self.length))


@dataclass(frozen=True)
class Knob:
    """One declared design choice: its name, default, domain, help text and unit."""

    name: str
    default: Any
    domain: Domain
    help: str
    unit: str = ""

    def check(self, value: Any, owner: str) -> Any:
        """Return the canonical value, or raise KnobError naming the knob, the value and the domain."""
        try:
            return self.domain.normalize(value)
        except ValueError:
            raise KnobError(
                f"knob '{self.name}' of {owner} must be {self.domain.describe()}, but got {_shown(value)}"
            ) from None

    def parse(self, text: str, owner: str) -> Any:
        """Parse a command-line value and check it against the domain."""
        try:
            value = self.domain.parse(text)
        except ValueError:
            raise KnobError(
                f"knob '{self.name}' of {owner} must be {self.domain.describe()}, but got '{text}'"
            ) from None
        return self.check(value, owner)


def knob(default: Any, domain: Domain, *, help: str, unit: str = "") -> Any:
    """Declare a config field as a knob (use as the field's default)."""
    return dataclasses.field(default=default, metadata={_KNOB_KEY: (domain, help, unit)})


def knobs_of(config: Config | type[Config]) -> dict[str, Knob]:
    """The knobs a config class declares, in declaration order."""
    cls = config if isinstance(config, type) else type(config)
    out = {}
    for f in dataclasses.fields(cls):
        if _KNOB_KEY in f.metadata:
            domain, help_text, unit = f.metadata[_KNOB_KEY]
            out[f.name] = Knob(f.name, f.default, domain, help_text, unit)
    return out


@dataclass(frozen=True)
class Config:
    """Base of every knob config: validates each knob on construction, then the cross-knob rules in `check`."""

    owner_name: ClassVar[str] = ""  # name used in messages; defaults to the class name

    def __post_init__(self) -> None:
        owner = self.owner()
        for name, k in knobs_of(self).items():
            value = getattr(self, name)
            canonical = k.check(value, owner)
            if canonical is not value:
                object.__setattr__(self, name, canonical)  # frozen: canonical form (tuples) set once here
        for name, built in self.inert_knobs().items():
            object.__setattr__(self, name, built)
        self.check()

    @classmethod
    def owner(cls) -> str:
        return cls.owner_name or cls.__name__

    def check(self) -> None:
        """Rules that tie knobs together; raise KnobError with the rule, the values and the fix."""

    def inert_knobs(self) -> dict[str, Any]:
        """The knobs that, given the others, change nothing that is built, each with the value that says what is
        built (HiLo at window_size 1: lofi_heads = heads). A config holds these values whatever it was given, so the
        designs of one network are one design: measured once, counted once, keyed alike."""
        return {}

    def derived(self) -> dict[str, Any]:
        """Figures derived from the knobs and reported beside them (e.g. HiLo's alpha)."""
        return {}

    def knob_values(self) -> dict[str, Any]:
        """The knob values of this config, by name."""
        return {name: getattr(self, name) for name in knobs_of(self)}

    def fail(self, rule: str, **values: Any) -> None:
        """Raise KnobError for a broken cross-knob rule: "`rule` must hold, but got (a=1, b=2)"."""
        got = ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
        raise KnobError(f"{self.owner()}: {rule} must hold, but got ({got})")


def with_knobs(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Return `config` with some knobs replaced, validated; unknown names suggest the closest knob.

    A knob `config` ignored holds its built value, not the one first given (HiLo at window_size 1: lofi_heads =
    heads), so a window_size changed here keeps every head Lo-Fi: apply overrides to the config as first given."""
    declared = knobs_of(config)
    for name in overrides:
        if name not in declared:
            raise UnknownNameError(
                f"{config.owner()} has no knob '{name}'{did_you_mean(name, list(declared))} "
                f"(knobs: {', '.join(declared)})"
            )
    return dataclasses.replace(config, **overrides)


def parse_assignments(config: Config, assignments: Iterable[str]) -> dict[str, Any]:
    """Parse CLI `knob=value` strings against a config's declared knobs."""
    declared = knobs_of(config)
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for text in assignments:
        name, sep, raw = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SpecError(f"--set takes knob=value (e.g. window_size=7), but got '{text}'")
        if name not in declared:
            raise UnknownNameError(
                f"{config.owner()} has no knob '{name}'{did_you_mean(name, list(declared))} "
                f"(knobs: {', '.join(declared)})"
            )
        if name in given:  # last-wins would hide a typo in a long command line
            raise SpecError(f"--set gives knob '{name}' twice ('{given[name]}', then '{text}'); give it once")
        given[name] = text
        out[name] = declared[name].parse(raw, config.owner())
    return out
