"""`effscope import` stores only values effscope writes (Record.from_dict(strict=True)): a hand-edited Record with a
latency of "fast", a batch of -5 or an unknown status is refused in one sentence naming the item, the key and what
is allowed, and nothing is stored. A real Record still round-trips. The search's cache treats a stored Record whose
numbers are damaged (imported before this check) as unusable and measures again instead of crashing."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import optuna
import pytest
from _cli import effscope
from _spaces import load, tiny

from effscope.profile.record import NotARecordError, Record, Workload
from effscope.profile.store import RecordStore
from effscope.search.trial import SearchObjective


def _record(target: str = "hilo", **fields) -> Record:
    """A Record shaped as a measurement writes one (sections of numbers, and the few text and yes/no entries)."""
    r = Record(target=target, kind="block", workload=Workload(size=(7, 7), threads=1).as_dict(), **fields)
    r.latency = {"latency_ms_p50": 0.5, "latency_ms_p90": 0.6, "latency_ms_p90_lo": 0.55, "latency_ms_p90_hi": 0.65,
                 "latency_n": 40, "latency_timer": "perf_counter", "latency_stable": True, "latency_aborted": False,
                 "cpu_util": None}  # fmt: skip
    r.counts = {"params": 1000, "macs": 2_000_000, "elementwise_ops": None}
    r.reference = {"reference_id": "ref-mlp-v1", "reference_ms_p50": 20.0}
    r.roofline = {"roofline_bound_by": "memory", "calibration_uid": "c" * 32, "roofline_fraction": 0.2}
    r.energy = {"throttled": False, "energy_j_per_img": None}
    r.details = {"latency_samples_ms": [0.5, 0.6], "input_size": [7, 7], "count": {"macs_by_module": {"a": 1}}}
    r.env = {"device": "cpu", "device_name": "AMD EPYC", "cpu_family": 25}
    r.flags, r.missing = ["latency-unstable"], {"energy_j_per_img": "needs NVML"}
    return r


def _rows(db) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select uid, data from effscope_records order by id").fetchall()
    conn.close()
    return rows


def _one_error(monkeypatch, capfd, args: list[str]) -> str:
    code, out, err = effscope(monkeypatch, capfd, args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip().removeprefix("error: ")


def _edited(change) -> dict:
    data = _record().to_dict()
    change(data)
    return data


# (what a hand edit did, the key and what it allows as the sentence names them, the value as the file spells it)
BAD = [
    (lambda d: d["latency"].update(latency_ms_p50="fast"), "latency.latency_ms_p50", "a finite number or null",
     '"fast"'),
    (lambda d: d["latency"].update(latency_ms_p90=float("nan")), "latency.latency_ms_p90", "a finite number or null",
     "NaN"),
    (lambda d: d["latency"].update(latency_ms_p90_hi=float("inf")), "latency.latency_ms_p90_hi",
     "a finite number or null", "Infinity"),
    (lambda d: d["counts"].update(params=True), "counts.params", "a finite number or null", "true"),
    (lambda d: d["counts"].update(crosscheck_rel_diff=float("nan")), "counts.crosscheck_rel_diff",
     "a number (Infinity where no GEMM was counted) or null", "NaN"),
    (lambda d: d["memory"].update(peak_rss_bytes=[1]), "memory.peak_rss_bytes", "a finite number or null", "[1]"),
    (lambda d: d["latency"].update(latency_timer=5), "latency.latency_timer", "text or null", "5"),
    (lambda d: d["latency"].update(latency_stable="yes"), "latency.latency_stable", "true, false or null", '"yes"'),
    (lambda d: d["workload"].update(batch=-5), "workload.batch", "a whole number in [1, 1048576]", "-5"),
    (lambda d: d["workload"].update(batch=1.5), "workload.batch", "a whole number in [1, 1048576]", "1.5"),
    (lambda d: d["workload"].update(batch=2**21), "workload.batch", "a whole number in [1, 1048576]", "2097152"),
    (lambda d: d["workload"].update(size=[0, 7]), "workload.size",
     "null or [height, width], whole numbers in [1, 65536]", "[0, 7]"),
    (lambda d: d["workload"].update(size=[7, 10**9]), "workload.size",
     "null or [height, width], whole numbers in [1, 65536]", "[7, 1000000000]"),
    (lambda d: d["workload"].update(threads=0), "workload.threads", "null or a whole number >= 1", "0"),
    (lambda d: d["workload"].update(dtype="fp64"), "workload.dtype", "one of fp32, bf16, fp16", '"fp64"'),
    (lambda d: d["workload"].update(mode="eval"), "workload.mode", "one of infer, train", '"eval"'),
    (lambda d: d["workload"].update(device="tpu"), "workload.device", "cpu, cuda or cuda:N", '"tpu"'),
    (lambda d: d["workload"].update(compile="no"), "workload.compile", "true or false", '"no"'),
    (lambda d: d.update(status="weird"), "status", "ok or failed", '"weird"'),
    (lambda d: d.update(created_at="yesterday"), "created_at",
     "an ISO 8601 time with its UTC offset (as 2026-11-28T22:34:35+00:00)", '"yesterday"'),
    (lambda d: d.update(created_at="2026-11-28T22:34:35"), "created_at",
     "an ISO 8601 time with its UTC offset (as 2026-11-28T22:34:35+00:00)", '"2026-11-28T22:34:35"'),
    (lambda d: d.update(trial="x"), "trial", "a whole number >= 0 or null", '"x"'),
    (lambda d: d.update(target="hi\x00lo"), "target", "text without control characters", '"hi\\u0000lo"'),
    (lambda d: d.update(family=3), "family", "text or null", "3"),
    (lambda d: d.update(error=["x"]), "error", "text or null", '["x"]'),
    (lambda d: d.update(flags=["ok", 1]), "flags", "a list of text", '["ok", 1]'),
    (lambda d: d["missing"].update(x=1), "missing.x", "text (why it was not measured)", "1"),
    (lambda d: d["details"].update(latency_samples_ms=[0.5, "x"]), "details.latency_samples_ms",
     "a list of finite numbers", '[0.5, "x"]'),
]  # fmt: skip


@pytest.mark.parametrize(("change", "key", "allowed", "shown"), BAD, ids=[f"{b[1]}={b[3]}" for b in BAD])
def test_import_refuses_a_value_effscope_never_writes_and_stores_nothing(
    tmp_path, monkeypatch, capfd, change, key, allowed, shown
):
    db = tmp_path / "r.db"
    stored = _record()
    RecordStore(str(db)).add(stored)
    before = _rows(db)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps([_record().to_dict(), _edited(change)]))  # a good item first: it is not stored either
    error = _one_error(monkeypatch, capfd, ["import", str(path), "--db", str(db)])
    sentence = f"item 2 is not an effscope Record (its {key} must be {allowed}, but is {shown})"
    assert error == f"cannot import '{path}': {sentence}"
    assert _rows(db) == before


@pytest.mark.parametrize("field", ["env", "status", "created_at"])
def test_import_refuses_a_record_lacking_what_would_otherwise_be_invented(tmp_path, monkeypatch, capfd, field):
    """A default would say it was measured now, that it worked, or on no machine at all."""
    data = {k: v for k, v in _record().to_dict().items() if k != field}
    path = tmp_path / "lacking.json"
    path.write_text(json.dumps(data))
    error = _one_error(monkeypatch, capfd, ["import", str(path), "--db", str(tmp_path / "r.db")])
    assert error == (
        f"cannot import '{path}': item 1 is not an effscope Record (its data lacks {field}, which every effscope "
        "Record holds)"
    )
    assert not (tmp_path / "r.db").exists() or _rows(tmp_path / "r.db") == []


def test_strict_checks_values_while_reading_a_store_stays_lenient():
    """Only what is to be stored again is checked: a store holding a damaged Record stays readable (the search's
    cache then refuses it itself), and an unknown newer field is still only ignored."""
    data = _edited(lambda d: d["latency"].update(latency_ms_p50="fast"))
    assert Record.from_dict(data).latency["latency_ms_p50"] == "fast"
    with pytest.raises(NotARecordError, match=r"^its latency\.latency_ms_p50 must be a finite number or null"):
        Record.from_dict(data, strict=True)
    good = _record().to_dict()
    assert Record.from_dict(good, strict=True).to_dict() == good
    # a huge whole number is finite (math.isfinite would overflow on it)
    assert Record.from_dict(_edited(lambda d: d["counts"].update(macs=10**400)), strict=True).counts["macs"] == 10**400
    # the FLOP cross-check of a target where effscope counted no GEMM is infinite by design (counting.py)
    unbounded = _edited(lambda d: d["counts"].update(crosscheck_rel_diff=float("inf")))
    assert Record.from_dict(unbounded, strict=True).counts["crosscheck_rel_diff"] == float("inf")
    # a roofline calibration's workload names every dtype it measured
    cal = _edited(lambda d: d.update(kind="calibration") or d["workload"].update(dtype="fp32,bf16,fp16"))
    assert Record.from_dict(cal, strict=True).workload["dtype"] == "fp32,bf16,fp16"


def test_a_command_that_is_not_text_is_not_a_record_in_either_mode():
    """The constructor masks a URL's password in the command as text: a number raised TypeError there."""
    data = _edited(lambda d: d.update(command=5))
    for strict in (False, True):
        with pytest.raises(NotARecordError, match=r"^its command must be text or null, but is 5$"):
            Record.from_dict(data, strict=strict)


# ------------------------------------------------------------------------------------------- a real Record


def test_real_records_round_trip_through_import(tmp_path, monkeypatch, capfd):
    """Records as effscope measures and stores them (in-process, a few milliseconds of timing): inference with a
    reference and a throughput window, a training step, a failed one, a roofline calibration and one compared with
    it. Their whole form (the store's data, the file `effscope profile` keeps unstored Records in) imports unchanged."""
    import torch

    from effscope import profile as measured
    from effscope.profile import measure
    from effscope.profile.roofline import Calibration, add_roofline
    from effscope.profile.timing import time_reference

    monkeypatch.setattr(measure, "_time_reference", lambda device: time_reference(device, max_time_s=0.02))

    class Boom(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    quick = {"size": 7, "isolate": False, "max_time_s": 0.02, "window_s": 0.02}
    infer = measured("hilo", **quick)
    train = measured("hilo", mode="train", reference=False, throughput=False, **quick)
    failed = measured(Boom(), size=8, isolate=False, max_time_s=0.02, throughput=False, reference=False)
    assert (infer.status, train.status, failed.status) == ("ok", "ok", "failed")
    assert train.latency["train_step_ms_p50"] > 0 and infer.reference["reference_id"]
    cal = Calibration(
        device="cpu",
        device_name=infer.env.get("device_name") or "cpu",
        threads=None,
        peak_mac_s={"fp32": 1e11, "bf16": 2e11},
        bandwidth_bytes_s=1e10,
        gemm_n={"fp32": 512, "bf16": 512},
        copy_bytes=2**28,
        unsupported={"fp16": "too slow on this CPU"},
        env=dict(infer.env),
    )
    cal_record = cal.to_record("effscope device --calibrate")
    add_roofline(infer, dataclasses.replace(cal, uid=cal_record.uid))
    assert infer.roofline["roofline_bound_by"] in ("memory", "compute") and infer.roofline["calibration_uid"]
    source = RecordStore(str(tmp_path / "a.db"))
    for r in (cal_record, infer, train, failed):
        source.add(r)
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps([r.to_dict() for r in source.records()]))

    db = tmp_path / "b.db"
    code, out, err = effscope(monkeypatch, capfd, ["import", str(whole), "--db", str(db)])
    assert code == 0 and " ".join(out.split()).startswith("4 record(s)"), err
    assert _rows(db) == _rows(tmp_path / "a.db")  # every Record stored exactly as it was


# ------------------------------------------------------------------------------------------- nesting


def test_deeply_nested_json_is_one_sentence(tmp_path, monkeypatch, capfd):
    db = tmp_path / "r.db"
    RecordStore(str(db)).add(_record())
    before = _rows(db)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # past Python's parser: RecursionError
    parsed = _edited(lambda d: d["details"].update(deep=json.loads("[" * 700 + "]" * 700)))
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps([parsed]))  # parses, but copying or storing it would recurse too deep
    for path in (deep, nested):
        error = _one_error(monkeypatch, capfd, ["import", str(path), "--db", str(db)])
        assert error == (
            f"cannot import '{path}': its JSON nests arrays or objects more than 64 levels deep, which no effscope "
            "Record does"
        )
    assert _rows(db) == before
    # at the limit: the file's list (1), the Record (2), details (3), then 61 levels of lists
    edge = tmp_path / "edge.json"
    edge.write_text(json.dumps([_edited(lambda d: d["details"].update(deep=json.loads("[" * 61 + "]" * 61)))]))
    code, out, err = effscope(monkeypatch, capfd, ["import", str(edge), "--db", str(db)])
    assert code == 0 and out.startswith("1 record(s)"), err


# ------------------------------------------------------------------------------------------- the search's cache


def _objective(tmp_path):
    space = load(tiny(tmp_path))
    store = RecordStore(str(tmp_path / "c.db"))
    return SearchObjective(space, store=store, device_name="cpu", study_name="c", command="", measure=None)


def _damaged(objective, key: str, change) -> Record:
    r = _record(key=key)
    statistic = objective.space.latency_budget.statistic
    r.latency.update({statistic: 0.6, f"{statistic}_lo": 0.55, f"{statistic}_hi": 0.65})
    change(r, statistic)
    objective.store.add(r)  # as an import before the check stored it
    return r


DAMAGE = {
    "statistic text": lambda r, s: r.latency.update({s: "fast"}),
    "statistic NaN": lambda r, s: r.latency.update({s: float("nan")}),
    "statistic infinite": lambda r, s: r.latency.update({s: float("inf")}),
    "statistic true": lambda r, s: r.latency.update({s: True}),
    "interval text": lambda r, s: r.latency.update({f"{s}_hi": "x"}),
    "p50 text": lambda r, s: r.latency.update(latency_ms_p50="fast"),
    "quality text": lambda r, s: r.counts.update(params="many"),
    "samples text": lambda r, s: r.details.update(latency_samples_ms=["x"]),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_the_cache_does_not_reuse_a_record_whose_numbers_are_damaged(tmp_path, damage):
    objective = _objective(tmp_path)
    _damaged(objective, "k" * 16, damage)
    assert objective._cached("k" * 16) is None
    good = _damaged(objective, "k" * 16, lambda r, s: None)
    assert objective._cached("k" * 16).uid == good.uid  # a sound Record of the key is reused
    unmeasured = _damaged(objective, "u" * 16, lambda r, s: r.latency.update({s: None}))
    assert objective._cached("u" * 16).uid == unmeasured.uid  # not measured (None) is a result, reused as before


def test_a_search_measures_again_where_the_cached_record_is_damaged(tmp_path, monkeypatch):
    """Before, the verdict compared "fast" with the budget: TypeError in the worker, the trial FAIL."""
    from effscope.profile import run
    from effscope.profile.record import canonical_key
    from effscope.profile.target import resolve_target

    objective = _objective(tmp_path)
    space = objective.space
    params = {"heads": 2, "lofi_heads": 1, "window_size": 7, "mlp_ratio": 1.0}
    target = resolve_target("hilo", {**params, "head_dim": 16})
    key = canonical_key("hilo", target.knobs(), space.workload, "cpu")
    poisoned = _damaged(objective, key, lambda r, s: r.latency.update({s: "fast"}))
    measured: list[Record] = []

    def profile(plans, options, *, store, worker=None, provenance=None, on_record=None):
        (plan,) = plans
        rec = Record(target=plan.target.name, kind="block", workload=plan.workload.as_dict(), **(provenance or {}))
        rec.latency, rec.counts = {"latency_ms_p50": 0.4, "latency_ms_p90": 0.5}, {"params": 1000}
        measured.append(rec)
        return [rec]

    monkeypatch.setattr(run, "profile", profile)
    study = optuna.create_study(directions=space.directions)
    for _ in range(2):
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=2)
    first, second = study.get_trials()
    assert first.state == second.state == optuna.trial.TrialState.COMPLETE
    assert first.user_attrs["status"] == "measured" and first.user_attrs["record_uid"] == measured[0].uid
    assert first.user_attrs["record_uid"] != poisoned.uid and len(measured) == 1
    assert second.user_attrs["status"] == "cached" and second.user_attrs["record_uid"] == measured[0].uid
