"""Time effscope against the official implementations, interleaved in one process, per preset and block.

For each target and batch: build effscope's module and the official one with the same weights
(official_pairs.build_pair), check that their outputs agree, then run R rounds; each round times a chunk of
forwards of one and a chunk of the other (the order alternates between rounds, so drift hits both alike) and
records ours / theirs. The table shows the median of those per-round ratios (<= 1.00 means effscope is not slower)
with the middle half of the ratios in brackets, the ratio of the two fastest chunks (contention only adds time, so
it is the steadier figure on a shared machine), and the median ms per forward of each. The load average is printed
before and after: the numbers are only as quiet as the machine.

Usage:
    python benchmarks/vs_official.py --official DIR                       # CPU, fp32, batch 1 and 8
    python benchmarks/vs_official.py --official DIR --device cuda --dtype bf16 --batch 64
    python benchmarks/vs_official.py --official DIR --only lightvit_t hilo --rounds 21 --out FILE.json

DIR holds the official checkouts (official_code.py). On the CPU the official LITv2 DTM runs the kernel
transcription in official_code.py (the official extension raises "Not implemented on the CPU"), so the LITv2 and
DTM rows compare effscope's grid_sample DTM against that transcription, not against compiled official code.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
from pathlib import Path

import torch
from official_code import Official, commits
from official_pairs import BLOCK_BENCH_CASES, PRESET_CASES, Case, build_pair

from effscope.blocks.attention import ATTENTION_IMPLS, attention_impl, attention_rule, measuring_attention
from effscope.profile.env import cpu_info
from effscope.profile.timing import interleaved, time_attention_cores

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def compare(
    case: Case,
    official: Official,
    *,
    batch: int,
    device: torch.device,
    dtype: str,
    rounds: int,
    chunk_s: float,
    control: bool = False,
) -> dict:
    """One target at one batch: agreement, then `rounds` interleaved chunks of ours and theirs. With `control`,
    "ours" is a copy of the official module (an A/A run: how far from 1.00 the harness itself lands)."""
    amp = dtype in ("bf16", "fp16")
    pair = build_pair(case, official, dtype=torch.float32, batch=batch, device=device)
    ctx = (lambda: torch.autocast(device.type, dtype=_DTYPES[dtype])) if amp else contextlib.nullcontext
    twin = copy.deepcopy(pair.theirs) if control else None

    def ours():
        with torch.no_grad(), ctx():
            return case.call(twin, pair.args) if control else pair.run_ours()

    def theirs():
        with torch.no_grad(), ctx():
            return pair.run_theirs()

    with measuring_attention(time_attention_cores) as choices:  # the measured mode times its cores on first use
        a, b = ours(), theirs()
        agree = ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
        t = interleaved(ours, theirs, rounds=rounds, chunk_s=chunk_s, device=device)
    q1, q3 = t.ratio_quartiles
    return {
        "target": case.name + (" (A/A)" if control else ""),
        "batch": batch,
        "ratio_median": t.ratio_median,
        "ratio_q1": q1,
        "ratio_q3": q3,
        "ratio_of_min": t.ratio_of_min,
        "ms_ours": statistics.median(t.a) * 1e3,
        "ms_official": statistics.median(t.b) * 1e3,
        "rounds": rounds,
        "max_rel_diff": agree,
        "measured_cores": [c.core for c in choices.values()],  # empty unless the attention core is measured
    }


def _cores(measured: list[str]) -> str:
    """The measured attention cores of one row, counted ("  cores: sdpa 2, explicit 1"), or nothing."""
    counts = {core: measured.count(core) for core in dict.fromkeys(measured)}
    return ("  cores: " + ", ".join(f"{core} {n}" for core, n in counts.items())) if measured else ""


def row_line(row: dict) -> str:
    """One row of the table under HEADER; a row with an "error" says that it failed, and why."""
    start = f"{row['target']:22s} {row['batch']:5d}"
    if "error" in row:
        return f"{start} failed: {row['error']}"
    return (
        f"{start} {row['ratio_median']:12.3f}x [{row['ratio_q1']:.2f}-{row['ratio_q3']:.2f}] "
        f"{row['ratio_of_min']:7.3f}x {row['ms_ours']:9.2f} {row['ms_official']:11.2f} "
        f"{row['max_rel_diff']:12.1e}{_cores(row['measured_cores'])}"
    )


HEADER = (
    f"{'target':22s} {'batch':>5s} {'ours/official':>13s} {'[q1-q3]':>13s} {'min/min':>8s} {'ours ms':>9s} "
    f"{'official ms':>11s} {'max rel diff':>12s}"
)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, type=Path, help="folder holding the official checkouts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(_DTYPES), help="bf16/fp16 run under autocast")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--chunk-s", type=float, default=0.25, help="seconds of forwards per timed chunk")
    p.add_argument("--only", nargs="*", help="preset or block names (default: all with official code)")
    p.add_argument("--attention", default="auto", choices=ATTENTION_IMPLS, help="effscope's attention core")
    p.add_argument(
        "--control", nargs="*", default=[], help="targets to also run A/A (official against its own copy) at the end"
    )
    p.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    official = Official(args.official)
    cases = [*PRESET_CASES.values(), *BLOCK_BENCH_CASES.values()]
    if args.only:
        unknown = set(args.only) - {c.name for c in cases}
        if unknown:
            raise SystemExit(f"unknown targets {sorted(unknown)}; choose from {[c.name for c in cases]}")
        cases = [c for c in cases if c.name in args.only]
    header = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_info()["cpu_model"],
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "attention": args.attention,
        "attention_rule": attention_rule(device.type, args.attention),
        "official_commits": commits(args.official),
        "load_before": _load(),
    }
    print(f"# {header['command']}")
    print(f"# {device} ({header['device_name']}), {args.dtype}, {header['threads']} threads, torch {header['torch']}")
    print(f"# effscope attention core: {header['attention_rule']}")
    print(f"# load average before: {header['load_before']}")
    print(HEADER)
    all_cases = {c.name: c for c in [*PRESET_CASES.values(), *BLOCK_BENCH_CASES.values()]}
    unknown = set(args.control) - set(all_cases)
    if unknown:
        raise SystemExit(f"unknown --control targets {sorted(unknown)}")
    runs = [(batch, case, False) for batch in args.batch for case in cases]
    runs += [(batch, all_cases[name], True) for batch in args.batch for name in args.control]
    rows, controls = [], []
    with attention_impl(args.attention):
        for i, (batch, case, control) in enumerate(runs):
            if control and not any(r[2] for r in runs[:i]):
                print("# A/A control: the official module against its own copy (how far from 1.00 the harness lands)")
            row = compare(
                case,
                official,
                batch=batch,
                device=device,
                dtype=args.dtype,
                rounds=args.rounds,
                chunk_s=args.chunk_s,
                control=control,
            )
            (controls if control else rows).append(row)
            print(row_line(row), flush=True)
    header["load_after"] = _load()
    worst = max(rows, key=lambda r: r["ratio_median"]) if rows else None
    print(f"# load average after: {header['load_after']}")
    if worst:
        w = worst
        print(f"# slowest relative to official: {w['target']} at batch {w['batch']}: {w['ratio_median']:.3f}x")
    if args.out:
        args.out.write_text(json.dumps({**header, "rows": rows, "controls": controls}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
