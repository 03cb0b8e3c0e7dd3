"""Optuna's own tools see the study effscope sees: objective names, feasibility and the Pareto front (Optuna's
best_trials, optuna-dashboard's view), and a study listing (`optuna studies`) without the space's TOML in it."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
from _spaces import load, tiny
from optuna.trial import TrialState

from effscope.search.coordinator import run_search
from effscope.search.storage import open_storage, storage_url
from effscope.search.study import SPACE_TOML_ATTR, prepare_study, space_toml
from effscope.search.summary import feasible_front, is_feasible, trial_row


@pytest.fixture(scope="module")
def split_study(tmp_path_factory):
    """A tiny study measured once, then searched again (from the measurement cache) under a budget just below the
    published design's p90: that design has the most parameters, so it is on the unconstrained front but infeasible."""
    tmp = tmp_path_factory.mktemp("tools")
    space = load(tiny(tmp))
    db = str(tmp / "t.db")
    first = run_search(space, storage=db, command="pytest")
    preset = next(r for r in first.summary.presets if r["trial"] == 0)
    budget = 0.999 * preset["latency_ms_p90"]
    run_search(space.with_overrides(budget_ms=budget), storage=db, study_name="split", command="pytest")
    return tmp, db


def _design(t) -> str:
    return repr(sorted(t.user_attrs["knobs"].items())) + str(t.params.get("block"))


def _dashboard_constraints(study, t) -> list[float]:
    """What optuna-dashboard sends its front end as a trial's constraints: its own serializer when it is installed,
    else the key it reads (optuna_dashboard/_serializer.py: `trial_system_attrs.get("constraints", [])`)."""
    try:
        from optuna_dashboard._serializer import serialize_frozen_trial
    except ImportError:
        return t.system_attrs.get("constraints", [])
    return serialize_frozen_trial(study._study_id, t, {})["constraints"]


def _dashboard_front(study) -> set[str]:
    """The dashboard's Pareto-front plot: COMPLETE trials whose constraints are all <= 0, then the non-dominated ones
    (values turned to minimization; equal values do not dominate), as its front end computes them."""
    sign = [1 if d == optuna.study.StudyDirection.MINIMIZE else -1 for d in study.directions]
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    feasible = [t for t in done if all(c <= 0 for c in _dashboard_constraints(study, t))]
    points = [[s * v for s, v in zip(sign, t.values, strict=True)] for t in feasible]

    def dominated(p):
        return any(q != p and all(a <= b for a, b in zip(q, p, strict=True)) for q in points)

    return {_design(t) for t, p in zip(feasible, points, strict=True) if not dominated(p)}


def test_effscope_optuna_and_the_dashboard_list_the_same_front(split_study):
    _, db = split_study
    study = optuna.load_study(study_name="split", storage=storage_url(db))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    preset = next(t for t in done if t.number == 0)
    assert not is_feasible(preset)  # the test splits the study: an infeasible design on the unconstrained front
    assert preset.values[0] == max(t.values[0] for t in done)

    ours = {_design(t) for t in done if t.number in {r["trial"] for r in _front(done, study)}}
    optuna_front = {_design(t) for t in study.best_trials if all(c <= 0 for c in t.constraints.values())}
    assert ours and ours == optuna_front == _dashboard_front(study)
    for t in done:  # the same feasibility, trial by trial
        assert is_feasible(t) == all(c <= 0 for c in _dashboard_constraints(study, t)) and _dashboard_constraints(
            study, t
        )


def _front(done, study):
    rows = [trial_row(t) for t in done if is_feasible(t)]
    return feasible_front(rows, [d.name.lower() for d in study.directions])


def test_optuna_names_the_objectives(split_study):
    _, db = split_study
    study = optuna.load_study(study_name="split", storage=storage_url(db))
    assert study.metric_names == ["params", "latency_ms_p50"]
    df = study.trials_dataframe()
    assert {"values_params", "values_latency_ms_p50"} <= set(df.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = optuna.visualization.plot_pareto_front(study)
    assert fig.layout.xaxis.title.text == "params" and fig.layout.yaxis.title.text == "latency_ms_p50"


def test_optuna_studies_lists_short_user_attrs(split_study):
    tmp, db = split_study
    out = subprocess.run(
        [Path(sys.executable).with_name("optuna"), "studies", "--storage", storage_url(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "split" in out and "[knobs]" not in out and "sha256" in out
    text = (tmp / "tiny.toml").read_text()
    assert space_toml(open_storage(storage_url(db)), "split") == text  # kept where effscope reads it


def test_an_older_study_gets_names_and_short_attrs_on_resume(tmp_path):
    """A study an older effscope created (the TOML in a user attr, no metric names) is brought up to date."""
    space = load(tiny(tmp_path))
    storage = open_storage(storage_url(str(tmp_path / "old.db")))
    study = optuna.create_study(study_name="old", storage=storage, directions=space.directions)
    study.set_user_attr("effscope_space", {"name": "tiny", "path": space.path, "toml": space.text})
    study.set_user_attr("device_name", "cpu-x")
    sid = storage.get_study_id_from_name("old")
    storage.set_study_system_attr(sid, "effscope:signature", space.signature())
    study, created, _ = prepare_study(space, storage, "old", device_name="cpu-x", command="pytest")
    assert not created and study.metric_names == ["params", "latency_ms_p50"]
    assert "toml" not in study.user_attrs["effscope_space"] and study.user_attrs["effscope_space"]["name"] == "tiny"
    assert storage.get_study_system_attrs(sid)[SPACE_TOML_ATTR] == space.text
