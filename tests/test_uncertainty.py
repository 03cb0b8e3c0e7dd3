"""Decisions under noise, with a fake timer whose noise the test controls: a clearly infeasible design is never
called feasible, a clearly feasible one never infeasible, and a borderline one is measured again and labelled."""

from __future__ import annotations

import random

import numpy as np
import pytest

from effscope.profile.measure import latency_intervals
from effscope.profile.record import Record
from effscope.search.uncertainty import FEASIBLE, INFEASIBLE, UNCERTAIN, UNMEASURED, measure_and_decide, verdict
from effscope.stats import quantile_interval

LIMIT = 10.0


def fake_measure(rng: random.Random, true_p90: float, sigma: float, n: int):
    """A measurement of a design whose per-run times are lognormal with the given true p90 and spread."""
    median = true_p90 / float(np.exp(1.2815515655446004 * sigma))  # p90 of a lognormal: median * e^(z90 sigma)
    calls = []

    def measure() -> Record:
        samples = [median * float(np.exp(rng.gauss(0.0, sigma))) for _ in range(n)]
        record = Record(target="toy", kind="block", workload={})
        p50, p90 = np.percentile(samples, [50, 90])
        record.latency = {"latency_ms_p50": float(p50), "latency_ms_p90": float(p90), **latency_intervals(samples)}
        calls.append(record)
        return record

    return measure, calls


def test_the_cuda_graph_replay_gets_intervals_under_its_own_names():
    samples = [1.0 + 0.01 * i for i in range(60)]
    graph = latency_intervals(samples, "latency_graph_ms_", ("p50", "p90"))
    assert sorted(graph) == [f"latency_graph_ms_{q}_{end}" for q in ("p50", "p90") for end in ("hi", "lo")]
    eager = latency_intervals(samples)
    assert graph["latency_graph_ms_p90_lo"] == eager["latency_ms_p90_lo"] and "latency_ms_p99_hi" in eager
    record = {"latency_graph_ms_p90": float(np.percentile(samples, 90)), **graph}
    assert verdict(record, "latency_graph_ms_p90", graph["latency_graph_ms_p90_hi"] + 0.01) == FEASIBLE
    assert verdict(record, "latency_graph_ms_p90", record["latency_graph_ms_p90"]) == UNCERTAIN


def test_verdicts():
    lat = {"latency_ms_p90": 9.0, "latency_ms_p90_lo": 8.0, "latency_ms_p90_hi": 9.5}
    assert verdict(lat, "latency_ms_p90", LIMIT) == FEASIBLE
    assert verdict({**lat, "latency_ms_p90_hi": 10.5}, "latency_ms_p90", LIMIT) == UNCERTAIN
    over = {"latency_ms_p90": 11.0, "latency_ms_p90_lo": 10.1, "latency_ms_p90_hi": 12.0}
    assert verdict(over, "latency_ms_p90", LIMIT) == INFEASIBLE
    assert verdict({"latency_ms_mean": 10.5}, "latency_ms_mean", LIMIT) == INFEASIBLE  # no interval: its value
    assert verdict({}, "latency_ms_p90", LIMIT) == UNMEASURED


@pytest.mark.parametrize("sigma,n", [(0.05, 50), (0.3, 50), (0.3, 12)])
def test_no_clearly_infeasible_design_is_called_feasible_and_borderline_ones_are_measured_again(sigma, n):
    rng = random.Random(1234)
    outcomes = []
    for true_p90 in np.linspace(0.5 * LIMIT, 1.5 * LIMIT, 41):
        measure, calls = fake_measure(rng, float(true_p90), sigma, n)
        first_straddles = None

        def counted(measure=measure):
            nonlocal first_straddles
            record = measure()
            if first_straddles is None:
                first_straddles = verdict(record.latency, "latency_ms_p90", LIMIT) == UNCERTAIN
            return record

        record, again, decided = measure_and_decide(counted, "latency_ms_p90", LIMIT, remeasures=1)
        assert again == (1 if first_straddles else 0) and len(calls) == 1 + again  # bounded: one more, only then
        assert record is calls[-1]
        outcomes.append((float(true_p90), decided))
    assert all(d != FEASIBLE for t, d in outcomes if t >= 1.25 * LIMIT)  # clearly over: never "feasible"
    assert all(d != INFEASIBLE for t, d in outcomes if t <= 0.8 * LIMIT)  # clearly within: never "infeasible"
    assert any(d == UNCERTAIN for _, d in outcomes) or sigma < 0.1  # with real noise, some stay undecided


def test_quantile_interval_covers_the_true_quantile_at_its_confidence():
    rng = random.Random(7)
    hits = tries = 0
    for _ in range(600):
        samples = [rng.expovariate(1.0) for _ in range(60)]
        interval = quantile_interval(samples, 0.9)
        tries += 1
        hits += interval[0] <= np.log(10.0) <= interval[1]  # the true p90 of Exp(1) is ln 10
    assert hits / tries >= 0.93  # 95 % nominal; order-statistic intervals are conservative
    assert quantile_interval(list(range(35)), 0.9) is None and quantile_interval(list(range(36)), 0.9) is not None
