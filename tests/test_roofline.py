"""Roofline: calibration stored and found again, intensity / bound / achieved-fraction arithmetic, plot data, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from effscope.errors import SpecError
from effscope.metrics import FLAGS
from effscope.profile.record import Record, Workload, device_identity
from effscope.profile.roofline import (
    CALIBRATION_CONTENDED,
    CONTENDED,
    NO_CALIBRATION,
    ROOFLINE_FIELDS,
    Calibration,
    add_roofline,
    attach_calibration,
    calibrate,
    latest_calibration,
    roofline_numbers,
    roofline_points,
)
from effscope.profile.store import RecordStore

CPU = "Test CPU"


def cal(peak: float = 1e6, bw: float = 1e5, threads: int | None = 2, **kw) -> Calibration:
    return Calibration(
        device="cpu", device_name=CPU, threads=threads, peak_mac_s={"fp32": peak}, bandwidth_bytes_s=bw, **kw
    )


def measured(
    macs=1000, moved=500, weights=100, batch=4, p50=100.0, dtype="fp32", device_name=CPU, threads=2, **kw
) -> Record:
    """A measured Record with hand-picked numbers."""
    return Record(
        target=kw.pop("target", "vit"),
        kind="block",
        family=kw.pop("family", "vit"),
        workload=Workload(batch=batch, dtype=dtype, size=(7, 7)).as_dict(),
        counts={"macs": macs, "bytes_moved_est": moved, "bytes_weights_est": weights},
        latency={"latency_ms_p50": p50} if p50 is not None else {},
        env={"device_name": device_name, "torch_threads": threads},
        **kw,
    )


# ------------------------------------------------------------------------------------------- arithmetic


def test_intensity_per_image_and_at_the_batch():
    section, missing = roofline_numbers(*_parts(measured()), None)
    per_img = 400 + 100 / 4  # activations per image + the weights read once for 4 images
    assert section["bytes_moved_est_per_img"] == per_img
    assert section["intensity_mac_per_byte_b1"] == 1000 / 500
    assert section["intensity_mac_per_byte"] == pytest.approx(1000 / per_img)
    assert section["achieved_mac_s"] == pytest.approx(4 * 1000 / 0.1)  # 4 images x 1000 MACs in 100 ms


def test_amp_halves_the_bytes():
    section, _ = roofline_numbers(*_parts(measured(dtype="bf16", batch=1)), None)
    assert section["bytes_amp_scale"] == 0.5 and section["intensity_mac_per_byte"] == 1000 / 250


@pytest.mark.parametrize(
    "macs,moved,bound,by",
    [
        (1000, 500, 2 * 1e5, "memory"),  # intensity 2 < ridge 10: the bandwidth roof, 2 x 1e5
        (1000, 50, 1e6, "compute"),  # intensity 20 > ridge 10: the compute roof
        (1000, 100, 1e6, "compute"),  # at the ridge both roofs agree
    ],
)
def test_the_bound_is_the_lower_roof(macs, moved, bound, by):
    section, missing = roofline_numbers(*_parts(measured(macs, moved, 0, batch=1, p50=10.0)), cal())
    assert section["ridge_mac_per_byte"] == 10.0 and section["roofline_bound_by"] == by
    assert section["roofline_bound_mac_s"] == pytest.approx(bound)
    achieved = 1000 / 0.01
    assert section["achieved_mac_s"] == pytest.approx(achieved)
    assert section["roofline_fraction"] == pytest.approx(achieved / bound)
    assert section["roofline_min_latency_ms"] == pytest.approx(1000 / bound * 1e3)
    assert not missing


def test_missing_calibration_is_none_with_the_reason_never_zero():
    r = add_roofline(measured())
    assert set(r.roofline) == {*ROOFLINE_FIELDS, "bytes_amp_scale"}
    for name in ("peak_mac_s", "roofline_bound_mac_s", "roofline_fraction", "calibration_uid"):
        assert r.roofline[name] is None and r.missing[name] == NO_CALIBRATION
    assert r.roofline["intensity_mac_per_byte"] > 0 and "intensity_mac_per_byte" not in r.missing
    no_latency = add_roofline(measured(p50=None), cal())
    assert no_latency.roofline["roofline_fraction"] is None and no_latency.missing["achieved_mac_s"]
    assert no_latency.roofline["roofline_bound_mac_s"] is not None
    no_counts = add_roofline(Record(target="x", kind="block", workload=Workload().as_dict()), cal())
    assert (
        no_counts.roofline["intensity_mac_per_byte"] is None
        and "counting" in no_counts.missing["intensity_mac_per_byte"]
    )
    other_dtype = add_roofline(measured(dtype="fp16"), cal())
    assert other_dtype.missing["roofline_fraction"] == (
        "the calibration has no fp16 peak (it measured fp32): run effscope device --calibrate --dtype fp16"
    )
    # the copy bandwidth holds for every dtype: only what needs the fp16 peak is missing
    assert other_dtype.roofline["bandwidth_bytes_s"] == cal().bandwidth_bytes_s
    assert add_roofline(measured(dtype="fp16"), cal(uid="c1")).roofline["calibration_uid"] == "c1"
    assert "bandwidth_bytes_s" not in other_dtype.missing
    assert other_dtype.roofline["ridge_mac_per_byte"] is None and "ridge_mac_per_byte" in other_dtype.missing
    cannot = add_roofline(measured(dtype="fp16"), cal(unsupported={"fp16": "fp16 matmul does not run on cpu"}))
    assert cannot.missing["peak_mac_s"] == "the calibration has no fp16 peak: fp16 matmul does not run on cpu"


def test_a_missing_calibration_keeps_the_first_cause_of_a_missing_number():
    """No latency and no calibration: roofline_fraction needs both, and its reason names both, latency first."""
    r = add_roofline(measured(p50=None))
    assert r.roofline["roofline_fraction"] is None
    assert r.missing["roofline_fraction"] == f"no latency measured, and {NO_CALIBRATION}"
    assert r.missing["achieved_mac_s"] == "no latency measured" and r.missing["peak_mac_s"] == NO_CALIBRATION
    no_counts = add_roofline(Record(target="x", kind="block", workload=Workload().as_dict()))
    assert no_counts.missing["roofline_bound_mac_s"].startswith("no MAC or bytes-moved count")
    assert no_counts.missing["roofline_bound_mac_s"].endswith(NO_CALIBRATION)
    assert add_roofline(measured(p50=None), cal()).missing["roofline_fraction"] == "no latency measured"


def test_add_roofline_refills_and_clears_old_reasons():
    r = add_roofline(measured())
    add_roofline(r, cal(uid="c1"))
    assert r.roofline["calibration_uid"] == "c1" and not any(k in r.missing for k in ROOFLINE_FIELDS)


def test_old_json_loads_and_flat_has_the_roofline():
    old = json.loads(measured().to_json())
    del old["roofline"]
    r = Record.from_json(json.dumps(old))
    assert r.roofline == {}
    assert add_roofline(r, cal()).flat()["roofline_fraction"] == pytest.approx(r.roofline["roofline_fraction"])


def _parts(r: Record):
    return r.counts, r.workload, r.latency


# ------------------------------------------------------------------------------------------- store


def test_calibration_is_stored_and_found_again(tmp_path):
    store = RecordStore(str(tmp_path / "r.db"))
    real = calibrate("cpu", dtypes=("fp32",), threads=1, sizes=(16, 32), copy_bytes=2**20, max_time_s=0.05)
    assert real.threads == 1 and real.peak_mac_s["fp32"] > 0 and real.bandwidth_bytes_s > 0
    assert real.gemm_n["fp32"] in (16, 32) and real.copy_bytes == 2**20
    record = real.to_record(command="test")
    store.add(record)
    store.add(measured(device_name=real.device_name))  # an ordinary record is never taken for a calibration
    found = latest_calibration(store, real.device_name, "fp32", 1)
    assert found.uid == record.uid and found.peak_mac_s == real.peak_mac_s
    assert found.bandwidth_bytes_s == real.bandwidth_bytes_s and found.env["device_name"] == real.device_name
    assert record.kind == "calibration" and record.target == "roofline" and record.env["threads"] == 1
    assert record.flat()["peak_flop_s_fp32"] == 2 * real.peak_mac_s["fp32"]
    assert latest_calibration(store, real.device_name, "fp32", 2) is None  # other thread count
    # dtype not calibrated: the device's calibration still comes back, so the Record can say which peak is missing
    assert latest_calibration(store, real.device_name, "bf16", 1).uid == record.uid
    assert latest_calibration(store, "another CPU", "fp32", 1) is None
    newer = cal(peak=5.0, threads=1).to_record()
    newer.env["device_name"] = real.device_name
    store.add(newer)
    assert latest_calibration(store, real.device_name, "fp32", 1).uid == newer.uid  # the newest wins


def test_attach_calibration_completes_a_record(tmp_path):
    store = RecordStore(str(tmp_path / "r.db"))
    c = cal().to_record()
    c.env["device_name"] = CPU
    store.add(c)
    cache: dict = {}
    r = attach_calibration(add_roofline(measured(macs=1000, moved=500, weights=0, batch=1, p50=10.0)), store, cache)
    assert r.roofline["calibration_uid"] == c.uid and r.roofline["roofline_fraction"] == pytest.approx(1e5 / 2e5)
    assert "roofline_fraction" not in r.missing and len(cache) == 1
    lone = attach_calibration(add_roofline(measured(threads=8)), store)  # calibrated at 2 threads only: say so
    assert lone.missing["roofline_fraction"] == (
        "no roofline calibration of this device at 8 thread(s), only at 2: run effscope device --calibrate --threads 8"
    )
    elsewhere = attach_calibration(add_roofline(measured(device_name="another CPU")), store)
    assert elsewhere.missing["roofline_fraction"] == NO_CALIBRATION


def test_a_contended_calibration_is_used_only_without_another_and_flags_the_record(tmp_path):
    store = RecordStore(str(tmp_path / "r.db"))

    def add(peak: float, flags: tuple[str, ...] = (), dtypes: tuple[str, ...] = ("fp32",)) -> str:
        c = Calibration(
            device="cpu", device_name=CPU, threads=2, peak_mac_s=dict.fromkeys(dtypes, peak), bandwidth_bytes_s=1e5,
            flags=flags, env={"device_name": CPU},
        )  # fmt: skip
        record = c.to_record()
        store.add(record)
        return record.uid

    contended = add(1e5, flags=(CONTENDED,))
    r = attach_calibration(add_roofline(measured()), store)
    assert r.roofline["calibration_uid"] == contended and r.flags == [CALIBRATION_CONTENDED]
    idle = add(1e6)
    add(1e5, flags=(CONTENDED,))  # newer, but contended: the idle one stays the reference
    add(1e7, dtypes=("bf16",))  # newer still, but without fp32
    again = attach_calibration(r, store)
    assert again.roofline["calibration_uid"] == idle and again.flags == []  # refilled: the flag goes with the roofs
    assert CALIBRATION_CONTENDED in FLAGS
    in_memory = add_roofline(measured(), cal(flags=(CONTENDED,)))  # not stored, no uid: flagged all the same
    assert in_memory.flags == [CALIBRATION_CONTENDED]


def test_calibrate_rejects_bad_arguments():
    with pytest.raises(SpecError, match="dtypes must be among fp32, bf16, fp16, but got int8"):
        calibrate("cpu", dtypes=("int8",))
    with pytest.raises(SpecError, match="cpu or cuda"):
        calibrate("mps")


# ------------------------------------------------------------------------------------------- plot data


def test_roofline_points():
    c = cal(uid="c1")
    records = [
        measured(macs=1000, moved=500, weights=0, batch=1, p50=10.0, target="a", family="f1"),
        measured(macs=1000, moved=50, weights=0, batch=1, p50=10.0, target="b", family="f2"),
        measured(target="c", device_name="GPU"),
        measured(target="d", p50=None),
        measured(target="e", status="failed", error="boom"),
        cal().to_record(),  # calibrations are not points
    ]
    data = roofline_points(records, c)
    a, b = data["points"]
    assert (a["x"], a["y"], a["bound_by"], a["fraction"]) == (2.0, pytest.approx(1e5), "memory", pytest.approx(0.5))
    assert (b["x"], b["bound_by"], b["fraction"]) == (20.0, "compute", pytest.approx(0.1))
    assert a["label"] == "a @7x7" and data["groups"] == ["f1", "f2"]
    assert [(s["target"], s["reason"].split(" ")[0]) for s in data["skipped"]] == [
        ("c", "measured"),
        ("d", "no"),
        ("e", "failed:"),
    ]
    (roof,) = data["roofs"]
    assert roof["ridge_mac_per_byte"] == 10.0 and roof["x"][1] == 10.0 and roof["y"][1] == 1e6
    assert roof["y"][0] == pytest.approx(roof["x"][0] * 1e5) and roof["x"][0] < 2.0 and roof["x"][2] > 20.0
    json.dumps(data)  # plain data


# ------------------------------------------------------------------------------------------- CLI


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "effscope", *args], capture_output=True, text=True, timeout=120)


def test_cli_calibrate_then_profile_gets_the_bound(tmp_path):
    db = str(tmp_path / "r.db")
    fast = ("--gemm-sizes", "16,32", "--copy-mib", "1", "--max-time", "0.05")
    r = run("device", "--calibrate", "--dtype", "fp32", "--threads", "2", "--db", db, *fast)
    assert r.returncode == 0, r.stderr
    assert "peak GMAC/s" in r.stdout and "copy GB/s" in r.stdout and "calibration record" in r.stdout
    (c,) = RecordStore(db).records(target="roofline")
    assert c.kind == "calibration" and c.roofline["peak_mac_s_fp32"] > 0 and c.command.startswith("effscope device")
    if device_identity(c.env) is not None:  # a Linux host: the CPU it is matched on beside its name
        assert f"it serves measurements on this CPU: {device_identity(c.env)}" in " ".join(r.stdout.split())
    r = run("profile", "vit", "--tokens", "7", "--threads", "2", "--max-time", "0.1", "--no-throughput", "--db", db)
    assert r.returncode == 0, r.stderr
    assert "MAC/byte (estimated)" in r.stdout and "of its roofline bound" in r.stdout
    (p,) = RecordStore(db).records(target="vit")
    assert p.roofline["calibration_uid"] == c.uid and p.roofline["roofline_fraction"] > 0
    assert "roofline_fraction" not in p.missing


def test_cli_calibrate_bad_input_is_one_sentence():
    r = run("device", "--calibrate", "--gemm-sizes", "a,b")
    assert r.returncode == 2 and "--gemm-sizes takes integers in [1, 32768]" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(("stop", "code"), [("SIGTERM", 143), ("Ctrl-C", 130)])
def test_a_calibration_stopped_midway_says_so_and_leaves_no_database(tmp_path, monkeypatch, capfd, stop, code):
    import os
    import signal

    from _cli import effscope

    from effscope.profile import roofline

    def stopped(*args, **kwargs):
        if stop == "SIGTERM":  # as `timeout` or a CI cancel sends it: the command turns it into an interrupt
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(roofline, "calibrate", stopped)
    db = tmp_path / "d.db"
    got, _, err = effscope(monkeypatch, capfd, ["device", "--calibrate", "--db", str(db)])
    assert got == code and "interrupted: the calibration had not finished, so nothing was stored" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no empty database, -wal or -shm
    kept = tmp_path / "kept.db"
    RecordStore(str(kept)).add(Record(target="vit", kind="block", workload={}))
    got, _, _ = effscope(monkeypatch, capfd, ["device", "--calibrate", "--db", str(kept)])
    assert got == code and len(RecordStore(str(kept)).records()) == 1  # a database already there is kept


def test_a_calibration_refused_on_the_device_leaves_no_new_database(tmp_path, monkeypatch, capfd):
    from _cli import effscope

    from effscope.profile import roofline

    def refused(*args, **kwargs):
        raise SpecError("no dtype runs on cpu")

    monkeypatch.setattr(roofline, "calibrate", refused)
    code, _, err = effscope(monkeypatch, capfd, ["device", "--calibrate", "--db", str(tmp_path / "d.db")])
    assert code == 2 and "no dtype runs on cpu" in err, err
    assert list(tmp_path.iterdir()) == []
