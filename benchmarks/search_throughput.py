"""Search throughput: candidates measured per hour, and what the storage costs per trial.

Runs one search worker in this process (the profiler Worker and the quality process are still separate
processes, as in `effscope search`) on a shipped space, and times every call into the study storage (Optuna's
RDBStorage, effscope's attribute writes and the trial cap's queries) and the Record store from the worker's main
thread. The heartbeat thread's writes run beside the trial and are reported on their own.

    .venv/bin/python benchmarks/search_throughput.py                  # hilo_block, 30 trials, temp SQLite file
    .venv/bin/python benchmarks/search_throughput.py --trials 60 --db /tmp/bench.db
    python3 benchmarks/search_throughput.py --space litv2 --trials 12 --device cuda
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import tempfile
import threading
import time
from pathlib import Path


def instrument() -> tuple[collections.Counter, collections.Counter, collections.Counter]:
    """Wrap the storage classes' methods with timers; returns (main-thread seconds, calls, background seconds)."""
    from optuna.storages import RDBStorage

    from effscope.profile import store as record_store
    from effscope.search import trial as search_trial
    from effscope.search import workers as search_workers

    main_s: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    background_s: collections.Counter = collections.Counter()
    local = threading.local()
    main = threading.main_thread()

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            depth = getattr(local, "depth", 0)
            local.depth = depth + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                local.depth = depth
                if depth == 0:  # nested storage calls are counted once, in the outermost
                    dt = time.perf_counter() - t0
                    if threading.current_thread() is main:
                        main_s[label] += dt
                        calls[label] += 1
                    else:
                        background_s[label] += dt

        setattr(owner, name, timed)

    private = {"_create_new_trial", "_set_trial_param", "_get_trials", "_get_stale_trial_ids"}
    for name in dir(RDBStorage):
        attr = getattr(RDBStorage, name)
        if callable(attr) and (not name.startswith("_") or name in private) and name != "remove_session":
            wrap(RDBStorage, name, f"optuna.{name.lstrip('_')}")
    for name in ("add", "records", "latest"):
        wrap(record_store.RecordStore, name, f"records.{name}")
    wrap(search_trial, "write_trial", "effscope.write_trial")  # its storage calls are counted in it
    if hasattr(search_trial, "write_attrs"):  # the trial's first attribute (its worker), in SQL of effscope's own
        wrap(search_trial, "write_attrs", "effscope.write_attrs")
    for name in ("counts", "_fail_orphans"):  # the trial cap's own queries, under its lock
        wrap(search_workers.TrialSlots, name, f"effscope.trial_cap.{name.lstrip('_')}")
    return main_s, calls, background_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="hilo_block")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--device", default=None, help="measure on this device (default: the space's own)")
    parser.add_argument("--db", default=None, help="SQLite file or URL (default: a new temp file)")
    args = parser.parse_args()

    main_s, calls, background_s = instrument()

    import optuna

    from effscope.profile.store import RecordStore
    from effscope.search.space import load_space
    from effscope.search.storage import open_storage, storage_url
    from effscope.search.study import device_name_for, prepare_study
    from effscope.search.summary import timed_seconds
    from effscope.search.workers import WorkerArgs, run_worker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = args.db or str(Path(tempfile.mkdtemp(prefix="effscope-bench-")) / "search.db")
    url = storage_url(db)
    space = load_space(args.space).with_overrides(trials=args.trials, device=args.device)
    RecordStore(url)
    device_name = device_name_for(space.workload)
    name = f"bench-{args.space}-{int(time.time())}"
    prepare_study(space, open_storage(url), name, device_name=device_name, command="benchmarks/search_throughput.py")
    for c in (main_s, calls, background_s):
        c.clear()

    objectives = []
    t0 = time.perf_counter()
    run_worker(
        WorkerArgs(space, url, name, 0, device_name, "bench", 10, None, os.getppid()), objective_hook=objectives.append
    )
    wall = time.perf_counter() - t0

    study = optuna.load_study(study_name=name, storage=url)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    statuses = collections.Counter(t.user_attrs.get("status") for t in trials)
    timings = objectives[0].timings
    first = timings[0]["measure_s"] + timings[0]["quality_s"]  # includes starting the two child processes
    measured = statuses.get("measured", 0)
    storage_total = sum(main_s.values())
    per_trial_ms = 1e3 * storage_total / len(trials)
    steady_wall = wall - first

    print(f"search throughput: space {args.space}, {len(trials)} trials on {device_name}, storage {url}")
    print(f"  trial statuses: {dict(statuses)}")
    print(f"  wall time: {wall:.1f} s ({first:.1f} s of it in the first trial: starting the measurement process)")
    print(
        f"  candidates measured per hour: {3600 * measured / wall:.0f} (all trials: {3600 * len(trials) / wall:.0f});"
        f" steady state after the first trial: {3600 * (measured - 1) / steady_wall:.0f}"
    )
    mean_measure = sum(t["measure_s"] for t in timings[1:]) / max(1, len(timings) - 1)
    mean_quality = sum(t["quality_s"] for t in timings[1:]) / max(1, len(timings) - 1)
    print(f"  per trial after the first: measure {mean_measure:.3f} s, quality {mean_quality:.3f} s (means)")
    timed = timed_seconds(trials)
    steady_timed = timed_seconds(sorted(trials, key=lambda t: t.number)[1:])
    print(
        f"  duty cycle (timed iterations / wall time): {100 * timed / wall:.1f} % ({timed:.1f} of {wall:.1f} s);"
        f" steady state after the first trial: {100 * steady_timed / steady_wall:.1f} %"
    )
    print(
        f"  storage overhead per trial: {per_trial_ms:.1f} ms = {100 * storage_total / wall:.2f} % of trial time "
        f"({100 * storage_total / steady_wall:.2f} % of steady-state trial time); goal < 2 %"
    )
    write_s = main_s["effscope.write_trial"]
    print(
        f"  of it effscope.write_trial (constraints + user attrs): {1e3 * write_s / len(trials):.1f} ms "
        f"per trial = {100 * write_s / wall:.2f} % of trial time"
    )
    measured_trials = [t for t in trials if t.user_attrs.get("status") == "measured"]
    if measured_trials:
        per_measured = wall / len(trials)
        print(f"  mean trial time: {per_measured:.3f} s")
    print("  storage time by call (main thread, all trials):")
    for label, seconds in main_s.most_common():
        print(f"    {label:34s} {1e3 * seconds:8.1f} ms  {calls[label]:5d} calls")
    if background_s:
        total_bg = 1e3 * sum(background_s.values()) / len(trials)
        print(f"  heartbeat thread (beside the trial): {total_bg:.1f} ms per trial")


if __name__ == "__main__":
    main()
