"""Report layout and wording: the phone view (legends under the plot, no sideways page scroll), the gap section's
rank correlations and names, the flagged colour, inline code in notes and the units of input sizes.

The Chromium test opens a report of hand-built designs inside an iframe, which gives a true 390 px viewport (a
headless window is never narrower than 500 px), then widens the iframe to 1400 px.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from effscope.report.contents import report_data
from effscope.report.data import Point, Source
from effscope.report.html import render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

LONG_OS = "Linux-6.18.44-fc-v669-x86_64-with-glibc2.36-and-a-few-more-parts-that-never-wrap"
LONG_COMMAND = "effscope profile pvtv2_b0 --db /a/very/long/path/that/has/no/space/in/it/records-database-file.db"


def _design(target, family, kind, size, lat, macs, flags=(), **more) -> Point:
    return Point(
        id=f"{target} {size}x{size}",
        target=target,
        family=family,
        kind=kind,
        size=(size, size),
        numbers={"latency_ms_p50": lat, "latency_ms_iqr": lat * 0.2, "macs": macs, **more},
        flags=tuple(flags),
        env={"os": LONG_OS, "device_name": "AMD EPYC"},
        command=LONG_COMMAND,
        workload={"batch": 1},
    )


def _records() -> Source:
    """Four models at 224x224 px (one correlation) and two blocks at 28x28 tokens (too few), some flagged."""
    points = [
        _design("pvtv2_b0", "pvt", "model", 224, 150.0, 0.57e9, ["latency-unstable"]),
        _design("litv2_s", "litv2", "model", 224, 238.0, 3.7e9),
        _design("lightvit_t", "lightvit", "model", 224, 294.0, 0.78e9, ["latency-unstable"]),
        _design("deit_t", "deit", "model", 224, 120.0, 1.3e9),
        _design("hilo", "litv2", "block", 28, 22.7, 0.17e9),
        _design("vit", "vit", "block", 28, 12.3, 0.31e9),
    ]
    return Source("records", "r", points, "r.db")


def _study_like(n: int, batch: int = 1, throughput_for: int | None = None) -> Source:
    """`n` hilo blocks (family litv2) at one workload; throughput for the first `throughput_for` (all: None)."""
    points = []
    for i in range(n):
        more = {}
        if throughput_for is None or i < throughput_for:
            more["throughput_img_s"] = 1000.0 * batch / (1 + i) * 1.1
        p = _design("hilo", "litv2", "block", 14, 1.0 + i, 1e6 * (1 + i) ** 2, **more)
        p.id, p.workload = f"trial {i}", {"batch": batch}
        points.append(p)
    return Source("records", "s", points)


# ---------------------------------------------------------------------------------------------- item 4: the gap


def test_no_rank_correlation_is_printed_for_fewer_than_4_designs():
    from effscope.report.sections.gap import gap_figure, shown_correlations

    gap = report_data(_records()).gap
    rows = {r[0]: r for r in shown_correlations(gap).rows}
    assert rows["all designs at 224x224 px"][1:4] == [4, 0.0, 0.0]  # 4 designs: printed
    assert rows["all designs at 28x28 tokens"][1:] == [2, "too few designs (2) for a rank correlation", ""]
    page = render(report_data(_records()))
    assert ">too few designs (2) for a rank correlation</td>" in page
    assert ">-1</td>" not in page  # n = 2 is always ±1: never printed

    three = report_data(_study_like(3)).gap
    assert shown_correlations(three).rows[0][2] == "too few designs (3) for a rank correlation"
    title = gap_figure(three).layout.annotations[0].text
    assert "too few designs (3) for a rank correlation" in title and "ρ" not in title
    four = gap_figure(report_data(_study_like(4)).gap).layout.annotations[0].text
    assert "Spearman ρ = 1, Kendall τ = 1 (n = 4)" in four


def test_the_throughput_correlation_counts_its_own_designs():
    from effscope.report.sections.gap import gap_figure, shown_correlations

    gap = report_data(_study_like(5, batch=8, throughput_for=3)).gap  # 5 latencies, 3 throughputs
    row = shown_correlations(gap).rows[0]
    assert row[1] == 5 and isinstance(row[2], float)
    assert row[4:] == ["too few designs (3) for a rank correlation", ""]
    titles = [a.text for a in gap_figure(gap).layout.annotations]
    assert "Spearman ρ" in titles[0] and "too few designs (3)" in titles[1]


def test_gap_series_name_the_target_where_the_family_would_mislead_and_hover_names_the_design():
    from effscope.report.sections.gap import gap_figure

    fig = gap_figure(report_data(_records()).gap)
    names = [t.name for t in fig.data]
    assert "hilo (litv2 family) · 28x28 tokens" in names  # not "litv2 · 28x28"
    assert "pvtv2_b0 (pvt family) · 224x224 px" in names
    assert "vit · 28x28 tokens" in names  # the target is the family's namesake: nothing added
    hilo = fig.data[names.index("hilo (litv2 family) · 28x28 tokens")]
    assert list(hilo.text) == ["hilo 28x28"] and hilo.hovertemplate.startswith("<b>%{text}</b>")
    assert "one series per workload" not in fig.layout.annotations[0].text  # it is one per family and workload
    one = gap_figure(report_data(_study_like(4)).gap)
    assert one.layout.annotations[0].text.startswith("latency vs MACs: hilo (litv2 family)<br>")
    assert one.data[0].name == "hilo (litv2 family)"


# ---------------------------------------------------------------------------------- item 9: units and wording


def test_input_sizes_say_tokens_for_blocks_and_px_for_models():
    data = report_data(_records())
    assert dict((r[0], r[1]) for r in data.provenance.rows)["input sizes"] == "224x224 px | 28x28 tokens"
    assert any(n.startswith("The designs were measured under 2 workloads (224x224 px; 28x28 tokens)") for n in
               data.gap.notes)  # fmt: skip


def test_backticks_in_notes_and_hints_render_as_code_and_stay_escaped():
    from effscope.report.markup import notes_html

    assert notes_html(["see `effscope export` for <all>"]) == (
        '<p class="note">see <code>effscope export</code> for &lt;all&gt;</p>'
    )
    assert notes_html(["`a<b & c`"]) == '<p class="note"><code>a&lt;b &amp; c</code></p>'
    assert notes_html(["a lone ` stays"]) == '<p class="note">a lone ` stays</p>'
    data = report_data(_study_like(4))
    page = render(data)
    assert "<code>effscope export</code>" in page and "`effscope export`" not in page
    data.scaling, data.absent["scaling"] = None, "Left out: run `effscope profile vit --size 7 14` first."
    assert '<p class="hint">Left out: run <code>effscope profile vit --size 7 14</code> first.</p>' in render(data)


# ---------------------------------------------------------------------------------- item 13: the flagged colour


def test_flagged_designs_are_not_drawn_in_the_best_colour():
    from effscope.report.figures import BEST, FEASIBLE, FLAGGED, PALETTE
    from effscope.report.sections.trust import iqr_figure

    fig = iqr_figure(report_data(_records()).trust)
    colours = {t.name: t.marker.color for t in fig.data}
    assert colours == {"no flags": FEASIBLE, "flagged (see the table)": FLAGGED}
    assert FLAGGED not in (BEST, FEASIBLE) and FLAGGED in PALETTE[:7]  # Okabe-Ito: colour-blind safe


# ------------------------------------------------------------------------------------ item 5: the phone view


def test_the_facts_table_scrolls_in_its_own_wrapper_and_wraps_long_values():
    page = render(report_data(_records()))
    assert '<div class="table-wrap"><table class="facts">' in page
    assert "table.facts td{overflow-wrap:anywhere}" in page


PROBE = """<script>
function state(){var d=document.getElementById('f').contentDocument,out={width:d.documentElement.scrollWidth,
client:d.documentElement.clientWidth,errors:d.defaultView.effscopeErrors,figures:{}};
d.querySelectorAll('.js-plotly-plot').forEach(function(gd){var L=gd._fullLayout,box=gd.getBoundingClientRect();
var f={height:L.height,css:gd.parentElement.style.height,legend:L.showlegend?L.legend.orientation:null};
if(L.showlegend){var lg=gd.querySelector('g.legend').getBoundingClientRect(),xt=gd.querySelector('.g-xtitle');
var next=gd.parentElement.nextElementSibling;f.legendTop=lg.top;f.legendBottom=lg.bottom;f.legendRight=lg.right;
f.xtitleBottom=xt?xt.getBoundingClientRect().bottom:box.top;f.boxBottom=box.bottom;f.boxRight=box.right;
f.nextTop=next?next.getBoundingClientRect().top:1e9;}
out.figures[gd.id]=f;});return out;}
window.addEventListener('load',function(){setTimeout(function(){var r={phone:state()};
var f=document.getElementById('f');f.style.width='1400px';
f.contentWindow.dispatchEvent(new Event('resize'));  // headless --dump-dom runs no rendering steps to send it
setTimeout(function(){r.desktop=state();var p=document.createElement('pre');p.id='probe';
p.textContent=JSON.stringify(r);document.body.appendChild(p);},1500);},1500);});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_on_a_phone_legends_sit_under_the_plot_and_the_page_never_scrolls_sideways(tmp_path):
    report = tmp_path / "records.html"
    report.write_text(render(report_data(_records())), encoding="utf-8")
    wrapper = tmp_path / "phone.html"
    wrapper.write_text(
        f'<html><head><meta charset="utf-8">{PROBE}</head><body style="margin:0">'
        '<iframe id="f" src="records.html" style="width:390px;height:900px;border:0"></iframe></body></html>',
        encoding="utf-8",
    )
    seen = _probe(wrapper, tmp_path, "1500,900", 15000)
    phone, desktop = seen["phone"], seen["desktop"]
    assert phone["errors"] == [] and desktop["errors"] == []
    assert phone["client"] == 390 and phone["width"] <= 390, "the page scrolls sideways on a phone"
    with_legend = [k for k, f in desktop["figures"].items() if f["legend"]]
    assert {"fig-gap", "fig-iqr"} <= set(with_legend)
    for key in with_legend:
        f, wide = phone["figures"][key], desktop["figures"][key]
        assert f["legend"] == "h", key
        assert f["legendTop"] >= f["xtitleBottom"] - 1, f"{key}: the legend covers the plot or its x-axis title"
        assert f["legendBottom"] <= f["nextTop"] + 1, f"{key}: the legend covers what follows the figure"
        assert f["legendRight"] <= 390 + 1, f"{key}: the legend is cut off on the right"
        assert f["height"] > wide["height"]  # grown by the legend's rows, not squeezed
        # widened again: each figure's own legend (right of the plot) and height come back
        assert wide["legend"] == "v", key
    for key, height in (("fig-gap", 500), ("fig-iqr", 420)):  # the figure's own height, and its wrapper's
        assert (desktop["figures"][key]["height"], desktop["figures"][key]["css"]) == (height, f"{height}px"), key
        assert phone["figures"][key]["css"] == f"{phone['figures'][key]['height']}px", key
    no_legend = [k for k, f in desktop["figures"].items() if not f["legend"]]
    for key in no_legend:  # untouched: same height on both widths
        assert phone["figures"][key]["height"] == desktop["figures"][key]["height"], key


def test_figure_divs_keep_the_fixed_height_wrapper_the_phone_script_grows():
    """The phone script grows a figure through the div plotly's to_html wraps it in (it has a fixed height)."""
    from effscope.report.figures import figure_html
    from effscope.report.sections.trust import iqr_figure

    div = figure_html(iqr_figure(report_data(_records()).trust), "fig-iqr")
    assert re.match(r'<div style="height:420px; width:100%;">\s*<div id="fig-iqr"', div)
    page = render(report_data(_records()))
    assert "matchMedia('(max-width: 600px)')" in page and "gd.parentElement.style.height" in page
    assert page.index("window.matchMedia('(max-width") > page.index('id="fig-iqr"')  # runs after the figures


# -------------------------------------------- the phone view: long axis titles, panels, parallel coordinates


PROXY = {
    "name": "synflow",
    "label": "synflow (zero-cost proxy, not accuracy)",
    "direction": "maximize",
    "is_proxy": True,
}
BUDGETS = [{"name": "latency", "statistic": "latency_ms_p90", "limit": limit, "unit": "ms"} for limit in (2.0, 1.0)]


def _study() -> Source:
    """12 trials of 6 knobs under two p90 budgets: the front's x title names the budgets' statistic (a long title),
    and the tighter budget's label, right-aligned to its line near the plot's left edge, sticks out of a phone."""
    points = []
    for i in range(12):
        lat = 0.9 + 0.15 * i
        knobs = {
            "heads": (4, 6)[i % 2],
            "lofi_heads": i % 5,
            "window_size": (1, 2, 7)[i % 3],
            "head_dim": 16 + 16 * (i % 2),
        }
        knobs |= {"mlp_ratio": (2.0, 3.0, 4.0)[i % 3], "activation": ("gelu", "relu", "hardswish")[i % 3]}
        numbers = {"quality": 7.4e5 + 9e4 * ((i * 7) % 12), "latency_ms_p50": lat, "latency_ms_p90": lat * 1.1}
        numbers |= {"latency_ms_iqr": 0.05 * lat, "macs": 2e7 * (1 + i), "params": 1e5 * (1 + i)}
        points.append(
            Point(id=f"trial {i}", target="hilo", family="litv2", kind="block", knobs=knobs, numbers=numbers,
                  status="measured", constraints={"latency": lat * 1.1 / 2.0 - 1}, trial=i, record_uid=f"r{i}",
                  size=(14, 14), workload={"batch": 1}, env={"device_name": "AMD EPYC"})
        )  # fmt: skip
    attrs = {"target": "hilo", "kind": "block", "objectives": [PROXY], "budgets": BUDGETS, "command": "effscope"}
    return Source("study", "s", points, attrs=attrs, directions=["maximize", "minimize"])


def _scaling_records() -> Source:
    """Two blocks at three token grids with their peak memory: the scaling figure's two panels side by side."""
    points = []
    for target, family, slope in (("vit", "vit", 1.6), ("hilo", "litv2", 1.1)):
        for n in (14, 28, 56):
            p = _design(target, family, "block", n, 0.01 * n**slope, 2e5 * n * n, peak_rss_bytes=3e5 * n * n)
            p.id = f"{target} {n}x{n}"
            points.append(p)
    return Source("records", "r", points, "r.db")


def test_on_a_phone_parallel_coordinates_run_across_the_page_one_axis_under_another():
    from effscope.report.sections.insight import _spread_across, insight_section, parallel_figure

    ins = insight_section(_study())
    wide, phone = parallel_figure(ins), parallel_figure(ins, phone=True)
    n = len(ins.axes)
    assert n == 8
    # side by side on a wide page: vertical axes, named by x ticks; on a phone: horizontal axes, one under another
    assert all(s.x0 == s.x1 for s in wide.layout.shapes) and list(wide.layout.xaxis.tickvals) == list(range(n))
    assert [(s.x0, s.x1, s.y0, s.y1) for s in phone.layout.shapes] == [(0, 1, i, i) for i in range(n)]
    assert list(phone.layout.yaxis.range) == [n - 1 + 0.4, -0.5]  # the first axis on top
    names = [a for a in phone.layout.annotations if a.text.startswith("<b>")]
    assert [a.text for a in names] == [f"<b>{html.escape(a.name)}</b>" for a in ins.axes]
    assert all((a.x, a.xanchor, a.yanchor) == (0, "left", "bottom") for a in names)  # the name above its axis
    # a phone's tick labels never print on top of each other: the ends flush with the axis' ends, a crowded one dropped
    ticks = [(0.0, "737,438"), (0.15, "897,625"), (0.3, "995,816"), (0.6, "1.2M"), (1.0, "1,770,723")]
    assert _spread_across(ticks) == [
        (0.0, "737,438", "left"), (0.3, "995,816", "center"), (0.6, "1.2M", "center"), (1.0, "1,770,723", "right")
    ]  # fmt: skip
    assert _spread_across([(0.0, "a"), (0.5, "b"), (0.98, "c"), (1.0, "end")]) == [
        (0.0, "a", "left"), (0.5, "b", "center"), (1.0, "end", "right")
    ]  # fmt: skip
    # on a phone the page draws the traces turned (x for y) with the phone's layout: the traces' data comes once
    for w, t in zip(wide.data, phone.data, strict=True):
        assert (list(t.x), list(t.y)) == (list(w.y), list(w.x)) and t.name == w.name
    page = render(report_data(_study()))
    assert page.count('id="fig-') == page.count("Plotly.newPlot(") and "fig-parallel-" not in page  # one figure
    call = re.search(r'Plotly.newPlot\(\s*"fig-parallel",\s*', page)
    data, end = json.JSONDecoder().raw_decode(page, call.end())
    layout, _ = json.JSONDecoder().raw_decode(page, page.index("{", end))
    assert len(data) == len(wide.data) and "template" in layout and "template" not in layout["meta"]["phone"]
    assert layout["meta"]["phone"] == {k: v for k, v in json.loads(phone.layout.to_json()).items() if k != "template"}
    assert "function turn(gd,p)" in page


PHONE_PROBE = """<script>
function state(id){var d=document.getElementById(id).contentDocument,out={width:d.documentElement.scrollWidth,
errors:d.defaultView.effscopeErrors,figures:{}};
d.querySelectorAll('.js-plotly-plot').forEach(function(gd){var L=gd._fullLayout,box=gd.getBoundingClientRect();
var f={shown:!!gd.offsetParent,left:box.left,right:box.right,top:box.top,bottom:box.bottom,height:L.height,
plotWidth:L.width,divWidth:gd.clientWidth,titles:[],notes:[],domains:{},
shapes:(L.shapes||[]).map(function(s){return [s.x0,s.x1,s.y0,s.y1];})};
gd.querySelectorAll('[class^="g-"][class$="title"] text').forEach(function(t){var r=t.getBoundingClientRect();
f.titles.push({text:t.textContent,lines:t.querySelectorAll('tspan.line').length||1,left:r.left,right:r.right,
top:r.top,bottom:r.bottom});});
gd.querySelectorAll('g.annotation').forEach(function(a){var r=a.getBoundingClientRect();
f.notes.push([a.textContent,r.left,r.right,r.top,r.bottom]);});
Object.keys(L).filter(function(k){return /^[xy]axis\\d*$/.test(k);}).forEach(function(k){f.domains[k]=L[k].domain;});
out.figures[gd.id]=f;});return out;}
function all(){return {study:state('s'),records:state('r')};}
window.addEventListener('load',function(){setTimeout(function(){var r={phone:all()};
['s','r'].forEach(function(id){var f=document.getElementById(id);f.style.width='1400px';
f.contentWindow.dispatchEvent(new Event('resize'));});
setTimeout(function(){r.desktop=all();var p=document.createElement('pre');p.id='probe';
p.textContent=JSON.stringify(r);document.body.appendChild(p);},2000);},2000);});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_on_a_phone_axis_titles_fit_panels_stack_and_parallel_coordinates_turn(tmp_path):
    (tmp_path / "study.html").write_text(render(report_data(_study())), encoding="utf-8")
    (tmp_path / "records.html").write_text(render(report_data(_scaling_records())), encoding="utf-8")
    frames = "".join(
        f'<iframe id="{i}" src="{name}" style="width:390px;height:900px;border:0;display:block"></iframe>'
        for i, name in (("s", "study.html"), ("r", "records.html"))
    )
    wrapper = tmp_path / "phone.html"
    wrapper.write_text(f'<html><head><meta charset="utf-8">{PHONE_PROBE}</head><body style="margin:0">{frames}'
                       "</body></html>", encoding="utf-8")  # fmt: skip
    seen = _probe(wrapper, tmp_path, "1500,1900", 20000)
    front_x = "latency p90 (ms, measured; the budgets' statistic)"
    for width in ("phone", "desktop"):
        for page in ("study", "records"):
            got = seen[width][page]
            assert got["errors"] == [], (width, page, got["errors"])
            assert got["width"] <= (390 if width == "phone" else 1400), f"{page} scrolls sideways ({width})"
            for key, f in got["figures"].items():
                if f["shown"]:  # as wide as the page (a relayout must not pin the width the figure had)
                    assert f["plotWidth"] == f["divWidth"], (width, key)
                for t in f["titles"] if f["shown"] else ():  # every axis title whole, inside its figure
                    assert f["left"] - 1 <= t["left"] and t["right"] <= f["right"] + 1, (width, key, t)
                    assert f["top"] - 1 <= t["top"] and t["bottom"] <= f["bottom"] + 1, (width, key, t)
                for a in f["notes"] if f["shown"] else ():  # and every note (a budget's label, a panel's title)
                    assert f["left"] - 1 <= a[1] and a[2] <= f["right"] + 1, (width, key, a)
    phone, desktop = seen["phone"], seen["desktop"]
    # a title longer than its axis breaks into lines on a phone, and is one line again on a wide page
    front = {t["text"]: t["lines"] for t in desktop["study"]["figures"]["fig-front"]["titles"]}
    assert front[front_x] == 1
    wrapped = [t for t in phone["study"]["figures"]["fig-front"]["titles"] if t["lines"] > 1]
    assert [t["text"].replace(" ", "") for t in wrapped] == [front_x.replace(" ", "")]
    # two panels side by side on a wide page, one above the other on a phone
    wide, tall = desktop["records"]["figures"]["fig-scaling"], phone["records"]["figures"]["fig-scaling"]
    assert wide["domains"]["xaxis"][1] <= wide["domains"]["xaxis2"][0] and wide["height"] == 500
    assert tall["domains"]["xaxis"] == tall["domains"]["xaxis2"] == [0, 1]
    assert tall["domains"]["yaxis2"][1] < tall["domains"]["yaxis"][0] and tall["height"] >= 1000
    # parallel coordinates: axes side by side on a wide page, one under the other on a phone, where no labels overlap
    wide, tall = desktop["study"]["figures"]["fig-parallel"], phone["study"]["figures"]["fig-parallel"]
    assert [x0 == x1 for x0, x1, _, _ in wide["shapes"]] == [True] * 8 and wide["height"] == 480
    assert [(x0, x1, y0 == y1) for x0, x1, y0, y1 in tall["shapes"]] == [(0, 1, True)] * 8
    assert tall["height"] > 600 and "heads" in tall["notes"][0][0]
    assert tall["notes"][0][3] - tall["top"] < 70, "a margin of the wide layout is left above the first axis"
    notes = tall["notes"]
    assert len(notes) > 8 + 16
    for i, a in enumerate(notes):
        assert 0 <= a[1] and a[2] <= 390, f"{a[0]} is cut off"
        for b in notes[i + 1 :]:
            overlap = min(a[2], b[2]) - max(a[1], b[1]) > 1 and min(a[4], b[4]) - max(a[3], b[3]) > 1
            assert not overlap, f"'{a[0]}' and '{b[0]}' print on top of each other"


def _probe(wrapper, tmp_path, window: str, virtual_ms: int) -> dict:
    """Open the wrapper page in headless Chromium and return what its probe script wrote into <pre id="probe">."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += ["--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'profile'}"]
    cmd = [CHROMIUM, *flags, f"--window-size={window}", f"--virtual-time-budget={virtual_ms}", "--dump-dom"]
    r = subprocess.run([*cmd, wrapper.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, r.stderr[-3000:]
    return json.loads(html.unescape(m.group(1)))
