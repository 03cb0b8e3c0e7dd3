"""The metrics catalogue: a number declared once reaches the Record's flat row, the report's hover text and labels;
a flag declared once reaches the report's flag table; the roofline fraction is shown through it."""

from __future__ import annotations

import pytest

from effscope import metrics
from effscope.errors import SpecError
from effscope.metrics import Metric, register_flag, register_metric
from effscope.profile.record import Record
from effscope.report._load import records_source
from effscope.report.contents import report_data
from effscope.report.data import hover


@pytest.fixture()
def toy():
    """A metric and a flag declared by 'user code', removed again afterwards."""
    metric = register_metric(Metric("toy_ms_p50", "toy latency p50 (ms)", help="a toy"))
    register_flag("toy-flag", "the toy measurement was noisy")
    yield metric
    metrics.METRICS.pop("toy_ms_p50")
    metrics.FLAGS.pop("toy-flag")


def _record(target: str, **latency) -> Record:
    record = Record(target=target, kind="block", workload={"device": "cpu", "batch": 1, "size": [7, 7]})
    record.counts = {"params": 1000, "macs": 2_000_000}
    record.latency = {"latency_ms_p50": 1.0, **latency}
    record.roofline = {"roofline_fraction": 0.25}
    record.flags = ["toy-flag"]
    return record


def test_a_metric_declared_once_reaches_the_flat_row_the_hover_and_the_flag_table(toy):
    record = _record("vit", toy_ms_p50=3.5)
    assert record.flat()["toy_ms_p50"] == 3.5
    source = records_source([record, _record("hilo", toy_ms_p50=4.0)])
    lines = dict(hover(source.points[0]))
    assert lines["toy latency p50 (ms)"] == 3.5
    assert lines["share of the roofline bound"] == 0.25  # the roofline fraction, through the catalogue
    data = report_data(source)
    (flag_row,) = [row for row in data.trust.flags.rows if row[0] == "toy-flag"]
    assert flag_row[1] == "the toy measurement was noisy"


def test_a_name_is_declared_once(toy):
    assert register_metric(Metric("toy_ms_p50", "toy latency p50 (ms)", help="a toy")) == toy  # the same: fine
    with pytest.raises(SpecError, match="already declared differently"):
        register_metric(Metric("toy_ms_p50", "another label"))
    with pytest.raises(SpecError, match="direction must be minimize, maximize or none"):
        register_metric(Metric("toy_2", "x", direction="up"))
    assert "toy_2" not in metrics.METRICS


def test_budget_statistics_come_from_the_catalogue():
    assert metrics.budgetable() == [
        "latency_ms_p50",
        "latency_ms_p90",
        "latency_ms_p99",
        "latency_ms_mean",
        "latency_graph_ms_p50",
        "latency_graph_ms_p90",
        "train_step_ms_p50",
        "train_step_ms_p90",
    ]


def test_a_section_declared_in_one_place_is_built_rendered_and_listed():
    from effscope.report.html import render
    from effscope.report.sections import Section, register_section, unregister_section

    def build(source):  # data without plotly, None when there is nothing to show
        slow = [p.id for p in source.points if (p.get("latency_ms_p50") or 0) > 2.0]
        return {"slow": slow} if slow else None

    def render_slow(data):
        return "<ul>" + "".join(f"<li>{name}</li>" for name in data["slow"]) + "</ul>"

    register_section(Section("slow", "Designs over 2 ms", build, render_slow, after="trust"))
    try:
        with pytest.raises(SpecError, match="report section 'slow' exists already"):
            register_section(Section("slow", "again", build, render_slow))
        with pytest.raises(SpecError, match="after='nowhere' names no section"):
            register_section(Section("other", "x", build, render_slow, after="nowhere"))
        slow, fast = _record("vit", latency_ms_p50=3.0), _record("hilo")
        data = report_data(records_source([slow, fast]))
        assert data.registered == {"slow": {"slow": [records_source([slow]).points[0].id]}}
        page = render(data)
        assert "Designs over 2 ms</h2><ul><li>" in page and 'href="#slow"' in page
        trust, mine, provenance = (page.index(t) for t in ("How far to trust", "Designs over 2 ms", "Provenance</h2>"))
        assert trust < mine < provenance  # placed after the section it names
        assert report_data(records_source([fast])).registered == {}  # nothing to show: no section
    finally:
        unregister_section("slow")
