"""Knob domains, validation messages, CLI parsing and the mapping to Optuna distributions."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from effscope.errors import KnobError, SpecError, UnknownNameError
from effscope.knobs import (
    Choice,
    Config,
    FloatRange,
    IntRange,
    Seq,
    format_value,
    knob,
    knobs_of,
    parse_assignments,
    with_knobs,
)


@dataclass(frozen=True)
class ToyConfig(Config):
    owner_name = "toy"

    heads: int = knob(4, IntRange(1, 16), help="heads", unit="heads")
    lofi: int = knob(2, IntRange(0, 16), help="Lo-Fi heads")
    window: int = knob(2, Choice((1, 2, 4, 7)), help="window side", unit="tokens")
    ratio: float = knob(4.0, FloatRange(1.0, 8.0), help="MLP ratio")
    depths: tuple[int, ...] = knob((2, 2, 6, 2), Seq(IntRange(1, 24), 4), help="blocks per stage")
    kernels: tuple[int, ...] = knob((3,), Choice(((3,), (3, 5, 7))), help="parallel kernels")

    def check(self) -> None:
        if self.lofi > self.heads:
            self.fail("`lofi <= heads`", lofi=self.lofi, heads=self.heads)

    def derived(self):
        return {"alpha": self.lofi / self.heads}


def test_declaration_is_read_back_in_order():
    ks = knobs_of(ToyConfig)
    assert list(ks) == ["heads", "lofi", "window", "ratio", "depths", "kernels"]
    assert ks["window"].unit == "tokens" and ks["window"].default == 2
    assert ToyConfig().derived() == {"alpha": 0.5}


def test_out_of_domain_names_knob_value_and_domain():
    with pytest.raises(KnobError, match=r"knob 'heads' of toy must be int in \[1, 16\], but got 0"):
        ToyConfig(heads=0)
    with pytest.raises(KnobError, match=r"knob 'window' of toy must be one of \{1, 2, 4, 7\}, but got 3"):
        ToyConfig(window=3)
    with pytest.raises(KnobError, match=r"knob 'depths'.*4 x \(int in \[1, 24\]\), but got 2,2"):
        ToyConfig(depths=(2, 2))
    with pytest.raises(KnobError, match="knob 'heads'"):
        ToyConfig(heads=True)  # bools are not ints here
    with pytest.raises(KnobError, match=r"must be int in \[1, 16\], but got '4' \(a str\)$"):
        ToyConfig(heads="4")  # a string that reads as a number in range says it is a string
    with pytest.raises(KnobError, match=r"but got \('2', '2', '2', '2'\) \(a tuple\)$"):
        ToyConfig(depths=("2", "2", "2", "2"))
    with pytest.raises(KnobError, match="knob 'ratio'"):
        ToyConfig(ratio=float("nan"))


def test_cross_knob_rule_states_rule_and_values():
    with pytest.raises(KnobError, match=r"toy: `lofi <= heads` must hold, but got \(lofi=5, heads=4\)"):
        ToyConfig(lofi=5)


def test_lists_become_hashable_tuples():
    c = ToyConfig(depths=[1, 1, 3, 1], kernels=[3, 5, 7])
    assert c.depths == (1, 1, 3, 1) and c.kernels == (3, 5, 7)
    hash(c)


def test_int_step_and_float_ranges():
    d = IntRange(32, 128, step=32)
    assert d.contains(96) and not d.contains(100) and d.describe() == "int in [32, 128] step 32"
    with pytest.raises(ValueError, match="step dividing"):
        IntRange(0, 10, step=3)
    with pytest.raises(ValueError, match="low <= high"):
        FloatRange(2.0, 1.0)


def test_parse_assignments_and_errors():
    c = ToyConfig()
    got = parse_assignments(c, ["heads=8", "depths=1,2,3,4", "kernels=3,5,7", "window=7", "ratio=2.5"])
    assert got == {"heads": 8, "depths": (1, 2, 3, 4), "kernels": (3, 5, 7), "window": 7, "ratio": 2.5}
    with pytest.raises(UnknownNameError, match="did you mean 'heads'"):
        parse_assignments(c, ["head=8"])
    with pytest.raises(KnobError, match="knob 'window' of toy must be one of"):
        parse_assignments(c, ["window=five"])
    with pytest.raises(SpecError, match="knob=value"):
        parse_assignments(c, ["heads"])
    assert with_knobs(c, got).depths == (1, 2, 3, 4)
    with pytest.raises(UnknownNameError, match="did you mean 'lofi'"):
        with_knobs(c, {"lofl": 1})


def test_format_round_trips_through_parse():
    for k in knobs_of(ToyConfig).values():
        assert k.parse(format_value(k.default), "toy") == k.default


def test_optuna_distributions_and_back():
    ks = knobs_of(ToyConfig)
    assert ks["heads"].domain.to_optuna("heads") == {"heads": IntDistribution(1, 16)}
    assert ks["ratio"].domain.to_optuna("ratio") == {"ratio": FloatDistribution(1.0, 8.0)}
    assert ks["window"].domain.to_optuna("window") == {"window": CategoricalDistribution([1, 2, 4, 7])}
    seq = ks["depths"].domain.to_optuna("depths")
    assert list(seq) == ["depths[0]", "depths[1]", "depths[2]", "depths[3]"]
    assert all(d == IntDistribution(1, 24) for d in seq.values())
    assert ks["depths"].domain.from_params("depths", {f"depths[{i}]": i + 1 for i in range(4)}) == (1, 2, 3, 4)
    # tuple options travel as their CLI spelling and come back as tuples
    assert ks["kernels"].domain.to_optuna("kernels") == {"kernels": CategoricalDistribution(["3", "3,5,7"])}
    assert ks["kernels"].domain.from_params("kernels", {"kernels": "3,5,7"}) == (3, 5, 7)
