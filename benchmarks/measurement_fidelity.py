"""How far can effscope's latency numbers be trusted on this machine?

Reports, per target:
- repeatability: the same target measured twice in one run (ratio of medians; target: GPU within 1 %, CPU within 5 %),
  and the same for the 10th percentile (a low-percentile estimator, less sensitive to interference),
- agreement with torch.utils.benchmark.Timer (blocked_autorange) on the same module (target: within 3 %): the two
  harnesses alternate in rounds and each side's samples are pooled, so drift over the run does not pass for a
  difference between them,
- on a GPU, both again for the forward replayed as one CUDA graph, which removes the host's launch cost: where eager
  is host-bound, its repeatability is the host CPU's, and the graph's is the GPU's (`host_bound` = eager / graph),
and the profiler's own overhead: the timing loop's cost per iteration (an empty callable), and the wall time of a
full `effscope profile` job (worker start, build, count, time) beside the time spent in timed iterations.

Usage: python benchmarks/measurement_fidelity.py [--device cpu|cuda] [--threads N] [--targets vit hilo ...]
           [--max-time S] [--timer-time S] [--out reports/FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.utils.benchmark as tbench

from effscope.profile.env import retain_freed_heap
from effscope.profile.measure import Options
from effscope.profile.record import Workload
from effscope.profile.run import Plan, profile
from effscope.profile.target import Bound, resolve_target
from effscope.profile.timing import capture_cuda_graph, measure_latency, set_threads

# target -> token grid (blocks) or None (a model at its own input size)
TARGETS: dict[str, tuple[int, int] | None] = {
    "vit": (14, 14),
    "hilo": (28, 28),
    "lightvit": (28, 28),
    "pvtv2_b0": None,
    "litv2_s": None,
}


def _forward(name: str, size, device: torch.device):
    target = resolve_target(name)
    module = target.build(device).eval()
    args = target.example_args(module, 1, size, device)
    bound = Bound(module, args)
    tensors = bound.tensors(args)

    def fn():
        with torch.no_grad():
            return bound(*tensors)

    return fn


AGREEMENT_ROUNDS = 4


def _agreement(fn, dev, threads: int, max_time_s: float, timer_time_s: float) -> tuple[float, float]:
    """Medians (ms) of effscope's latency samples and of torch.utils.benchmark's per-call block times, measured in
    alternating rounds (effscope, Timer, effscope, ...) and pooled per side: the machine's drift over the run hits
    both alike, so what remains is the two harnesses' difference, not when each one ran."""
    # Timer synchronizes CUDA itself, so on a GPU its figure is wall time per call, launches included.
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(AGREEMENT_ROUNDS):
        ours += measure_latency(fn, device=dev, max_time_s=max_time_s / AGREEMENT_ROUNDS).samples_ms
        theirs += [1e3 * t for t in timer.blocked_autorange(min_run_time=timer_time_s / AGREEMENT_ROUNDS).times]
    return statistics.median(ours), statistics.median(theirs)


def _graph_fidelity(fn, dev, eager_ms: float, threads: int, max_time_s: float, timer_time_s: float) -> dict[str, Any]:
    """Repeatability and Timer agreement of the forward replayed as a CUDA graph; eager / graph = how host-bound."""
    try:
        replay = capture_cuda_graph(fn, dev)
    except RuntimeError as e:
        return {"graph_error": str(e).splitlines()[0] if str(e) else type(e).__name__}
    first = measure_latency(replay, device=dev, max_time_s=max_time_s)
    second = measure_latency(replay, device=dev, max_time_s=max_time_s)
    ours_ms, timer_ms = _agreement(replay, dev, threads, max_time_s, timer_time_s)
    return {
        "graph_median_ms_1": first.median_ms,
        "graph_median_ms_2": second.median_ms,
        "graph_repeat_ratio": second.median_ms / first.median_ms,
        "graph_interleaved_ms": ours_ms,
        "graph_timer_median_ms": timer_ms,
        "graph_agreement_ratio": ours_ms / timer_ms,
        "host_bound": eager_ms / first.median_ms,
    }


def _worst(rows: list[dict[str, Any]], key: str) -> float | None:
    """The largest |ratio - 1| over the rows that have `key`; None when none has it (CPU, or capture failed)."""
    values = [abs(r[key] - 1) for r in rows if r.get(key) is not None]
    return max(values) if values else None


def run(
    device: str = "cpu",
    *,
    threads: int | None = None,
    targets: list[str] | None = None,
    max_time_s: float = 3.0,
    timer_time_s: float = 2.0,
    default_heap: bool = False,
    deadline: float | None = None,
    guess_s: float = 15.0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Measure repeatability, agreement with torch.utils.benchmark and the profiler's overhead; returns the results.

    Args:
        device: "cpu", "cuda" or "cuda:N".
        threads: torch intra-op threads (default: torch's current setting), pinned for the run.
        targets: names from TARGETS (default: all of them).
        max_time_s: cap on each of the two adaptive effscope latency measurements per target.
        timer_time_s: torch.utils.benchmark's blocked_autorange min_run_time per target.
        default_heap: leave the C library's heap as it is (effscope-v1), instead of keeping freed heap mapped as
            effscope's measurement process does: shows what that setting changes. The profile job is unaffected.
        deadline: a `time.time()` by which to have finished: a target (or the profile job) expected to run past
            it is not started, and is listed under "not_run".
        guess_s: the seconds a target (and the profile job) is expected to take until one target has been timed.
        progress: called with the results so far after each target, so a caller can keep them if stopped.
    """
    unknown = sorted(set(targets or ()) - set(TARGETS))
    if unknown:
        raise SystemExit(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    dev = torch.device(device)
    threads = threads or torch.get_num_threads()
    set_threads(threads)
    if not default_heap:
        retain_freed_heap()  # as in effscope's measurement process, so this measures effscope's protocol
    res: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": device,
        "processor": platform.processor() or platform.machine(),
        "threads": threads,
        "heap": "C library default" if default_heap else "freed heap kept mapped",
        "torch": torch.__version__,
        "max_time_s": max_time_s,
        "timer_time_s": timer_time_s,
        "rows": [],
        "not_run": [],
    }
    walls: list[float] = []

    def time_left_for_one() -> bool:
        expected = statistics.mean(walls) if walls else guess_s
        return deadline is None or deadline - time.time() >= 1.2 * expected

    for name in targets or TARGETS:
        if not time_left_for_one():
            res["not_run"].append(name)
            continue
        t0 = time.perf_counter()
        res["rows"].append(_measure_target(name, dev, threads, max_time_s, timer_time_s))
        walls.append(time.perf_counter() - t0)
        res.update(_worst_figures(res["rows"]))
        if progress:
            progress(res)

    empty = measure_latency(lambda: None, device=dev, max_time_s=1.0, min_iters=1000)
    res["loop_overhead_us"], res["loop_overhead_n"] = 1e3 * empty.median_ms, empty.n
    walls = []  # the job is guessed afresh: it is not a target
    if not time_left_for_one():
        res["not_run"].append("profile job")
        return res
    t0 = time.perf_counter()
    (record,) = profile(
        [Plan(resolve_target("vit"), Workload(device=device, size=(14, 14), threads=threads))],
        Options(max_time_s=1.0, window_s=1.0),
        store=None,
    )
    res |= {
        "job_status": record.status,
        "job_wall_s": time.perf_counter() - t0,
        "job_timed_s": sum(record.details.get("latency_samples_ms", [])) / 1e3,
        "job_reference_ms_p50": record.reference.get("reference_ms_p50"),
    }
    return res


def _measure_target(name: str, dev: torch.device, threads: int, max_time_s: float, timer_time_s: float) -> dict:
    """One target's row: two medians back to back, Timer agreement, and on a GPU the same for the graph replay."""
    fn = _forward(name, TARGETS[name], dev)
    first = measure_latency(fn, device=dev, max_time_s=max_time_s)
    second = measure_latency(fn, device=dev, max_time_s=max_time_s)
    ours_ms, timer_ms = _agreement(fn, dev, threads, max_time_s, timer_time_s)
    return {
        "target": name,
        "size": TARGETS[name],
        "median_ms_1": first.median_ms,
        "median_ms_2": second.median_ms,
        "repeat_ratio": second.median_ms / first.median_ms,
        "p10_ms_1": first.p10_ms,
        "p10_ms_2": second.p10_ms,
        "repeat_ratio_p10": second.p10_ms / first.p10_ms,  # the low-percentile estimator, beside the median
        "rel_iqr_1": first.rel_iqr,
        "interleaved_ms": ours_ms,
        "timer_median_ms": timer_ms,
        "agreement_ratio": ours_ms / timer_ms,
        "cpu_util": first.cpu_util,
        "timer": first.timer,
        **(_graph_fidelity(fn, dev, first.median_ms, threads, max_time_s, timer_time_s) if dev.type == "cuda" else {}),
    }


def _worst_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "worst_repeat_dev": _worst(rows, "repeat_ratio"),
        "worst_agreement_dev": _worst(rows, "agreement_ratio"),
        "median_repeat_ratio": statistics.median(r["repeat_ratio"] for r in rows),
        "worst_repeat_dev_p10": _worst(rows, "repeat_ratio_p10"),
        "worst_graph_repeat_dev": _worst(rows, "graph_repeat_ratio"),
        "worst_graph_agreement_dev": _worst(rows, "graph_agreement_ratio"),
    }


def print_results(res: dict[str, Any]) -> None:
    print(
        f"device {res['device']} ({res['processor']}), threads {res['threads']}, torch {res['torch']}, "
        f"heap: {res.get('heap', '-')}"
    )
    print(
        f"{'target':10} {'median1 ms':>11} {'median2 ms':>11} {'repeat':>8} {'ours ms':>9} {'Timer ms':>9} "
        f"{'agree':>7} {'IQR %':>6} {'cpu util':>8}"
    )
    for r in res["rows"]:
        print(
            f"{r['target']:10} {r['median_ms_1']:11.3f} {r['median_ms_2']:11.3f} {r['repeat_ratio']:8.4f} "
            f"{r['interleaved_ms']:9.3f} {r['timer_median_ms']:9.3f} {r['agreement_ratio']:7.4f} "
            f"{100 * r['rel_iqr_1']:6.1f} {r['cpu_util'] if r['cpu_util'] is not None else float('nan'):8.2f}"
        )
    print(
        f"(median1, median2: two measurements back to back; ours ms and Timer ms: {AGREEMENT_ROUNDS} alternating "
        "rounds of each, pooled)"
    )
    if not res["rows"]:
        print("no target was measured")
    else:
        _print_worst(res)
    graph_rows = [r for r in res["rows"] if "graph_median_ms_1" in r or "graph_error" in r]
    if graph_rows:
        print("CUDA graph replay (the GPU's work without per-kernel launches):")
        print(
            f"{'target':10} {'median1 ms':>11} {'median2 ms':>11} {'repeat':>8} {'ours ms':>9} {'Timer ms':>9} "
            f"{'agree':>7} {'eager/graph':>11}"
        )
        for r in graph_rows:
            if "graph_error" in r:
                print(f"{r['target']:10} capture failed: {r['graph_error']}")
                continue
            print(
                f"{r['target']:10} {r['graph_median_ms_1']:11.4f} {r['graph_median_ms_2']:11.4f} "
                f"{r['graph_repeat_ratio']:8.4f} {r['graph_interleaved_ms']:9.4f} {r['graph_timer_median_ms']:9.4f} "
                f"{r['graph_agreement_ratio']:7.4f} "
                f"{r['host_bound']:11.2f}"
            )
        if res["worst_graph_repeat_dev"] is not None:
            print(
                f"graph replay: worst repeatability deviation {100 * res['worst_graph_repeat_dev']:.2f} % "
                f"(target 1 %); "
                f"worst Timer disagreement {100 * res['worst_graph_agreement_dev']:.2f} % (target 3 %)"
            )
    print(
        f"timing-loop overhead: {res['loop_overhead_us']:.2f} us per iteration "
        f"(empty callable, n={res['loop_overhead_n']})"
    )
    if res["not_run"]:
        print(f"not run for lack of time: {', '.join(res['not_run'])}")
    if "job_wall_s" not in res:
        return
    ref = res["job_reference_ms_p50"]
    print(
        f"one profile job (vit @14x14, spawn + build + count + latency + 1 s throughput + reference): "
        f"{res['job_wall_s']:.1f} s wall, of which {res['job_timed_s']:.2f} s in timed latency iterations; "
        f"reference module p50 {ref if ref is not None else float('nan'):.3f} ms"
    )


def _print_worst(res: dict[str, Any]) -> None:
    print(
        f"worst repeatability deviation {100 * res['worst_repeat_dev']:.2f} % "
        f"(target {'1' if res['device'].startswith('cuda') else '5'} %); worst Timer disagreement "
        f"{100 * res['worst_agreement_dev']:.2f} % (target 3 %)"
    )
    print(
        f"low-percentile estimator: worst repeatability deviation of p10 {100 * res['worst_repeat_dev_p10']:.2f} % "
        f"(median's: {100 * res['worst_repeat_dev']:.2f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--targets", nargs="+", default=None, help=f"subset of: {', '.join(TARGETS)}")
    parser.add_argument("--max-time", type=float, default=3.0, help="cap per effscope latency measurement, s")
    parser.add_argument("--timer-time", type=float, default=2.0, help="torch.utils.benchmark min_run_time, s")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--default-heap", action="store_true", help="do not keep freed heap mapped (effscope-v1)")
    a = parser.parse_args()
    res = run(
        a.device,
        threads=a.threads,
        targets=a.targets,
        max_time_s=a.max_time,
        timer_time_s=a.timer_time,
        default_heap=a.default_heap,
    )
    print_results(res)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
