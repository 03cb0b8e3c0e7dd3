"""How far can effscope's latency numbers be trusted on this machine?

Reports, per target:
- repeatability: the same target measured twice in one run (ratio of medians; target: GPU within 1 %, CPU within 5 %),
- agreement with torch.utils.benchmark.Timer (blocked_autorange) on the same module (target: within 3 %),
and the profiler's own overhead: the timing loop's cost per iteration (an empty callable), and the wall time of a
full `effscope profile` job (worker start, build, count, time) beside the time spent in timed iterations.

Usage: python benchmarks/measurement_fidelity.py [--device cpu|cuda] [--threads N] [--out reports/FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.utils.benchmark as tbench

from effscope.blocks._layers import attention_impl
from effscope.profile.measure import Options
from effscope.profile.record import Workload
from effscope.profile.run import Plan, profile
from effscope.profile.target import Bound, resolve_target
from effscope.profile.timing import measure_latency, set_threads

TARGETS = [("vit", (14, 14)), ("hilo", (28, 28)), ("lightvit", (28, 28)), ("pvtv2_b0", None), ("litv2_s", None)]


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


def _timer_median_ms(fn, device: torch.device, threads: int) -> float:
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=2.0).median * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    a = parser.parse_args()
    device = torch.device(a.device)
    set_threads(a.threads)
    rows = []
    with attention_impl("sdpa"):
        for name, size in TARGETS:
            fn = _forward(name, size, device)
            first = measure_latency(fn, device=device, max_time_s=3.0)
            second = measure_latency(fn, device=device, max_time_s=3.0)
            timer_ms = _timer_median_ms(fn, device, a.threads)
            rows.append(
                {
                    "target": name,
                    "size": size,
                    "median_ms_1": first.median_ms,
                    "median_ms_2": second.median_ms,
                    "repeat_ratio": second.median_ms / first.median_ms,
                    "rel_iqr_1": first.rel_iqr,
                    "timer_median_ms": timer_ms,
                    "agreement_ratio": first.median_ms / timer_ms,
                    "cpu_util": first.cpu_util,
                }
            )

    empty = measure_latency(lambda: None, device=device, max_time_s=1.0, min_iters=1000)
    t0 = time.perf_counter()
    (record,) = profile(
        [Plan(resolve_target("vit"), Workload(device=a.device, size=(14, 14), threads=a.threads))],
        Options(max_time_s=1.0, window_s=1.0),
        store=None,
    )
    job_wall_s = time.perf_counter() - t0
    timed_s = sum(record.details.get("latency_samples_ms", [])) / 1e3

    print(
        f"device {a.device} ({platform.processor() or platform.machine()}), threads {a.threads}, "
        f"torch {torch.__version__}"
    )
    print(
        f"{'target':10} {'median1 ms':>11} {'median2 ms':>11} {'repeat':>8} {'Timer ms':>9} {'agree':>7} "
        f"{'IQR %':>6} {'cpu util':>8}"
    )
    for r in rows:
        print(
            f"{r['target']:10} {r['median_ms_1']:11.3f} {r['median_ms_2']:11.3f} {r['repeat_ratio']:8.4f} "
            f"{r['timer_median_ms']:9.3f} {r['agreement_ratio']:7.4f} {100 * r['rel_iqr_1']:6.1f} "
            f"{r['cpu_util'] if r['cpu_util'] is not None else float('nan'):8.2f}"
        )
    repeat_dev = max(abs(r["repeat_ratio"] - 1) for r in rows)
    agree_dev = max(abs(r["agreement_ratio"] - 1) for r in rows)
    print(
        f"worst repeatability deviation {100 * repeat_dev:.2f} % "
        f"(target {'1' if device.type == 'cuda' else '5'} %); worst Timer disagreement {100 * agree_dev:.2f} % "
        "(target 3 %)"
    )
    print(f"timing-loop overhead: {1e3 * empty.median_ms:.2f} us per iteration (empty callable, n={empty.n})")
    print(
        f"one profile job (vit @14x14, spawn + build + count + latency + 1 s throughput + reference): "
        f"{job_wall_s:.1f} s wall, of which {timed_s:.2f} s in timed latency iterations; "
        f"reference module p50 {record.reference.get('reference_ms_p50', float('nan')):.3f} ms"
    )
    if a.out:
        Path(a.out).write_text(
            json.dumps(
                {
                    "command": " ".join([Path(sys.executable).name, *sys.argv]),
                    "device": a.device,
                    "threads": a.threads,
                    "torch": torch.__version__,
                    "rows": rows,
                    "worst_repeat_dev": repeat_dev,
                    "worst_agreement_dev": agree_dev,
                    "loop_overhead_us": 1e3 * empty.median_ms,
                    "job_wall_s": job_wall_s,
                    "job_timed_s": timed_s,
                    "median_repeat_ratio": statistics.median(r["repeat_ratio"] for r in rows),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
