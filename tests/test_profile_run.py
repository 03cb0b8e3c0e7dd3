"""Profiling runs end to end: a worker process per run, failures recorded with their reason, the run goes on."""

from __future__ import annotations

import platform

import pytest

from effscope.errors import SpecError, UnknownNameError
from effscope.profile import record as record_module
from effscope.profile.env import HEAP_PAD_BYTES
from effscope.profile.measure import Options
from effscope.profile.record import Record, Workload
from effscope.profile.run import Plan, default_cuda_graph, parse_size, profile, rank_correlation, validate_workload
from effscope.profile.store import RecordStore
from effscope.profile.target import resolve_target
from effscope.profile.worker import Worker

FAST = Options(max_time_s=0.2, window_s=0.2, reference=False, timeout_s=120, fresh_process=False)


@pytest.fixture(scope="module")
def worker():
    with Worker() as w:
        yield w


def _plan(name, **workload):
    return Plan(resolve_target(name), Workload(**workload))


def test_a_registered_block_is_counted_and_measured(worker, tmp_path):
    store = RecordStore(str(tmp_path / "r.db"))
    (r,) = profile([_plan("vit", size=(7, 7))], FAST, store=store, worker=worker)
    assert r.status == "ok", r.error
    # vit block, dim 128, 49 tokens: qkv 3*128*128 + proj 128*128 + mlp 2*128*512 per token, + attention 2*49*128
    per_token = 3 * 128 * 128 + 128 * 128 + 2 * 128 * 512
    gemm = 49 * per_token + 2 * 49 * 49 * 128
    assert r.counts["macs"] == gemm + 2 * 5 * 49 * 128  # + fvcore's 5 per element for the two layer norms
    assert r.latency["latency_ms_p50"] > 0 and r.latency["latency_n"] >= 3
    # timed seconds: the latency samples plus the throughput window, nothing else
    assert r.latency["timed_s"] >= sum(r.details["latency_samples_ms"]) / 1e3 + r.throughput["throughput_window_s"]
    assert r.memory["peak_rss_bytes"] is not None and r.memory["peak_rss_bytes"] >= 0
    assert r.energy["energy_j_per_img"] is None and "NVML" in r.missing["energy_j_per_img"]
    assert r.env["torch_version"] and r.knobs["heads"] == 4
    assert r.details["throughput_vs_latency"] > 0  # the mismatch flag's figure (its rule: the next test)
    if platform.libc_ver()[0] == "glibc":  # the measurement process keeps freed heap mapped, and says so
        assert r.env["malloc_top_pad_bytes"] == HEAP_PAD_BYTES and r.protocol["name"] == "effscope-v2"
    assert store.records()[0].uid == r.uid


@pytest.mark.parametrize(
    "target,expected",
    [
        ("_targets:raising", "RuntimeError: forward exploded on purpose"),
        ("_targets:hungry", "out of memory on cpu"),
        ("_targets:not_a_module", "must return a torch.nn.Module"),
        ("_targets:killed", "measurement process died with SIGKILL"),
    ],
)
def test_a_failing_target_becomes_a_failed_record_and_the_run_goes_on(worker, tmp_path, target, expected):
    store = RecordStore(str(tmp_path / "r.db"))
    bad, good = profile([_plan(target), _plan("_targets:tiny")], FAST, store=store, worker=worker)
    assert bad.status == "failed" and expected in bad.error
    assert good.status == "ok" and good.counts["macs"] == 64 and good.counts["params"] == 72
    assert [r.status for r in store.records()] == ["failed", "ok"]  # both kept, in order


def test_the_timing_protocol_is_part_of_the_cache_key(monkeypatch):
    """Numbers measured under another protocol (another warm-up, another heap) are never served from the cache."""
    wl = Workload(size=(7, 7))
    now = record_module.canonical_key("vit", {"heads": 4}, wl, "cpu")
    monkeypatch.setattr(record_module, "PROTOCOL", "effscope-v1")
    assert record_module.canonical_key("vit", {"heads": 4}, wl, "cpu") != now


def test_cpu_peak_rss_is_only_reported_from_a_fresh_process():
    from dataclasses import replace

    with Worker() as w:
        plans = [_plan("vit", size=(7, 7)), _plan("vit", size=(7, 7))]
        first, reused = profile(plans, FAST, store=None, worker=w)
        assert first.memory["peak_rss_bytes"] > 0
        # Library code paged in by the first forward (file-backed, 10-20 MiB on Linux) is not the block's memory.
        params_bytes = 4 * sum(p.numel() for p in resolve_target("vit").build().parameters())
        if platform.system() == "Linux":
            assert first.details["rss_file_growth_bytes"] >= 0
            assert first.memory["peak_rss_bytes"] < params_bytes + 6 * 2**20
        assert reused.memory["peak_rss_bytes"] is None and "reused worker" in reused.missing["peak_rss_bytes"]
        again, fresh = profile(plans, replace(FAST, fresh_process=True), store=None, worker=w)
        assert again.memory["peak_rss_bytes"] > 0 and fresh.memory["peak_rss_bytes"] > 0


def test_cpu_peak_rss_leaves_out_file_backed_growth(monkeypatch):
    """The peak counts anonymous growth only: RSS growth to the peak less the growth of file-backed pages."""
    from effscope.profile import measure
    from effscope.profile.record import Record

    mib = 2**20
    status_kb = {"VmHWM": 150 * 1024, "RssFile": 32 * 1024}
    monkeypatch.setattr(measure, "_status_kb", status_kb.get)
    record = Record(target="t", kind="block", workload={})
    measure._memory(lambda: None, measure.torch.device("cpu"), (100 * mib, 20 * mib), True, record)
    assert record.memory["peak_rss_bytes"] == (150 - 100 - 12) * mib
    assert record.details["rss_file_growth_bytes"] == 12 * mib


def test_a_record_says_what_ran_its_size_precision_warm_up_and_what_was_not_measured(worker):
    from dataclasses import replace

    (r,) = profile([_plan("vit", dtype="bf16")], replace(FAST, throughput=False), store=None, worker=worker)
    assert r.status == "ok", r.error
    assert r.workload["size"] is None and r.input_size() == (28, 28)  # the block's default grid, as measured
    assert (r.flat()["height"], r.flat()["width"]) == (28, 28) and r.details["input_shapes"] == [[1, 784, 128]]
    assert (r.env["dtype"], r.env["amp"], r.env["threads"]) == ("fp32", "bfloat16", None)  # autocast, not pinned
    assert r.latency["latency_warmup_iters"] >= 1 and r.latency["latency_warmup_s"] > 0
    assert r.protocol["throughput"] == "not measured" and r.protocol["throughput_window_s"] is None
    assert "cut short at 0.2 s" in r.protocol["warmup"]


def test_without_latency_the_reference_ratio_is_missing_with_the_reason():
    from dataclasses import replace

    (r,) = profile([_plan("_targets:tiny")], replace(FAST, reference=True, latency=False), store=None)
    assert r.reference["reference_ms_p50"] > 0 and r.reference["latency_vs_reference"] is None
    assert r.missing["latency_vs_reference"] == "no latency measured"


def test_reference_is_timed_before_and_after():
    from dataclasses import replace

    (r,) = profile([_plan("_targets:tiny")], replace(FAST, reference=True), store=None)
    ref = r.reference
    assert ref["reference_id"] == "ref-mlp-v1"
    assert ref["reference_ms_p50"] == min(ref["reference_ms_p50_before"], ref["reference_ms_p50_after"])
    assert ref["latency_vs_reference"] == r.latency["latency_ms_p50"] / ref["reference_ms_p50"]


def test_a_hung_target_times_out(worker, tmp_path):
    opts = Options(max_time_s=0.2, window_s=0.2, reference=False, timeout_s=5)
    (r,) = profile([_plan("_targets:sleepy")], opts, store=None, worker=worker)
    assert r.status == "failed" and "timed out after 5 s" in r.error
    assert r.protocol["name"] == "effscope-v2"  # how it was to be timed, though its process recorded nothing
    (ok,) = profile([_plan("_targets:tiny")], FAST, store=None, worker=worker)  # a fresh process took over
    assert ok.status == "ok"


def test_early_abort_stops_a_candidate_over_budget(worker):
    opts = Options(max_time_s=2.0, window_s=0.2, reference=False, throughput=True, abort_above_ms=1e-6)
    (r,) = profile([_plan("vit", size=(7, 7))], opts, store=None, worker=worker)
    assert r.latency["latency_aborted"] and "aborted-over-budget" in r.flags
    assert r.latency["latency_n"] < 20
    # the throughput window is skipped, and the Record says why rather than leaving it empty
    assert not r.throughput and "over the latency budget" in r.missing["throughput_img_s"]


def test_a_sweep_whose_first_batch_runs_out_of_memory_says_so(monkeypatch):
    from effscope.profile import measure, timing

    oom = timing.SweepResult((timing.SweepPoint(1, None, "out of memory: 2 GiB"),), None, None, 1, "oom")
    monkeypatch.setattr(timing, "batch_sweep", lambda *a, **k: oom)
    record = Record(target="vit", kind="block", workload=Workload().as_dict())
    measure._sweep(resolve_target("vit"), None, Workload(), FAST, record, None)
    assert record.throughput == {"peak_throughput_img_s": None, "peak_throughput_batch": None}
    assert record.missing == dict.fromkeys(("peak_throughput_img_s", "peak_throughput_batch"), "out of memory: 2 GiB")


def test_with_flush_cache_throughput_is_not_held_against_latency(worker):
    """Only the latency repeats flush the caches, so the throughput window runs warm: no mismatch by design."""
    (r,) = profile([_plan("vit", size=(7, 7), flush_cache=True)], FAST, store=None, worker=worker)
    assert r.status == "ok" and r.throughput["throughput_img_s"] > 0
    assert "throughput_vs_latency" not in r.details and "throughput-latency-mismatch" not in r.flags


@pytest.mark.parametrize(
    "img_s,device,flagged",
    [(100.0, "cpu", False), (120.0, "cpu", False), (60.0, "cpu", True), (130.0, "cpu", True), (300.0, "cuda", False)],
)
def test_throughput_far_from_latency_is_flagged_on_a_cpu(img_s, device, flagged):
    """Batch 4 at 40 ms is 100 img/s: a throughput 1.25x away either way means the machine changed between the two
    timings; on a GPU, back-to-back calls overlap, so throughput may exceed batch / latency by design."""
    import torch

    from effscope.profile.measure import _check_throughput_against_latency

    r = Record(target="x", kind="block", workload=Workload(batch=4).as_dict())
    r.latency, r.throughput = {"latency_ms_p50": 40.0}, {"throughput_img_s": img_s, "throughput_batch": 4}
    _check_throughput_against_latency(torch.device(device), r)
    assert ("throughput-latency-mismatch" in r.flags) is flagged
    assert r.details.get("throughput_vs_latency") == (None if device == "cuda" else pytest.approx(img_s / 100))


def test_host_bound_ratio_is_eager_over_graph_and_missing_without_both():
    from effscope.profile.measure import HOST_BOUND, host_bound_ratio

    assert host_bound_ratio(26.0, 5.2) == pytest.approx(5.0) and 5.0 > HOST_BOUND
    assert host_bound_ratio(1.0, 1.0) == 1.0 < HOST_BOUND
    assert host_bound_ratio(None, 5.2) is None and host_bound_ratio(26.0, 0.0) is None


def test_cuda_graph_fields_are_missing_with_a_reason_off_the_gpu():
    import torch

    from effscope.profile.measure import _cuda_graph_latency
    from effscope.profile.record import Record

    record = Record(target="vit", kind="block", workload={})
    _cuda_graph_latency(lambda cache=True: None, torch.device("cpu"), FAST, record)
    for key in ("latency_graph_ms_p50", "latency_graph_ms_p90", "host_bound_ratio"):
        assert record.latency[key] is None and record.missing[key] == "CUDA graphs need a GPU"
    assert "host-bound" not in record.flags


def test_input_validation():
    assert parse_size("224", "--resolution") == (224, 224)
    assert parse_size("224x320", "--resolution") == (224, 320)
    with pytest.raises(SpecError, match="N or HxW"):
        parse_size("224x", "--resolution")
    with pytest.raises(SpecError, match="--dtype must be one of fp32, bf16, fp16"):
        validate_workload(Workload(dtype="int8"))
    with pytest.raises(SpecError, match="--cuda-graph needs --device cuda"):
        validate_workload(Workload(cuda_graph=True))
    # a replay times a forward: training never replays one, so its Record must not say it did
    with pytest.raises(SpecError, match="--cuda-graph times a forward replayed as a CUDA graph, which --mode train"):
        validate_workload(Workload(device="cuda", mode="train", cuda_graph=True))
    with pytest.raises(SpecError, match=r"x.toml: \[workload\] cuda_graph .* \[workload\] mode = 'train' does not"):
        validate_workload(Workload(device="cuda", mode="train", cuda_graph=True), "x.toml")
    assert [default_cuda_graph(d, m) for d, m in (("cuda", "infer"), ("cuda:1", "train"), ("cpu", "infer"))] == [
        True,
        False,
        False,
    ]
    with pytest.raises(UnknownNameError, match="did you mean 'hilo'"):
        resolve_target("hilo_atn")
    with pytest.raises(SpecError, match="cannot import 'no_such_module'"):
        resolve_target("no_such_module:fn")


def test_rank_correlation_ignores_failed_and_missing():
    from effscope.profile.record import Record

    def rec(macs, p50, status="ok"):
        r = Record(target="t", kind="block", workload={}, status=status)
        r.counts, r.latency = {"macs": macs}, {"latency_ms_p50": p50}
        return r

    got = rank_correlation([rec(1, 1.0), rec(2, 3.0), rec(3, 2.0), rec(4, 9.0, "failed"), rec(5, None)])
    assert got["n"] == 3 and got["spearman"] == pytest.approx(0.5)
