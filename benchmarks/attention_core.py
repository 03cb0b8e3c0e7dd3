"""Verify the automatic attention core on the zoo's own attention calls: is the chosen path the faster one?

Runs every registered preset and block once at each batch with SDPA forced, capturing each attention call's q, k, v
and bias (a TorchFunctionMode on F.scaled_dot_product_attention). Each distinct call is then timed with the fused
and the explicit core, interleaved in rounds (median of per-round ratios). The table lists, per call shape, sdpa /
explicit, the automatic choice (effscope.blocks.attention.choose_attention where a rule holds, else what the
measured mode's own short timing picks) and whether it picked the faster core; the summary weighs each call by how
often the zoo makes it and compares the attention time of the automatic choice with always-sdpa and always-explicit.

Usage: python benchmarks/attention_core.py [--device cpu] [--dtype fp32|bf16] [--batch 1 8] [--mode auto|measured]
       [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import effscope.blocks  # noqa: F401
import effscope.models  # noqa: F401
from effscope.blocks.attention import attend, attention_impl, attention_rule, choose_attention, measures_attention
from effscope.profile.timing import interleaved, time_attention_cores
from effscope.spec import blocks, models

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TIE = 0.05  # ratios within 5 % of 1 are a tie: either choice is right


class _Capture(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            self.calls.append((q, k, v, kwargs.get("attn_mask"), kwargs.get("scale")))
        return func(*args, **kwargs)


def _key(call: tuple) -> tuple:
    q, k, v, bias, _ = call
    return (
        tuple(q.shape),
        q.stride(),
        tuple(k.shape),
        k.stride(),
        tuple(v.shape),
        v.stride(),
        None if bias is None else tuple(bias.shape),
        str(q.dtype),
    )


def collect(batches: list[int], device: torch.device, dtype: str) -> tuple[dict, Counter, dict]:
    """Distinct attention calls of the zoo -> (one example call per key, occurrences, where each key occurs)."""
    examples, counts, where = {}, Counter(), {}
    amp = torch.autocast(device.type, dtype=_DTYPES[dtype]) if dtype != "fp32" else contextlib.nullcontext()
    for spec in [*models(), *blocks()]:
        module = spec.build(device=device).eval()
        for batch in batches:
            args = module.example_args(batch, device=device)
            cap = _Capture()
            with torch.no_grad(), attention_impl("sdpa"), amp, cap:
                module(*args)
            for call in cap.calls:
                key = _key(call)
                examples.setdefault(key, tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in call))
                counts[key] += 1
                where.setdefault(key, set()).add(f"{spec.name}@b{batch}")
    return examples, counts, where


def measure(call: tuple, device: torch.device, rounds: int, chunk_s: float) -> tuple[float, float, float]:
    """(median sdpa/explicit, sdpa ms, explicit ms) for one call."""
    q, k, v, bias, scale = call
    q, k, v = (torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t) for t in (q, k, v))

    def run(impl: str):
        def fn():
            with attention_impl(impl):
                attend(q, k, v, scale=scale, bias=bias)

        return fn

    with torch.no_grad():
        t = interleaved(run("sdpa"), run("explicit"), rounds=rounds, chunk_s=chunk_s, device=device)
    return t.ratio_median, statistics.median(t.a) * 1e3, statistics.median(t.b) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(_DTYPES), help="bf16 runs under autocast")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--chunk-s", type=float, default=0.03)
    p.add_argument(
        "--mode",
        default="auto",
        choices=("auto", "measured"),
        help="the mode whose choice is checked (auto: rule or timing)",
    )
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()
    examples, counts, where = collect(args.batch, device, args.dtype)
    print(
        f"# {device}, {args.dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{attention_rule(device.type, args.mode)}"
    )
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    print(
        f"{'q shape':>22s} {'k shape':>22s} {'bias':>5s} {'logits':>10s} {'calls':>5s} {'sdpa/expl':>9s} "
        f"{'auto':>8s} {'ok':>3s}  where (first)"
    )
    rows = []
    totals = Counter()
    tune_ms: list[float] = []  # the measured mode's own cost per distinct call
    for key, call in sorted(examples.items(), key=lambda kv: kv[0][0]):
        q, k, v, bias, scale = call
        logits = q.numel() // q.shape[-1] * k.shape[-2]
        if measures_attention(device.type, args.mode):  # what the measured mode's short timing picks
            t0 = time.perf_counter()
            choice = time_attention_cores(q, k, v, bias, scale).core
            tune_ms.append((time.perf_counter() - t0) * 1e3)
        else:
            choice = choose_attention(device.type, bias is not None, q.shape[-2], k.shape[-2])
        ratio, ms_s, ms_e = measure(call, device, args.rounds, args.chunk_s)
        faster = "sdpa" if ratio < 1 else "explicit"
        ok = choice == faster or abs(ratio - 1) <= TIE
        n = counts[key]
        totals["sdpa"] += n * ms_s
        totals["explicit"] += n * ms_e
        totals["auto"] += n * (ms_s if choice == "sdpa" else ms_e)
        totals["best"] += n * min(ms_s, ms_e)
        rows.append(
            {
                "q": list(q.shape),
                "k": list(k.shape),
                "bias": bias is not None,
                "logits": logits,
                "calls": n,
                "sdpa_over_explicit": ratio,
                "ms_sdpa": ms_s,
                "ms_explicit": ms_e,
                "auto": choice,
                "tune_ms": tune_ms[-1] if tune_ms else None,
                "ok": ok,
                "where": sorted(where[key]),
            }
        )
        print(
            f"{str(tuple(q.shape)):>22s} {str(tuple(k.shape)):>22s} {'yes' if bias is not None else 'no':>5s} "
            f"{logits:10d} {n:5d} {ratio:9.2f} {choice:>8s} {'yes' if ok else 'NO':>3s}  {sorted(where[key])[0]}",
            flush=True,
        )
    load_after = os.getloadavg()
    right = sum(r["ok"] for r in rows)
    print(f"# the automatic choice is the faster core (or within {TIE:.0%}) for {right} of {len(rows)} distinct calls")
    print(
        f"# zoo attention time (each call weighted by its count): auto {totals['auto']:.1f} ms, always sdpa "
        f"{totals['sdpa']:.1f} ms, always explicit {totals['explicit']:.1f} ms, best per call {totals['best']:.1f} ms"
    )
    if tune_ms:
        print(
            f"# the measured mode's own timing took {statistics.median(tune_ms):.1f} ms per call (median; "
            f"{min(tune_ms):.1f}-{max(tune_ms):.1f} ms; the first call, {tune_ms[0]:.1f} ms, includes start-up)"
        )
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    if args.out:
        args.out.write_text(
            json.dumps({"device": str(device), "dtype": args.dtype, "rows": rows, "totals_ms": dict(totals)}, indent=1)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
