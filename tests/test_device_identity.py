"""The same device, beyond its name: a cloud VM names CPUs of several generations alike ("AMD EPYC"), so studies,
the search cache, latency tables and roofline calibrations also compare the CPU's identity (vendor, family, model
number, stepping, speed flags) where both sides recorded it, and by the name alone where one did not."""

from __future__ import annotations

import optuna
import pytest
from _spaces import load, tiny

from effscope.errors import SpecError
from effscope.profile import env as env_mod
from effscope.profile.record import Record, Workload, canonical_key, device_identity, same_device
from effscope.profile.roofline import (
    Calibration,
    add_roofline,
    attach_calibration,
    latest_calibration,
    roofline_points,
)
from effscope.profile.store import RecordStore
from effscope.search import predictor as P
from effscope.search.storage import open_storage, storage_url
from effscope.search.study import device_identity_for, prepare_study
from effscope.search.trial import SearchObjective

NAME = "AMD EPYC"  # what /proc/cpuinfo calls both of these on our VMs
ZEN3 = {"cpu_vendor": "AuthenticAMD", "cpu_family": 25, "cpu_model_number": 1, "cpu_stepping": 1,
        "cpu_microcode": "0xa001173", "cpu_flags": "fma avx2"}  # fmt: skip
ZEN5 = {"cpu_vendor": "AuthenticAMD", "cpu_family": 26, "cpu_model_number": 2, "cpu_stepping": 1,
        "cpu_microcode": "0x1000065", "cpu_flags": "fma avx2 avx512f avx512_vnni avx512_bf16"}  # fmt: skip
ZEN3_ID = "AuthenticAMD family 25 model 1 stepping 1, flags fma avx2"
ZEN5_ID = "AuthenticAMD family 26 model 2 stepping 1, flags fma avx2 avx512f avx512_vnni avx512_bf16"


def cpu_env(cpu: dict | None, **extra) -> dict:
    """A CPU Record's environment on an "AMD EPYC" (cpu None: a Record of an effscope that recorded no identity)."""
    return {"device": "cpu", "device_type": "cpu", "device_name": NAME, "torch_threads": 2, **(cpu or {}), **extra}


@pytest.fixture
def on_zen5(monkeypatch):
    """This machine is a Zen 5 "AMD EPYC" (cpu_info is what the search and the roofline read it from)."""
    real = env_mod.cpu_info
    monkeypatch.setattr(env_mod, "cpu_info", lambda: {**real(), "cpu_model": NAME, **ZEN5})


# ------------------------------------------------------------------------------------------- the rule


def test_identity_of_a_cpu_env_leaves_out_the_microcode():
    assert device_identity(cpu_env(ZEN3)) == ZEN3_ID
    assert device_identity(cpu_env(ZEN5)) == ZEN5_ID
    assert device_identity(cpu_env({**ZEN5, "cpu_microcode": "0x1000099"})) == ZEN5_ID  # an OS update
    assert device_identity(cpu_env({**ZEN5, "cpu_stepping": 0})) != ZEN5_ID
    assert device_identity(cpu_env({**ZEN5, "cpu_flags": ""})).endswith(", flags none")  # listed, none that matter
    arm = {"cpu_vendor": None, "cpu_family": None, "cpu_model_number": None, "cpu_stepping": None,
           "cpu_microcode": None, "cpu_flags": "asimd sve bf16 i8mm"}  # fmt: skip
    assert device_identity(cpu_env(arm)) == "flags asimd sve bf16 i8mm"
    assert device_identity({**ZEN5}) == ZEN5_ID  # cpu_info() itself, which names no device


def test_no_identity_for_an_older_record_or_a_gpu():
    assert device_identity(cpu_env(None)) is None  # a Record of an older effscope
    assert device_identity(cpu_env(dict.fromkeys(ZEN5))) is None  # a host without /proc/cpuinfo
    assert device_identity({}) is None
    gpu = cpu_env(ZEN5, device="cuda:0", device_type="cuda", device_name="NVIDIA H100 80GB HBM3")
    assert device_identity(gpu) is None  # the host's CPU is recorded, but the GPU is what was measured
    assert device_identity({"device": "cuda:1", **ZEN5}) is None  # an env without device_type


def test_an_identity_read_back_from_a_table_equals_the_stored_one():
    """A CSV column with blanks reads family 25 back as 25.0: written as 25, as the identity stored from ints."""
    read_back = {k: float(v) if isinstance(v, int) else v for k, v in ZEN3.items()}
    assert read_back["cpu_family"] == 25.0 and device_identity(cpu_env(read_back)) == ZEN3_ID
    assert device_identity(cpu_env({**ZEN3, "cpu_stepping": 1.5})).endswith("stepping 1.5, flags fma avx2")


def test_same_device_is_the_name_and_the_identity_where_both_are_known():
    assert same_device(NAME, ZEN5_ID, NAME, ZEN5_ID)
    assert not same_device(NAME, ZEN3_ID, NAME, ZEN5_ID)
    assert same_device(NAME, None, NAME, ZEN5_ID) and same_device(NAME, ZEN3_ID, NAME, None)  # unknown: by name
    assert not same_device(NAME, ZEN5_ID, "Intel Xeon", ZEN5_ID) and not same_device(NAME, None, "Intel Xeon", None)


def test_this_machines_identity_without_timing(on_zen5):
    assert device_identity_for(Workload(device="cpu")) == ZEN5_ID
    assert device_identity_for(Workload(device="cuda:0")) is None  # a GPU's name is precise


# ------------------------------------------------------------------------------------------- study


def test_a_study_is_resumed_only_on_the_cpu_it_was_measured_on(tmp_path):
    space = load(tiny(tmp_path))
    storage = open_storage(storage_url(str(tmp_path / "s.db")))
    study, created, _ = prepare_study(space, storage, "s", device_name=NAME, command="", device_identity=ZEN3_ID)
    assert created and study.user_attrs["device_name"] == NAME and study.user_attrs["device_identity"] == ZEN3_ID
    with pytest.raises(SpecError) as refused:
        prepare_study(space, storage, "s", device_name=NAME, command="", device_identity=ZEN5_ID)
    assert str(refused.value) == (
        f"study 's' is measured on '{NAME}' ({ZEN3_ID}) but this machine's '{NAME}' is another CPU ({ZEN5_ID}); "
        "latencies from different CPUs do not belong in one study: pass --study NAME to start another study for "
        "this CPU"
    )
    _, created, _ = prepare_study(space, storage, "s", device_name=NAME, command="", device_identity=ZEN3_ID)
    assert not created
    with pytest.raises(SpecError, match="is measured on 'AMD EPYC' but this machine has 'Intel Xeon'"):
        prepare_study(space, storage, "s", device_name="Intel Xeon", command="", device_identity=ZEN3_ID)


def test_a_study_without_an_identity_resumes_by_name_and_gets_none(tmp_path):
    """A study made by an older effscope (or on a GPU) has no identity: resumed by the device name, as before, and
    left without one (where its trials ran is not known)."""
    space = load(tiny(tmp_path))
    storage = open_storage(storage_url(str(tmp_path / "s.db")))
    study, _, _ = prepare_study(space, storage, "old", device_name=NAME, command="")
    assert "device_identity" not in study.user_attrs
    resumed, created, _ = prepare_study(space, storage, "old", device_name=NAME, command="", device_identity=ZEN5_ID)
    assert not created and "device_identity" not in resumed.user_attrs


def test_the_search_refuses_a_study_of_another_cpu_before_any_worker_starts(tmp_path, on_zen5):
    from effscope.search.coordinator import run_search

    space = load(tiny(tmp_path))
    db = str(tmp_path / "r.db")
    prepare_study(
        space, open_storage(storage_url(db)), "tiny-cpu", device_name=NAME, command="", device_identity=ZEN3_ID
    )
    with pytest.raises(SpecError, match=r"is another CPU \(AuthenticAMD family 26 model 2"):
        run_search(space, storage=db)
    assert not RecordStore(db).records()  # nothing was measured


# ------------------------------------------------------------------------------------------- search cache


def _fake_profile(monkeypatch, env: dict, measured: list) -> None:
    """effscope.profile.run.profile without timing: a Record of `env` with 1 ms latencies, stored if asked."""
    from effscope.profile import run

    def profile(plans, options, *, store, worker=None, provenance=None, on_record=None):
        (plan,) = plans
        rec = Record(target=plan.target.name, kind="block", workload=plan.workload.as_dict(), **(provenance or {}))
        rec.latency = {"latency_ms_p50": 1.0, "latency_ms_p90": 1.0}
        rec.counts = {"params": 1000}
        rec.env = dict(env)
        measured.append(rec)
        if store is not None:
            store.add(rec)
        return [rec]

    monkeypatch.setattr(run, "profile", profile)


def test_a_cached_record_of_another_cpu_is_measured_again_and_the_new_one_is_then_reused(tmp_path, monkeypatch):
    from effscope.profile.target import resolve_target

    space = load(tiny(tmp_path))
    store = RecordStore(str(tmp_path / "c.db"))
    params = {"heads": 2, "lofi_heads": 1, "window_size": 7, "mlp_ratio": 1.0}
    target = resolve_target("hilo", {**params, "head_dim": 16})
    key = canonical_key("hilo", target.knobs(), space.workload, NAME)
    elsewhere = Record(target="hilo", kind="block", workload=space.workload.as_dict(), key=key, env=cpu_env(ZEN3))
    elsewhere.latency, elsewhere.counts = {"latency_ms_p50": 9.0, "latency_ms_p90": 9.0}, {"params": 1000}
    store.add(elsewhere)  # the same key: the name is the same, the CPU is not
    measured: list[Record] = []
    _fake_profile(monkeypatch, cpu_env(ZEN5), measured)
    objective = SearchObjective(
        space, store=store, device_name=NAME, device_identity=ZEN5_ID, study_name="c", command="", measure=None
    )
    study = optuna.create_study(directions=space.directions)
    for _ in range(2):
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=2)
    first, second = study.get_trials()
    assert first.user_attrs["status"] == "measured" and len(measured) == 1
    assert first.user_attrs["record_uid"] == measured[0].uid != elsewhere.uid and measured[0].key == key
    assert second.user_attrs["status"] == "cached" and second.user_attrs["record_uid"] == measured[0].uid
    assert len(measured) == 1  # the second trial reused the Record of this CPU, not the newer-than-nothing one


def test_the_cache_reuses_a_record_without_an_identity_by_name(tmp_path):
    space = load(tiny(tmp_path))
    store = RecordStore(str(tmp_path / "c.db"))
    objective = SearchObjective(
        space, store=store, device_name=NAME, device_identity=ZEN5_ID, study_name="c", command="", measure=None
    )
    old = Record(target="hilo", kind="block", workload={}, latency={"latency_ms_p90": 1.0}, key="k", env=cpu_env(None))
    store.add(old)
    assert objective._cached("k").uid == old.uid
    newer = Record(target="hilo", kind="block", workload={}, latency={"latency_ms_p90": 1.0}, key="k")
    newer.env = cpu_env(ZEN3)
    store.add(newer)  # the newest of the key, but of another CPU: the older one of this name still counts
    assert objective._cached("k").uid == old.uid
    assert store.latest("k").uid == newer.uid  # without a filter: the newest, as before


def test_a_latency_table_block_of_another_cpu_is_measured_again(tmp_path, monkeypatch):
    import dataclasses

    from effscope.profile.target import resolve_target

    space = load(tiny(tmp_path))
    store = RecordStore(str(tmp_path / "l.db"))
    target = resolve_target("hilo", {"heads": 2, "head_dim": 16, "lofi_heads": 1, "window_size": 7, "mlp_ratio": 1.0})
    call = P._call(target.config, (7, 7), 1)
    wl = dataclasses.replace(space.workload, size=call.size, batch=call.batch)
    elsewhere = Record(target="hilo", kind="block", workload=wl.as_dict(), env=cpu_env(ZEN3))
    elsewhere.key, elsewhere.latency = canonical_key("hilo", dict(call.knobs), wl, NAME), {"latency_ms_p90": 9.0}
    store.add(elsewhere)
    measured: list[Record] = []
    _fake_profile(monkeypatch, cpu_env(ZEN5), measured)
    m = P._Measurer(space, store, NAME, "", None, device_identity=ZEN5_ID)
    assert m.block(call).uid == measured[0].uid and m.measured == 1 and m.cached == 0
    assert m.block(call).uid == measured[0].uid and m.measured == 1 and m.cached == 1  # the new one is reused


def _table(identity: str | None, space) -> P.LatencyTable:
    return P.LatencyTable(
        name="t", space=space.name, target=space.target, kind=space.kind, workload=space.workload.as_dict(),
        device_name=NAME, statistic=space.latency_budget.statistic, features=[], entries=[], fit={"kind": "sum"},
        validation={}, device_identity=identity,
    )  # fmt: skip


def test_a_latency_table_of_another_cpu_is_refused(tmp_path):
    space = load(tiny(tmp_path))
    with pytest.raises(P.PredictorError) as refused:
        P.check_compatible(_table(ZEN3_ID, space), space, NAME, ZEN5_ID)
    assert str(refused.value) == (
        f"latency table 't' does not fit space tiny (device '{NAME}' of another CPU: {ZEN3_ID} vs {ZEN5_ID}); build "
        "one with `effscope lut build tiny` for this device and workload"
    )
    P.check_compatible(_table(ZEN5_ID, space), space, NAME, ZEN5_ID)
    old = _table(None, space).to_json().replace('"device_identity": null, ', "")
    assert "device_identity" not in old and P.LatencyTable.from_json(old).device_identity is None
    P.check_compatible(P.LatencyTable.from_json(old), space, NAME, ZEN5_ID)  # an older table: by name, as before


def test_a_built_table_records_the_cpu_it_was_measured_on(tmp_path, monkeypatch, on_zen5):
    class Idle:  # the profiler Worker, never asked anything: profile is faked
        def close(self) -> None:
            pass

    _fake_profile(monkeypatch, cpu_env(ZEN5), [])
    store = RecordStore(str(tmp_path / "l.db"))
    table = P.build_table(load(tiny(tmp_path)), store=store, samples=2, holdout=1, device_name=NAME, worker=Idle())
    assert table.device_identity == ZEN5_ID and P.load_table(store, table.uid).device_identity == ZEN5_ID


# ------------------------------------------------------------------------------------------- roofline


def _calibration(cpu: dict | None, peak: float = 1e6) -> Record:
    c = Calibration(
        device="cpu", device_name=NAME, threads=2, peak_mac_s={"fp32": peak}, bandwidth_bytes_s=1e5, env=cpu_env(cpu)
    )
    return c.to_record()


def _measured(cpu: dict | None) -> Record:
    return add_roofline(
        Record(
            target="vit", kind="block", workload=Workload(batch=1, size=(7, 7)).as_dict(), env=cpu_env(cpu),
            counts={"macs": 1000, "bytes_moved_est": 500, "bytes_weights_est": 0}, latency={"latency_ms_p50": 10.0},
        )
    )  # fmt: skip


def test_a_calibration_of_another_cpu_is_not_used_and_the_record_says_why(tmp_path):
    store = RecordStore(str(tmp_path / "r.db"))
    other = _calibration(ZEN3)
    store.add(other)
    assert Calibration.from_record(other).device_identity == ZEN3_ID
    assert latest_calibration(store, NAME, "fp32", 2, ZEN5_ID) is None
    r = attach_calibration(_measured(ZEN5), store)
    assert r.roofline["calibration_uid"] is None
    assert r.missing["roofline_fraction"] == (
        f"the stored roofline calibrations of '{NAME}' are of another CPU ({ZEN3_ID}), not of this one ({ZEN5_ID}): "
        "run effscope device --calibrate"
    )
    here = _calibration(ZEN5)
    store.add(here)
    assert attach_calibration(r, store).roofline["calibration_uid"] == here.uid
    newer_elsewhere = _calibration(ZEN3)
    store.add(newer_elsewhere)  # the newest of the name, but of the other CPU
    assert latest_calibration(store, NAME, "fp32", 2, ZEN5_ID).uid == here.uid
    assert latest_calibration(store, NAME, "fp32", 2, ZEN3_ID).uid == newer_elsewhere.uid


def test_calibrations_and_records_without_an_identity_match_by_name(tmp_path):
    store = RecordStore(str(tmp_path / "r.db"))
    old = _calibration(None)  # stored by an older effscope
    store.add(old)
    assert Calibration.from_record(old).device_identity is None
    assert attach_calibration(_measured(ZEN5), store).roofline["calibration_uid"] == old.uid
    zen3 = _calibration(ZEN3)
    store.add(zen3)
    assert attach_calibration(_measured(None), store).roofline["calibration_uid"] == zen3.uid  # the newest of the name
    assert attach_calibration(_measured(ZEN5), store).roofline["calibration_uid"] == old.uid


def test_roofline_points_skip_a_record_of_another_cpu():
    cal = Calibration.from_record(_calibration(ZEN5))
    data = roofline_points([_measured(ZEN5), _measured(ZEN3), _measured(None)], cal)
    assert len(data["points"]) == 2
    (skipped,) = data["skipped"]
    assert skipped["reason"] == (
        f"measured on {NAME} ({ZEN3_ID}), the calibration is of another CPU of that name ({ZEN5_ID})"
    )
