"""How much of a GPU timing is the GPU's work, and how much is the host launching it.

For each target: the per-iteration latency as effscope times it (synchronized on both sides, CUDA events), the
pipelined time (iterations queued back to back, as the throughput window runs them), the CUDA-graph replay time
(launch cost removed), the sum of the GPU kernel times one forward takes (torch.profiler) and how many kernels it
launches, and a host-speed probe (a fixed pure-Python loop) timed before each target, so a slower host shows up.
Host-to-device synchronizations inside a forward are counted with torch's sync debug mode.

    python benchmarks/gpu_host_bound.py --out DIR [--targets litv2_s,vit ...] [--batch 64,256] [--dtype bf16]
    python benchmarks/gpu_host_bound.py --show DIR/host_bound.json

Writes host_bound.json and prints a table (times in ms). On a machine without CUDA only the eager columns are filled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effscope.profile.target import resolve_target  # noqa: E402
from effscope.profile.timing import capture_cuda_graph  # noqa: E402

DEFAULT_TARGETS = "vit,hilo,pvtv2_b0,pvtv2_b2,lightvit_t,litv2_s,cxv_cpv,cagevit_m"
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def host_probe_ms() -> float:
    """A fixed pure-Python loop: its time tracks the host CPU's speed for launch-bound work."""
    t0 = time.perf_counter()
    x = 0
    for i in range(200_000):
        x += i & 7
    return (time.perf_counter() - t0) * 1e3


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, iters: int) -> list[float]:
    """Per-iteration ms, each iteration synchronized on both sides (CUDA events on GPU)."""
    out = []
    for _ in range(iters):
        sync(dev)
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            sync(dev)
            out.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def pipelined_ms(fn, dev, iters: int) -> float:
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(dev)
    return (time.perf_counter() - t0) * 1e3 / iters


def kernel_profile(fn, dev) -> tuple[float | None, int | None]:
    """(sum of GPU kernel ms in one forward, kernels launched), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn()
        sync(dev)
    events = [e for e in prof.events() if e.device_type.name == "CUDA"]
    total_us = (
        sum(e.device_time for e in events) if hasattr(events[0], "device_time") else sum(e.cuda_time for e in events)
    )
    return total_us / 1e3 / 3, len(events) // 3


def graph_ms(module, args, amp_dtype, dev, iters: int) -> float:
    def fwd():
        amp = torch.autocast("cuda", dtype=amp_dtype, cache_enabled=False) if amp_dtype else contextlib.nullcontext()
        with torch.no_grad(), amp:
            return module(*args)

    replay = capture_cuda_graph(fwd, dev)
    for _ in range(3):
        replay()
    return statistics.median(timed(replay, dev, iters))


def syncs_in_forward(fn) -> list[str]:
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sorted({str(w.message).splitlines()[0][:160] for w in caught})


def one(name: str, batch: int, dtype: str, dev, iters: int) -> dict:
    row: dict = {"target": name, "batch": batch, "dtype": dtype, "host_probe_ms": host_probe_ms()}
    amp_dtype = DTYPES[dtype]
    target = resolve_target(name)
    module = target.build(dev).eval()
    args = target.example_args(module, batch, None, dev)

    def fwd():
        amp = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with torch.no_grad(), amp:
            return module(*args)

    for _ in range(5):
        fwd()
    sync(dev)
    eager = timed(fwd, dev, iters)
    row["eager_ms_p50"] = statistics.median(eager)
    row["eager_ms_min"] = min(eager)
    row["pipelined_ms"] = pipelined_ms(fwd, dev, iters)
    if dev.type == "cuda":
        for key, f in (
            ("syncs", lambda: syncs_in_forward(fwd)),
            ("kernel", lambda: kernel_profile(fwd, dev)),
            ("graph_ms_p50", lambda: graph_ms(module, args, amp_dtype, dev, iters)),
        ):
            try:
                value = f()
            except Exception as e:  # a diagnostic: record what failed and go on
                row[key + "_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                continue
            if key == "kernel":
                row["kernel_ms_sum"], row["kernels_per_forward"] = value
            else:
                row[key] = value
    row["eager_ms_p50_again"] = statistics.median(timed(fwd, dev, iters))
    return row


COLUMNS = (
    "target", "batch", "host_probe_ms", "eager_ms_p50", "eager_ms_min", "pipelined_ms", "graph_ms_p50",
    "kernel_ms_sum", "kernels_per_forward", "eager_ms_p50_again",
)  # fmt: skip


def print_header(env: dict) -> None:
    print(json.dumps(env))
    print(" ".join(f"{c:>12.12}" for c in COLUMNS))


def print_row(row: dict) -> None:
    cells = [f"{row[c]:>12.4g}" if isinstance(row.get(c), float) else f"{str(row.get(c, '-')):>12.12}" for c in COLUMNS]
    notes = {k: v for k, v in row.items() if k.endswith("error") or k == "syncs"}
    print(" ".join(cells), notes, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write host_bound.json into this folder")
    p.add_argument("--show", type=Path, help="print the table of a host_bound.json written earlier, and stop")
    p.add_argument("--targets", default=DEFAULT_TARGETS)
    p.add_argument("--batch", default="64", help="comma-separated batches")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    if a.show:
        saved = json.loads(a.show.read_text())
        print_header(saved["env"])
        for row in saved["rows"]:
            print_row(row)
        return
    if a.out is None:
        p.error("give --out DIR (or --show FILE)")
    dev = torch.device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "loadavg": os.getloadavg(),
        "command": " ".join(["python", *sys.argv]),
    }
    print_header(env)
    rows = []
    for batch in [int(b) for b in a.batch.split(",")]:
        for name in a.targets.split(","):
            try:
                row = one(name, batch, a.dtype, dev, a.iters)
            except Exception as e:  # a diagnostic: one target's failure is a row, the rest still run
                row = {"target": name, "batch": batch, "error": f"{type(e).__name__}: {e}"[:300]}
            rows.append(row)
            print_row(row)
            (a.out / "host_bound.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
