"""Latency predictor quality on the CPU: held-out MAPE, share within +-5 % / +-10 %, Kendall tau, and the
screening rate (candidates per hour on one core) for hilo_block and litv2 (issue 6).

litv2 is timed at a small CPU workload (batch 1, 64x64 images, fp32, 1 thread) instead of its GPU one; its blocks
come from the pure-python LITv2 decomposition. Each table is stored in a temp SQLite file (or --db).

    .venv/bin/python benchmarks/predictor_quality.py
    .venv/bin/python benchmarks/predictor_quality.py --samples 16 --holdout 12 --spaces hilo_block
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=["hilo_block", "litv2"])
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--holdout", type=int, default=12)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()

    import torch

    from effscope.profile.env import cpu_info
    from effscope.profile.store import RecordStore
    from effscope.search.predictor import build_table
    from effscope.search.space import load_space

    db = args.db or os.path.join(tempfile.mkdtemp(prefix="effscope-pred-"), "pred.db")
    store = RecordStore(db)
    print(f"device: {cpu_info()['cpu_model']} ({os.cpu_count()} cores), torch {torch.__version__}; db {db}")
    for name in args.spaces:
        space = small_cpu(load_space(name))
        w = space.workload
        t0 = time.perf_counter()
        table = build_table(space, store=store, samples=args.samples, holdout=args.holdout)
        v = table.validation
        print(
            f"\n== {name}: {space.kind}-level, {w.device} {w.dtype} batch {w.batch} {w.size}, {w.threads} thread(s), "
            f"predicting {table.statistic}; built in {time.perf_counter() - t0:.0f} s"
        )
        print(
            f"table: {len(table.entries)} block entries ({v['measured']} measurements, {v['cached']} reused); "
            f"{v['n_train']} training / {v['n_holdout']} held-out designs measured as wholes"
        )
        print(
            f"fit chosen by leave-one-out on the training designs: {v['fit']} "
            f"(LOO MAPE sum {v['loo_sum_mape']:.1%}, affine {v['loo_affine_mape']:.1%}, full {v['loo_full_mape']:.1%})"
        )
        print(f"{'predictor':<18}{'MAPE':>8}{'within 5%':>11}{'within 10%':>12}{'Kendall tau':>13}")
        print(
            f"{'chosen: ' + v['fit']:<18}{v['mape']:>8.1%}{v['within_5']:>11.0%}{v['within_10']:>12.0%}"
            f"{v['kendall_tau']:>13.3f}"
        )
        for kind in ("sum", "affine", "full"):
            if f"baseline_{kind}_mape" in v:
                print(
                    f"{'baseline: ' + kind:<18}{v[f'baseline_{kind}_mape']:>8.1%}{'':>11}"
                    f"{v[f'baseline_{kind}_within_10']:>12.0%}{v[f'baseline_{kind}_kendall_tau']:>13.3f}"
                )
        for r in table.rows:
            if r["role"] == "holdout":
                err = r["predicted"] / r["measured"] - 1
                print(
                    f"  holdout: blocks {r['n_blocks']:>2} sum {r['block_sum']:.3f} ms  predicted "
                    f"{r['predicted']:.3f} ms  measured {r['measured']:.3f} ms  ({err:+.1%})"
                )
        torch.set_num_threads(1)
        rate, valid = screening_rate(space, table)
        print(
            f"screening: {rate:,.0f} candidates/hour on one core ({valid}/3000 sampled designs valid; invalid ones "
            "stop at config validation)"
        )
        for note in table.notes:
            print(f"note: {note}")


if __name__ == "__main__":
    main()
