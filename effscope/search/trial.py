"""The Optuna objective of a search: one trial samples a design, measures it (or reuses its cached Record),
scores it and constrains it.

Latency, memory and validity are trial-level constraints (docs/search.md#feasibility); invalid, out-of-memory and
over-budget designs COMPLETE with a violation and a reason. Measuring happens in a profiler Worker (a separate
process: the sampler never shares a process with timing), quality in a separate quality process.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError, KnobError, SpecError, UnknownNameError
from effscope.knobs import to_jsonable
from effscope.metrics import TIMED, peak_memory_key
from effscope.search.objectives import OBJECTIVES, QualityError
from effscope.search.space import Space, TargetSpace
from effscope.search.storage import write_attrs, write_trial
from effscope.search.uncertainty import UNCERTAIN, measure_and_decide, verdict

if TYPE_CHECKING:
    import optuna

    from effscope.profile.measure import Options
    from effscope.profile.record import Record
    from effscope.profile.store import RecordStore
    from effscope.profile.target import Target
    from effscope.profile.worker import Worker as ProfilerWorker
    from effscope.search.objectives import QualityProcess
    from effscope.search.predictor import Predictor

__all__ = ["SearchObjective"]


def _worst(direction: str) -> float:
    return -math.inf if direction == "maximize" else math.inf


def _fastest_third(record: Record) -> float | None:
    samples = sorted(record.details.get("latency_samples_ms") or [])
    return samples[len(samples) // 3] if samples else None


class SearchObjective:
    """The Optuna objective: sample a design, measure it (or reuse its cached Record), score it, constrain it.

    Args:
        space: the search space (overrides applied).
        store: the Record store (same database as the study).
        device_name: the cache key's device.
        device_identity: this machine's CPU (study.device_identity_for; None on a GPU): a cached Record measured on
            another CPU of the same name is not reused.
        study_name: copied into each Record.
        command: the command line, copied into each Record.
        measure: a profiler Worker (one per search worker process).
        quality: a QualityProcess for computed objectives (None: created on first use).
        predictor: a latency Predictor; a candidate predicted over budget x (1 + 2 x MAPE) is not measured
            (except a seeded ~5 % spot check), every other candidate is.
        dashboard: also store the constraints as the list optuna-dashboard reads (`write_trial`); False for a
            study an older effscope created, whose trials lack it (samplers compare constraint counts).
    """

    def __init__(
        self,
        space: Space,
        *,
        store: RecordStore,
        device_name: str,
        device_identity: str | None = None,
        study_name: str,
        command: str,
        measure: ProfilerWorker | None,
        quality: QualityProcess | None = None,
        predictor: Predictor | None = None,
        dashboard: bool = True,
    ) -> None:
        self.space = space
        self.dashboard = dashboard
        self._study_id: int | None = None
        self.predictor = predictor  # effscope.search.predictor.Predictor: rejects only (issue 6)
        self.store = store
        self.device_name = device_name
        self.device_identity = device_identity
        self.study_name = study_name
        self.command = command
        self.measure = measure
        self._quality = quality
        self.worker_tag = f"{socket.gethostname()}:{os.getpid()}"
        self._preset: str | None = None
        # the roofline calibration per device, dtype and threads, looked up once per worker (as `effscope profile` per
        # run): a calibration taken while a search runs is used from its next worker start
        self._calibrations: dict = {}
        self.timings: list[dict[str, float]] = []  # per trial: measure_s, quality_s (benchmarks read these)

    @property
    def options(self) -> Options:
        from effscope.profile.measure import Options

        m = self.space.measure
        # Early abort watches the eager samples: against a budget on the CUDA-graph replay they say nothing.
        margin = None if self.space.budgets_graph_replay else m["abort_margin"]
        return Options(
            count=True,
            latency=True,
            throughput=m["throughput"],
            reference=m["reference"],
            max_time_s=m["max_time_s"],
            window_s=m["window_s"],
            abort_above_ms=self.space.latency_budget.limit * margin if margin else None,
            timeout_s=m["timeout_s"],
            module_times=m["module_times"],  # the report's time breakdown; off by default: 6 forwards a design
            # CPU peak RSS is honest only in a fresh process (seconds per design); reuse it unless it is budgeted.
            fresh_process=self.space.workload.device == "cpu" and self.space.memory_budget is not None,
        )

    def quality_process(self) -> QualityProcess:
        from effscope.search.objectives import QualityProcess

        if self._quality is None:
            self._quality = QualityProcess(threads=self.space.workload.threads)
        return self._quality

    @property
    def _computed_quality(self) -> bool:
        """The quality is computed in the quality process (a proxy, training), not read from the Record."""
        return OBJECTIVES[self.space.quality].source != "record"

    def start(self) -> None:
        """Start the measurement process, and the quality process where the quality is computed, side by side:
        their start-up (importing torch) overlaps instead of adding up in the first trial."""
        self.measure.start()
        if self._computed_quality:
            self.quality_process().start()

    def close(self) -> None:
        if self._quality is not None:
            self._quality.close()
        self.measure.close()

    # ---------------------------------------------------------------------------------------------- one trial

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        from effscope.profile.record import canonical_key
        from effscope.profile.target import resolve_target

        space = self.space
        timing = {"measure_s": 0.0, "quality_s": 0.0}
        self.timings.append(timing)
        # which machine/process runs it, visible while it runs
        write_attrs(trial, self._trial_id(trial), user={"worker": self.worker_tag})
        preset = trial.user_attrs.get("preset")
        self._preset = preset
        ts, overrides = space.suggest(trial, preset)
        attrs: dict[str, Any] = {}
        try:
            if preset is not None and preset in ts.presets:
                # A published design is measured as published (its params were enqueued from the same values).
                name = preset if ts.kind == "model" else ts.name
                target = resolve_target(name, ts.presets[preset].knob_values())
            else:
                target = resolve_target(ts.name, overrides)
        except (KnobError, UnknownNameError, SpecError) as e:
            attrs.update(knobs=to_jsonable({**ts.base.knob_values(), **overrides}), status="invalid", reason=str(e))
            return self._finish(trial, attrs, quality=None, record=None, valid=False)
        attrs["knobs"] = to_jsonable(target.knobs())

        key = canonical_key(target.name, target.knobs(), space.workload, self.device_name, target.revisions())
        record = self._cached(key)
        early_quality = None  # (quality, why) when computed while the design was counted
        t0 = time.perf_counter()
        if record is not None:
            attrs["status"] = "cached"
        elif self.predictor is not None and self._screen(trial, ts, target, attrs):
            return self._rejected(trial, attrs)
        else:
            from effscope.profile.run import Plan, profile, store_record

            provenance = {"study": self.study_name, "trial": trial.number, "key": key, "command": self.command}
            budget = space.latency_budget
            first: list[Record] = []
            # A computed quality (a proxy, training) runs in its process while the measurement process counts the
            # design, after the timing, so neither disturbs it (not where every job needs a fresh process).
            beside = self._computed_quality and not self.options.fresh_process

            def measure() -> Record:
                # Counts depend on the design alone: a re-measurement times again and reuses the first count.
                options = replace(self.options, count=not first and not beside)
                (measured,) = profile(
                    [Plan(target, space.workload)], options, store=None, worker=self.measure, provenance=provenance
                )
                if first and not beside:
                    _adopt_counts(measured, first[0])
                first.append(measured)
                return measured

            record, attrs["remeasured"], _ = measure_and_decide(
                measure, budget.statistic, budget.limit, remeasures=space.measure["remeasure"]
            )
            if beside and record.status == "ok":
                early_quality = self._count_beside_quality(trial, target, record, provenance, timing)
            if self.store is not None:  # only the kept measurement is stored (the cache reads the newest)
                store_record(record, self.store, self._calibrations)
            attrs["status"] = "measured"
            attrs["timed_s"] = sum(r.latency.get("timed_s") or 0.0 for r in first)  # re-measurements included
        timing["measure_s"] = time.perf_counter() - t0
        attrs["record_uid"] = record.uid
        attrs["flags"] = list(record.flags)
        attrs["latency_verdict"] = verdict(record.latency, space.latency_budget.statistic, space.latency_budget.limit)
        if attrs["latency_verdict"] == UNCERTAIN:
            attrs["flags"].append("latency-uncertain")
        if record.status != "ok":
            attrs.update(status="failed", reason=record.error or "the measurement failed")
            return self._finish(trial, attrs, quality=None, record=record, valid=False)
        aborted = "aborted-over-budget" in record.flags
        if aborted:
            lat = record.latency.get(space.timing("p50"))
            runs = record.latency.get("latency_n", record.latency.get("train_step_n"))
            limit = self.options.abort_above_ms
            # A cached repeat keeps "cached" (one measurement, counted once); its flags still say it was aborted.
            reused = attrs["status"] == "cached"
            attrs.update(
                status="cached" if reused else "aborted-over-budget",
                reason=(
                    ("reused a measurement that " if reused else "")
                    + f"stopped after {runs} timed runs: the fastest third ran above "
                    f"{limit:g} ms (budget {space.latency_budget.limit:g} ms x {space.measure['abort_margin']:g}); "
                    f"median so far {lat:.3g} ms"
                ),
            )

        if early_quality is not None:
            quality, why = early_quality
        else:
            t0 = time.perf_counter()
            quality, why = self._quality_of(trial, target, record, skip=aborted)
            timing["quality_s"] = time.perf_counter() - t0
        if why is not None:
            attrs["reason"] = f"{attrs['reason']}; {why}" if "reason" in attrs else why
        return self._finish(trial, attrs, quality=quality, record=record, valid=quality is not None or aborted)

    def _count_beside_quality(
        self, trial: optuna.Trial, target: Target, record: Record, provenance: dict[str, Any], timing: dict[str, float]
    ) -> tuple[float | None, str | None] | None:
        """Count the timed design in the measurement process while the quality process computes its quality, and
        give `record` the counts (a failed count fails it). Returns (quality, why), or None for a design aborted
        over budget, which gets no quality."""
        from effscope.profile.measure import Job

        options = replace(
            self.options, count=True, latency=False, throughput=False, reference=False, module_times=False
        )
        job = Job(target.name, target.knobs(), self.space.workload, options, dict(provenance), module=target.instance)
        self.measure.submit(job)
        quality = None
        if "aborted-over-budget" not in record.flags:
            t0 = time.perf_counter()
            quality = self._quality_of(trial, target, record, skip=False)
            timing["quality_s"] = time.perf_counter() - t0
        counted = self.measure.result(job)
        if counted.status != "ok":
            record.status, record.error = "failed", f"counting failed: {counted.error}"
            return None
        _adopt_counts(record, counted)
        return quality

    def _screen(self, trial: optuna.Trial, ts: TargetSpace, target: Target, attrs: dict[str, Any]) -> bool:
        """Predict; True when the candidate is rejected unmeasured (a spot-checked rejection is measured)."""
        from effscope.search.predictor import reject_rule, spot_check

        try:
            predicted = self.predictor.predict(ts, target.config)
        except EffscopeError:
            predicted = None  # no prediction: measure
        if predicted is None:
            attrs["no_prediction"] = True  # a block call the table lacks: measured, and counted after the search
            return False
        attrs["predicted_latency_ms"] = predicted
        if not reject_rule(predicted, self.space.latency_budget.limit, self.predictor.mape):
            return False
        if spot_check(self.space.seed, trial.number):
            attrs["spot_check"] = True  # rejected by the predictor, measured anyway to count false rejections
            return False
        return True

    def _rejected(self, trial: optuna.Trial, attrs: dict[str, Any]):
        """Complete a predicted-infeasible trial: its predicted violation, no measurement, no quality."""
        space, p = self.space, attrs["predicted_latency_ms"]
        b = space.latency_budget
        attrs.update(
            status="predicted-infeasible",
            reason=(
                f"predicted {b.statistic} {p:.3g} ms > {b.limit:g} ms x {self.predictor.margin:.3g} (budget x "
                f"(1 + 2 x MAPE {self.predictor.mape:.3f})) by latency table '{self.predictor.table.name}'; "
                "not measured"
            ),
            record_uid=None,
            flags=[],
            quality=None,
            quality_name=space.quality,
        )
        if self._preset is not None:
            attrs["preset"] = self._preset
        constraints = {"latency": p / b.limit - 1.0, "memory": 0.0, "valid": 0.0}
        write_trial(trial, self._trial_id(trial), attrs, constraints, dashboard=self.dashboard)
        q = _worst(space.direction)
        return (q, math.inf) if space.latency_objective else q

    def _trial_id(self, trial: optuna.Trial) -> int:
        """The storage's id of `trial` (public API: by study and trial number; the study's id is looked up once)."""
        if self._study_id is None:
            self._study_id = trial.storage.get_study_id_from_name(trial.study.study_name)
        return trial.storage.get_trial_id_from_study_id_trial_number(self._study_id, trial.number)

    def _cached(self, key: str) -> Record | None:
        from effscope.profile.record import measured_on

        record = self.store.latest(key, where=measured_on(self.device_name, self.device_identity))
        if record is None or not self._numbers_usable(record):
            return None  # none, or one whose numbers this trial computes with are damaged: measure again
        peak = peak_memory_key(self.space.workload.device)
        if self.space.memory_budget is not None and record.memory.get(peak) is None:
            return None  # measured where the peak was hidden (a reused process): this budget needs it measured
        if "aborted-over-budget" in record.flags:
            # A partial measurement stays valid only while it is still clearly over the current budget.
            limit = self.options.abort_above_ms
            fastest = _fastest_third(record)
            if limit is None or fastest is None or fastest <= limit:
                return None
        return record

    def _numbers_usable(self, record: Record) -> bool:
        """Whether the numbers a trial computes with are each a finite number or None (not measured) in a cached
        Record: a store may hold a hand-edited one (imported before `effscope import` checked values), whose "fast"
        or NaN would crash the verdict or pass as a measurement."""
        from effscope.profile.record import is_finite_number

        space = self.space
        statistic = space.latency_budget.statistic
        latency = [statistic, f"{statistic}_lo", f"{statistic}_hi", space.timing("p50")]
        values = [record.latency.get(k) for k in latency]
        values.append(record.memory.get(peak_memory_key(space.workload.device)))
        if OBJECTIVES[space.quality].source == "record":
            values.append(record.counts.get(OBJECTIVES[space.quality].name))
        samples = record.details.get("latency_samples_ms") or []  # an aborted Record's reuse reads them
        if not isinstance(samples, list):
            return False
        return all(v is None or is_finite_number(v) for v in values) and all(is_finite_number(v) for v in samples)

    def _quality_of(
        self, trial: optuna.Trial, target: Target, record: Record, *, skip: bool
    ) -> tuple[float | None, str | None]:
        q = OBJECTIVES[self.space.quality]
        if q.source == "record":
            value = record.counts.get(q.name)
            if value is None:
                return None, f"{q.name} is missing from the measurement"
            return float(value), None
        if skip:
            return None, f"{q.name} not computed: the design is over budget"
        reused = record.study != self.study_name or record.trial != trial.number
        for t in trial.study.get_trials(deepcopy=False, states=_complete()) if reused else ():
            if (
                t.user_attrs.get("record_uid") == record.uid
                and t.user_attrs.get("quality_name") == q.name
                and isinstance(t.user_attrs.get("quality"), int | float)
            ):
                return float(t.user_attrs["quality"]), None  # same design, same settings: same value
        from effscope.search.objectives import evaluate

        kwargs = {
            "target_name": target.name,
            "knobs": target.knobs(),
            "names": [q.name],
            "workload": self.space.workload.as_dict(),
            "proxy": self.space.proxy,
            "train": self.space.train,
            "data": self.space.data,
        }
        try:
            out = self.quality_process().call(evaluate, kwargs, timeout=self.space.measure["timeout_s"] * 4)
        except QualityError as e:
            return None, f"{q.name}: {e}"
        value = out.get(q.name)
        if isinstance(value, str):
            return None, f"{q.name}: {value}"
        return float(value), None

    def _finish(
        self, trial: optuna.Trial, attrs: dict[str, Any], *, quality: float | None, record: Record | None, valid: bool
    ):
        space = self.space
        flat = record.flat() if record is not None else {}
        peak_name = peak_memory_key(space.workload.device)
        peak = flat.get(peak_name)
        stat = flat.get(space.latency_budget.statistic)
        attrs.setdefault("record_uid", None)
        attrs.setdefault("flags", [])
        timed = [TIMED[space.workload.mode] + s for s in ("p50", "p90", "iqr")]  # a forward's, or a training step's
        if space.budgets_graph_replay:  # and what the study budgets and minimizes
            timed += [space.timing("p50"), space.timing("p90")]
        for k in (*timed, "params", "macs", "train_img_s" if space.workload.mode == "train" else "throughput_img_s"):
            attrs[k] = flat.get(k)
        attrs[space.latency_budget.statistic] = stat  # the budgeted statistic, whichever it is
        attrs[peak_name] = peak
        attrs["quality"] = quality
        attrs["quality_name"] = space.quality
        if self._preset is not None:
            attrs["preset"] = self._preset
        # Measured, yet without a budgeted figure (a forward that cannot be captured as a CUDA graph, a peak RSS
        # hidden by earlier work in the process): infeasible, since the budget cannot be shown to hold.
        measured = valid and record is not None and record.status == "ok"
        unbudgeted = measured and stat is None
        no_peak = measured and space.memory_budget is not None and peak is None
        reasons = [
            f"{name}: {record.missing.get(name) or 'not measured'}"
            for name, lacking in ((space.latency_budget.statistic, unbudgeted), (peak_name, no_peak))
            if lacking
        ]
        if reasons:
            attrs["reason"] = "; ".join(reasons)
        constraints = {
            "latency": stat / space.latency_budget.limit - 1.0 if stat is not None else float(unbudgeted),
            "memory": peak / space.memory_budget.limit - 1.0
            if space.memory_budget and peak is not None
            else float(no_peak),
            "valid": 0.0 if valid else 1.0,
        }
        write_trial(trial, self._trial_id(trial), attrs, constraints, dashboard=self.dashboard)
        q = quality if quality is not None else _worst(space.direction)
        if not space.latency_objective:
            return q
        lat = flat.get(space.timing("p50"))
        return q, lat if lat is not None else math.inf


def _adopt_counts(record: Record, counted: Record) -> None:
    """Give `record`, timed without counting, the counts of `counted` (the same design) and the roofline numbers
    they allow with `record`'s latency."""
    from effscope.profile.roofline import add_roofline

    record.counts, record.details["count"] = counted.counts, counted.details.get("count")
    record.missing = {k: v for k, v in record.missing.items() if k not in counted.counts}
    add_roofline(record)


def _complete():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE,)
