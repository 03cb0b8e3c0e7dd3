"""Latency predictor (issue 6): the fit on planted tables, reject-only screening, the spot-check rate, a real tiny
table, and LITv2's pure-python decomposition against a traced forward."""

from __future__ import annotations

import math
import random

import numpy as np
import optuna
import pytest

from effscope.profile.record import Record, Workload
from effscope.profile.store import RecordStore
from effscope.search import predictor as P
from effscope.search.space import parse_space
from effscope.search.summary import is_feasible
from effscope.search.trial import SearchObjective

SPACE = """
[space]
target = "hilo"
[workload]
size = [7, 7]
threads = 1
[objectives]
quality = "params"
[budgets]
latency_ms = {budget}
[search]
sampler = "random"
seed = {seed}
[measure]
max_time_s = 0.05
window_s = 0.05
[knobs]
heads = {heads}
head_dim = 16
lofi_heads = 1
window_size = 1
mlp_ratio = {mlp}
"""


def _space(budget=1.0, seed=0, heads="[2, 4, 6, 8]", mlp="[1.0, 2.0, 3.0, 4.0]"):
    return parse_space(SPACE.format(budget=budget, seed=seed, heads=heads, mlp=mlp), name="pred_test")


# --------------------------------------------------------------------------------------------------- fit


def test_predictor_fit_recovers_planted_correction():
    rng = np.random.default_rng(0)
    sums = rng.uniform(1, 10, 40)
    feats = rng.integers(1, 9, (40, 3)).astype(float)
    y = 1.15 * sums + 0.3 * feats[:, 0] - 0.2 * feats[:, 2] + 0.5  # planted correction, no noise
    fit = P.fit_correction(sums, feats, y, "full")
    pred = [fit.predict_one(s, f) for s, f in zip(sums, feats, strict=True)]
    assert np.allclose(pred, y, rtol=2e-3)
    assert fit.coef[0] == pytest.approx(1.15, rel=1e-2)
    chosen, loo = P.choose_fit(list(sums), feats.tolist(), list(y))
    assert chosen.kind == "full" and loo["full"] < 1e-3 < loo["sum"]
    # a plain sum plus a constant overhead: the affine fit finds it exactly
    aff = P.fit_correction(sums, feats, sums + 0.25, "affine")
    assert aff.coef == pytest.approx([1.0, 0.25])


def test_predictor_metrics():
    m = P.metrics([1.0, 2.15, 2.9], [1.0, 2.0, 3.0])
    assert m["mape"] == pytest.approx((0 + 0.075 + 1 / 30) / 3)
    assert m["within_5"] == pytest.approx(2 / 3) and m["within_10"] == 1.0
    assert math.isnan(m["kendall_tau"])  # 3 designs: too few for a rank correlation (it could only be ±1, ±1/3)
    assert P.metrics([1.0, 2.15, 2.9, 4.2], [1.0, 2.0, 3.0, 4.0])["kendall_tau"] == 1.0


# --------------------------------------------------------------------------------------------------- reject-only


def test_predictor_spot_check_rate_and_seed():
    n = 6000
    hits = sum(P.spot_check(7, i) for i in range(n))
    tol = 4 * math.sqrt(P.SPOT_RATE * (1 - P.SPOT_RATE) / n)  # 4 sigma of a binomial share
    assert abs(hits / n - P.SPOT_RATE) <= tol
    assert [P.spot_check(7, i) for i in range(200)] == [P.spot_check(7, i) for i in range(200)]
    assert [P.spot_check(7, i) for i in range(200)] != [P.spot_check(8, i) for i in range(200)]


def test_predictor_reject_rule():
    for _ in range(2000):
        budget, mape, pred = random.uniform(0.1, 10), random.uniform(0, 0.3), random.uniform(0, 20)
        if P.reject_rule(pred, budget, mape):
            assert pred > budget * (1 + 2 * mape) >= budget  # only ever rejects designs predicted over budget
    assert not P.reject_rule(None, 1.0, 0.0)  # no prediction: measured


def _true_latency(config) -> float:
    return 0.2 * config.heads * config.mlp_ratio  # 0.4 .. 6.4 ms


class _FakePredictor:
    """Predicts 1.5x the true latency for heads=8 (a pessimistic table), nothing for mlp_ratio 3 (a block call the
    table lacks), exact otherwise."""

    mape = 0.05
    margin = 1.1

    class table:
        name = "fake"

    def predict(self, ts, config):
        if config.mlp_ratio == 3.0:
            return None
        return _true_latency(config) * (1.5 if config.heads == 8 else 1.0)


def test_predictor_reject_only_in_objective(tmp_path, monkeypatch):
    from effscope.profile import run as run_mod
    from effscope.profile.record import canonical_key

    space = _space(budget=2.0, seed=3)
    store = RecordStore(str(tmp_path / "p.db"))
    measured = []

    def fake_profile(plans, options, *, store, worker=None, provenance=None, on_record=None):
        plan = plans[0]
        lat = _true_latency(plan.target.config)
        measured.append(plan.target.config)
        rec = Record(target=plan.target.name, kind="block", workload=plan.workload.as_dict(), **(provenance or {}))
        rec.latency = {"latency_ms_p50": lat, "latency_ms_p90": lat}
        rec.counts = {"params": 1000}
        if store is not None:  # the search objective stores the measurement it keeps itself
            store.add(rec)
        return [rec]

    monkeypatch.setattr(run_mod, "profile", fake_profile)
    # a design the table over-predicts (heads 8 x mlp 1: true 1.6 ms, predicted 2.4 > 2.2) was measured before:
    # the measurement wins, it stays feasible
    from effscope.profile.target import resolve_target

    t = resolve_target("hilo", {"heads": 8, "head_dim": 16, "lofi_heads": 1, "window_size": 1, "mlp_ratio": 1.0})
    key = canonical_key("hilo", t.knobs(), space.workload, "dev")
    fake_profile([run_mod.Plan(t, space.workload)], None, store=store, provenance={"key": key})
    measured.clear()

    obj = SearchObjective(
        space, store=store, device_name="dev", study_name="s", command="", measure=None, predictor=_FakePredictor()
    )
    study = optuna.create_study(directions=space.directions, sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(obj, n_trials=120)
    trials = study.get_trials()
    rejected = [t for t in trials if t.user_attrs["status"] == "predicted-infeasible"]
    assert rejected and len(measured) < len(trials)
    for tr in trials:
        a = tr.user_attrs
        pred = a.get("predicted_latency_ms")
        if a["status"] == "predicted-infeasible":
            assert pred > 2.0 * 1.1 and a["record_uid"] is None and not is_feasible(tr)
            assert "not measured" in a["reason"] and tr.constraints["latency"] > 0
        else:  # everything that may be feasible was measured (or read from a measurement)
            assert a["status"] in ("measured", "cached") and a["record_uid"] is not None
            assert pred is None or pred <= 2.2 or a.get("spot_check") or a["status"] == "cached"
        if a.get("latency_ms_p90") is not None and a["latency_ms_p90"] <= 2.0:
            assert is_feasible(tr)  # a measured-feasible design is never marked infeasible
        if a.get("no_prediction"):  # counted, so the search can say how much of the space the table covered
            assert pred is None and a["status"] == "measured"
    assert any(tr.user_attrs.get("no_prediction") for tr in trials)
    cached = [t for t in trials if t.params.get("heads") == 8 and t.params.get("mlp_ratio") == 1.0]
    assert all(t.user_attrs["status"] == "cached" and is_feasible(t) for t in cached)


# --------------------------------------------------------------------------------------------------- decomposition


def test_predictor_litv2_decomposition_matches_trace():
    from effscope.knobs import with_knobs
    from effscope.spec import models

    spec = models().get("litv2_s")
    cfg = with_knobs(spec.config, {"depths": (1, 2, 4, 1), "window_size": 4, "lofi_heads": 6})
    wl = Workload(size=(96, 64), batch=2)
    calls = P.decompose("litv2_s", cfg, wl)
    assert calls == P._trace(spec, cfg, wl.size, wl.batch)
    assert [c.block for c in calls].count("dtm") == 3 and len(calls) == 8 + 3
    assert calls[-1].size == (3, 2) and all(dict(c.knobs).get("drop_path", 0.0) == 0.0 for c in calls)


# --------------------------------------------------------------------------------------------------- a real table


def test_predictor_lut_build_tiny(tmp_path):
    space = _space(budget=5.0, heads="2", mlp="[1.0, 2.0, 4.0]")
    store = RecordStore(str(tmp_path / "lut.db"))
    lines = []
    table = P.build_table(
        space, store=store, name="tiny", samples=2, holdout=1, device_name="dev", on_progress=lines.append
    )
    assert lines[0].startswith("design 1/3: lut block: hilo") and lines[-1].startswith("design 3/3: lut holdout: hilo")
    assert len(table.entries) == 3 and table.validation["n_holdout"] == 1 and table.validation["n_train"] == 2
    assert all(e["latency_ms"] > 0 for e in table.entries)
    assert {r["role"] for r in table.rows} == {"train", "holdout"}
    assert {r.study for r in store.records()} == {"lut:block", "lut:train", "lut:holdout"}  # each measurement's role
    loaded = P.load_table(store, "tiny")
    assert loaded.uid == table.uid and P.load_table(store, table.uid).name == "tiny"
    with pytest.raises(P.PredictorError, match="no latency table"):
        P.load_table(store, "nope")
    pred = P.Predictor(loaded, space)
    ts = space.targets[0]
    assert pred.predict_overrides(ts, {"mlp_ratio": 2.0}) > 0
    assert pred.predict_overrides(ts, {"mlp_ratio": 3.0}) is None  # not in the table: measured, never rejected
    summary = loaded.summary()
    for key in ("name", "mape", "within_5", "within_10", "kendall_tau", "n_holdout", "baseline_sum_mape"):
        assert key in summary
    # a rebuild re-uses the stored block Records (same canonical keys)
    again = P.build_table(space, store=store, name="tiny", samples=2, holdout=1, device_name="dev")
    assert again.validation["cached"] == 3


def test_the_front_remeasurement_names_each_design_now_over_the_budget(tmp_path, monkeypatch):
    """The fresh-process re-measurement of the front is stored per trial, and the note names the trials whose
    re-measured statistic is over the budget (feasible by the search's own measurement only)."""
    import effscope.profile.run as run
    from effscope.search.remeasure import REMEASURED_ATTR, finish_search
    from effscope.search.study import objectives_attr

    space = _space(budget=5.0, heads="[2, 4]", mlp="1.0")
    study = optuna.create_study(directions=space.directions, study_name="s", storage=optuna.storages.InMemoryStorage())
    study.set_user_attr("objectives", objectives_attr(space))
    study.set_user_attr("budgets", [b.as_dict() for b in space.budgets])
    for n, (quality, p50) in enumerate(((1.0, 1.0), (2.0, 2.0))):
        study.add_trial(
            optuna.trial.create_trial(
                values=[quality, p50],
                params={},
                distributions={},
                user_attrs={
                    "status": "measured",
                    "knobs": {"heads": 4 * (n + 1), "lofi_heads": 1},
                    "latency_ms_p90": p50 + 0.5,
                },
                system_attrs={"constraints:latency": -0.5, "constraints:memory": 0.0, "constraints:valid": 0.0},
            )
        )
    again = iter((3.0, 7.25))  # trial 0 still within 5 ms; trial 1 now over it

    def fake_profile(plans, options, **_):
        p90 = next(again)
        return [
            Record(target="hilo", kind="block", workload={}, latency={"latency_ms_p50": p90, "latency_ms_p90": p90})
        ]

    class Table:
        name = "t"

        def summary(self):
            return {"mape": 0.05, "margin": 1.1}

    monkeypatch.setattr(run, "profile", fake_profile)
    notes = finish_search(study, space, Table(), RecordStore(str(tmp_path / "r.db")), storage=study._storage,
                          device_name="dev", worker=object())  # fmt: skip
    assert notes[-1] == (
        "Pareto set re-measured in fresh processes: 1/2 still under latency_ms_p90 <= 5 ms; over it when "
        "re-measured, so feasible by the search's measurement only: trial 1 (7.250 ms)"
    )
    stored = study._storage.get_study_system_attrs(study._study_id)[REMEASURED_ATTR]
    assert [stored[k]["remeasured_feasible"] for k in ("0", "1")] == [True, False]


# ----------------------------------------------------------------------------------------- spaces and what lut says


def test_a_space_of_several_targets_is_fitted_without_knob_features():
    from effscope.search.space import load_space, sample_designs

    space = load_space("attention_zoo")  # its targets' knobs differ: one feature vector cannot hold them all
    designs = sample_designs(space, 6, 0)
    assert len({ts.name for ts, _ in designs}) > 1 and P.feature_names(space) == []
    feats = [P.knob_features(space, ts, config.knob_values()) for ts, config in designs]
    assert feats == [[]] * 6
    fit = P.fit_correction([1.0, 2.0, 3.0, 4.0], feats[:4], [1.1, 2.1, 3.2, 4.0], "full")
    assert math.isfinite(fit.predict_one(2.5, []))


@pytest.mark.parametrize("space,holdout", [("litv2", 8), ("hilo_block", 2)])
def test_lut_build_says_how_to_use_its_table_or_why_it_cannot_help(space, holdout, tmp_path, monkeypatch, capfd):
    from types import SimpleNamespace

    from _cli import effscope

    validation = {"n_train": 4, "n_holdout": holdout, "measured": 4 + holdout + 10, "cached": 3, "fit": "sum"}
    validation |= {"mape": 0.05, "within_5": 0.5, "within_10": 1.0, "kendall_tau": math.nan}
    table = SimpleNamespace(name="t 1", uid="u", entries=[{}] * 10, statistic="latency_ms_p90", notes=[])
    monkeypatch.setattr(P, "build_table", lambda *a, **k: SimpleNamespace(**vars(table), validation=validation))
    db = str(tmp_path / "my tables.db")
    code, out, _ = effscope(monkeypatch, capfd, ["lut", "build", space, "--device", "cpu", "--db", db])
    text = " ".join(out.split())
    assert code == 0 and "10 block entries (10 measured, 3 reused from stored Records)" in text  # not the wholes
    if space == "litv2":  # the hint runs as printed: the table's database, quoted
        assert f"use it: effscope search litv2 --device cpu --db '{db}' --predictor 't 1'" in text
        assert "too few to judge" not in text
    else:
        assert "use it" not in text and "--predictor skips none here" in text
        assert "2 held-out design(s) are too few to judge the predictor" in text
