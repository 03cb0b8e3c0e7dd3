"""Bad input to the search commands (search, calibrate, lut build): one sentence and a non-zero exit code, no
traceback, nothing already recorded lost. Most cases fail during validation; the few that need a study use a fake
quality process or the tiny space of _spaces.py, so the file stays fast."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import optuna
import pytest
from _cli import effscope
from _spaces import SMALL_LITV2, TINY, load, tiny

from effscope.errors import SpecError
from effscope.search.space import SpaceError, load_space, parse_space, sample_designs


def one_sentence(code: int, err: str, phrase: str, want: int = 2) -> None:
    assert code == want, err
    assert phrase in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@contextlib.contextmanager
def within(seconds: int):
    """Fail (instead of hanging) when the block takes longer."""

    def stop(*_):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EFFSCOPE_DB", raising=False)
    return tmp_path


def calibrate_args(tmp_path: Path, data: Path, samples: int) -> list[str]:
    (tmp_path / "cal.toml").write_text(SMALL_LITV2)
    return ["calibrate", str(tmp_path / "cal.toml"), "--data", str(data), "--samples", str(samples), "--db", "c.db"]


# --------------------------------------------------------------------------------------------------- A2 calibrate


class FakeQuality:
    """Stands in for the quality process: `plan` maps a design's number to its values, or to an exception."""

    plan: dict[int, object] = {}
    calls: list[dict] = []

    def __init__(self, **_):
        pass

    def call(self, fn, kwargs, *, timeout):
        FakeQuality.calls.append(kwargs["knobs"])
        what = FakeQuality.plan.get(len(FakeQuality.calls), None)
        if isinstance(what, BaseException):
            raise what
        if isinstance(what, str):
            return dict.fromkeys(kwargs["names"], what)
        n = float(len(FakeQuality.calls))
        return {name: n * (i + 1) for i, name in enumerate(kwargs["names"])}

    def close(self):
        pass


@pytest.fixture
def fake_quality(monkeypatch):
    from effscope.search import objectives

    FakeQuality.plan, FakeQuality.calls = {}, []
    monkeypatch.setattr(objectives, "QualityProcess", FakeQuality)
    return FakeQuality


def test_a_failed_design_is_a_row_and_the_calibration_goes_on(place, monkeypatch, capfd, images, fake_quality):
    from effscope.search.objectives import QualityError

    fake_quality.plan = {2: QualityError("out of memory")}
    code, out, err = effscope(monkeypatch, capfd, calibrate_args(place, images, 4))
    assert code == 0, err
    assert "design 2/4: failed: out of memory" in err and "Traceback" not in err
    assert "design 4/4: top-1" in err and "failed" in out  # the table shows it
    stored = optuna.load_study(study_name="cal-cpu", storage="sqlite:///c.db").user_attrs["calibration"]
    assert stored["params"]["n"] == 3


def test_a_calibration_joins_a_study_searched_with_budget_ms(place, monkeypatch, capfd, images, fake_quality):
    """--budget-ms changes the study's budgets: calibrate takes it too, or it could not join such a study."""
    budget = ["--budget-ms", "7.5"]
    code, _, err = effscope(monkeypatch, capfd, [*calibrate_args(place, images, 4), *budget])
    assert code == 0, err
    budgets = optuna.load_study(study_name="cal-cpu", storage="sqlite:///c.db").user_attrs["budgets"]
    assert [b["limit"] for b in budgets] == [7.5]
    code, _, err = effscope(monkeypatch, capfd, calibrate_args(place, images, 4))  # the space's own budget
    one_sentence(code, err, "study 'cal-cpu' exists with other settings (changed: budgets)")
    code, out, err = effscope(monkeypatch, capfd, [*calibrate_args(place, images, 4), *budget])
    assert code == 0 and "4 design(s) were short-trained by an earlier run of this calibration and reused" in out


def test_a_proxy_without_a_kendall_tau_says_why(place, monkeypatch, capfd, images, fake_quality):
    from effscope.search.calibrate import _no_tau
    from effscope.search.objectives import QualityError

    fake_quality.plan = {2: QualityError("out of memory"), 3: QualityError("out of memory")}
    code, out, err = effscope(monkeypatch, capfd, calibrate_args(place, images, 4))
    assert code == 0, err
    reason = "2 design(s) with both a proxy value and a trained accuracy; a rank correlation needs 4"
    reason += " (with 2 it is always ±1)"
    assert f"params: no Kendall tau: {reason}" in out
    stored = optuna.load_study(study_name="cal-cpu", storage="sqlite:///c.db").user_attrs["calibration"]
    assert stored["params"] == {"kendall_tau": None, "n": 2, "train_steps": stored["params"]["train_steps"],
                                "why_missing": reason}  # fmt: skip
    assert _no_tau([(1.0, 0.2), (1.0, 0.3), (1.0, 0.4), (1.0, 0.5)]) == "the proxy gave every design the same value"
    assert (
        _no_tau([(1.0, 0.2), (2.0, 0.2), (3.0, 0.2), (4.0, 0.2)])
        == "short training gave every design the same accuracy"
    )


def test_an_interrupted_calibration_keeps_its_designs_and_a_rerun_resumes(
    place, monkeypatch, capfd, images, fake_quality
):
    fake_quality.plan = {3: KeyboardInterrupt()}
    code, out, err = effscope(monkeypatch, capfd, calibrate_args(place, images, 4))
    assert code == 130, err
    assert "interrupted: 2 short-trained design(s) are kept with study cal-cpu" in err and "Traceback" not in err
    first = list(fake_quality.calls[:2])
    fake_quality.plan, fake_quality.calls = {}, []
    code, out, err = effscope(monkeypatch, capfd, calibrate_args(place, images, 4))
    assert code == 0, err
    assert len(fake_quality.calls) == 2 and not any(k in fake_quality.calls for k in first)  # 2 reused
    assert "2 design(s) were short-trained by an earlier run of this calibration and reused" in out


def test_a_calibration_whose_every_design_fails_says_why_once_and_stores_nothing(
    place, monkeypatch, capfd, images, fake_quality
):
    fake_quality.plan = {1: "training diverged", 2: "out of memory", 3: "out of memory", 4: "out of memory"}
    code, out, err = effscope(monkeypatch, capfd, calibrate_args(place, images, 4))
    assert code == 1, err
    assert "error: all 4 designs failed to train, so no calibration was stored; the commonest reason (3 of them): " \
        "out of memory" in err  # fmt: skip
    assert not Path("c.db").exists()  # nor the database it created (test_refused_runs_leave_nothing.py)


def test_a_refused_calibration_leaves_no_empty_study(place, images, fake_quality):
    from effscope.search.calibrate import calibrate_proxies

    space = parse_space(SMALL_LITV2, name="cal").with_overrides(data=str(images))
    with pytest.raises(
        SpaceError, match=r"holds 6 distinct valid design\(s\) \(8 knob combinations, 2 build the same network"
    ):
        calibrate_proxies(space, samples=9, storage="c.db")
    assert not Path("c.db").exists() or optuna.get_all_study_names("sqlite:///c.db") == []


# --------------------------------------------------------------------------------------------------- B3


PVT_SIZE_1 = """
[space]
target = "pvt_sra"
[workload]
size = 1
[budgets]
latency_ms = 100
[knobs]
heads = [1, 2]
"""


def test_a_workload_no_design_fits_is_refused_at_load(place, monkeypatch, capfd):
    Path("pvt.toml").write_text(PVT_SIZE_1)
    code, _, err = effscope(monkeypatch, capfd, ["search", "pvt.toml", "--db", "s.db"])
    one_sentence(code, err, "pvt.toml: no design fits [workload] size = 1x1 (pvt_sra: the token grid must be at least")
    assert optuna.get_all_study_names("sqlite:///s.db") == []


def test_a_space_without_one_valid_design_is_refused_at_load(place, monkeypatch, capfd):
    text = TINY.format(budget=100, trials=3, max_time=0.05)
    Path("bad.toml").write_text(text.replace("low = 0, high = 2", "low = 3, high = 4"))  # more than heads
    code, _, err = effscope(monkeypatch, capfd, ["search", "bad.toml", "--db", "s.db"])
    one_sentence(code, err, "no design of the space is valid: all 16 knob combinations break a rule (hilo: `lofi_heads")


def _failed_trial(n: int, reason: str):
    t = optuna.trial.create_trial(
        values=[float("-inf"), float("inf")],
        user_attrs={"status": "failed", "reason": reason, "knobs": {}},
        system_attrs={"constraints:latency": 0.0, "constraints:memory": 0.0, "constraints:valid": 1.0},
    )
    t.number = n
    return t


INFO = {
    "objectives": [{"name": "params", "label": "params", "direction": "maximize"}, {"direction": "minimize"}],
    "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 10.0}],
}


def test_a_search_whose_every_trial_failed_names_the_commonest_reason_and_exits_1(place, monkeypatch, capfd):
    from effscope.search import coordinator
    from effscope.search.coordinator import SearchResult
    from effscope.search.summary import summarize

    trials = [_failed_trial(0, "timed out"), _failed_trial(1, "out of memory"), _failed_trial(2, "out of memory")]
    summary = summarize(trials, INFO)
    assert summary.all_failed == {"reason": "out of memory", "count": 2}
    monkeypatch.setattr(coordinator, "search", lambda sp, **kw: SearchResult("st", "sqlite:///s.db", True, summary))
    code, out, err = effscope(monkeypatch, capfd, ["search", str(tiny(place)), "--db", "s.db"])
    assert code == 1, err
    assert "error: all 3 completed trial(s) failed and none was measured; the commonest reason (2 of them): out of " \
        "memory" in err  # fmt: skip
    assert err.count("out of memory") == 1 and "Traceback" not in err
    ok = _failed_trial(3, "")
    ok.user_attrs["status"] = "measured"
    assert summarize([*trials, ok], INFO).all_failed is None


# --------------------------------------------------------------------------------------------------- B4


def test_an_imagefolder_of_non_images_is_refused_naming_a_file(place, monkeypatch, capfd, fake_quality):
    from effscope.search.imagefolder import DataError, open_imagefolder

    for c in ("a", "b"):
        Path("DATA", c).mkdir(parents=True)
        for i in range(6):
            Path("DATA", c, f"{i}.jpg").write_text("not an image")
    with pytest.raises(DataError, match=r"holds 'DATA/a/0.jpg', which does not decode as an image"):
        open_imagefolder("DATA")
    code, _, err = effscope(monkeypatch, capfd, calibrate_args(place, place / "DATA", 4))
    one_sentence(code, err, "--data needs an ImageFolder of images (root/<class>/<image>)")
    assert not fake_quality.calls and not Path("c.db").exists()


# --------------------------------------------------------------------------------------------------- B5


@pytest.mark.parametrize(
    "knobs",
    ["", "heads = 2\nhead_dim = 16\n", "heads = [2]\nmlp_ratio = { values = [2.0] }\n"],
    ids=["empty", "pinned", "one-value"],
)
def test_a_space_that_searches_no_knob_is_refused(place, monkeypatch, capfd, knobs):
    Path("s.toml").write_text('[space]\ntarget = "hilo"\n[budgets]\nlatency_ms = 1\n[knobs]\n' + knobs)
    code, _, err = effscope(monkeypatch, capfd, ["search", "s.toml", "--db", "s.db"])
    one_sentence(code, err, "s.toml: the space searches no knob: [knobs] gives none of hilo's knobs two or more values")


# --------------------------------------------------------------------------------------------------- B6, B7


def test_asking_for_more_designs_than_a_space_holds_is_refused_quickly(place, monkeypatch, capfd):
    space = load_space("hilo_block")
    with within(30):
        # lofi_heads is ignored at window_size 1: 648 combinations, 144 breaking lofi_heads <= heads, 312 networks
        counted = (
            r"holds 312 distinct valid design\(s\) \(648 knob combinations, 144 break a rule of the design, 192 build "
            r"the same network as another \(a knob the design then ignores\)\)"
        )
        with pytest.raises(SpaceError, match=counted):
            sample_designs(space, 100_001, 0, asked="--samples + --holdout")
        with pytest.raises(SpaceError, match="fewer than the 313 asked for; ask for at most 312"):
            sample_designs(space, 313, 0)
        every = sample_designs(space, 312, 0)  # all of them: completed from the count, not drawn forever
        code, _, err = effscope(
            monkeypatch, capfd, ["lut", "build", "hilo_block", "--samples", "100000", "--holdout", "1", "--db", "l.db"]
        )
    assert len({repr(sorted(c.knob_values().items())) for _, c in every}) == 312
    assert sample_designs(space, 5, 3) == sample_designs(space, 5, 3)  # seeded
    one_sentence(code, err, "fewer than the 100001 asked for (--samples + --holdout); ask for at most 312")


def test_ctrl_c_in_lut_build_says_what_was_kept(place, monkeypatch, capfd):
    from effscope.search import predictor as P

    def interrupted(*a, **kw):
        raise P.BuildInterrupted(3)

    monkeypatch.setattr(P, "build_table", interrupted)
    code, _, err = effscope(monkeypatch, capfd, ["lut", "build", "hilo_block", "--db", "l.db"])
    one_sentence(code, err, "interrupted: no latency table was stored; the 3 measurement(s) taken are kept", 130)


def test_build_table_reports_its_measurements_when_interrupted(tmp_path, monkeypatch):
    from effscope.profile.store import RecordStore
    from effscope.search import predictor as P

    def run(self, *a, **kw):  # stands in for measuring: the second measurement is interrupted
        self.measured += 1
        if self.measured == 2:
            raise KeyboardInterrupt
        return type("R", (), {"latency": {"latency_ms_p90": 1.0}, "uid": "u"})()

    monkeypatch.setattr(P._Measurer, "_run", run)
    worker = type("W", (), {"close": lambda self: None})()
    with pytest.raises(P.BuildInterrupted) as e:
        P.build_table(load(tiny(tmp_path)), store=RecordStore(str(tmp_path / "l.db")), samples=2, holdout=1,
                      device_name="dev", worker=worker)  # fmt: skip
    assert e.value.measured == 2


# --------------------------------------------------------------------------------------------------- C2, C7, C8


def test_storage_and_db_are_one_option(place, monkeypatch, capfd):
    code, _, err = effscope(monkeypatch, capfd, ["search", "hilo_block", "--db", "sp.db", "--storage", "good.db"])
    one_sentence(code, err, "--storage and --db are two names for the same option; give only one, but got --storage")


@pytest.mark.parametrize("name", ["", "  "])
def test_a_blank_table_name_is_refused_before_measuring(tmp_path, name):
    from effscope.profile.store import RecordStore
    from effscope.search import predictor as P

    with pytest.raises(SpecError, match=r"--name must be a name of 1 to 200 printable characters"):
        P.build_table(load(tiny(tmp_path)), store=RecordStore(str(tmp_path / "l.db")), name=name, device_name="d",
                      worker=object())  # fmt: skip


@pytest.mark.parametrize(
    "name,phrase",
    [
        ("", "but got ''"),
        ("   ", "but got '   '"),
        ("a\nb", "holds the control character '\\n'"),
        ("tab\there", "holds the control character '\\t'"),
        (" lead", "starts or ends with a space"),
        ("x" * 201, "but got one of 201 characters"),
    ],
    ids=["empty", "spaces", "newline", "tab", "leading-space", "too-long"],
)
def test_bad_study_names_are_refused(place, monkeypatch, capfd, name, phrase):
    code, _, err = effscope(monkeypatch, capfd, ["search", str(tiny(place)), "--db", "s.db", "--study", name])
    one_sentence(code, err, "--study must be a name of 1 to 200 printable characters")
    assert phrase in err
    assert not Path("s.db").exists() or optuna.get_all_study_names("sqlite:///s.db") == []


def test_study_names_that_clean_to_one_file_name_get_distinct_report_files():
    from effscope.report.build import _file_name
    from effscope.search.study import check_name

    assert _file_name("a_b") == "a_b" and _file_name("hilo_block-cpu") == "hilo_block-cpu"
    assert _file_name("a/b").startswith("a_b-") and _file_name("a/b") != _file_name("a:b")
    assert check_name("x" * 200) == "x" * 200


# --------------------------------------------------------------------------------------------------- C9


def test_ctrl_c_prints_the_summary_and_writes_the_report(place, monkeypatch, capfd):
    from effscope.search import coordinator

    real = coordinator.run_search

    def search_then_ctrl_c(sp, **kw):
        real(sp.with_overrides(trials=2), storage=kw["storage"], command="pytest")
        raise KeyboardInterrupt

    monkeypatch.setattr(coordinator, "search", search_then_ctrl_c)
    code, out, err = effscope(monkeypatch, capfd, ["search", str(tiny(place)), "--db", "s.db", "--report", "r.html"])
    assert code == 130, err
    assert "study tiny-cpu in" in out and "2 of 6 trials completed" in out and "quality objective:" in out
    assert "published designs" in out and "report written to r.html" in out and Path("r.html").stat().st_size
    assert "interrupted: 2 completed trial(s) are kept" in err and "Traceback" not in out + err

    # a second Ctrl-C during the summary still ends the command, with one line
    import effscope.cli.search as cli

    def ctrl_c(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(coordinator, "search", lambda sp, **kw: ctrl_c())
    monkeypatch.setattr(cli, "print_summary", ctrl_c)
    t = time.monotonic()
    code, out, err = effscope(monkeypatch, capfd, ["search", str(tiny(place)), "--db", "s.db"])
    assert code == 130 and time.monotonic() - t < 30
    one_sentence(code, err, "interrupted again: completed trials are kept; re-run the same command to resume", 130)


# --------------------------------------------------------------------------------------------------- polish


BASE = '[space]\ntarget = "hilo"\n[budgets]\nlatency_ms = 1\n'


@pytest.mark.parametrize(
    "text,phrase",
    [
        (
            BASE + '[knobs]\nheads = { values = ["four", 2] }\n',
            'heads: "four" is not an integer (allowed: int in [1, 64])',
        ),
        (BASE + '[knobs]\nheads = "four"\n', 'heads: "four" is not an integer'),
        (BASE + "[knobs]\nheads = 2.5\n", "heads: 2.5 is not an integer"),
        (BASE + "[knobs]\nmlp_ratio = [true]\n", "mlp_ratio: true is not a number"),
        (BASE + "[knobs.pvt_sra]\nheads = 2\n", "[knobs.pvt_sra] tables are for multi-block spaces (target = [...])"),
    ],
    ids=["type-in-list", "type-pin", "fraction", "bool", "per-block-table"],
)
def test_knob_mistakes_say_what_is_wrong(text, phrase):
    with pytest.raises(SpaceError) as e:
        parse_space(text, name="t", path="t.toml")
    assert phrase in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SpaceError, match="heads: 99 is outside the declared domain"):  # the right type, too big
        parse_space(BASE + "[knobs]\nheads = 99\n", name="t", path="t.toml")


def test_messages_without_a_stray_question_mark_colon_and_for_non_utf8_files(place, monkeypatch, capfd):
    code, _, err = effscope(monkeypatch, capfd, ["search", "hilo_blok"])
    one_sentence(code, err, "unknown search space 'hilo_blok'; did you mean 'hilo_block'? (a space is a .toml file")
    assert "?:" not in err
    with pytest.raises(SpaceError) as e:
        parse_space(BASE.replace('"hilo"', '"hiloo"'), name="t", path="t.toml")
    assert "did you mean 'hilo'? (a target is a block" in str(e.value) and "?:" not in str(e.value)
    Path("latin.toml").write_bytes(BASE.encode() + b"# caf\xe9\n")
    code, _, err = effscope(monkeypatch, capfd, ["search", "latin.toml", "--db", "s.db"])
    one_sentence(code, err, "search space 'latin.toml' is not a UTF-8 TOML file (byte 0xe9 at offset")


def test_list_takes_no_space(place, monkeypatch, capfd):
    code, out, err = effscope(monkeypatch, capfd, ["search", "hilo_block", "--list"])
    one_sentence(code, err, "--list lists every shipped space and takes no SPACE, but got 'hilo_block'")
    assert not out


def test_a_resume_refusal_names_the_knobs_whose_ranges_changed(tmp_path):
    from effscope.search.storage import open_storage, storage_url
    from effscope.search.study import prepare_study

    storage = open_storage(storage_url(str(tmp_path / "s.db")))
    first = load(tiny(tmp_path))
    prepare_study(first, storage, "s", device_name="d", command="")
    changed = parse_space(first.text.replace("heads = [1, 2]", "heads = [1, 2, 4]"), name="tiny", path=first.path)
    with pytest.raises(SpecError, match=r"exists with other settings \(changed: knob ranges \(heads\)\)"):
        prepare_study(changed, storage, "s", device_name="d", command="")
    retarget = parse_space(first.text.replace('"hilo"', '"vit"').split("[knobs]")[0], name="tiny", path=first.path)
    with pytest.raises(SpecError, match=r"\(changed: target\)"):
        prepare_study(retarget, storage, "s", device_name="d", command="")


def test_a_resume_refusal_names_the_quality_settings_and_workload_fields_that_changed(tmp_path):
    """A proxy's batch or data changes what its values mean: resuming with another one would mix them in one front."""
    from effscope.search.storage import open_storage, storage_url
    from effscope.search.study import prepare_study

    storage = open_storage(storage_url(str(tmp_path / "s.db")))
    text = tiny(tmp_path).read_text().replace('quality = "params"', 'quality = "synflow"')
    first = parse_space(text + "[proxy]\nbatch = 8\n", name="tiny", path="tiny.toml")
    prepare_study(first, storage, "s", device_name="d", command="")
    smaller = parse_space(text + "[proxy]\nbatch = 2\n", name="tiny", path="tiny.toml")
    with pytest.raises(SpecError, match=r"other settings \(changed: quality settings \(proxy\)\)"):
        prepare_study(smaller, storage, "s", device_name="d", command="")
    with pytest.raises(SpecError, match=r"other settings \(changed: quality settings \(data\)\)"):
        prepare_study(first.with_overrides(data=str(tmp_path)), storage, "s", device_name="d", command="")
    threads = parse_space(text.replace("threads = 1", "threads = 2") + "[proxy]\nbatch = 8\n", name="tiny", path="t")
    with pytest.raises(SpecError, match=r"other settings \(changed: workload \(threads\)\)"):
        prepare_study(threads, storage, "s", device_name="d", command="")
    # a study stored before quality settings were compared resumes as it did
    study_id = storage.get_study_id_from_name("s")
    signature = storage.get_study_system_attrs(study_id)["effscope:signature"]
    del signature["quality_settings"]
    storage.set_study_system_attr(study_id, "effscope:signature", signature)
    prepare_study(smaller, storage, "s", device_name="d", command="")
    # params is read from the measurement: a proxy batch does not change it
    params = parse_space(tiny(tmp_path).read_text() + "[proxy]\nbatch = 8\n", name="tiny", path="tiny.toml")
    prepare_study(params, storage, "p", device_name="d", command="")
    prepare_study(
        parse_space(tiny(tmp_path).read_text(), name="tiny", path="tiny.toml"),
        storage,
        "p",
        device_name="d",
        command="",
    )


def test_the_front_table_shows_a_presets_own_pinned_values_and_no_column_twice(tmp_path):
    """The space pins head_dim = 16; the published hilo (head_dim 32) is shown with its own value. With quality
    params, params is not a second column."""
    from rich.console import Console

    from effscope.cli.search import _front_table
    from effscope.search.summary import summarize

    space = load(tiny(tmp_path))
    knobs = {"heads": 4, "head_dim": 32, "lofi_heads": 3, "window_size": 2, "mlp_ratio": 4.0}
    t = optuna.trial.create_trial(
        values=[197248.0, 1.0],
        user_attrs={"status": "measured", "preset": "hilo", "knobs": knobs, "params": 197248, "macs": 5e7},
        system_attrs={"constraints:latency": -0.5, "constraints:memory": 0.0, "constraints:valid": 0.0},
    )
    t.number = 0
    info = {
        "objectives": [{"name": "params", "label": "params", "direction": "maximize"}, {"direction": "minimize"}],
        "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 10.0}],
    }
    console = Console(record=True, width=200)
    console.print(_front_table(summarize([t], info), space))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "trial" in line)
    assert header.count("params") == 1 and "MACs" in header
    assert "heads=4 lofi_heads=3 window_size=2 mlp_ratio=4.0 head_dim=32" in text
