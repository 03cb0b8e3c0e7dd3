"""What a search trial costs the study storage, counted rather than timed: effscope writes a trial's attributes in
one transaction, asks the storage nothing Optuna already knows, and plain Optuna readers see the same trial as if
every attribute had gone through Optuna's API (benchmarks/search_throughput.py times it)."""

from __future__ import annotations

import collections
import functools
import inspect
import math
import threading

import optuna
import pytest
import sqlalchemy as sa
from _spaces import load, tiny
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage

from effscope.profile.record import Record
from effscope.search.storage import (
    CONSTRAINTS,
    DASHBOARD_CONSTRAINTS,
    named_constraints,
    open_storage,
    storage_url,
    write_attrs,
    write_trial,
)

# A trial's user attrs as SearchObjective._finish writes them: nested values, None, infinities, unicode.
ATTRS = {
    "knobs": {"heads": 2, "mlp_ratio": 1.5, "window_size": 7},
    "status": "measured",
    "record_uid": "0123abcd",
    "flags": ["latency-uncertain"],
    "latency_ms_p50": 0.41,
    "latency_ms_p90": math.inf,
    "peak_rss_bytes": None,
    "reason": "lofi_heads <= heads — über budget",
    "quality": -math.inf,
    "quality_name": "params",
    "preset": "hilo (default)",
}
LIMITS = {"latency": -0.25, "memory": 0.0, "valid": 1.0}


class Tally:
    """Commits and SQL statements on an engine, and the outermost calls of RDBStorage's methods (any thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, engine: sa.engine.Engine) -> None:
        self.commits = self.statements = 0
        self.calls: collections.Counter[str] = collections.Counter()
        local = threading.local()

        def count(fn, name: str):
            @functools.wraps(fn)
            def counted(*args, **kwargs):
                depth = getattr(local, "depth", 0)
                local.depth = depth + 1
                try:
                    return fn(*args, **kwargs)
                finally:
                    local.depth = depth
                    if depth == 0:
                        self.calls[name] += 1

            return counted

        for name, attr in vars(RDBStorage).items():
            if inspect.isfunction(attr) and not name.startswith("__"):
                monkeypatch.setattr(RDBStorage, name, count(attr, name))
        sa.event.listen(engine, "commit", self._commit)
        sa.event.listen(engine, "before_cursor_execute", self._statement)

    def _commit(self, _conn) -> None:
        self.commits += 1

    def _statement(self, *_args) -> None:
        self.statements += 1

    def reset(self) -> None:
        self.commits = self.statements = 0
        self.calls.clear()


def _public_api_write(trial: optuna.Trial, attrs: dict, limits: dict) -> None:
    """What write_trial stored before, one Optuna call per attribute: the reference it must match."""
    for key in CONSTRAINTS:
        trial.storage.set_trial_system_attr(trial._trial_id, f"{DASHBOARD_CONSTRAINTS}:{key}", float(limits[key]))
    trial.storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS, [float(limits[k]) for k in CONSTRAINTS])
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _same_trials_as_optunas_own_writes(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = open_storage(url)
    study = optuna.create_study(study_name="w", storage=storage, directions=["maximize", "minimize"])
    study_id = storage.get_study_id_from_name("w")
    ours, theirs = study.ask(), study.ask()
    for trial in (ours, theirs):
        trial.suggest_int("heads", 1, 2)
        trial.set_user_attr("worker", "host:1")  # written when the trial starts; written again below
        trial.set_user_attr("preset", "stale")  # an existing key is updated in place, as Optuna's upsert does
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, ours.number)
    with monkeypatch.context() as patch:
        tally = Tally(patch, storage.engine)
        write_trial(ours, trial_id, {"worker": "host:1", **ATTRS}, LIMITS)
    assert tally.commits == 1 and tally.statements <= 3  # the trial's state, then one upsert per table
    assert not tally.calls  # nothing through Optuna's per-attribute API
    assert ours.user_attrs == {"worker": "host:1", **ATTRS}  # the Trial's own view, as set_user_attr keeps it
    _public_api_write(theirs, {"worker": "host:1", **ATTRS}, LIMITS)
    for trial in (ours, theirs):
        study.tell(trial, [1.0, 2.0])

    # a plain reader (Optuna's default cached storage on the URL, no effscope) sees the same two trials
    a, b = optuna.load_study(study_name="w", storage=url).get_trials(deepcopy=False)
    assert a.user_attrs == b.user_attrs == {"worker": "host:1", **ATTRS}
    assert list(a.user_attrs) == list(b.user_attrs)
    assert a.system_attrs == b.system_attrs and list(a.system_attrs) == list(b.system_attrs)
    assert named_constraints(a.system_attrs) == LIMITS and list(named_constraints(a.system_attrs)) == list(CONSTRAINTS)
    assert a.system_attrs[DASHBOARD_CONSTRAINTS] == [-0.25, 0.0, 1.0]
    assert a.constraints == b.constraints and a.values == b.values and a.distributions == b.distributions
    # and the raw rows are byte for byte what Optuna writes (json.dumps of each value)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {
            table: [
                conn.execute(
                    sa.text(f"SELECT key, value_json FROM {table} WHERE trial_id = :t ORDER BY key"), {"t": t._trial_id}
                ).all()
                for t in (a, b)
            ]
            for table in ("trial_user_attributes", "trial_system_attributes")
        }
    engine.dispose()
    assert all(ours_rows == their_rows for ours_rows, their_rows in rows.values())


def test_a_trials_attributes_are_one_transaction_and_read_back_as_optunas_own(tmp_path, monkeypatch):
    _same_trials_as_optunas_own_writes(storage_url(str(tmp_path / "w.db")), monkeypatch)


def test_a_trials_attributes_are_one_transaction_on_postgresql(postgres_url, monkeypatch):
    _same_trials_as_optunas_own_writes(storage_url(postgres_url), monkeypatch)


def test_a_finished_or_unknown_trial_is_not_written(tmp_path):
    url = storage_url(str(tmp_path / "f.db"))
    study = optuna.create_study(study_name="f", storage=url)
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(UpdateFinishedTrialError):
        write_trial(trial, trial._trial_id, {"late": 1}, LIMITS)
    (stored,) = optuna.load_study(study_name="f", storage=url).get_trials()
    assert "late" not in stored.user_attrs and not named_constraints(stored.system_attrs)
    with pytest.raises(KeyError):
        write_attrs(trial, 10_000, user={"late": 1})


def test_another_storage_gets_each_attribute_through_optunas_api():
    study = optuna.create_study(directions=["maximize", "minimize"])  # in memory: no SQL
    trial = study.ask()
    write_trial(trial, trial._trial_id, ATTRS, LIMITS)
    study.tell(trial, [1.0, 2.0])
    (stored,) = study.get_trials()
    assert stored.user_attrs == ATTRS and named_constraints(stored.system_attrs) == LIMITS


@pytest.mark.filterwarnings("ignore")  # Optuna: heartbeats outside optimize(), experimental APIs
def test_a_search_trial_costs_a_bounded_number_of_storage_transactions(tmp_path, monkeypatch):
    """The worker's loop (claim, run, tell) on a tiny space, every design a cache hit (no measuring process).

    Per trial, Optuna's ask, suggestions and tell commit 11 to 14 times (its sampler reads the study too); effscope
    adds two: the worker at the start and everything else at the end. Before the attributes went in one
    transaction, a trial committed 34 to 37 times."""
    from effscope.search.study import make_sampler, prepare_study
    from effscope.search.trial import SearchObjective
    from effscope.search.workers import TrialSlots, _run_trial

    space = load(tiny(tmp_path, trials=14))  # beyond TPE's 10 random startup trials
    url = storage_url(str(tmp_path / "c.db"))
    storage = open_storage(url, heartbeat_s=60)
    prepare_study(space, storage, "c", device_name="cpu", command="t")
    study = optuna.load_study(study_name="c", storage=storage, sampler=make_sampler(space, space.seed))
    objective = SearchObjective(space, store=None, device_name="cpu", study_name="c", command="t", measure=None)

    def cached(key: str) -> Record:
        record = Record(
            target="hilo", kind="block", workload={}, latency={"latency_ms_p50": 0.4, "latency_ms_p90": 0.5}
        )
        record.counts = {"params": 1000}
        return record

    monkeypatch.setattr(objective, "_cached", cached)
    slots = TrialSlots(study, storage, url, space.trials)
    tally = Tally(monkeypatch, storage.engine)
    per_trial = []
    while True:
        tally.reset()
        trial = slots.claim()
        if trial is None:
            break
        _run_trial(study, storage, trial, slots.trial_id(trial), objective)
        per_trial.append((tally.commits, tally.calls.copy()))

    assert len(per_trial) == 14
    calls = sum((c for _, c in per_trial), collections.Counter())
    assert calls["set_trial_user_attr"] == 0  # every user attr went in effscope's two transactions
    assert calls["set_trial_system_attr"] <= len(per_trial)  # TPE's own (constant liar), at most one a trial
    assert calls["get_trial_id_from_study_id_trial_number"] == 0  # Optuna's cache knows the ids
    assert calls["get_trial"] == 2 * len(per_trial)  # Trial() and tell's check; tell's read-back is skipped
    assert calls["_get_stale_trial_ids"] == 1  # millisecond trials: looked for once per heartbeat (60 s)
    assert max(commits for commits, _ in per_trial) <= 16
    done = optuna.load_study(study_name="c", storage=url).get_trials(deepcopy=False)
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["worker"] for t in done)
    assert all(list(named_constraints(t.system_attrs)) == list(CONSTRAINTS) for t in done)
