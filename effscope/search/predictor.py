"""Latency predictor: a per-block lookup table plus a least-squares correction, used only to reject
(docs/search.md#latency-predictor).

A design (a block, or a model made of blocks) is decomposed into block calls: (block, knobs, token grid, batch)
under the space's workload. Each distinct call is measured once in the profiler's worker (cached in the Record
store by canonical key, so a rebuild re-uses them) and the design's latency is predicted as

    latency = a * sum(block latencies) + w . knob features + b

fitted by least squares on a sample of designs measured as wholes (the correction absorbs what the blocks do not
show: stem, head, norms, fusion, per-call overhead). Plain sum and an affine fit on the sum are kept as baselines;
the fit used is the one with the lowest leave-one-out error on the training designs (never chosen on the
held-out designs, which only validate). A design with a block missing from the table has no prediction and is
always measured.

In a search the prediction only ever rejects: a candidate predicted over budget x (1 + 2 x MAPE) is completed as
infeasible ("predicted-infeasible") without being measured, a seeded ~5 % of those are measured anyway to estimate
false rejections, and the final Pareto set is re-measured in fresh worker processes.

Decomposition: a block-level space's design is one block. A model that declares its block layout
(`ImageModel.block_layout`, LITv2 does) is decomposed from its config alone (fast screening); any other model whose
blocks are registered blocks is decomposed by tracing its forward on the `meta` device (slower: the screening rate
is quoted for LITv2 and block spaces).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from effscope.errors import EffscopeError, KnobError, SpecError, UnknownNameError
from effscope.knobs import Config, to_jsonable, with_knobs

if TYPE_CHECKING:
    from torch import nn

    from effscope.profile.record import Record, Workload
    from effscope.profile.store import RecordStore
    from effscope.profile.worker import Worker as ProfilerWorker
    from effscope.search.space import Space, TargetSpace
    from effscope.spec import Spec

__all__ = [
    "BlockCall",
    "BuildInterrupted",
    "LatencyTable",
    "Predictor",
    "PredictorError",
    "build_table",
    "decompose",
    "find_table",
    "fit_correction",
    "load_table",
    "metrics",
    "reject_rule",
    "spot_check",
]

TRAINING_ONLY_KNOBS = ("drop_path", "drop_path_rate", "dropout")  # equal modules at inference
SPOT_RATE = 0.05
MARGIN_MAPES = 2.0  # reject above budget x (1 + 2 x MAPE)
RIDGE = 1e-3  # relative ridge on standardized knob features: keeps a small training set from blowing up


class PredictorError(EffscopeError):
    """A latency table cannot be built, found or used for this space."""


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during `build_table`: no table was stored; `measured` measurements were (as Records, which a rebuild
    reuses for its block calls)."""

    def __init__(self, measured: int) -> None:
        super().__init__()
        self.measured = measured


# --------------------------------------------------------------------------------------------------- decomposition


@dataclass(frozen=True)
class BlockCall:
    """One block as it runs inside a design: registered block name, knobs (inert ones reset), token grid, batch."""

    block: str
    knobs: tuple[tuple[str, Any], ...]
    size: tuple[int, int] | None
    batch: int

    @property
    def lookup(self) -> tuple:
        return (self.block, self.knobs, self.size, self.batch)

    def as_dict(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.knobs},
            "size": list(self.size) if self.size else None,
            "batch": self.batch,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockCall:
        knobs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d["knobs"].items()))
        return cls(d["block"], knobs, tuple(d["size"]) if d["size"] else None, int(d["batch"]))


def _call(config: Config, size: tuple[int, int] | None, batch: int) -> BlockCall:
    knobs = config.knob_values()
    for name in TRAINING_ONLY_KNOBS:
        if name in knobs:
            knobs[name] = 0.0
    return BlockCall(config.owner(), tuple(sorted(knobs.items())), tuple(size) if size else None, batch)


def _trace(spec: Spec, config: Config, size: tuple[int, int] | None, batch: int) -> list[BlockCall]:
    """Any model: run its forward on `meta` and note every outermost registered block with its input grid."""
    import torch

    from effscope.spec import blocks

    registered = {s.config.owner() for s in blocks()}
    model = spec.build(config, device="meta")
    calls: list[BlockCall] = []
    depth = [0]
    handles = []

    def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
        if depth[0] == 0:
            x, hw = args[0], args[1] if len(args) > 1 else None
            grid = tuple(int(v) for v in hw) if isinstance(hw, tuple | list) else None
            calls.append(_call(module.config, grid, int(x.shape[0])))
        depth[0] += 1

    def post(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        depth[0] -= 1

    for m in model.modules():
        cfg = getattr(m, "config", None)
        if m is not model and isinstance(cfg, Config) and cfg.owner() in registered:
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.no_grad():
            model(*model.example_args(batch, size, device="meta"))
    except Exception as e:
        raise PredictorError(f"{spec.name} cannot be decomposed into blocks on the meta device: {e}") from None
    finally:
        for hd in handles:
            hd.remove()
    if not calls:
        raise PredictorError(f"{spec.name} exposes no registered blocks: a latency table cannot describe it")
    return calls


def decompose(target: str, config: Config, workload: Workload) -> list[BlockCall]:
    """The block calls a design runs, in order (a block-level design is one call).

    Raises:
        PredictorError: a model whose forward cannot be traced into registered blocks.
    """
    from effscope.spec import blocks, models

    if target in blocks():
        return [_call(config, workload.size, workload.batch)]
    spec = models().get(target)
    layout = spec.module.block_layout(config, workload.size)
    if layout is not None:
        return [_call(block, grid, workload.batch) for block, grid in layout]
    return _trace(spec, config, workload.size, workload.batch)


# --------------------------------------------------------------------------------------------------- features, fit


def knob_features(space: Space, ts: TargetSpace, knobs: dict[str, Any]) -> list[float]:
    """The searched knobs as numbers (per-stage tuples item by item, booleans 0/1, non-numeric options skipped);
    none in a space of several targets, whose knobs differ: no one feature vector fits them all, so the full fit is
    the affine one there."""
    if len(space.targets) > 1:
        return []
    out: list[float] = []
    for name in ts.domains:
        v = knobs[name]
        for item in v if isinstance(v, tuple | list) else (v,):
            if isinstance(item, bool | int | float):
                out.append(float(item))
    return out


def feature_names(space: Space) -> list[str]:
    if len(space.targets) > 1:
        return []
    ts = space.targets[0]
    out = []
    for name in ts.domains:
        v = getattr(ts.base, name)
        if isinstance(v, tuple | list):
            out += [f"{name}[{i}]" for i, item in enumerate(v) if isinstance(item, bool | int | float)]
        elif isinstance(v, bool | int | float):
            out.append(name)
    return out


@dataclass
class Fit:
    """A fitted linear predictor on [block_sum, standardized knob features, 1]."""

    kind: str  # "sum" (plain sum), "affine" (a * sum + b), "full" (a * sum + w . features + b)
    coef: list[float]
    mean: list[float]
    scale: list[float]

    def predict_one(self, block_sum: float, feats: Sequence[float]) -> float:
        if self.kind == "sum":
            return block_sum
        if self.kind == "affine":
            return self.coef[0] * block_sum + self.coef[1]
        z = 0.0
        for c, f, m, s in zip(self.coef[1:-1], feats, self.mean, self.scale, strict=True):
            z += c * (f - m) / s
        return self.coef[0] * block_sum + z + self.coef[-1]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fit_correction(block_sums: Sequence[float], feats: Sequence[Sequence[float]], y: Sequence[float], kind: str) -> Fit:
    """Least squares of the measured latency on [block_sum, knob features, 1] ("full"), [block_sum, 1] ("affine"),
    or nothing ("sum"). Features are standardized; a small ridge keeps the full fit defined when features outnumber
    or duplicate designs (the block-sum column and the intercept are not penalized)."""
    s = np.asarray(block_sums, dtype=float)
    t = np.asarray(y, dtype=float)
    if kind == "sum":
        return Fit("sum", [1.0], [], [])
    if kind == "affine":
        a = np.stack([s, np.ones_like(s)], axis=1)
        coef = np.linalg.lstsq(a, t, rcond=None)[0]
        return Fit("affine", coef.tolist(), [], [])
    f = np.asarray(feats, dtype=float).reshape(len(s), -1)
    mean = f.mean(axis=0) if len(f) else np.zeros(f.shape[1])
    scale = f.std(axis=0) if len(f) else np.ones(f.shape[1])
    scale[scale == 0] = 1.0
    z = (f - mean) / scale
    a = np.concatenate([s[:, None], z, np.ones((len(s), 1))], axis=1)
    penalty = np.full(a.shape[1], RIDGE * max(1, len(s)))
    penalty[0] = penalty[-1] = 0.0
    lhs = a.T @ a + np.diag(penalty)
    coef = np.linalg.lstsq(lhs, a.T @ t, rcond=None)[0]
    return Fit("full", coef.tolist(), mean.tolist(), scale.tolist())


def metrics(pred: Sequence[float], meas: Sequence[float]) -> dict[str, Any]:
    """MAPE (a fraction), share within +-5 % and +-10 %, Kendall tau, n."""
    from effscope.stats import MIN_RANK_PAIRS, kendall_tau

    errs = [abs(p - m) / m for p, m in zip(pred, meas, strict=True)]
    n = len(errs)
    if not n:
        return {"mape": math.nan, "within_5": math.nan, "within_10": math.nan, "kendall_tau": math.nan, "n": 0}
    return {
        "mape": sum(errs) / n,
        "within_5": sum(e <= 0.05 for e in errs) / n,
        "within_10": sum(e <= 0.10 for e in errs) / n,
        "kendall_tau": kendall_tau(list(pred), list(meas)) if n >= MIN_RANK_PAIRS else math.nan,
        "n": n,
    }


def _loo_mape(kind: str, sums: list[float], feats: list[list[float]], y: list[float]) -> float:
    """Leave-one-out MAPE of one fit kind on the training designs (how the fit is chosen)."""
    if kind == "sum":
        return metrics(sums, y)["mape"]
    min_n = 3 if kind == "affine" else 4
    if len(y) < min_n:
        return math.inf
    pred = []
    for i in range(len(y)):
        keep = [j for j in range(len(y)) if j != i]
        fit = fit_correction([sums[j] for j in keep], [feats[j] for j in keep], [y[j] for j in keep], kind)
        pred.append(fit.predict_one(sums[i], feats[i]))
    return metrics(pred, y)["mape"]


def choose_fit(sums: list[float], feats: list[list[float]], y: list[float]) -> tuple[Fit, dict[str, float]]:
    """The fit kind with the lowest leave-one-out MAPE on the training designs, refitted on all of them."""
    loo = {k: _loo_mape(k, sums, feats, y) for k in ("sum", "affine", "full")}
    kind = min(loo, key=lambda k: (loo[k], ("sum", "affine", "full").index(k)))
    return fit_correction(sums, feats, y, kind), loo


# --------------------------------------------------------------------------------------------------- the table


@dataclass
class LatencyTable:
    """A measured block table, its fitted correction and its held-out validation (stored as JSON in the database).

    Attributes:
        statistic: the latency statistic predicted (the space's budget statistic, e.g. latency_ms_p90).
        entries: one per distinct block call: the call's fields plus latency_ms (the statistic) and record_uid.
        fit: the chosen correction (Fit.as_dict()).
        validation: held-out metrics of the chosen fit and of the baselines (mape, within_5, within_10,
            kendall_tau, n_holdout, baseline_sum_mape, baseline_affine_mape, ...).
        rows: the measured designs (role "train" or "holdout"), with block_sum, measured and predicted latency.
        device_identity: the CPU it was measured on (effscope.profile.record.device_identity); None on a GPU and in a
            table built by an older effscope, which is matched by `device_name` alone.
        revisions: the revisions above 1 of the blocks its designs build (`space_revisions`): a table measured
            before a block changed is refused.
    """

    name: str
    space: str
    target: str
    kind: str
    workload: dict[str, Any]
    device_name: str
    statistic: str
    features: list[str]
    entries: list[dict[str, Any]]
    fit: dict[str, Any]
    validation: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    device_identity: str | None = None
    revisions: dict[str, int] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> LatencyTable:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self) -> dict[str, Any]:
        """What a study stores in user_attrs["predictor"] (the report reads it)."""
        v = self.validation
        return {
            "name": self.name,
            "uid": self.uid,
            "statistic": self.statistic,
            "fit": self.fit["kind"],
            "mape": v.get("mape"),
            "within_5": v.get("within_5"),
            "within_10": v.get("within_10"),
            "kendall_tau": v.get("kendall_tau"),
            "n_holdout": v.get("n_holdout"),
            "n_train": v.get("n_train"),
            "n_blocks": len(self.entries),
            "baseline_sum_mape": v.get("baseline_sum_mape"),
            "baseline_affine_mape": v.get("baseline_affine_mape"),
            "baseline_full_mape": v.get("baseline_full_mape"),
            "margin": 1.0 + MARGIN_MAPES * float(v.get("mape") or 0.0),
        }


def _json_default(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, np.floating | np.integer):
        return v.item()
    return str(v)


def _lut_table():
    import sqlalchemy as sa

    return sa.Table(
        "effscope_luts",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False, index=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("space", sa.String(200)),
        sa.Column("device", sa.String(200)),
        sa.Column("data", sa.Text, nullable=False),
    )


def save_table(store: RecordStore, table: LatencyTable) -> None:
    """Append the table to `effscope_luts` in the Record store's database (never updated: a rebuild adds a row)."""
    t = _lut_table()
    t.metadata.create_all(store.engine)
    with store.engine.begin() as conn:
        conn.execute(
            t.insert().values(
                uid=table.uid,
                name=table.name,
                created_at=table.created_at,
                space=table.space,
                device=table.device_name,
                data=table.to_json(),
            )
        )


def load_table(store: RecordStore, name_or_uid: str) -> LatencyTable:
    """The newest table of that name, or the table with that uid (read only: a store without tables gains none).

    Raises:
        PredictorError: no such table (the message lists the stored names).
    """
    import sqlalchemy as sa

    t = _lut_table()
    with store.engine.connect() as conn:
        if not sa.inspect(conn).has_table(t.name):
            raise _no_table(name_or_uid, store.url, [])
        row = conn.execute(
            sa.select(t.c.data)
            .where((t.c.name == name_or_uid) | (t.c.uid == name_or_uid))
            .order_by(t.c.id.desc())
            .limit(1)
        ).first()
        if row is None:
            raise _no_table(name_or_uid, store.url, sorted({n for (n,) in conn.execute(sa.select(t.c.name))}))
    return LatencyTable.from_json(row[0])


def find_table(url: str, name_or_uid: str) -> LatencyTable:
    """`load_table` from the database at `url`, opened to read: looking for a table creates nothing (no SQLite file,
    no table), so a search refused for its --predictor leaves no database behind."""
    from effscope.profile.store import RecordStore, new_sqlite_file

    if new_sqlite_file(url) is not None:  # a database not created yet holds no table
        raise _no_table(name_or_uid, url, [])
    return load_table(RecordStore(url, read_only=True), name_or_uid)


def _no_table(name_or_uid: str, url: str, names: list[str]) -> PredictorError:
    from effscope.urls import mask_url

    return PredictorError(
        f"no latency table '{name_or_uid}' in {mask_url(url)} (stored: {', '.join(names) or 'none'}); "
        "build one with `effscope lut build SPACE`"
    )


# --------------------------------------------------------------------------------------------------- predicting


class Predictor:
    """The screening path: decompose, look up, correct; pure python + a few numbers, no torch.

    Args:
        table: a built LatencyTable.
        space: the space it will screen (must match the table's space, workload and device).
    """

    def __init__(self, table: LatencyTable, space: Space) -> None:
        self.table = table
        self.space = space
        self.fit = Fit(**table.fit)
        self.lut = {BlockCall.from_dict(e).lookup: float(e["latency_ms"]) for e in table.entries}
        self.mape = float(table.validation.get("mape") or 0.0)
        from effscope.profile.record import Workload

        self.workload = Workload.from_dict(table.workload)

    @property
    def margin(self) -> float:
        return 1.0 + MARGIN_MAPES * self.mape

    def predict(self, ts: TargetSpace, config: Config) -> float | None:
        """Predicted latency (the table's statistic, ms), or None when a block of the design is not in the table."""
        total = 0.0
        for call in decompose(ts.name, config, self.workload):
            v = self.lut.get(call.lookup)
            if v is None:
                return None
            total += v
        return self.fit.predict_one(total, knob_features(self.space, ts, config.knob_values()))

    def predict_overrides(self, ts: TargetSpace, overrides: dict[str, Any]) -> float | None:
        """Predict from a sampled design's knob overrides; None for an invalid design or a missing block."""
        try:
            config = with_knobs(ts.base, {**ts.pins, **overrides})
        except (KnobError, UnknownNameError, SpecError):
            return None
        return self.predict(ts, config)


def reject_rule(predicted: float | None, budget_ms: float, mape: float) -> bool:
    """True: skip measuring (predicted over budget x (1 + 2 x MAPE)). None (no prediction) never rejects."""
    return predicted is not None and predicted > budget_ms * (1.0 + MARGIN_MAPES * mape)


def spot_check(seed: int, trial_number: int, rate: float = SPOT_RATE) -> bool:
    """Whether a rejected trial is measured anyway: seeded per (seed, trial), so workers agree and reruns repeat."""
    return random.Random(f"effscope-spot:{seed}:{trial_number}").random() < rate


def _forward_only(space: Space) -> None:
    if space.workload.mode == "train":
        raise PredictorError(
            f'space {space.name} times a training step ([workload] mode = "train"), and latency tables predict '
            "a forward's latency: search it without --predictor"
        )


def space_revisions(space: Space) -> dict[str, int]:
    """The revisions above 1 (ConfiguredModule.revisions) of every target of the space."""
    from effscope.profile.target import resolve_target

    out: dict[str, int] = {}
    for ts in space.targets:
        out.update(resolve_target(ts.name).revisions())
    return out


def check_compatible(table: LatencyTable, space: Space, device_name: str, device_identity: str | None = None) -> None:
    """Raise PredictorError unless the table was built for this space's target, workload, statistic and device (the
    same device name, and the same CPU where both the table and `device_identity` know it)."""
    from effscope.profile.record import same_device

    _forward_only(space)
    problems = []
    if table.target != space.target:
        problems.append(f"target {table.target} vs {space.target}")
    if table.workload != space.workload.as_dict():
        problems.append("workload differs")
    if table.device_name != device_name:
        problems.append(f"device '{table.device_name}' vs '{device_name}'")
    elif not same_device(table.device_name, table.device_identity, device_name, device_identity):
        problems.append(f"device '{device_name}' of another CPU: {table.device_identity} vs {device_identity}")
    if table.statistic != space.latency_budget.statistic:
        problems.append(f"statistic {table.statistic} vs {space.latency_budget.statistic}")
    if table.revisions != space_revisions(space):
        problems.append("built before a block of the space was revised (its numbers are of the old block)")
    if problems:
        raise PredictorError(
            f"latency table '{table.name}' does not fit space {space.name} ({'; '.join(problems)}); build one with "
            f"`effscope lut build {space.name}` for this device and workload"
        )


# --------------------------------------------------------------------------------------------------- building


def lut_options(space: Space, *, fresh_process: bool = False):
    """Profiler options for table entries and whole designs: latency and counts (Records a search may reuse)."""
    from effscope.profile.measure import Options

    m = space.measure
    return Options(
        count=True,
        latency=True,
        throughput=False,
        reference=False,
        max_time_s=m["max_time_s"],
        window_s=m["window_s"],
        timeout_s=m["timeout_s"],
        fresh_process=fresh_process,
        module_times=False,
    )


@dataclass
class _Measurer:
    """Measures block calls and whole designs through one profiler Worker, re-using stored Records by key."""

    space: Space
    store: RecordStore
    device_name: str
    command: str
    worker: Any
    device_identity: str | None = None  # a stored Record of another CPU of the device's name is measured again
    measured: int = 0
    cached: int = 0
    on_progress: Callable[[str], None] | None = None
    design: str = ""  # which sampled design the measurements are for ("design 3/24"), for the progress lines

    def block(self, call: BlockCall) -> Record:
        from effscope.profile.record import canonical_key, measured_on
        from effscope.profile.target import resolve_target

        wl = dataclasses.replace(self.space.workload, size=call.size, batch=call.batch)
        knobs = dict(call.knobs)
        key = canonical_key(call.block, knobs, wl, self.device_name, resolve_target(call.block).revisions())
        rec = self.store.latest(key, where=measured_on(self.device_name, self.device_identity))
        if rec is not None and rec.latency.get(self.statistic) is not None:
            self.cached += 1
            return rec
        return self._run(call.block, knobs, wl, key, "block")

    @property
    def statistic(self) -> str:
        return self.space.latency_budget.statistic

    def whole(self, ts: TargetSpace, config: Config, role: str) -> Record:
        """A design measured as a whole, always afresh (a cached Record may be one of the table's own entries)."""
        from effscope.profile.record import canonical_key
        from effscope.profile.target import resolve_target

        knobs = config.knob_values()
        revisions = resolve_target(ts.name).revisions()
        key = canonical_key(ts.name, knobs, self.space.workload, self.device_name, revisions)
        return self._run(ts.name, knobs, self.space.workload, key, role)

    def _run(self, name: str, knobs: dict, wl: Workload, key: str, role: str) -> Record:
        from effscope.profile.run import Plan, profile
        from effscope.profile.target import resolve_target

        if self.on_progress is not None:
            self.on_progress(f"{self.design}: lut {role}: {name} {'x'.join(map(str, wl.size or ()))} b{wl.batch}")
        rec = profile(
            [Plan(resolve_target(name, knobs), wl)],
            lut_options(self.space),
            store=self.store,
            worker=self.worker,
            provenance={"key": key, "command": self.command, "study": f"lut:{role}"},
        )[0]
        self.measured += 1
        if rec.status != "ok" or rec.latency.get(self.statistic) is None:
            raise PredictorError(f"measuring {name} for the latency table failed: {rec.error or 'no latency'}")
        return rec


def build_table(
    space: Space,
    *,
    store: RecordStore | str | None,
    name: str | None = None,
    samples: int = 16,
    holdout: int = 8,
    seed: int | None = None,
    device_name: str | None = None,
    command: str = "",
    worker: ProfilerWorker | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> LatencyTable:
    """Measure the blocks of `samples` + `holdout` random designs, fit on the first, validate on the second, store.

    Every distinct block call of those designs is measured once (cached by canonical key); each design is also
    measured as a whole (afresh). The correction is fitted on the `samples` designs; the `holdout` designs only
    validate it. A block-level space's designs are single blocks, so its table is per knob point and the
    validation measures how well a table entry predicts an independent measurement of the same point.

    `store` is a RecordStore, or the database to open as one (a path or URL; None: $EFFSCOPE_DB, else
    ./effscope.db) once the options are checked, so that a refused build creates no database.

    Raises:
        PredictorError: a model that cannot be decomposed, a failed measurement, too few valid designs.
    """
    from effscope.profile.store import RecordStore
    from effscope.profile.worker import Worker
    from effscope.search.space import check_searchable, sample_designs
    from effscope.search.study import check_name, default_study_name, device_identity_for, device_name_for

    if samples < 2 or holdout < 1:
        raise PredictorError(f"--samples must be >= 2 and --holdout >= 1, but got ({samples}, {holdout})")
    name = check_name(default_study_name(space) if name is None else name, "--name")  # tables are named as studies
    _forward_only(space)
    check_searchable(space)
    seed = space.seed if seed is None else seed
    designs = sample_designs(space, samples + holdout, seed, asked="--samples + --holdout")
    if not isinstance(store, RecordStore):  # opened once the options are checked: a refused build creates nothing
        store = RecordStore(store)
    device_name = device_name or device_name_for(space.workload)
    identity = device_identity_for(space.workload)  # the CPU measuring here, whatever name the caller gave it
    n_train = max(2, round(len(designs) * samples / (samples + holdout)))
    own = worker is None
    worker = worker or Worker()
    m = _Measurer(space, store, device_name, command, worker, device_identity=identity, on_progress=on_progress)
    stat = space.latency_budget.statistic
    entries: dict[tuple, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    try:
        for i, (ts, config) in enumerate(designs):
            m.design = f"design {i + 1}/{len(designs)}"
            calls = decompose(ts.name, config, space.workload)
            total = 0.0
            for call in calls:
                if call.lookup not in entries:
                    rec = m.block(call)
                    entries[call.lookup] = {
                        **call.as_dict(),
                        "latency_ms": rec.latency[stat],
                        "latency_ms_p50": rec.latency.get("latency_ms_p50"),
                        "record_uid": rec.uid,
                    }
                total += entries[call.lookup]["latency_ms"]
            role = "train" if i < n_train else "holdout"
            whole = m.whole(ts, config, role)
            rows.append(
                {
                    "role": role,
                    "target": ts.name,
                    "knobs": to_jsonable(config.knob_values()),
                    "features": knob_features(space, ts, config.knob_values()),
                    "n_blocks": len(calls),
                    "block_sum": total,
                    "measured": whole.latency[stat],
                    "record_uid": whole.uid,
                }
            )
    except KeyboardInterrupt:
        raise BuildInterrupted(m.measured) from None
    finally:
        if own:
            worker.close()

    train = [r for r in rows if r["role"] == "train"]
    hold = [r for r in rows if r["role"] == "holdout"]
    sums, feats, y = [r["block_sum"] for r in train], [r["features"] for r in train], [r["measured"] for r in train]
    fit, loo = choose_fit(sums, feats, y)
    validation = validate(train, hold, fit)
    validation.update({f"loo_{k}_mape": v for k, v in loo.items()})
    validation.update(n_train=len(train), n_holdout=len(hold), measured=m.measured, cached=m.cached)
    for r in rows:
        r["predicted"] = fit.predict_one(r["block_sum"], r["features"])
    table = LatencyTable(
        name=name,
        space=space.name,
        target=space.target,
        kind=space.kind,
        workload=space.workload.as_dict(),
        device_name=device_name,
        device_identity=identity,
        statistic=stat,
        features=feature_names(space),
        entries=list(entries.values()),
        fit=fit.as_dict(),
        validation=validation,
        rows=rows,
        notes=_notes(space),
        revisions=space_revisions(space),
    )
    save_table(store, table)
    return table


def validate(train: list[dict], hold: list[dict], fit: Fit) -> dict[str, Any]:
    """Held-out metrics of the chosen fit, and of each baseline fitted on the same training designs."""
    meas = [r["measured"] for r in hold]
    out = metrics([fit.predict_one(r["block_sum"], r["features"]) for r in hold], meas)
    out["fit"] = fit.kind
    sums, feats, y = [r["block_sum"] for r in train], [r["features"] for r in train], [r["measured"] for r in train]
    for kind in ("sum", "affine", "full"):
        try:
            b = fit_correction(sums, feats, y, kind)
        except np.linalg.LinAlgError:
            continue
        mb = metrics([b.predict_one(r["block_sum"], r["features"]) for r in hold], meas)
        out[f"baseline_{kind}_mape"] = mb["mape"]
        out[f"baseline_{kind}_within_5"] = mb["within_5"]
        out[f"baseline_{kind}_within_10"] = mb["within_10"]
        out[f"baseline_{kind}_kendall_tau"] = mb["kendall_tau"]
    return out


def _notes(space: Space) -> list[str]:
    if space.kind == "block":
        return [
            "block-level space: a design is one block, so entries are knob points and the held-out error is the "
            "re-measurement error of a point (the table predicts only points it holds; others are measured)"
        ]
    from effscope.spec import models

    ts = space.targets[0]
    fam = ts.family or ""
    declared = models().get(ts.name).module.block_layout(ts.base) is not None
    how = "pure-python decomposition" if declared else "meta-device tracing (slow screening)"
    return [f"model-level space ({fam}): blocks from {how}; the stem, final norm and head are left to the correction"]
