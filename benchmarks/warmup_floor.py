"""Does a shorter warm-up change the median? Fresh HiLo designs at batch 1 on the CPU, each built anew per run, one
forward (as the profiler's memory step does), then `measure_latency` with a warm-up floor of A or B seconds,
interleaved A B B A ... so drift hits both alike; prints each design's median of the run medians and B / A.

    .venv/bin/python benchmarks/warmup_floor.py                       # 0.1 s against 0.025 s, 4 runs each
    .venv/bin/python benchmarks/warmup_floor.py --floors 0.1 0.01 --runs 6
"""

from __future__ import annotations

import argparse
import statistics

import torch

from effscope.profile.env import retain_freed_heap
from effscope.profile.target import Bound, resolve_target
from effscope.profile.timing import measure_latency, set_threads

DESIGNS = (  # heads, head_dim, lofi_heads, window_size, mlp_ratio: small to large, every window
    (2, 16, 1, 2, 2.0),
    (4, 32, 2, 7, 4.0),
    (6, 16, 3, 2, 3.0),
    (8, 32, 4, 2, 2.0),
    (4, 16, 0, 1, 3.0),
    (8, 16, 8, 7, 4.0),
)


def median_after_warmup(knobs: dict, floor_s: float, max_time_s: float) -> float:
    device = torch.device("cpu")
    target = resolve_target("hilo", knobs)
    module = target.build(device).eval()
    args = target.example_args(module, 1, (14, 14), device)
    bound = Bound(module, args)
    tensors = bound.tensors(args)

    def forward():
        with torch.no_grad():
            return bound(*tensors)

    forward()
    return measure_latency(forward, device=device, max_time_s=max_time_s, warmup_s=floor_s).median_ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--floors", type=float, nargs=2, default=[0.1, 0.025], metavar=("A", "B"))
    p.add_argument("--runs", type=int, default=4, help="runs per design and floor")
    p.add_argument("--max-time", type=float, default=0.5)
    args = p.parse_args()
    set_threads(1)
    retain_freed_heap()  # as effscope's measurement process does
    a, b = args.floors
    print(f"# warm-up floor {a:g} s (A) against {b:g} s (B); medians of {args.runs} runs, 1 thread, ms")
    print(f"{'heads hd lofi win mlp':24s} {'A p50':>8s} {'B p50':>8s} {'B / A':>7s}")
    for heads, head_dim, lofi, window, mlp in DESIGNS:
        knobs = dict(heads=heads, head_dim=head_dim, lofi_heads=lofi, window_size=window, mlp_ratio=mlp)
        runs: dict[float, list[float]] = {a: [], b: []}
        for i in range(args.runs):
            for floor in (a, b) if i % 2 == 0 else (b, a):
                runs[floor].append(median_after_warmup(knobs, floor, args.max_time))
        ma, mb = statistics.median(runs[a]), statistics.median(runs[b])
        print(f"{heads:5d} {head_dim:2d} {lofi:4d} {window:3d} {mlp:3g}      {ma:8.3f} {mb:8.3f} {mb / ma:7.3f}")


if __name__ == "__main__":
    main()
