"""After a search screened by a latency predictor: count its rejections and spot checks, and re-measure the
feasible Pareto set in fresh worker processes (docs/search.md#latency-predictor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from effscope.search.predictor import SPOT_RATE, LatencyTable, lut_options
from effscope.search.study import study_info
from effscope.search.summary import is_feasible, summarize

if TYPE_CHECKING:
    import optuna

    from effscope.profile.store import RecordStore
    from effscope.profile.worker import Worker
    from effscope.search.space import Space

__all__ = ["REMEASURED_ATTR", "finish_search"]

REMEASURED_ATTR = "effscope:remeasured"  # study system attr: {trial number: re-measured numbers}


def finish_search(
    study: optuna.Study,
    space: Space,
    table: LatencyTable,
    store: RecordStore,
    *,
    storage: optuna.storages.BaseStorage,
    device_name: str,
    command: str = "",
    worker: Worker | None = None,
) -> list[str]:
    """Count rejections and spot checks, re-measure the feasible Pareto set in fresh processes, store both.

    The counts go to study.user_attrs["predictor"] (with the table's validation). The re-measured numbers of each
    front trial (remeasured_latency_ms_p50 / _p90, remeasured_record_uid, remeasured_feasible) go to the study system
    attr `effscope:remeasured`, keyed by trial number: Optuna's public API does not change a finished trial, and a
    system attr stays out of `optuna studies`. The re-measurements are also Records with the study and trial.

    Returns:
        notes for the user (one line each).
    """
    from effscope.profile.run import Plan, profile
    from effscope.profile.target import resolve_target
    from effscope.profile.worker import Worker

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    rejected = [t for t in done if t.user_attrs.get("status") == "predicted-infeasible"]
    spot = [t for t in done if t.user_attrs.get("spot_check")]
    spot_ok = [t for t in spot if t.user_attrs.get("status") in ("measured", "cached", "aborted-over-budget")]
    false_rej = [t for t in spot_ok if is_feasible(t)]
    predicted = [t for t in done if t.user_attrs.get("predicted_latency_ms") is not None]
    unpredicted = [t for t in done if t.user_attrs.get("no_prediction")]
    b = space.latency_budget
    stat = b.statistic
    info = dict(table.summary())
    info.update(
        screened=len(predicted),
        unpredicted=len(unpredicted),
        rejected=len(rejected) + len(spot),
        skipped=len(rejected),
        spot_checked=len(spot_ok),
        spot_false_rejections=len(false_rej),
        false_rejection_rate=(len(false_rej) / len(spot_ok)) if spot_ok else None,
        spot_rate=SPOT_RATE,
    )

    summary = summarize(trials, study_info(study))
    by_number = {t.number: t for t in done}
    remeasured = []
    own = worker is None
    worker = worker or Worker()
    try:
        for row in summary.front:
            t = by_number[row["trial"]]
            name = row["block"] or space.targets[0].name
            preset = t.user_attrs.get("preset")
            if preset is not None and space.kind == "model":
                name = preset
            rec = profile(
                [Plan(resolve_target(name, dict(row["knobs"])), space.workload)],
                lut_options(space, fresh_process=True),
                store=store,
                worker=worker,
                provenance={"study": study.study_name, "trial": t.number, "command": command},
            )[0]
            value = rec.latency.get(stat) if rec.status == "ok" else None
            attrs = {
                "remeasured_latency_ms_p50": rec.latency.get("latency_ms_p50"),
                "remeasured_latency_ms_p90": rec.latency.get("latency_ms_p90"),
                f"remeasured_{stat}": value,
                "remeasured_record_uid": rec.uid,
                "remeasured_feasible": value is not None and value <= b.limit,
            }
            remeasured.append({"trial": t.number, **attrs})
    finally:
        if own:
            worker.close()
    study_id = storage.get_study_id_from_name(study.study_name)
    storage.set_study_system_attr(study_id, REMEASURED_ATTR, {str(r["trial"]): r for r in remeasured})
    info.update(
        front_remeasured=len(remeasured),
        front_still_feasible=sum(1 for r in remeasured if r["remeasured_feasible"]),
    )
    study.set_user_attr("predictor", info)
    notes = [
        f"predictor '{table.name}' (held-out MAPE {info['mape']:.1%}, margin x{info['margin']:.3g}): "
        f"{len(predicted)} screened, {len(rejected)} skipped as predicted-infeasible, {len(spot_ok)} rejections "
        f"spot-measured ({len(false_rej)} of them feasible)"
        + (
            f"; {len(unpredicted)} had no prediction (a block call the table does not hold) and were measured"
            if unpredicted
            else ""
        )
    ]
    if remeasured:
        over = [
            f"trial {r['trial']} ({r[f'remeasured_{stat}']:.3f} ms)"
            if r[f"remeasured_{stat}"] is not None
            else f"trial {r['trial']} (not measured)"
            for r in remeasured
            if not r["remeasured_feasible"]
        ]
        notes.append(
            f"Pareto set re-measured in fresh processes: {info['front_still_feasible']}/{len(remeasured)} still under "
            f"{stat} <= {b.limit:g} ms"
            + (
                f"; over it when re-measured, so feasible by the search's measurement only: {', '.join(over)}"
                if over
                else ""
            )
        )
    return notes
