"""Latency predictor quality: held-out MAPE, share within +-5 % / +-10 %, Kendall tau, and the
screening rate (candidates per hour on one core) for hilo_block and litv2.

On the CPU (default), litv2 is timed at a small CPU workload (batch 1, 64x64 images, fp32, 1 thread) instead of its
GPU one; with --device cuda every space keeps its own workload on the GPU. litv2's blocks come from the pure-python
LITv2 decomposition. Each table is stored in a temp SQLite file (or --db).

    .venv/bin/python benchmarks/predictor_quality.py
    .venv/bin/python benchmarks/predictor_quality.py --samples 16 --holdout 12 --spaces hilo_block
    python benchmarks/predictor_quality.py --device cuda --spaces litv2 --samples 4 --holdout 2 --out q.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path


def _loo_text(mape: float) -> str:
    """A leave-one-out MAPE, or why a fit has none (math.inf: fewer training designs than the fit needs)."""
    return f"{mape:.1%}" if math.isfinite(mape) else "n/a (too few designs)"


def _tau_text(tau: float) -> str:
    """Kendall tau, or "-" where it is undefined (nan: fewer than two held-out designs, or all tied)."""
    return f"{tau:.3f}" if math.isfinite(tau) else "-"


def small_cpu(space):
    """litv2 at a CPU-sized workload (the shipped space targets a GPU at batch 64)."""
    from effscope.profile.record import Workload

    if space.kind != "model":
        return space
    wl = Workload(device="cpu", dtype="fp32", batch=1, size=(64, 64), threads=1)
    measure = dict(space.measure, max_time_s=0.3, window_s=0.1)
    return dataclasses.replace(space, workload=wl, measure=measure)


def screening_rate(space, table, n: int = 3000, seconds: float = 3.0) -> tuple[float, int]:
    """Predictions per hour on this core over `n` random designs (sampling excluded; table completed with dummies
    for blocks it lacks, so every candidate takes the full decompose + look up + correct path)."""
    import optuna

    from effscope.knobs import with_knobs
    from effscope.search.predictor import Predictor, decompose

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1), directions=space.directions)
    designs = []
    for _ in range(n):
        trial = study.ask()
        designs.append(space.suggest(trial))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    pred = Predictor(table, space)
    valid = 0
    for ts, ov in designs:  # complete the table (timing only)
        try:
            cfg = with_knobs(ts.base, {**ts.pins, **ov})
        except Exception:
            continue
        valid += 1
        for c in decompose(ts.name, cfg, pred.workload):
            pred.lut.setdefault(c.lookup, 1.0)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for ts, ov in designs:
            pred.predict_overrides(ts, ov)
        done += len(designs)
    return done / (time.perf_counter() - t0) * 3600, valid


def for_device(space, device: str, max_time_s: float | None = None, window_s: float | None = None):
    """The space on `device`: a CPU-sized workload on the CPU (the shipped litv2 space targets a GPU at batch 64),
    the space's own workload on a GPU; optionally with shorter timing caps."""
    if device == "cpu":
        space = small_cpu(space)
    elif space.workload.device != device:
        space = space.with_overrides(device=device)
    caps = {k: v for k, v in (("max_time_s", max_time_s), ("window_s", window_s)) if v is not None}
    return dataclasses.replace(space, measure=dict(space.measure, **caps)) if caps else space


def run(
    names: list[str],
    *,
    samples: int = 12,
    holdout: int = 12,
    db: str | None = None,
    device: str = "cpu",
    max_time_s: float | None = None,
    window_s: float | None = None,
    screening: bool = True,
    on_progress=None,
) -> dict:
    """Build and validate a latency table per space; returns the figures per space (plain data, JSON-ready)."""
    import torch

    from effscope.profile.env import cpu_info
    from effscope.profile.store import RecordStore
    from effscope.search.predictor import build_table
    from effscope.search.space import load_space

    db = db or os.path.join(tempfile.mkdtemp(prefix="effscope-pred-"), "pred.db")
    store = RecordStore(db)
    result = {"cpu": cpu_info()["cpu_model"], "cores": os.cpu_count(), "torch": torch.__version__, "db": db}
    spaces = {}
    for name in names:
        space = for_device(load_space(name), device, max_time_s, window_s)
        t0 = time.perf_counter()
        table = build_table(space, store=store, samples=samples, holdout=holdout, on_progress=on_progress)
        w = space.workload
        entry = {
            "kind": space.kind,
            "workload": w.as_dict(),
            "statistic": table.statistic,
            "build_s": time.perf_counter() - t0,
            "entries": len(table.entries),
            "validation": table.validation,
            "holdout": [r for r in table.rows if r["role"] == "holdout"],
            "notes": list(table.notes),
        }
        if screening:
            torch.set_num_threads(1)
            entry["screening_per_hour"], entry["screening_valid"] = screening_rate(space, table)
        spaces[name] = entry
    result["spaces"] = spaces
    return result


def print_results(result: dict) -> None:
    print(f"device: {result['cpu']} ({result['cores']} cores), torch {result['torch']}; db {result['db']}")
    for name, e in result["spaces"].items():
        w, v = e["workload"], e["validation"]
        size = tuple(w["size"]) if w.get("size") else None
        print(
            f"\n== {name}: {e['kind']}-level, {w['device']} {w['dtype']} batch {w['batch']} {size}, "
            f"{w['threads']} thread(s), predicting {e['statistic']}; built in {e['build_s']:.0f} s"
        )
        print(
            f"table: {e['entries']} block entries ({v['measured']} measurements, {v['cached']} reused); "
            f"{v['n_train']} training / {v['n_holdout']} held-out designs measured as wholes"
        )
        print(
            f"fit chosen by leave-one-out on the training designs: {v['fit']} "
            "(LOO MAPE " + ", ".join(f"{k} {_loo_text(v[f'loo_{k}_mape'])}" for k in ("sum", "affine", "full")) + ")"
        )
        print(f"{'predictor':<18}{'MAPE':>8}{'within 5%':>11}{'within 10%':>12}{'Kendall tau':>13}")
        print(
            f"{'chosen: ' + v['fit']:<18}{v['mape']:>8.1%}{v['within_5']:>11.0%}{v['within_10']:>12.0%}"
            f"{_tau_text(v['kendall_tau']):>13}"
        )
        for kind in ("sum", "affine", "full"):
            if f"baseline_{kind}_mape" in v:
                print(
                    f"{'baseline: ' + kind:<18}{v[f'baseline_{kind}_mape']:>8.1%}{'':>11}"
                    f"{v[f'baseline_{kind}_within_10']:>12.0%}{_tau_text(v[f'baseline_{kind}_kendall_tau']):>13}"
                )
        for r in e["holdout"]:
            err = r["predicted"] / r["measured"] - 1
            print(
                f"  holdout: blocks {r['n_blocks']:>2} sum {r['block_sum']:.3f} ms  predicted "
                f"{r['predicted']:.3f} ms  measured {r['measured']:.3f} ms  ({err:+.1%})"
            )
        if "screening_per_hour" in e:
            print(
                f"screening: {e['screening_per_hour']:,.0f} candidates/hour on one core "
                f"({e['screening_valid']}/3000 sampled designs valid; invalid ones stop at config validation)"
            )
        for note in e["notes"]:
            print(f"note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--spaces", nargs="+", default=["hilo_block", "litv2"])
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--holdout", type=int, default=12)
    parser.add_argument("--db", default=None)
    parser.add_argument("--device", default="cpu", help="cpu (CPU-sized workloads) or cuda (the spaces' own)")
    parser.add_argument("--max-time", type=float, default=None, help="cap on each latency measurement, s")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    result = run(
        args.spaces,
        samples=args.samples,
        holdout=args.holdout,
        db=args.db,
        device=args.device,
        max_time_s=args.max_time,
    )
    print_results(result)
    if args.out:
        from effscope.knobs import to_jsonable

        Path(args.out).write_text(json.dumps(to_jsonable(result), indent=1))


if __name__ == "__main__":
    main()
