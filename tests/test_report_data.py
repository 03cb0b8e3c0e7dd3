"""The report's data layer on small hand-built inputs, with exact expected values (no plotly, no browser)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from effscope.profile.record import Record
from effscope.report.contents import report_data
from effscope.report.data import (
    Budget,
    Objective,
    Point,
    Source,
    attach_fresh_measurements,
    budget_slices,
    constraint_lines,
    eta_squared,
    hover,
    hypervolume_2d,
    least_violating,
    missing_numbers,
    module_shares,
    objectives_of,
    pareto_front,
    points_from_records,
    points_from_rows,
    points_from_trials,
    study_timing,
    timing_columns,
)
from effscope.report.sections.front import front_section, slice_table
from effscope.report.sections.gap import gap_section
from effscope.report.sections.insight import hypervolume_history
from effscope.report.sections.scaling import scaling_section
from effscope.report.sections.trust import prediction_accuracy, reference_drift

GOLDEN = Path(__file__).parent / "golden" / "report_data_small_study.json"
PROXY = {
    "name": "synflow",
    "label": "synflow (zero-cost proxy, not accuracy)",
    "direction": "maximize",
    "is_proxy": True,
}


def pt(name: str, lat: float | None, q: float | None, **kw) -> Point:
    numbers = {"latency_ms_p50": lat, "quality": q, **kw.pop("numbers", {})}
    return Point(id=name, target=kw.pop("target", "hilo"), numbers=numbers, **kw)


def ids(points) -> list[str]:
    return [p.id for p in points]


# ------------------------------------------------------------------------------------------------------ front


def test_pareto_front_maximize_keeps_ties_and_drops_dominated():
    points = [
        pt("A", 1, 1),
        pt("B", 2, 3),
        pt("C", 3, 2),  # dominated by B
        pt("D", 4, 5),
        pt("E", 2, 3),  # equal to B: neither dominates
        pt("F", 1, 0.5),  # same latency as A, worse quality
        pt("G", 2.5, 3),  # same quality as B, slower
        pt("H", None, 9),  # unmeasured: ignored
    ]
    assert ids(pareto_front(points, "maximize")) == ["A", "B", "E", "D"]


def test_pareto_front_minimize():
    points = [pt("A", 1, 1), pt("B", 2, 3), pt("F", 1, 0.5), pt("Z", 0.5, 2)]
    assert ids(pareto_front(points, "minimize")) == ["Z", "F"]


def _sliced() -> tuple[list[Point], list[Budget]]:
    """Designs under two p90 budgets (5 and 10 ms): one over both, one invalid, one cached twice."""
    points = [
        pt("fast", 1, 1, numbers={"latency_ms_p90": 2}, constraints={"latency": -0.8}),
        pt("mid", 3, 4, numbers={"latency_ms_p90": 4}, constraints={"latency": -0.6}),
        pt("mid-worse", 3.5, 3, numbers={"latency_ms_p90": 4.5}, constraints={"latency": -0.55}),
        pt("slow", 8, 9, numbers={"latency_ms_p90": 9}, constraints={"latency": -0.1}),
        pt("over", 9, 20, numbers={"latency_ms_p90": 12}, constraints={"latency": 0.2}),
        pt("invalid", 1, 50, status="invalid", numbers={"latency_ms_p90": 1}, constraints={"valid": 1.0}),
    ]
    points[1].record_uid = "rec-mid"
    points.append(dataclasses.replace(points[1], id="mid (cached)"))  # a cache hit: the same measurement again
    return points, [Budget("latency", "latency_ms_p90", 10.0, "ms"), Budget("latency", "latency_ms_p90", 5.0, "ms")]


def test_budget_slices_per_budget_and_only_feasible():
    points, budgets = _sliced()
    slices = budget_slices(points, budgets, "maximize")
    assert [(s.budget.limit, s.n_within, ids(s.front)) for s in slices] == [
        (5.0, 3, ["fast", "mid"]),
        (10.0, 4, ["fast", "mid", "slow"]),
    ]
    tight = budget_slices(points, [Budget("latency", "latency_ms_p90", 1.5, "ms")])
    assert (tight[0].n_within, tight[0].front) == (0, [])
    quality = Objective("synflow", "synflow", "maximize", True)
    rows = slice_table(points, [Budget("latency", "latency_ms_p90", 1.5, "ms")], quality).rows
    assert rows == [["latency p90 ≤ 1.5 ms", 0, "no design fits", None, None, None, ""]]
    # without budgets: the whole feasible front
    assert ids(budget_slices(points, [])[0].front) == ["fast", "mid", "slow"]


def test_front_per_budget_lists_each_design_once_under_its_tightest_budget():
    points, budgets = _sliced()
    table = slice_table(points, budgets, Objective("synflow", "synflow", "maximize", True))
    designs = [r[2] for r in table.rows]
    assert len(designs) == len(set(designs)), f"a design is listed twice: {designs}"
    assert [r[:3] for r in table.rows] == [
        ["latency p90 ≤ 5 ms", 3, "mid"],
        ["", "", "fast"],
        ["latency p90 ≤ 10 ms", 4, "slow"],  # the 10 ms front is slow plus the rows above
    ]
    # a looser budget whose front adds nothing says so instead of repeating the rows above
    same = [*budgets, Budget("latency", "latency_ms_p90", 9.5, "ms")]
    rows = slice_table(points[:4], same, Objective("synflow", "synflow", "maximize", True)).rows
    assert [r[2] for r in rows] == ["mid", "fast", "slow", "no design beyond the rows above"]


def test_front_plots_the_budget_statistic_so_position_and_feasibility_agree():
    # "sneaky" has its median left of the 2 ms line but its p90, the budgeted statistic, right of it: infeasible
    points = [
        pt("fast", 1.0, 1.0, numbers={"latency_ms_p90": 1.2}, constraints={"latency": -0.4}),
        pt("sneaky", 1.5, 3.0, numbers={"latency_ms_p90": 2.5}, constraints={"latency": 0.25}),
        pt("mid", 1.6, 2.0, numbers={"latency_ms_p90": 1.9}, constraints={"latency": -0.05}),
    ]
    budget = {"name": "latency", "statistic": "latency_ms_p90", "limit": 2.0, "unit": "ms"}
    source = Source("study", "s", points, attrs={"objectives": [PROXY], "budgets": [budget]})
    front = front_section(source)
    assert front.x_statistic == budget["statistic"]
    assert front.x_label.startswith("latency p90 (ms")
    [(limit, _)] = front.budget_lines
    by_id = {p.id: p for p in points}
    for group, markers in front.groups.items():
        for m in markers:
            assert m.x == by_id[m.id].get(budget["statistic"])
            assert (m.x <= limit) == (group != "infeasible"), f"{m.id} ({group}) sits on the wrong side of the line"
    assert front.front_line == [(1.2, 1.0), (1.9, 2.0)]
    # without latency budgets the median is plotted, as the search minimizes it
    assert front_section(dataclasses.replace(source, attrs={"objectives": [PROXY]})).x_statistic == "latency_ms_p50"


def test_a_study_budgeting_the_cuda_graph_replay_shows_the_replay_in_its_front_and_tables():
    """Eager GPU times measure the host; a study that budgets and minimizes the replay lists the replay's times,
    not eager's, beside its budgets (a table showing eager p90 under a replay budget would look infeasible)."""
    graph = {"latency_graph_ms_p50": 0.8, "latency_graph_ms_p90": 0.9}
    points = [
        pt("a", 5.0, 1.0, numbers=graph, constraints={"latency": -0.1}, trial=0),
        pt("b", 6.0, 2.0, numbers={k: 2 * v for k, v in graph.items()}, constraints={"latency": 0.8}, trial=1),
    ]
    objectives = [PROXY, {"name": "latency_graph_ms_p50", "label": "median CUDA-graph latency (ms, measured)"}]
    budget = {"name": "latency", "statistic": "latency_graph_ms_p90", "limit": 1.0, "unit": "ms"}
    source = Source("study", "g", points, attrs={"objectives": objectives, "budgets": [budget]})
    front = front_section(source)
    assert front.x_statistic == "latency_graph_ms_p90" and [m.id for m in front.groups["best"]] == ["a"]
    assert front.slices.columns[4:6] == ["CUDA-graph latency p50 (ms)", "CUDA-graph latency p90 (ms)"]
    assert front.slices.rows[0][4:6] == [0.8, 0.9]
    records = Source("records", "r", points)  # Records declare nothing: eager latency, as before
    assert timing_columns(points) == {"latency_ms_p50": "latency p50 (ms)", "latency_ms_p90": "latency p90 (ms)"}
    assert study_timing(records) is None and study_timing(source) == "latency_graph_ms_p50"


def test_least_violating_ranks_by_total_violation_and_skips_invalid():
    points = [
        pt("half-over", 15, 3, constraints={"latency": 0.5, "memory": 0.0, "valid": 0.0}),
        pt("both-over", 11, 2, constraints={"latency": 0.1, "memory": 0.2, "valid": 0.0}),
        pt("nearly", 10.5, 1, constraints={"latency": 0.05, "memory": 0.0, "valid": 0.0}),
        pt("nearly-better", 10.5, 4, constraints={"latency": 0.05, "memory": 0.0, "valid": 0.0}),
        pt("invalid", None, None, status="invalid", constraints={"latency": 0.0, "memory": 0.0, "valid": 1.0}),
        pt("failed", 3, 3, status="failed", constraints={"latency": 0.0, "memory": 0.0, "valid": 1.0}),
    ]
    assert ids(least_violating(points, k=3)) == ["nearly-better", "nearly", "both-over"]
    assert math.isclose(points[1].violation, 0.3)


def _nothing_feasible() -> Source:
    points = [
        pt("trial 0", 15, 3, trial=0, numbers={"latency_ms_p90": 15}, constraints={"latency": 0.5, "valid": 0.0}),
        pt("trial 1", 11, 2, trial=1, numbers={"latency_ms_p90": 11}, constraints={"latency": 0.1, "valid": 0.0}),
        pt("trial 2", None, None, trial=2, status="invalid", constraints={"valid": 1.0}),
    ]
    attrs = {"objectives": [PROXY], "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 10}]}
    return Source("study", "none-feasible", points, attrs=attrs, directions=["maximize", "minimize"])


def test_nothing_feasible_shows_least_violating_and_says_so():
    data = report_data(_nothing_feasible())
    assert data.front is not None
    assert set(data.front.groups) == {"infeasible", "least violating"}
    assert [m.id for m in data.front.groups["least violating"]] == ["trial 1", "trial 0"]
    assert data.front.notes[0].startswith("No design met every budget")
    assert [r[0] for r in data.front.least_violating.rows] == ["trial 1", "trial 0"]
    assert data.front.least_violating.rows[0][-2] == "latency +10.0 %"
    assert data.summary.best_title == "Least-violating designs (nothing feasible)"
    assert any("No design met every budget" in n for n in data.summary.notes)
    assert data.insight is None or data.insight.hypervolume is None  # no feasible point: no hypervolume


# --------------------------------------------------------------------------------------------- gap, scaling


def test_gap_correlations_exact_and_cached_trials_count_once():
    points = [
        pt(
            f"d{i}",
            lat,
            1.0,
            record_uid=f"r{i}",
            family="litv2",
            numbers={"macs": macs, "throughput_img_s": tp},
            workload={"batch": 8},
        )
        for i, (macs, lat, tp) in enumerate([(1e9, 1, 4), (2e9, 3, 3), (3e9, 2, 2), (4e9, 4, 1)])
    ]
    cached = dataclasses.replace(points[1], id="cached copy")  # same record: same measurement
    gap = gap_section(Source("study", "s", [*points, cached]))
    assert gap.throughput
    assert gap.correlations.rows == [["all designs", 4, 0.8, pytest.approx(4 / 6), -1.0, -1.0]]
    assert [m.x for m in gap.series[0].markers] == [1.0, 2.0, 3.0, 4.0]  # MACs in G
    assert gap.x_scale == 1e9
    # batch 1: throughput is 1000 / latency, so it is neither plotted nor correlated, and the report says why
    batch1 = gap_section(Source("study", "s", [dataclasses.replace(p, workload={"batch": 1}) for p in points]))
    assert not batch1.throughput
    assert batch1.correlations.rows == [["all designs", 4, 0.8, pytest.approx(4 / 6)]]
    assert "throughput" not in " ".join(batch1.correlations.columns).lower()
    assert any(n.startswith("Throughput is not plotted: every design ran at batch 1") for n in batch1.notes)
    # constant MACs: no gap to show
    flat = [dataclasses.replace(p, numbers={**p.numbers, "macs": 1e9}) for p in points]
    assert gap_section(Source("study", "s", flat)) is None


def test_gap_correlations_per_family():
    def fam(name, family, macs, lat):
        return pt(name, lat, None, family=family, numbers={"macs": macs})

    points = [fam("a1", "a", 1, 1), fam("a2", "a", 2, 2), fam("a3", "a", 3, 3)]
    points += [fam("b1", "b", 1, 3), fam("b2", "b", 2, 2), fam("b3", "b", 3, 1)]
    rows = gap_section(Source("records", "r", points)).correlations.rows
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("all designs", 6, 0.0, 0.0),
        ("a", 3, 1.0, 1.0),
        ("b", 3, -1.0, -1.0),
    ]


def test_scaling_slopes_and_names():
    def block(target, size, lat, knobs, mem):
        return Point(
            id=f"{target} {size}",
            target=target,
            kind="block",
            knobs=knobs,
            size=(size, size),
            numbers={"latency_ms_p50": lat, "peak_rss_bytes": mem},
            workload={"device": "cpu", "size": [size, size]},
        )

    points = [
        block("vit", 10, 1.0, {"heads": 2}, 2**20),
        block("vit", 20, 16.0, {"heads": 2}, 4 * 2**20),  # 4x tokens, 16x time: quadratic
        block("vit", 10, 2.0, {"heads": 4}, 2**20),
        block("vit", 20, 8.0, {"heads": 4}, 2**20),  # linear; flat memory
        block("hilo", 10, 1.0, {}, 2**20),  # one size only: no series
    ]
    s = scaling_section(Source("records", "r", points))
    assert [x.name for x in s.series] == ["vit (heads=2)", "vit (heads=4)"]
    assert [x.tokens for x in s.series] == [[100, 400], [100, 400]]
    assert s.series[0].latency_slope == pytest.approx(2.0) and s.series[1].latency_slope == pytest.approx(1.0)
    assert s.series[0].memory_slope == pytest.approx(1.0) and s.series[1].memory_slope == pytest.approx(0.0)
    assert s.series[0].memory_mib == [1.0, 4.0]
    assert s.x_label.startswith("tokens") and "RSS" in s.memory_label


# --------------------------------------------------------------------------------------------------- insight


def test_hypervolume_2d_exact():
    assert hypervolume_2d([(3, 1), (5, 2)], (0, 4), "maximize") == 13.0
    assert hypervolume_2d([(3, 1), (5, 2), (2, 3)], (0, 4), "maximize") == 13.0  # a dominated point adds nothing
    assert hypervolume_2d([(1, 1), (2, 0.5)], (3, 2), "minimize") == 2.5
    assert hypervolume_2d([(5, 9)], (0, 4), "maximize") == 0.0  # beyond the reference latency
    assert hypervolume_2d([], (0, 4)) == 0.0


def test_hypervolume_history_reference_point_is_stated():
    points = [
        pt("t0", 2, 1, trial=0, constraints={"latency": -0.5}),
        pt("t1", 20, 9, trial=1, constraints={"latency": 0.5}),  # infeasible: never counts
        pt("t2", 4, 3, trial=2, constraints={"latency": -0.2}),
    ]
    attrs = {"objectives": [PROXY], "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 10}]}
    source = Source("study", "s", points, attrs=attrs, directions=["maximize", "minimize"])
    hv = hypervolume_history(source, Objective(**{k: PROXY[k] for k in ("name", "label", "direction", "is_proxy")}))
    assert hv.reference == (pytest.approx(0.8), 10.0)  # worst feasible 1 - 10 % of range 2; loosest budget
    # after t0: (10-2)*(1-0.8); after t2: + the strip that t2 adds
    assert hv.values == [pytest.approx(8 * 0.2), pytest.approx(8 * 0.2), pytest.approx(2 * 0.2 + 6 * 2.2)]
    assert hv.trials == [0, 1, 2]
    assert "reference point" in hv.reference_text and "10 ms" in hv.reference_text
    assert hv.unit == "synflow × ms"  # the area's unit names the quality it is measured in


def test_eta_squared_exact():
    assert eta_squared(["a", "a", "b", "b"], [1, 1, 3, 3]) == 1.0
    assert eta_squared(["a", "b", "a", "b"], [1, 1, 3, 3]) == 0.0
    assert eta_squared(["a", "a", "b", "b"], [1, 2, 3, 4]) == pytest.approx(0.8)
    assert eta_squared(["a", "a"], [1, 2]) is None  # one group
    assert eta_squared(["a", "b"], [2, 2]) is None  # constant objective
    # ten distinct numbers fall into five bins of two neighbours each
    levels = list(range(10))
    values = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert eta_squared(levels, values) == 1.0
    assert eta_squared([(2, 2), (2, 2), (1, 1), (1, 1)], [1, 1, 3, 3]) == 1.0  # tuple knobs are categories


# ----------------------------------------------------------------------------------------------- breakdown


def test_module_shares_top_level_and_numbered_stages():
    block = {"": 100, "norm1": 2, "attn": 40, "attn.qkv": 30, "mlp": 50, "mlp.fc1": 25, "drop_path": 0}
    assert module_shares(block) == [("norm1", 2), ("attn", 40), ("mlp", 50), ("(outside submodules)", 8)]
    model = {"": 100, "stem": 10, "stages": 80, "stages.0": 30, "stages.1": 50, "stages.0.blocks": 30, "head": 5}
    assert module_shares(model) == [
        ("stem", 10),
        ("stages.0", 30),
        ("stages.1", 50),
        ("head", 5),
        ("(outside submodules)", 5),
    ]


def test_breakdown_folds_small_parts_and_never_invents_time():
    mbm = {"": 1000, "a": 500, "b": 470, "c": 10, "d": 10, "e": 10}
    source = Source("records", "r", [pt("x", 1, None, macs_by_module=mbm)])
    item = report_data(source).breakdown.items[0]
    assert item.parts == ["a", "b", "other (parts < 2 % each)"]
    assert item.macs_share == [50.0, 47.0, 3.0]
    assert item.time_share is None
    timed = Source("records", "r", [pt("x", 1, None, macs_by_module=mbm, time_by_module_ms={"a": 1, "b": 3})])
    assert report_data(timed).breakdown.items[0].time_share[:2] == [25.0, 75.0]
    assert any("mean over 5 forwards, after a warm one" in n for n in report_data(timed).breakdown.notes)


def test_a_stage_never_called_itself_takes_its_blocks_time_and_untimed_parts_are_named():
    # a stage is a list of blocks, never called: its blocks are timed, the stage is not
    mbm = {"": 100, "embed": 10, "stages": 80, "stages.0": 40, "stages.1": 40, "head": 5}
    times = {"embed": 1.0, "stages.0.0": 2.0, "stages.0.1": 3.0, "stages.1.0": 4.0, "stages.0.0.attn": 99.0}
    source = Source("records", "r", [pt("m", 1, None, macs_by_module=mbm, time_by_module_ms=times)])
    data = report_data(source).breakdown
    item = data.items[0]
    assert item.parts == ["embed", "stages.0", "stages.1", "head", "(outside submodules)"]
    assert item.time_share == [10.0, 50.0, 40.0, None, None]  # the blocks' sum, not a grandchild's; not rescaled
    assert any("m (head, (outside submodules))" in n for n in data.notes)


def test_designs_beyond_the_figure_are_named_and_each_design_has_its_own_colours():
    from effscope.report.figures import GREY
    from effscope.report.sections.breakdown import MAX_BREAKDOWNS, breakdown_figure

    mbm = {
        "": 100,
        "stages": 100,
        **{f"stages.{i}": 10 for i in range(10)},
    }  # 10 parts: two designs exhaust one shared palette
    names = [f"m{i}" for i in range(MAX_BREAKDOWNS + 1)]
    source = Source("records", "r", [pt(n, 1, None, target=n, macs_by_module=mbm, order=n) for n in names])
    data = report_data(source).breakdown
    assert [i.design for i in data.items] == names[:MAX_BREAKDOWNS]
    assert f"Not shown (at most {MAX_BREAKDOWNS} designs): {names[-1]}." in data.notes
    fig = breakdown_figure(data)
    for name in names[:MAX_BREAKDOWNS]:
        colours = [t.marker.color for t in fig.data if t.legendgroup == name]
        assert len(colours) == 10 and len(set(colours)) == 10 and GREY not in colours


# ------------------------------------------------------------------------------------------------------ trust


def test_prediction_accuracy_exact():
    points = [
        pt("a", 10, None, numbers={"predicted_latency_ms": 10.5}),
        pt("b", 20, None, numbers={"predicted_latency_ms": 25}),
        pt("c", 5, None),  # no prediction: not counted
    ]
    p = prediction_accuracy(points)
    assert (p.ids, p.within, p.mape) == (["a", "b"], 0.5, pytest.approx(15.0))
    assert prediction_accuracy(points[2:]) is None


def test_reference_drift_in_measurement_order():
    def rec(i, ms, when):
        return pt(f"r{i}", 1, None, order=when, env={"device_name": "AMD EPYC"}, numbers={"reference_ms_p50": ms})

    series, table = reference_drift([rec(2, 12.0, "2026-01-01T00:00:02"), rec(1, 10.0, "2026-01-01T00:00:01")])
    assert (series[0].ids, series[0].ms, series[0].order) == (["r1", "r2"], [10.0, 12.0], [1, 2])
    assert table.rows == [["AMD EPYC", 2, 11.0, 10.0, 12.0, pytest.approx(100 * 2 / 11)]]


# ---------------------------------------------------------------------------------------------------- sources


def _trial(number, values, attrs, constraints, state="COMPLETE", params=None):
    return SimpleNamespace(
        number=number,
        state=SimpleNamespace(name=state),
        values=values,
        user_attrs=attrs,
        constraints=constraints,
        params=params or {},
        datetime_complete=None,
    )


def test_points_from_trials_join_records_and_ignore_placeholder_values():
    record = Record(
        target="hilo",
        kind="block",
        family="litv2",
        workload={"device": "cpu", "size": [14, 14]},
        knobs={"heads": 2},
        counts={"macs": 5e6, "params": 1000},
        latency={"latency_ms_p50": 1.0, "latency_ms_p90": 1.2, "latency_ms_iqr": 0.1},
        flags=["cpu-contention"],
        details={"count": {"macs_by_module": {"": 5e6, "attn": 2e6, "mlp": 3e6}}},
    )
    trials = [
        _trial(
            0, [7.0, 1.0], {"knobs": {"heads": 2}, "record_uid": record.uid, "status": "measured"}, {"latency": -0.5}
        ),
        _trial(
            1,
            [0.0, 1e9],
            {"knobs": {"heads": 3}, "record_uid": None, "status": "invalid", "reason": "heads must divide"},
            {"valid": 1.0},
        ),
        _trial(2, None, {}, {}, state="RUNNING"),
        _trial(3, None, {"knobs": {"heads": 4}}, {}, state="FAIL"),
    ]
    points = points_from_trials(trials, [record], target="hilo")
    assert ids(points) == ["trial 0", "trial 1", "trial 3"]
    good, invalid, failed = points
    assert good.numbers["quality"] == 7.0 and good.get("latency_ms_iqr") == 0.1 and good.get("macs") == 5e6
    assert good.flags == ("cpu-contention",) and good.family == "litv2" and good.size == (14, 14)
    assert good.macs_by_module == {"": 5e6, "attn": 2e6, "mlp": 3e6} and good.feasible
    assert invalid.get("quality") is None and invalid.get("latency_ms_p50") is None and not invalid.feasible
    assert invalid.target == "hilo" and invalid.reason == "heads must divide"
    assert failed.status == "failed" and not failed.measured


def test_points_from_flat_rows():
    row = {
        "target": "vit",
        "kind": "block",
        "family": "vit",
        "status": "ok",
        "knob.heads": 4,
        "knob.depths": "2,2,6,2",
        "height": 14.0,
        "width": 14.0,
        "macs": 1e8,
        "latency_ms_p50": 2.0,
        "flags": "cpu-contention,latency-unstable",
        "env.device_name": "AMD EPYC",
        "trial": float("nan"),
        "uid": "u1",
    }
    (p,) = points_from_rows([row, {**row, "uid": "u2"}])[:1]
    assert p.id == "vit 14x14" and p.size == (14, 14) and p.knobs == {"heads": 4, "depths": "2,2,6,2"}
    assert p.flags == ("cpu-contention", "latency-unstable") and p.env == {"device_name": "AMD EPYC"}
    assert p.trial is None and p.get("macs") == 1e8
    assert ids(points_from_rows([row, row])) == ["vit 14x14", "vit 14x14 (2)"]


def test_proxies_are_always_named_as_proxies():
    assert Objective("synflow", "synflow", "maximize", True).display == "synflow (proxy, not accuracy)"
    assert Objective("s", "synflow (zero-cost proxy, not accuracy)", is_proxy=True).display.count("proxy") == 1
    assert "does not say whether" in Objective("q", "quality", is_proxy=None).display
    assert Objective("acc", "top-1 after 300 steps", is_proxy=False).display == "top-1 after 300 steps"


# ----------------------------------------------------------------------------------------------------- golden


def _small_study() -> Source:
    knobs = [{"lofi_heads": i, "heads": 4} for i in range(5)]
    lat = [1.0, 1.2, 1.5, 2.5, 3.0]
    q = [1.0, 2.0, 1.5, 4.0, 5.0]
    points = [
        Point(
            id=f"trial {i}" + (" (litv2)" if i == 3 else ""),
            target="hilo",
            family="litv2",
            kind="block",
            knobs=knobs[i],
            numbers={
                "quality": q[i],
                "latency_ms_p50": lat[i],
                "latency_ms_p90": lat[i] * 1.1,
                "latency_ms_iqr": 0.05 * lat[i],
                "macs": 1e8 * (i + 1),
                "params": 1000 * (i + 1),
            },
            status="measured",
            constraints={"latency": lat[i] * 1.1 / 3.0 - 1, "memory": 0.0, "valid": 0.0},
            preset="litv2" if i == 3 else None,
            trial=i,
            record_uid=f"r{i}",
            size=(14, 14),
        )
        for i in range(5)
    ]
    attrs = {
        "target": "hilo",
        "kind": "block",
        "device_name": "AMD EPYC",
        "objectives": [PROXY],
        "budgets": [
            {"name": "latency", "statistic": "latency_ms_p90", "limit": 3.0, "unit": "ms"},
            {"name": "latency", "statistic": "latency_ms_p90", "limit": 2.0, "unit": "ms"},
        ],
        "command": "effscope search hilo",
    }
    return Source("study", "golden", points, storage="sqlite:///x.db", attrs=attrs, directions=["maximize", "minimize"])


def test_report_data_matches_golden():
    data = json.loads(json.dumps(dataclasses.asdict(report_data(_small_study())), default=str))
    if os.environ.get("EFFSCOPE_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert data == golden, "report data changed; if intended, rerun with EFFSCOPE_UPDATE_GOLDEN=1 and review the diff"
    # the parts a person checks first
    assert [m["id"] for m in golden["front"]["groups"]["best"]] == ["trial 0", "trial 1", "trial 3 (litv2)"]
    assert golden["front"]["x_statistic"] == "latency_ms_p90"  # the budgets' statistic, not the median
    assert [m["x"] for m in golden["front"]["groups"]["best"]] == pytest.approx([1.1, 1.32, 2.75])
    # each design once, under the tightest budget it meets
    assert [r[:3] for r in golden["front"]["slices"]["rows"]] == [
        ["latency p90 ≤ 2 ms", 3, "trial 1"],
        ["", "", "trial 0"],
        ["latency p90 ≤ 3 ms", 4, "trial 3 (litv2)"],
    ]
    assert [p["id"] for p in golden["front"]["presets"]] == ["trial 3 (litv2)"]


def test_hover_shows_every_knob_and_number():
    p = pt(
        "trial 7",
        2.5,
        0.75,
        preset="litv2",
        size=(14, 14),
        knobs={"heads": 4, "depths": (2, 2, 6, 2), "qkv_bias": True},
        numbers={"latency_ms_p90": 3.0, "macs": 3.5e9, "params": 13_984, "peak_mem_bytes": 2 * 2**20},
        constraints={"latency": -0.1, "valid": 0.0},
        flags=("gpu-throttled",),
    )
    budget = Budget("latency", "latency_ms_p90", 4.0, "ms")
    lines = dict(hover(p, Objective("synflow", "synflow", "maximize", True), [budget]))
    assert lines == {
        "design": "trial 7",
        "target": "hilo",
        "status": "ok",
        "preset": "litv2",
        "input": "14x14",
        "synflow (proxy, not accuracy)": 0.75,
        "latency p50 (ms)": 2.5,
        "latency p90 (ms)": 3.0,
        "params": "13.98 K",
        "MACs": "3.5 G",
        "peak GPU memory (MiB)": 2.0,
        "latency budget": "latency p90 at 75 % of the budget (4 ms)",  # readable, not the raw -0.1
        "flags": "gpu-throttled",
        "knob heads": "4",
        "knob depths": "2,2,6,2",
        "knob qkv_bias": "True",
    }


def test_sections_exist_only_with_their_data():
    records = Source("records", "r", [pt("a", 1.0, None, numbers={"macs": 1e6})])
    data = report_data(records)
    assert (data.front, data.insight, data.gap, data.scaling, data.breakdown) == (None, None, None, None, None)
    assert data.summary.best.rows[0][0] == "a" and data.provenance.rows


def test_provenance_says_what_the_attention_mode_did_on_each_device():
    gpu = "auto: per distinct call, the faster of sdpa and explicit as timed on this device"
    points = [
        pt("a", 1.0, None, env={"attention_core": gpu}, workload={"attention": "auto"}),
        pt("b", 1.0, None, env={"attention_core": "sdpa (forced)"}, workload={"attention": "sdpa"}),
    ]
    rows = dict(report_data(Source("records", "r", points)).provenance.rows)
    assert rows["attention core"] == f"{gpu} | sdpa (forced)" and rows["workload attention"] == "auto | sdpa"


def test_the_report_layer_imports_neither_torch_nor_optuna():
    import subprocess
    import sys

    code = (
        "import sys, effscope.report.html, effscope.report.data; print('torch' in sys.modules, 'optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_every_section_makes_its_data_without_plotly():
    import subprocess
    import sys

    code = "import sys, effscope.report.html, effscope.report.contents; print('plotly' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]  # each section imports plotly in its drawing functions only


def test_report_data_has_a_field_per_built_in_section_in_page_order():
    from effscope.report.contents import ReportData
    from effscope.report.sections import BUILT_IN, page_order

    assert [f.name for f in dataclasses.fields(ReportData)] == ["title", *BUILT_IN, "registered", "absent"]
    assert [s.key for s in page_order()] == list(BUILT_IN)


def test_a_section_after_one_without_data_keeps_its_place_built_in_or_registered():
    from effscope.report.sections import Section, page_order, register_section, unregister_section

    register_section(Section("empty", "Nothing to show", lambda source: None, str, after="gap"))
    register_section(Section("mine", "Mine", lambda source: 1, str, after="empty"))
    try:
        assert [s.key for s in page_order()][2:6] == ["gap", "empty", "mine", "scaling"]
        assert report_data(Source("records", "r", [pt("a", 1.0, None)])).registered == {"mine": 1}
    finally:
        unregister_section("mine")
        unregister_section("empty")


def test_parallel_coordinates_scaling_and_readable_ticks():
    from effscope.report.sections.insight import parallel_coordinates

    points = [
        pt("a", 1.0, 0.0, knobs={"w": 2, "act": "gelu"}, constraints={"latency": -1}),
        pt("b", 2.0, 50.0, knobs={"w": 7, "act": "relu"}, constraints={"latency": 1}),
        pt("c", 3.0, 98.0, knobs={"w": 2, "act": "gelu"}, constraints={"latency": -1}),
        pt("d", 4.0, 100.0, knobs={"act": "relu"}, constraints={"latency": -1}),
    ]
    axes, lines = parallel_coordinates(points, ["w", "act"], [("quality", "q"), ("latency_ms_p50", "ms")], points[:1])
    assert [a.name for a in axes] == ["w", "act", "q", "ms"]
    assert axes[0].ticks == [(0.0, "2"), (1.0, "7")]
    assert axes[1].ticks == [(0.0, "gelu"), (1.0, "relu")]
    assert axes[2].ticks == [(0.0, "0"), (0.5, "50"), (1.0, "100")]  # 98 would print on top of 100
    assert [(ln.id, ln.group, ln.ys) for ln in lines] == [
        ("a", "best", [0.0, 0.0, 0.0, 0.0]),
        ("b", "infeasible", [1.0, 1.0, 0.5, 1 / 3]),
        ("c", "feasible", [0.0, 0.0, 0.98, 2 / 3]),
        ("d", "feasible", [None, 1.0, 1.0, 1.0]),
    ]


def test_storage_is_shown_as_given_and_relative_under_the_working_directory(tmp_path, monkeypatch):
    import optuna

    from effscope.report import build_report
    from effscope.urls import shown_location

    (tmp_path / "project" / "spaces").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project")
    db = tmp_path / "project" / "effscope.db"
    assert (
        shown_location(f"sqlite:///{db}") == shown_location(str(db)) == shown_location("effscope.db") == "effscope.db"
    )
    assert shown_location("../elsewhere.db") == "../elsewhere.db"  # outside the working directory: as given
    assert shown_location("postgresql://me:secret@host/db") == "postgresql://me:***@host/db"

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{db}", directions=["maximize", "minimize"])
    study.set_user_attr("effscope_space", {"name": "tiny", "path": str(tmp_path / "project" / "spaces" / "t.toml")})
    study.add_trial(optuna.trial.create_trial(values=[1.0, 2.0], user_attrs={"latency_ms_p50": 2.0}))
    page = build_report(output="r.html", storage=f"sqlite:///{db}", study="s").read_text(encoding="utf-8")
    assert "<th>storage</th><td>effscope.db</td>" in page
    assert "<th>search space</th><td>tiny (spaces/t.toml)</td>" in page
    assert str(tmp_path) not in page  # no absolute temporary path anywhere


# ------------------------------------------------------------------------------------------- the audit's findings


def _rec(target, batch, lat, macs, **kw) -> Record:
    """A measured block Record at 14x14 tokens on one CPU, at `batch`."""
    return Record(
        target=target,
        kind="block",
        family=kw.pop("family", target),
        workload={"device": "cpu", "dtype": kw.pop("dtype", "fp32"), "batch": batch, "size": [14, 14]},
        counts={"macs": macs, "params": 1000},
        latency={"latency_ms_p50": lat, "latency_ms_p90": lat * 1.1},
        env={"device_name": "AMD EPYC", "torch_threads": 2},
        **kw,
    )


def _mixed_batches() -> Source:
    records = [_rec(t, 1, lat, macs) for t, lat, macs in (("hilo", 1.0, 1e6), ("vit", 2.0, 2e6), ("pvt", 3.0, 3e6))]
    records += [_rec(t, 8, lat, macs) for t, lat, macs in (("hilo", 9.0, 1e6), ("vit", 5.0, 2e6), ("pvt", 4.0, 3e6))]
    return Source("records", "mixed", points_from_records(records))


def test_records_of_several_workloads_are_ranked_and_correlated_only_within_one():
    source = _mixed_batches()
    summary = report_data(source).summary
    assert summary.best.columns[:2] == ["design", "workload"]
    rows = [(r[0], r[1]) for r in summary.best.rows]
    # ranked within each workload: every batch-1 row before every batch-8 row, each group fastest first
    assert rows == [
        ("hilo 14x14 · batch 1", "batch 1"),
        ("vit 14x14 · batch 1", "batch 1"),
        ("pvt 14x14 · batch 1", "batch 1"),
        ("pvt 14x14 · batch 8", "batch 8"),
        ("vit 14x14 · batch 8", "batch 8"),
        ("hilo 14x14 · batch 8", "batch 8"),
    ]
    assert "fastest first within each workload" in summary.best_title
    assert any("2 workloads" in n and "only within one workload" in n for n in summary.notes)
    gap = gap_section(source)
    assert [s.family for s in gap.series] == [
        "hilo · batch 1",
        "pvt · batch 1",
        "vit · batch 1",
        "hilo · batch 8",
        "pvt · batch 8",
        "vit · batch 8",
    ]
    # one correlation per workload, none across: batch 1 rises with MACs, batch 8 falls
    assert [r[:3] for r in gap.correlations.rows] == [
        ["all designs at batch 1", 3, 1.0],
        ["all designs at batch 8", 3, -1.0],
    ]
    assert gap.headline == {}


def test_one_workload_changes_nothing():
    records = [_rec(t, 1, lat, macs) for t, lat, macs in (("hilo", 1.0, 1e6), ("vit", 2.0, 2e6), ("pvt", 3.0, 3e6))]
    source = Source("records", "one", points_from_records(records))
    summary = report_data(source).summary
    assert "workload" not in summary.best.columns and [r[0] for r in summary.best.rows][0] == "hilo 14x14"
    assert not any("workloads" in n for n in summary.notes)
    assert [r[0] for r in gap_section(source).correlations.rows] == ["all designs"]


def test_a_device_or_dtype_difference_is_a_workload_of_its_own():
    gpu = _rec("vit", 1, 0.1, 2e6, dtype="bf16")
    gpu.env = {"device_name": "NVIDIA H200"}
    pts = points_from_records([_rec("hilo", 1, 1.0, 1e6), gpu])
    assert ids(pts) == ["hilo 14x14 · AMD EPYC, fp32, 2 threads", "vit 14x14 · NVIDIA H200, bf16, default threads"]


def test_two_cpus_of_one_name_are_workloads_of_their_own():
    """A cloud VM names several CPU generations alike: designs from each are never ranked together. A Record that
    records no identity (an older effscope) keeps the bare name, as the cache and the roofline match it by name."""
    zen3, zen5 = ({"cpu_vendor": "AuthenticAMD", "cpu_family": f, "cpu_model_number": 1} for f in (25, 26))
    records = [_rec("hilo", 1, 1.0, 1e6), _rec("vit", 1, 2.0, 2e6), _rec("pvt", 1, 3.0, 3e6)]
    for r, cpu in zip(records, (zen3, zen5, {}), strict=True):
        r.env.update(cpu)
    pts = points_from_records(records)
    assert ids(pts) == [
        "hilo 14x14 · AMD EPYC (AuthenticAMD family 25 model 1)",
        "vit 14x14 · AMD EPYC (AuthenticAMD family 26 model 1)",
        "pvt 14x14 · AMD EPYC",
    ]
    same = [_rec("hilo", 1, 1.0, 1e6), _rec("vit", 1, 2.0, 2e6)]
    for r in same:
        r.env.update(zen3)
    assert ids(points_from_records(same)) == ["hilo 14x14", "vit 14x14"]  # one CPU: nothing added


def _study_on_two_cpus(cpus: tuple[dict, dict]) -> Source:
    """A study of an older effscope (no device_identity attr) resumed by name on a second "AMD EPYC": trials 0-2 on
    the first CPU, 3-5 on the second, MACs rising with latency on the first and falling on the second."""
    records, trials = [], []
    for i, (lat, macs) in enumerate(((1.0, 1e6), (2.0, 2e6), (3.0, 3e6), (6.0, 1e6), (5.0, 2e6), (4.0, 3e6))):
        r = _rec("hilo", 1, lat, macs, knobs={"heads": i + 1})
        r.env.update(cpus[i // 3])
        records.append(r)
        attrs = {"knobs": {"heads": i + 1}, "record_uid": r.uid, "status": "measured"}
        trials.append(_trial(i, [float(i), lat], attrs, {"latency": -0.5}))
    latency = {"name": "latency_ms_p50", "label": "median latency (ms, measured)", "direction": "minimize"}
    attrs = {"target": "hilo", "device_name": "AMD EPYC", "objectives": [PROXY, latency]}
    points = points_from_trials(trials, records, target="hilo")
    return Source("study", "resumed", points, attrs=attrs, directions=["maximize", "minimize"])


def test_a_study_resumed_on_another_cpu_of_one_name_says_so_and_correlates_each_cpu_apart():
    zen3, zen5 = ({"cpu_vendor": "AuthenticAMD", "cpu_family": f, "cpu_model_number": 1} for f in (25, 26))
    source = _study_on_two_cpus((zen3, zen5))
    first, second = "AMD EPYC (AuthenticAMD family 25 model 1)", "AMD EPYC (AuthenticAMD family 26 model 1)"
    assert [p.device_label for p in source.points] == [first] * 3 + [second] * 3
    summary = report_data(source).summary
    assert any(n.startswith(f"This study's trials were measured on 2 CPUs of one name ({first}; {second})")
               for n in summary.notes), summary.notes  # fmt: skip
    assert summary.best.columns[:2] == ["design", "workload"]
    assert {r[0]: r[1] for r in summary.best.rows}["trial 5"] == second
    gap = gap_section(source)
    # never one correlation over both CPUs: the first rises with MACs, the second falls
    assert [r[:3] for r in gap.correlations.rows] == [
        [f"all designs at {first}", 3, 1.0],
        [f"all designs at {second}", 3, -1.0],
    ]
    assert gap.headline == {}
    # one CPU: the study reads as before
    same = _study_on_two_cpus((zen3, zen3))
    assert {p.device_label for p in same.points} == {"AMD EPYC"}
    assert not any("CPUs of one name" in n for n in report_data(same).summary.notes)
    assert [r[0] for r in gap_section(same).correlations.rows] == ["all designs"]


def test_a_flat_row_with_a_size_or_trial_that_is_not_a_whole_number_is_one_sentence():
    from effscope.report.data import ReportError

    row = {"target": "vit", "height": 14, "width": 14}
    assert points_from_rows([{**row, "height": "14", "width": 14.0, "trial": 0.0}])[0].size == (14, 14)
    cases = {
        "height": (7.5, "record 2 (target 'vit') has height 7.5, but height must be a whole number ≥ 1"),
        "width": ("x", "record 2 (target 'vit') has width 'x', but width must be a whole number ≥ 1"),
        "trial": (-1, "record 2 (target 'vit') has trial -1, but trial must be a whole number ≥ 0"),
        # the gap section compares batch with 1: text there was a TypeError
        "batch": ("x", "record 2 (target 'vit') has batch 'x', but batch must be a whole number ≥ 1"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ReportError) as e:
            points_from_rows([row, {**row, key: value}])
        assert str(e.value) == message
    for value in (True, math.inf, [14]):
        with pytest.raises(ReportError, match="height must be a whole number"):
            points_from_rows([{**row, "height": value}])


def test_a_workload_part_some_records_lack_reads_not_recorded():
    """An older or imported Record without `attention` beside one that has it: a workload of its own, no KeyError."""
    newer = _rec("vit", 1, 2.0, 2e6)
    newer.workload["attention"] = "auto"
    pts = points_from_records([_rec("hilo", 1, 1.0, 1e6), newer])
    assert ids(pts) == ["hilo 14x14 · attention not recorded", "vit 14x14 · attention auto"]


def _two_fronts() -> Source:
    """A is best on the median, B only on p90: the report's front (p90) holds both, the search's (p50) only A."""
    a = pt("trial 0", 1.0, 2.0, numbers={"latency_ms_p90": 3.0}, constraints={"latency": -0.4}, status="measured")
    b = pt("trial 1", 1.5, 1.0, numbers={"latency_ms_p90": 1.6}, constraints={"latency": -0.68}, status="measured")
    latency = {"name": "latency_ms_p50", "label": "median latency (ms, measured)", "direction": "minimize"}
    attrs = {
        "objectives": [PROXY, latency],
        "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 5.0, "unit": "ms"}],
    }
    return Source("study", "s", [a, b], attrs=attrs, directions=["maximize", "minimize"])


def test_the_summary_names_its_front_statistic_and_the_designs_the_search_front_disagrees_on():
    summary = report_data(_two_fronts()).summary
    assert summary.best_title == "Best designs: the Pareto front on latency p90, the budgets' statistic"
    assert [r[0] for r in summary.best.rows] == ["trial 0", "trial 1"]
    assert (
        "On this front (latency p90) but not on the front of the search's objectives (latency p50): trial 1."
        in summary.notes
    )


def test_a_study_without_budgets_or_described_objectives_is_not_called_latency_or_budgeted():
    source = Source("study", "plain", [pt(f"trial {i}", i + 1.0, i + 1.0, status="measured") for i in range(3)])
    source.directions = ["maximize", "minimize"]
    label = objectives_of(source)[1].label
    assert "median latency" not in label and "does not describe" in label
    front = front_section(source)
    assert front.x_label == label and not any("budgets limit" in n for n in front.notes)
    assert report_data(source).summary.best_title == "Best designs: the Pareto front on latency p50"


def test_a_study_whose_trials_all_failed_is_refused_in_one_sentence(tmp_path):
    import optuna

    from effscope.report import ReportError, _load

    db = tmp_path / "failed.db"
    study = optuna.create_study(study_name="all-failed", storage=f"sqlite:///{db}", directions=["maximize"] * 2)
    study.set_user_attr("objectives", [PROXY])  # an effscope study whose every trial failed
    for _ in range(2):
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    with pytest.raises(ReportError, match=r"study 'all-failed' has 2 finished trial\(s\) and none measured"):
        _load.load_study(str(db), "all-failed")


def test_nothing_feasible_and_nothing_measured_promises_no_list():
    source = Source("study", "s", [pt("trial 0", None, None, status="invalid", constraints={"valid": 1.0})])
    source.attrs = {"objectives": [PROXY]}
    summary = report_data(source).summary
    assert summary.best is None
    assert not any("lists the least-violating" in n for n in summary.notes)


def test_missing_numbers_are_listed_once_with_their_reasons_and_survive_an_export():
    gpu_only = "energy and telemetry need an NVIDIA GPU"
    records = [_rec("hilo", 1, 1.0, 1e6), _rec("vit", 1, 2.0, 2e6)]
    for r in records:
        r.missing = {"energy_j_per_img": gpu_only, "mean_power_w": gpu_only}
    records[0].missing["peak_rss_bytes"] = "measured in a reused worker process; its peak is hidden"
    expected = [
        ("energy_j_per_img, mean_power_w", f"all 2 designs: {gpu_only}"),
        ("peak_rss_bytes", "1 of 2 design(s): measured in a reused worker process; its peak is hidden"),
    ]
    assert missing_numbers(points_from_records(records)) == expected
    from_rows = points_from_rows([r.flat() for r in records])  # the export's `missing` column, read back
    assert from_rows[0].missing == records[0].missing
    provenance = report_data(Source("records", "x", from_rows)).provenance.rows
    assert ["missing energy_j_per_img, mean_power_w", f"all 2 designs: {gpu_only}"] in provenance


def test_designs_aborted_over_budget_are_shown_as_aborted_never_as_measured():
    records = [_rec(t, 1, lat, macs) for t, lat, macs in (("hilo", 1.0, 1e6), ("vit", 2.0, 2e6), ("pvt", 3.0, 3e6))]
    aborted = _rec("cxv", 1, 0.5, 4e6, flags=["aborted-over-budget"])
    source = Source("records", "r", points_from_records([*records, aborted]))
    cxv = source.points[-1]
    assert cxv.aborted and not cxv.measured and cxv.status == "aborted-over-budget"
    assert gap_section(source).correlations.rows[0][1] == 3  # left out of the correlation
    summary = report_data(source).summary
    assert summary.best.rows[-1][0] == "cxv 14x14" and "partial timings" in summary.best.rows[-1][-2]
    assert dict(summary.facts)["measured"] == 3
    trust = report_data(source).trust
    assert "cxv 14x14" not in [m.id for m in trust.iqr]


def test_hover_labels_the_summed_seconds_of_a_re_measured_trial():
    p = pt("trial 4", 1.0, 1.0, numbers={"timed_s": 1.5}, remeasured=1)
    lines = dict(hover(p))
    assert lines["re-measured"] == 1
    assert lines["timed seconds"].startswith("1.5 (the sum of 2 measurements")


def test_records_of_a_search_are_named_by_trial_from_the_store_and_from_an_export():
    record = _rec("hilo", 1, 1.0, 1e6, study="hilo_block-cpu", trial=21)
    assert ids(points_from_records([record])) == ["trial 21 (hilo_block-cpu)"]
    assert ids(points_from_rows([record.flat()])) == ["trial 21 (hilo_block-cpu)"]


def test_a_records_report_of_a_search_says_the_front_needs_the_study():
    source = Source("records", "study", points_from_records([_rec("hilo", 1, 1.0, 1e6, study="s", trial=1)]))
    notes = report_data(source).summary.notes
    assert any("Records are not the study's trials" in n and "--study s" in n for n in notes)


def test_the_throughput_note_makes_no_claim_the_data_can_contradict():
    records = [_rec(t, 1, lat, macs) for t, lat, macs in (("hilo", 1.0, 1e6), ("vit", 2.0, 2e6), ("pvt", 3.0, 3e6))]
    for r in records:
        r.throughput = {"throughput_img_s": 100.0}  # not 1000 / latency
    notes = gap_section(Source("records", "r", points_from_records(records))).notes
    assert not any("1000 / latency in ms, the latency panel again" in n for n in notes)


def test_a_left_out_section_says_why_and_a_single_drift_point_is_not_called_stable():
    record = _rec("hilo", 1, 1.0, 1e6)
    record.reference = {"reference_ms_p50": 2.0}
    data = report_data(Source("records", "one", points_from_records([record])))
    assert data.gap is None and "needs at least 3" in data.absent["gap"]
    assert data.trust.drift_table.rows[0][-1] == "one measurement: no drift can be seen"


def test_a_store_of_failed_records_is_not_headed_measured_designs():
    failed = Record(target="bad", kind="custom", workload={}, status="failed", error="boom")
    summary = report_data(Source("records", "f", points_from_records([failed]))).summary
    assert summary.best_title == "Records (none measured: every one failed)"


def test_the_written_message_says_what_a_directory_or_cdn_report_needs(tmp_path):
    from effscope.report.build import written_message

    page = tmp_path / "r.html"
    page.write_text("x" * 2600)
    assert written_message(page, "directory").startswith(f"report written to {page} (3 kB); it loads ")
    assert "plotly.min.js" in written_message(page, "directory")
    assert "needs internet" in written_message(page, "cdn")


# ------------------------------------------------------------------------------- a search screened by a predictor

PREDICTOR = {  # study.user_attrs["predictor"] as effscope/search/remeasure.py stores it after the search
    "name": "lit2-cpu",
    "statistic": "latency_ms_p90",
    "fit": "affine",
    "mape": 0.06,
    "within_10": 1.0,
    "n_holdout": 2,
    "margin": 1.12,
    "screened": 7,
    "unpredicted": 5,
    "rejected": 4,
    "skipped": 3,
    "spot_checked": 1,
    "spot_false_rejections": 1,
    "false_rejection_rate": 1.0,
    "front_remeasured": 2,
    "front_still_feasible": 1,
}
# study system attr `effscope:remeasured`: trial 2 still under the 12 ms budget, trial 3 over it
REMEASURED = {
    "2": {"trial": 2, "remeasured_latency_ms_p50": 9.5, "remeasured_latency_ms_p90": 9.8, "remeasured_feasible": True},
    "3": {
        "trial": 3,
        "remeasured_latency_ms_p50": 14.5,
        "remeasured_latency_ms_p90": 22.6,
        "remeasured_feasible": False,
    },
}


def _screened_points() -> list[Point]:
    def trial(i, p90, q, status="measured", preset=None, uid=None, **numbers):
        return Point(
            id=f"trial {i}" + (f" ({preset})" if preset else ""),
            target="litv2",
            numbers={"quality": q, "latency_ms_p50": p90 and p90 * 0.98, "latency_ms_p90": p90, **numbers},
            status=status,
            constraints={"latency": (p90 or numbers["predicted_latency_ms"]) / 12.0 - 1, "valid": 0.0},
            preset=preset,
            trial=i,
            record_uid=uid,
        )

    return [
        trial(0, None, None, "predicted-infeasible", "litv2_s", predicted_latency_ms=18.4),
        trial(1, 15.0, 9.0, preset="litv2_b", uid="r1"),  # measured, over the budget
        trial(2, 9.9, 1.0, uid="r2", predicted_latency_ms=11.1),
        trial(3, 10.6, 3.0, uid="r3", predicted_latency_ms=11.6),
        trial(4, 10.6, 3.0, "cached", uid="r3"),  # a cached repeat of trial 3: one measurement
        trial(5, 10.0, 0.5, preset="litv2_t", uid="r5"),  # feasible, dominated by trial 2
    ]


def _screened_study(predictor: dict | None = PREDICTOR) -> Source:
    attrs = {
        "objectives": [PROXY],
        "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 12.0, "unit": "ms"}],
        **({"predictor": predictor} if predictor is not None else {}),
    }
    points = _screened_points()
    if predictor is not None:
        attach_fresh_measurements(points, REMEASURED, "latency_ms_p90")
    return Source("study", "lit2-cpu", points, attrs=attrs, directions=["maximize", "minimize"])


def test_the_fresh_re_measurement_joins_its_trial_and_the_cached_repeats_of_its_record():
    points = attach_fresh_measurements(
        _screened_points(), {**REMEASURED, "x": "not a row", "y": {"remeasured_feasible": False}}, "latency_ms_p90"
    )
    by_id = {p.id: p for p in points}
    over = by_id["trial 3"].fresh_measurement
    assert (over.trial, over.value, over.latency_ms_p50, over.feasible) == (3, 22.6, 14.5, False)
    assert by_id["trial 4"].fresh_measurement == over  # same Record, same verdict
    assert by_id["trial 2"].fresh_measurement.feasible and not by_id["trial 2"].over_budget_when_remeasured
    assert [p.id for p in points if p.over_budget_when_remeasured] == ["trial 3", "trial 4"]
    assert by_id["trial 5 (litv2_t)"].fresh_measurement is None


def test_the_trust_section_shows_the_predictors_table_counts_and_the_front_re_measured():
    screening = report_data(_screened_study()).trust.screening
    assert dict(screening.facts) == {
        "latency table": "lit2-cpu",
        "predicts": "latency p90 (affine fit)",
        "held-out MAPE": "6.0 % on 2 held-out design(s) (100 % within ±10 %)",
        "rejection margin": "budget × 1.12 (1 + 2 × MAPE): a candidate predicted above it is not measured",
        "screened (predicted before measuring)": 7,
        "no prediction (a block call the table lacks; measured)": 5,
        "skipped as predicted infeasible (not measured)": 3,
        "rejections spot-checked (measured anyway)": "1 of 4",
        "false rejections": "1 of 1 spot-checked turned out feasible (100 %)",
        "front re-measured in fresh processes": "1 of 2 still under latency p90 ≤ 12 ms",
    }
    table = screening.remeasured
    assert table.columns[-1] == "still under latency p90 ≤ 12 ms"
    assert table.rows == [  # the re-measured trials only (not trial 4, a cached repeat), by search-time p90
        ["trial 2", 9.9, 9.8, 9.5, "yes"],
        ["trial 3", 10.6, 22.6, 14.5, "no: over budget when re-measured"],
    ]


def test_a_screened_search_without_a_feasible_front_says_nothing_was_re_measured():
    source = _screened_study({**PREDICTOR, "front_remeasured": 0, "front_still_feasible": 0})
    for p in source.points:
        p.fresh_measurement = None
    facts = dict(report_data(source).trust.screening.facts)
    assert facts["front re-measured in fresh processes"] == "none: the search found no feasible design"


def test_a_search_stopped_before_its_screening_summary_says_so():
    summary_only = {k: PREDICTOR[k] for k in ("name", "statistic", "fit", "mape", "margin")}
    screening = report_data(_screened_study(summary_only)).trust.screening
    assert "screened (predicted before measuring)" not in dict(screening.facts)
    assert any(
        "stored no screening counts" in n and "1 trial(s) are predicted-infeasible" in n for n in screening.notes
    )


def test_a_design_over_budget_when_re_measured_is_marked_on_the_front_and_in_the_best_designs():
    data = report_data(_screened_study())
    front = data.front
    assert [m.id for m in front.groups["best"]] == ["trial 2", "trial 3"]  # feasible by the search's measurement
    assert [m.id for m in front.over_when_remeasured] == ["trial 3"]
    assert any("trial 3 (latency p90 22.6 ms: over the budget)" in n for n in front.notes)
    assert "trial 3 (over budget when re-measured)" in [row[2] for row in front.slices.rows]
    status = {row[0]: row[-2] for row in data.summary.best.rows}
    assert status["trial 3"] == "measured; over budget when re-measured (latency p90 22.6 ms: over the budget)"
    assert status["trial 2"] == "measured"
    hover_lines = dict(next(m for m in front.groups["best"] if m.id == "trial 3").hover)
    assert hover_lines["re-measured in a fresh process"] == "latency p90 22.6 ms: over the budget"


def test_a_best_design_s_flags_stand_beside_it_and_an_uncertain_one_is_marked_under_its_budget():
    points = _screened_points()
    uncertain = next(p for p in points if p.id == "trial 2")
    uncertain.flags = ("latency-uncertain", "cpu-contention")
    uncertain.numbers |= {"latency_ms_p90_lo": 9.5, "latency_ms_p90_hi": 12.5}
    data = report_data(
        Source("study", "s", points, attrs=_screened_study(None).attrs, directions=["maximize", "minimize"])
    )
    status = {row[0]: row[-2] for row in data.summary.best.rows}
    assert status["trial 2"] == "measured; flagged latency-uncertain, cpu-contention"
    assert "trial 2 (latency-uncertain)" in [row[2] for row in data.front.slices.rows]
    hover = dict(next(m for m in data.front.groups["best"] if m.id == "trial 2").hover)
    assert hover["95 % interval of latency p90"] == "9.5 to 12.5 ms"  # the bar the figure draws


def test_the_summary_says_first_when_the_machine_was_busy_or_the_timings_did_not_settle():
    quiet = [pt("a", 1, None), pt("b", 2, None)]
    assert not any("busy" in n or "settle" in n for n in report_data(Source("records", "r", quiet)).summary.notes)
    busy = [
        pt("a", 1, None, flags=("cpu-contention",)),
        pt("b", 2, None, flags=("latency-unstable",)),
        pt("c", 3, None),
    ]
    notes = report_data(Source("records", "r", busy)).summary.notes
    assert notes[0].startswith("1 of 3 timed designs were measured on a busy or unsteady device (cpu-contention)")
    assert notes[1].startswith("1 of 3 timed designs did not settle within their time cap (latency-unstable)")


def test_presets_the_predictor_rejected_are_listed_as_predicted_infeasible_never_as_measured():
    front = report_data(_screened_study()).front
    assert "trial 0 (litv2_s)" not in [m.id for m in front.presets]  # never measured: not plotted
    assert front.published.columns == [
        "published design",
        PROXY["label"],
        "latency p90 (ms, measured)",
        "predicted latency p90 (ms)",
        "where it sits",
    ]
    assert front.published.rows == [
        [
            "trial 0 (litv2_s)",
            None,
            None,
            18.4,
            "predicted infeasible (not measured): predicted 18.4 ms, over the budget 12 ms × margin 1.12",
        ],
        ["trial 1 (litv2_b)", 9.0, 15.0, None, "infeasible: latency p90 at 125 % of the budget (12 ms)"],
        ["trial 5 (litv2_t)", 0.5, 10.0, None, "feasible, dominated by trial 2"],
    ]


def test_a_study_without_a_predictor_shows_no_screening_marks_or_published_table():
    points = [p for p in _screened_points() if p.status != "predicted-infeasible"]
    source = _screened_study(None)
    source.points = points
    data = report_data(source)
    assert data.trust is None or data.trust.screening is None
    assert data.front.over_when_remeasured == [] and data.front.published is None
    assert not any("re-measured" in n or "predictor" in n for n in data.front.notes)


def test_loading_a_study_joins_the_fresh_re_measurement_stored_as_a_system_attr(tmp_path):
    import optuna

    from effscope.report import _load
    from effscope.search.remeasure import REMEASURED_ATTR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="screened", storage=url, directions=["maximize", "minimize"])
    study.set_user_attr("objectives", [PROXY])
    study.set_user_attr("budgets", [{"name": "latency", "statistic": "latency_ms_p90", "limit": 12.0, "unit": "ms"}])
    study.set_user_attr("predictor", PREDICTOR)
    for p in _screened_points():
        attrs = {"status": p.status, "record_uid": p.record_uid, "preset": p.preset, **p.numbers}
        values = [-math.inf, math.inf] if p.status == "predicted-infeasible" else [p.numbers["quality"], 1.0]
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs, system_attrs={}))
    storage = optuna.storages.get_storage(url)
    storage.set_study_system_attr(storage.get_study_id_from_name("screened"), REMEASURED_ATTR, REMEASURED)
    source = _load.load_study(url, "screened")
    assert [p.id for p in source.points if p.over_budget_when_remeasured] == ["trial 3", "trial 4"]
    assert source.points[2].fresh_measurement.value == 9.8


def test_a_records_report_names_its_source_file_as_given():
    source = Source("records", "r", [pt("a", 1, None)], storage="runs/r.db")
    assert ("source", "runs/r.db") in report_data(source).summary.facts  # not the stem "r"


def test_a_design_without_the_budgeted_statistic_reads_not_measured_under_several_budgets():
    budgets = [Budget("latency", "latency_ms_p90", 2.0, "ms"), Budget("latency", "latency_ms_p90", 1.0, "ms")]
    unmeasured = pt("x", None, None, constraints={"latency": 1.0})  # a slice and the search's budget; no p90
    assert constraint_lines(unmeasured, budgets) == [
        ("latency budget", "latency p90 not measured (counts as over the budget)")
    ]
    measured = pt("y", None, None, constraints={"latency": -0.5}, numbers={"latency_ms_p90": 1.5})
    assert constraint_lines(measured, budgets) == [
        ("latency budget", "latency p90 at 150 % of 1 ms, 75 % of the budget (2 ms)")
    ]


def test_preset_labels_on_the_front_take_free_sides_and_never_cover_each_other():
    from effscope.report.data import Marker
    from effscope.report.sections.front import LABEL_SIDES, _label_box, _label_sides, _overlap, _to_fraction

    def star(name, x, y):
        return Marker(name, x, y, [("preset", f"{name} (default)")])

    # as in an attention-block study: three presets within 0.2 ms and 2x in quality of each other
    presets = [star("lightvit", 5.85, 1.6e6), star("hilo", 5.95, 1.05e6), star("vit", 5.3, 5.7e5)]
    others = {"infeasible": [star("a", 5.6, 6e7), star("b", 5.5, 7.3e4)], "feasible": [star("c", 1.0, 1e5)]}
    xs = [m.x for ms in others.values() for m in ms] + [m.x for m in presets]
    sides = _label_sides(presets, others, xs, False)
    assert set(sides) <= set(LABEL_SIDES)
    to_x = _to_fraction(xs, False, from_zero=True)
    to_y = _to_fraction([m.y for m in [*presets, *others["infeasible"], *others["feasible"]]], True, from_zero=False)
    boxes = [
        _label_box(side, 800 * to_x(m.x), 440 * (1 - to_y(m.y)), 7.0 * len(f"{m.id} (default)"))
        for side, m in zip(sides, presets, strict=True)
    ]
    assert all(_overlap(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert all(0 <= box[0] and box[2] <= 800 for box in boxes)  # none runs past the plot's right edge
