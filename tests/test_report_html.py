"""Reports end to end: a small real CPU study and its Records, rendered and opened in a real headless Chromium.

The study follows the search/report contract (effscope/search writes the same attributes); its designs are tiny
HiLo and ViT blocks measured through the profiler's worker with short time caps. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from effscope.report import ReportError, build_report

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STUDY = "hilo-tiny"
TOKENS = (14, 14)
# (knobs, preset): HiLo designs at 14x14 tokens; the last is LITv2's published block setting.
DESIGNS = [
    ({"heads": 2, "head_dim": 16, "lofi_heads": 0, "window_size": 2}, None),
    ({"heads": 2, "head_dim": 16, "lofi_heads": 1, "window_size": 2}, None),
    ({"heads": 2, "head_dim": 16, "lofi_heads": 2, "window_size": 2}, None),
    ({"heads": 4, "head_dim": 16, "lofi_heads": 2, "window_size": 7}, None),
    ({"heads": 4, "head_dim": 16, "lofi_heads": 4, "window_size": 2}, None),
    ({"heads": 4, "head_dim": 32, "lofi_heads": 3, "window_size": 2}, "LITv2 HiLo (C=128)"),
]
PROXY = {"name": "params", "label": "parameter count (proxy, not accuracy)", "direction": "maximize", "is_proxy": True}
LATENCY_OBJ = {
    "name": "latency_ms_p50",
    "label": "median latency (ms, measured)",
    "direction": "minimize",
    "is_proxy": False,
}


def _measure(db: Path) -> list:
    """Measure the study's designs and a few scaling points (vit, HiLo at 7x7) into the record store."""
    from effscope.profile.measure import Options
    from effscope.profile.record import Workload
    from effscope.profile.run import Plan, profile
    from effscope.profile.store import RecordStore
    from effscope.profile.target import resolve_target
    from effscope.profile.worker import Worker

    store = RecordStore(str(db))
    # One reused worker process (fast; CPU peak RSS is then missing, as the profiler says) except for two fresh
    # ones: the first design at 14x14 and 7x7, whose peak memory the scaling figure plots.
    reuse = {"fresh_process": False} if "fresh_process" in Options.__dataclass_fields__ else {}
    quick = Options(max_time_s=0.2, window_s=0.2, reference=False, **reuse)
    with_reference = Options(max_time_s=0.2, window_s=0.2, **reuse)
    fresh = Options(max_time_s=0.2, window_s=0.2, reference=False)
    worker = Worker()
    try:
        study_records = []
        for i, (knobs, _) in enumerate(DESIGNS):
            plan = Plan(resolve_target("hilo", knobs), Workload(size=TOKENS, threads=1))
            opts = with_reference if i % 3 == 0 else quick  # the reference module beside some: drift data
            provenance = {"command": "pytest tests/test_report_html.py", "study": STUDY, "trial": i}
            study_records += profile([plan], opts, store=store, worker=worker, provenance=provenance)
        small = {"heads": 2, "head_dim": 16}
        extra = [Plan(resolve_target("vit", small), Workload(size=(s, s), threads=1)) for s in (7, 14)]
        profile(extra, quick, store=store, worker=worker, provenance={"command": "pytest (scaling)"})
        # the first design again at 7x7 in a fresh process: with the first job (also fresh) a memory-scaling pair
        hilo_7 = Plan(resolve_target("hilo", DESIGNS[0][0]), Workload(size=(7, 7), threads=1))
        profile([hilo_7], fresh, store=store, worker=worker, provenance={"command": "pytest (scaling)"})
    finally:
        worker.close()
    return study_records


def _make_study(db: Path, records: list) -> None:
    """An Optuna study as `effscope search` writes it: values, constraints, user attributes, one invalid trial."""
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    p90s = sorted(r.latency["latency_ms_p90"] for r in records)
    loose, tight = p90s[-2] * 1.01, statistics.median(p90s) * 1.01  # the big preset is over the loose budget
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{db}", directions=["maximize", "minimize"])
    study.set_user_attr("target", "hilo")
    study.set_user_attr("kind", "block")
    study.set_user_attr("workload", {"device": "cpu", "dtype": "fp32", "batch": 1, "size": list(TOKENS)})
    study.set_user_attr("device_name", records[0].env.get("device_name"))
    study.set_user_attr("objectives", [PROXY, LATENCY_OBJ])
    study.set_user_attr(
        "budgets",
        [
            {"name": "latency", "statistic": "latency_ms_p90", "limit": loose, "unit": "ms"},
            {"name": "latency", "statistic": "latency_ms_p90", "limit": tight, "unit": "ms"},
        ],
    )
    study.set_user_attr("command", "effscope search hilo --budget-ms ... (built by the test)")
    study.set_user_attr("effscope_version", "0.1.0")
    study.set_user_attr("effscope_space", {"name": "hilo-tiny", "path": "(test)", "toml": "[knobs]\n"})
    # Issue 6 (predictor) and `effscope calibrate` add these; stand-ins here so the Chromium test covers the figures.
    study.set_user_attr("predictor", {"name": "stand-in", "statistic": "latency_ms_p50"})
    study.set_user_attr("calibration", {"params": {"kendall_tau": 0.41, "n": 12, "train_steps": 200}})
    dists = {
        "heads": CategoricalDistribution([2, 4]),
        "head_dim": CategoricalDistribution([16, 32]),
        "lofi_heads": IntDistribution(0, 4),
        "window_size": CategoricalDistribution([2, 7]),
    }

    def add(knobs, values, constraints, attrs):
        study.add_trial(
            optuna.trial.create_trial(
                params={k: knobs[k] for k in dists},
                distributions=dists,
                values=values,
                constraints=constraints,
                user_attrs={"knobs": attrs.pop("full_knobs", knobs), **attrs},
            )
        )

    for (knobs, preset), r in zip(DESIGNS, records, strict=True):
        p50, p90 = r.latency["latency_ms_p50"], r.latency["latency_ms_p90"]
        attrs = {
            "full_knobs": r.knobs,  # the contract stores every knob of the design, not only the searched ones
            "record_uid": r.uid,
            "status": "measured",
            "quality": r.counts["params"],
            "quality_name": "params",
            "flags": r.flags,
            **{k: r.flat().get(k) for k in ("latency_ms_p50", "latency_ms_p90", "latency_ms_iqr", "params", "macs")},
            "peak_mem_bytes": None,
            "throughput_img_s": r.throughput.get("throughput_img_s"),
        }
        if preset:
            attrs["preset"] = preset
        attrs["predicted_latency_ms"] = p50 * (0.95 + 0.04 * len(study.trials))  # stand-in predictor, 5-19 % off
        add(knobs, [float(r.counts["params"]), p50], _constraints(p90 / loose - 1), attrs)
    first = DESIGNS[0][0]
    cached = {**first}
    add(
        cached,
        [float(records[0].counts["params"]), records[0].latency["latency_ms_p50"]],
        _constraints(records[0].latency["latency_ms_p90"] / loose - 1),
        {"record_uid": records[0].uid, "status": "cached", "quality": records[0].counts["params"]},
    )
    bad = {"heads": 4, "head_dim": 16, "lofi_heads": 1, "window_size": 7}
    add(
        bad,
        [0.0, 1e9],
        _constraints(0.0, valid=1.0),
        {"record_uid": None, "status": "invalid", "reason": "test: invalid point"},
    )


def _constraints(latency: float, valid: float = 0.0) -> dict[str, float]:
    return {"latency": latency, "memory": 0.0, "valid": valid}


class _PlotProbe(HTMLParser):
    """Which plot divs hold a rendered plotly SVG, and the probe's JSON (errors, page height)."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: dict[str, int] = {}
        self.sections: list[str] = []
        self._stack: list[str | None] = []  # plot id for each open div (None outside plots)
        self._in_probe = False
        self.probe = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.sections.append(a["id"])
        if tag == "pre" and a.get("id") == "probe":
            self._in_probe = True
        if tag == "div":
            if "plotly-graph-div" in (a.get("class") or ""):
                self.plots.setdefault(a["id"], 0)
                self._stack.append(a["id"])
            else:
                self._stack.append(self._stack[-1] if self._stack else None)
        if tag == "svg" and "main-svg" in (a.get("class") or "") and self._stack and self._stack[-1]:
            self.plots[self._stack[-1]] += 1

    def handle_endtag(self, tag):
        if tag == "div" and self._stack:
            self._stack.pop()
        if tag == "pre":
            self._in_probe = False

    def handle_data(self, data):
        if self._in_probe:
            self.probe += data


PROBE = """<script>
window.__probe={errors:[]};
(function(){var ce=console.error;console.error=function(){window.__probe.errors.push('console.error: '+
Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments);};})();
window.addEventListener('error',function(e){window.__probe.errors.push('error: '+e.message);});
window.addEventListener('unhandledrejection',function(e){window.__probe.errors.push('rejection: '+e.reason);});
window.addEventListener('load',function(){setTimeout(function(){
var hover='',f=document.getElementById('fig-front');
if(f&&f.data){var i=f.data.findIndex(function(t){return /Pareto/.test(t.name||'');});
if(i>=0){Plotly.Fx.hover(f,[{curveNumber:i,pointNumber:0}]);hover=f.querySelector('.hoverlayer').textContent;}}
var p=document.createElement('pre');p.id='probe';
p.textContent=JSON.stringify({errors:window.__probe.errors,height:document.documentElement.scrollHeight,
banner:document.getElementById('effscope-errors').hidden,hover:hover});document.body.appendChild(p);},1000);});
</script>"""

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _chromium(args: list[str], profile_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _open_in_chromium(report: Path, tmp: Path, shot: Path) -> tuple[_PlotProbe, dict]:
    """Load the report (with a probe script) headless; return what rendered, then screenshot the full page."""
    probed = report.with_name(report.stem + ".probe.html")
    text = report.read_text(encoding="utf-8")
    probed.write_text(text.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + PROBE, 1), encoding="utf-8")
    r = _chromium(
        ["--window-size=1300,900", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp / "chromium-dom"
    )
    parser = _PlotProbe()
    parser.feed(r.stdout)
    assert parser.probe, f"the page never finished loading; chromium stderr:\n{r.stderr[-3000:]}"
    probe = json.loads(parser.probe)
    uncaught = [line for line in r.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    probe["errors"] += uncaught
    height = min(int(probe["height"]) + 40, 16000)
    s = _chromium(
        [f"--window-size=1300,{height}", "--virtual-time-budget=10000", f"--screenshot={shot}", report.as_uri()],
        tmp / "chromium-shot",
    )
    assert shot.is_file(), s.stderr[-3000:]
    return parser, probe


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Measure once, make both reports once (study and records), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("report")
    db = tmp / "effscope.db"
    t0 = time.perf_counter()
    records = _measure(db)
    _make_study(db, records)
    t1 = time.perf_counter()
    study_html = build_report(output=tmp / "study.html", storage=str(db), study=STUDY, command="pytest")
    records_html = build_report(output=tmp / "records.html", db=str(db))
    print(f"measured in {t1 - t0:.1f} s, rendered in {time.perf_counter() - t1:.1f} s")
    return {"tmp": tmp, "db": db, "study": study_html, "records": records_html}


def test_study_report_is_self_contained_and_small(reports):
    text = reports["study"].read_text(encoding="utf-8")
    assert reports["study"].stat().st_size < 5_000_000
    assert text.count("Plotly.newPlot") >= 6
    assert "<script src=" not in text  # offline: nothing to fetch
    assert len(re.findall(r"\* plotly\.js v\d", text)) == 1  # plotly.js inlined once for all figures
    for section in ("summary", "front", "gap", "breakdown", "insight", "trust", "provenance"):
        assert f'<section id="{section}">' in text
    assert "parameter count (proxy, not accuracy)" in text
    assert "LITv2 HiLo (C=128)" in text  # the preset is labelled on the front
    assert "reference point" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
@pytest.mark.parametrize("which", ["study", "records"])
def test_report_renders_in_headless_chromium(reports, which):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"report-{which}.png"
    shutil.copy(reports[which], ARTIFACTS / f"report-{which}.html")
    parser, probe = _open_in_chromium(reports[which], reports["tmp"], shot)
    assert probe["errors"] == [], probe["errors"]
    assert probe["banner"] is True  # the report's own error banner stayed hidden
    assert parser.plots, "no plot divs found"
    empty = [pid for pid, svgs in parser.plots.items() if svgs == 0]
    assert not empty, f"plots without a rendered SVG: {empty}"
    expected = {
        "study": {"fig-front", "fig-gap", "fig-breakdown", "fig-importance", "fig-parallel", "fig-hypervolume"}
        | {"fig-iqr", "fig-prediction"},
        "records": {"fig-gap", "fig-scaling", "fig-breakdown", "fig-iqr", "fig-drift"},
    }[which]
    assert expected <= set(parser.plots), sorted(parser.plots)
    assert parser.sections[0] == "summary" and parser.sections[-1] == "provenance"
    if which == "study":  # hovering a front design shows its knobs and numbers
        for text in ("knob lofi_heads", "knob window_size", "latency p50 (ms)", "latency p90 (ms)", "MACs", "params"):
            assert text in probe["hover"], probe["hover"]


def test_plotlyjs_directory_writes_one_shared_file(reports):
    out = reports["tmp"] / "shared"
    a = build_report(output=out / "a.html", db=str(reports["db"]), plotlyjs="directory")
    b = build_report(output=out / "b.html", storage=str(reports["db"]), plotlyjs="directory")
    assert sorted(p.name for p in out.iterdir()) == ["a.html", "b.html", "plotly.min.js"]
    for page in (a, b):
        assert page.stat().st_size < 500_000 and '<script src="plotly.min.js">' in page.read_text()
    c = build_report(output=out / "c.html", db=str(reports["db"]), plotlyjs="cdn")
    assert "https://cdn.plot.ly/plotly-" in c.read_text()


def test_cli_writes_a_report_and_fails_in_one_sentence(reports, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "effscope", "report", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=env,
        )

    r = cli("--storage", str(reports["db"]), "--study", STUDY)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "reports" / f"{STUDY}.html").is_file()  # default output under reports/
    r = cli("--storage", str(reports["db"]), "--study", "hilo-tiyn")
    assert r.returncode == 2
    assert "no study named 'hilo-tiyn'" in r.stderr and "did you mean 'hilo-tiny'?" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_errors_are_one_sentence(reports, tmp_path):
    import optuna

    empty_db = tmp_path / "empty.db"
    optuna.create_study(study_name="empty", storage=f"sqlite:///{empty_db}")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n")
    cases = [
        ({"storage": str(empty_db), "study": "empty"}, "has no finished trials yet"),
        ({"storage": str(tmp_path / "missing.db")}, "does not exist"),
        ({"db": str(empty_db)}, "holds no effscope Records"),
        ({"records_csv": bad_csv}, "is not an effscope Records export"),
        ({"records_csv": tmp_path / "nope.csv"}, "no such file"),
        ({}, "give one source"),
        ({"db": str(reports["db"]), "plotlyjs": "web"}, "--plotlyjs must be one of"),
        ({"records_csv": bad_csv, "study": "s"}, "--study names a search in a database"),  # was silently ignored
    ]
    for kwargs, message in cases:
        with pytest.raises(ReportError, match=re.escape(message)):
            build_report(output=tmp_path / "x.html", **kwargs)
    assert not (tmp_path / "missing.db").exists()  # reading never creates a database


def test_an_empty_study_name_is_quoted_in_the_message(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("target\nvit\n")
    with pytest.raises(ReportError) as e:
        build_report(output=tmp_path / "x.html", records_csv=csv, study="")
    assert str(e.value).endswith("a Records file has no studies (got --study '')")


def test_records_in_memory_make_a_report(reports, tmp_path):
    from effscope.profile.store import RecordStore

    records = RecordStore(str(reports["db"])).records(target="vit")
    path = build_report(output=tmp_path / "mem.html", records=records)
    assert '<section id="scaling">' in path.read_text(encoding="utf-8")
    with pytest.raises(ReportError, match="no Records to report on"):
        build_report(output=tmp_path / "none.html", records=[])


def test_csv_export_makes_the_same_kind_of_report(reports, tmp_path):
    from effscope.profile.store import RecordStore

    csv = RecordStore(str(reports["db"])).export(tmp_path / "records.csv")
    path = build_report(output=tmp_path / "csv.html", records_csv=csv)
    text = path.read_text(encoding="utf-8")
    assert '<section id="gap">' in text and '<section id="scaling">' in text


def test_a_300_trial_study_stays_under_5_mb():
    """Hover labels are written once per trace, so even a long search stays one small offline file."""
    import random

    from effscope.report.contents import report_data
    from effscope.report.data import Point, Source
    from effscope.report.html import render

    rng = random.Random(0)
    points = []
    for i in range(300):
        lat = rng.uniform(1, 30)
        knobs = {
            "heads": rng.choice([2, 4, 8]),
            "lofi_heads": rng.randint(0, 8),
            "depths": [2, 2, rng.randint(2, 8), 2],
        }
        knobs |= {"window_size": rng.choice([2, 4, 7]), "mlp_ratio": rng.choice([2.0, 4.0]), "qkv_bias": True}
        numbers = {"quality": lat**0.5 + rng.gauss(0, 0.5), "latency_ms_p50": lat, "latency_ms_p90": 1.1 * lat}
        numbers |= {"latency_ms_iqr": 0.03 * lat, "macs": lat * 1e8, "params": int(lat * 1e6), "reference_ms_p50": 5.0}
        numbers |= {"throughput_img_s": 1000 / lat, "peak_mem_bytes": lat * 1e8}
        points.append(
            Point(
                id=f"trial {i}",
                target="litv2_s",
                family="litv2",
                kind="model",
                knobs=knobs,
                numbers=numbers,
                status="measured",
                constraints={"latency": 1.1 * lat / 20 - 1, "memory": 0.0, "valid": 0.0},
                trial=i,
                record_uid=f"u{i}",
                flags=("cpu-contention",) if i % 7 == 0 else (),
                order=f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}",
                macs_by_module={"": 100, "stem": 10, "stages": 85, "stages.0": 40, "stages.1": 45, "head": 5},
            )
        )
    attrs = {"objectives": [PROXY], "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 20.0}]}
    page = render(report_data(Source("study", "big", points, attrs=attrs, directions=["maximize", "minimize"])))
    assert len(page.encode()) < 5_000_000
    assert page.count("Plotly.newPlot") == 8


def test_nothing_feasible_renders_the_least_violating_designs():
    from effscope.report.contents import report_data
    from effscope.report.data import Point, Source
    from effscope.report.html import render

    points = [
        Point(
            id=f"trial {i}",
            target="hilo",
            knobs={"lofi_heads": i},
            numbers={"quality": float(i), "latency_ms_p50": 10.0 + i, "latency_ms_p90": 11.0 + i},
            status="measured",
            constraints={"latency": (11.0 + i) / 10 - 1, "memory": 0.0, "valid": 0.0},
            trial=i,
        )
        for i in range(3)
    ]
    attrs = {"objectives": [PROXY], "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 10.0}]}
    page = render(report_data(Source("study", "s", points, attrs=attrs, directions=["maximize", "minimize"])))
    assert "No design met every budget" in page and "least violating (nothing is feasible)" in page
    assert "<h3>Least-violating designs</h3>" in page and "latency +10.0 %" in page


def test_each_design_carries_the_interval_of_the_budget_statistic_as_a_bar():
    """The Pareto plot's x is the budgeted p90; its 95 % interval is drawn through each design, so a design near a
    budget line shows whether it is across it by chance."""
    from effscope.report.contents import report_data
    from effscope.report.data import Point, Source
    from effscope.report.sections.front import front_figure

    def design(i: int, p90: float, interval: tuple[float, float] | None) -> Point:
        numbers = {"quality": float(i), "latency_ms_p50": p90 - 0.1, "latency_ms_p90": p90}
        if interval:
            numbers.update(latency_ms_p90_lo=interval[0], latency_ms_p90_hi=interval[1])
        return Point(
            id=f"trial {i}",
            target="hilo",
            knobs={"lofi_heads": i},
            numbers=numbers,
            status="measured",
            constraints={"latency": p90 / 2.0 - 1, "memory": 0.0, "valid": 0.0},
            trial=i,
        )

    points = [design(0, 1.0, (0.9, 1.2)), design(1, 1.9, (1.7, 2.2)), design(2, 1.5, None)]
    attrs = {"objectives": [PROXY], "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 2.0}]}
    front = report_data(Source("study", "s", points, attrs=attrs, directions=["maximize", "minimize"])).front
    markers = {m.id: m for ms in front.groups.values() for m in ms}
    assert markers["trial 1"].x_interval == (1.7, 2.2) and markers["trial 2"].x_interval is None
    assert any("95 % confidence interval of its latency p90" in n for n in front.notes)
    bars = {}
    for trace in front_figure(front).data:
        if trace.error_x is not None and trace.error_x.array is not None:
            for name, x, minus, plus in zip(
                trace.customdata, trace.x, trace.error_x.arrayminus, trace.error_x.array, strict=True
            ):
                bars[name[0]] = (x - minus if minus is not None else None, x + plus if plus is not None else None)
    assert bars["trial 1"] == pytest.approx((1.7, 2.2)) and bars["trial 2"] == (None, None)


# ------------------------------------------------------------------------------ figures from hand-built data


SPREAD = [(0.5, 0.6, 2.1e6), (4.0, 3.0, 2e7), (30.0, 12.0, 9e7), (400.0, 45.0, 3e8)]  # ms, IQR/median %, MACs


def _spread_designs(batch: int, families: tuple[str, ...] = ("hilo",)) -> list:
    """Designs whose latency, IQR/median and MACs each span over two decades (log axes)."""
    from effscope.report.data import Point

    return [
        Point(
            id=f"d{i}",
            target=families[i % len(families)],
            family=families[i % len(families)],
            numbers={
                "latency_ms_p50": lat,
                "latency_ms_iqr": lat * iqr / 100,
                "macs": macs,
                "throughput_img_s": batch * 1000 / lat * (1 + 0.1 * i),
            },
            workload={"batch": batch},
        )
        for i, (lat, iqr, macs) in enumerate(SPREAD)
    ]


def _number(text: str) -> float:
    """A tick label back to a number: '0.5 %' -> 0.5, '2 M' -> 2e6, '1,000' -> 1000."""
    value, _, unit = text.replace(",", "").partition(" ")
    return float(value) * {"": 1, "%": 1, "K": 1e3, "M": 1e6, "G": 1e9}[unit]


def test_log_axis_ticks_carry_their_full_values():
    from effscope.report.contents import report_data
    from effscope.report.data import Source
    from effscope.report.sections.gap import gap_figure
    from effscope.report.sections.trust import iqr_figure

    data = report_data(Source("records", "r", _spread_designs(batch=1)))
    iqr = iqr_figure(data.trust).layout.yaxis
    assert iqr.type == "log"
    assert list(iqr.ticktext) == [f"{v:g} %" for v in iqr.tickvals]
    assert {"0.5 %", "1 %", "2 %", "5 %", "10 %", "20 %", "50 %"} <= set(iqr.ticktext)
    gap = gap_figure(data.gap).layout
    assert gap.xaxis.type == gap.yaxis.type == "log"
    assert {"2 M", "5 M", "10 M", "20 M", "50 M", "100 M", "200 M"} <= set(gap.xaxis.ticktext)
    assert [_number(t) for t in gap.xaxis.ticktext] == pytest.approx([v * 1e6 for v in gap.xaxis.tickvals])
    assert {"0.5", "1", "10", "100", "200"} <= set(gap.yaxis.ticktext)  # ms, named in the axis title
    assert [_number(t) for t in gap.yaxis.ticktext] == pytest.approx(list(gap.yaxis.tickvals))


def test_throughput_panel_only_beyond_batch_1_and_legends_only_for_two_or_more_entries():
    from effscope.report.contents import report_data
    from effscope.report.data import Source
    from effscope.report.html import render
    from effscope.report.sections.gap import gap_figure

    one = report_data(Source("records", "r", _spread_designs(batch=1)))
    fig = gap_figure(one.gap)
    assert "xaxis2" not in fig.to_dict()["layout"], "batch 1: throughput (1000 / latency) repeats the latency panel"
    assert {t.xaxis for t in fig.data} == {"x"}
    assert fig.layout.showlegend is False  # one family: named in the title instead
    assert "(hilo)" in fig.layout.annotations[0].text
    assert "Throughput is not plotted: every design ran at batch 1" in render(one)

    eight = report_data(Source("records", "r", _spread_designs(batch=8, families=("hilo", "vit"))))
    fig = gap_figure(eight.gap)
    layout = fig.to_dict()["layout"]
    assert "xaxis2" in layout and layout["xaxis2"]["matches"] == "x"  # both panels share one MACs range
    assert {t.xaxis for t in fig.data} == {"x", "x2"}
    assert fig.layout.showlegend is True
    assert "Throughput is not plotted" not in render(eight)


def test_a_screened_study_renders_the_predictor_the_re_measured_front_and_the_rejected_presets():
    from effscope.report.contents import report_data
    from effscope.report.data import Point, Source, attach_fresh_measurements
    from effscope.report.html import render

    def trial(i, p90, q, status="measured", preset=None, **numbers):
        return Point(
            id=f"trial {i}" + (f" ({preset})" if preset else ""),
            target="litv2",
            numbers={"quality": q, "latency_ms_p50": p90, "latency_ms_p90": p90, **numbers},
            status=status,
            constraints={"latency": (p90 or numbers["predicted_latency_ms"]) / 12.0 - 1, "valid": 0.0},
            preset=preset,
            trial=i,
            record_uid=f"r{i}" if p90 else None,
        )

    points = [
        trial(0, None, None, "predicted-infeasible", "litv2_s", predicted_latency_ms=18.4),
        trial(1, 9.9, 1.0),
        trial(2, 10.6, 3.0),
    ]
    stored = {"2": {"trial": 2, "remeasured_latency_ms_p90": 22.6, "remeasured_feasible": False}}
    attach_fresh_measurements(points, stored, "latency_ms_p90")
    attrs = {
        "objectives": [PROXY],
        "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 12.0, "unit": "ms"}],
        "predictor": {"name": "lit2-cpu", "statistic": "latency_ms_p90", "mape": 0.06, "margin": 1.12},
    }
    page = render(report_data(Source("study", "s", points, attrs=attrs, directions=["maximize", "minimize"])))
    assert "<h3>Latency predictor screening</h3>" in page and "<th>latency table</th><td>lit2-cpu</td>" in page
    assert "<h4>The front re-measured in fresh processes</h4>" in page
    assert ">no: over budget when re-measured</td>" in page
    assert '"name":"over budget when re-measured (fresh process)"' in page  # the ring on the front figure
    assert "<h3>Published designs</h3>" in page
    assert "predicted infeasible (not measured): predicted 18.4 ms, over the budget 12 ms × margin 1.12" in page
