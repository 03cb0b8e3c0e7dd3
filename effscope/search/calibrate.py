"""Calibration: how far each proxy can be trusted on this space, against short training on the user's data.

A small random sample of the space is short-trained (the `train` objective: fixed seed, N steps, validation top-1)
and every proxy is computed for the same designs; each proxy's Kendall tau against the trained top-1 is stored
with the study (study.user_attrs["calibration"]) so reports print it beside any proxy front
(docs/search.md#proxy-calibration). All computing happens in a spawned quality process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effscope.errors import SpecError
from effscope.search.objectives import OBJECTIVES, PROXIES, label_for
from effscope.search.space import Space, check_searchable, sample_designs
from effscope.stats import MIN_RANK_PAIRS, kendall_tau

if TYPE_CHECKING:
    from pathlib import Path

    import optuna

__all__ = ["CAL_ROWS_ATTR", "CalibrationInterrupted", "CalibrationResult", "calibrate_proxies"]


CAL_ROWS_ATTR = "effscope:calibration_rows"  # study system attr: each short-trained design, stored as it completes


@dataclass
class CalibrationResult:
    """Per-design values and per-proxy Kendall tau against short-training top-1.

    `rows` holds every design in sample order, a failed value as its reason (str); `reused` counts the designs
    short-trained by an earlier run of the same calibration (an interrupted one) and read back.
    """

    study_name: str
    storage_url: str
    train_steps: int
    n: int
    rows: list[dict[str, Any]]
    taus: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    reused: int = 0


class CalibrationInterrupted(KeyboardInterrupt):
    """Ctrl-C during a calibration, with what is kept: `stored` short-trained designs of this sample are in the
    study (re-running the same command reuses them); none when the study was not reached."""

    def __init__(self, stored: int, study_name: str | None, storage_url: str | None) -> None:
        super().__init__()
        self.stored, self.study_name, self.storage_url = stored, study_name, storage_url


def calibrate_proxies(
    space: Space,
    *,
    samples: int = 8,
    steps: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    command: str = "",
    on_design: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> CalibrationResult:
    """Short-train `samples` designs of a model-level space and rank-correlate every proxy with their top-1.

    Each design whose training succeeded is stored with the study as soon as it is done, so an interrupted or failed
    calibration keeps it and a re-run of the same space, data and settings reuses it. A design that fails is a row
    with the reason; the calibration goes on. The study's `calibration` attribute is written at the end, and only
    when at least one design trained (it never replaces an earlier calibration with nothing); when none did (or
    Ctrl-C came first), a study this call created is deleted again, and an SQLite file it created removed.

    Raises:
        EffscopeError: a block-level space, no --data, undecodable images, fewer than 3 samples or a space that
            cannot yield them, bad study name or storage.
        CalibrationInterrupted: Ctrl-C; says how many designs are stored.
    """
    import dataclasses

    from effscope.knobs import to_jsonable
    from effscope.profile.store import RecordStore, new_sqlite_file
    from effscope.search.imagefolder import open_imagefolder
    from effscope.search.objectives import QualityError, QualityProcess, evaluate
    from effscope.search.storage import open_storage, storage_url
    from effscope.search.study import device_identity_for, device_name_for, prepare_study, study_name_for

    if space.kind != "model":
        raise SpecError(
            f"calibrate needs a model-level space (short training needs a classifier); {space.name} is a block space"
        )
    if not space.data:
        raise SpecError("calibrate needs --data DIR (an ImageFolder: root/<class>/<image>)")
    if samples < MIN_RANK_PAIRS:
        raise SpecError(f"--samples must be >= {MIN_RANK_PAIRS} for a rank correlation, but got {samples}")
    if steps is not None:
        if steps < 1:
            raise SpecError(f"--steps must be >= 1, but got {steps}")
        space = dataclasses.replace(space, train={**space.train, "steps": steps})
    name = study_name_for(space, study_name)
    url = storage_url(storage)  # a bad location fails before the data is read
    # Everything that can refuse comes before the study exists: a refused calibration leaves no empty study.
    open_imagefolder(space.data)
    check_searchable(space)
    designs = [
        (ts.name, config.knob_values()) for ts, config in sample_designs(space, samples, space.seed, asked="--samples")
    ]
    device_name = device_name_for(space.workload)  # a CUDA device that is not there is refused here
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    new_file = new_sqlite_file(url)  # removed again if no design trains
    RecordStore(url).engine.dispose()  # the Record table, as every command makes it; no connection left open
    optuna_storage = open_storage(url)
    study, created, _ = prepare_study(
        space,
        optuna_storage,
        name,
        device_name=device_name,
        command=command,
        device_identity=device_identity_for(space.workload),
    )
    study_id = optuna_storage.get_study_id_from_name(name)
    key = _rows_key(space)
    saved = optuna_storage.get_study_system_attrs(study_id).get(CAL_ROWS_ATTR)
    kept = {
        _design_key(r["target"], r["knobs"]): r
        for r in (saved["rows"] if isinstance(saved, dict) and saved.get("key") == key else [])
    }
    names = ["train", *PROXIES]
    proc: QualityProcess | None = None
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    reused = 0
    try:
        for i, (target, knobs) in enumerate(designs, 1):
            dkey = _design_key(target, to_jsonable(knobs))
            if dkey in kept and _ok(kept[dkey]["values"].get("train")):
                values, reused = dict(kept[dkey]["values"]), reused + 1
            else:
                proc = proc or QualityProcess(threads=space.workload.threads)
                kwargs = {
                    "target_name": target,
                    "knobs": knobs,
                    "names": names,
                    "workload": space.workload.as_dict(),
                    "proxy": space.proxy,
                    "train": space.train,
                    "data": space.data,
                }
                try:
                    values = proc.call(evaluate, kwargs, timeout=space.measure["timeout_s"] * 10)
                except QualityError as e:
                    values = dict.fromkeys(names, str(e))
                if _ok(values.get("train")):  # stored at once: an interruption or a later failure keeps it
                    kept[dkey] = {"target": target, "knobs": to_jsonable(knobs), "values": values}
                    optuna_storage.set_study_system_attr(
                        study_id, CAL_ROWS_ATTR, {"key": key, "rows": list(kept.values())}
                    )
            row = {"design": _describe(space, knobs), "knobs": knobs, **values}
            for k, v in values.items():
                if isinstance(v, str):
                    notes.append(f"design {i}: {k} failed: {v}")
            rows.append(row)
            if on_design is not None:
                on_design(i, len(designs), row)
    except KeyboardInterrupt:
        stored = sum(1 for r in rows if _ok(r.get("train")))
        if created and not stored:
            _discard_untrained(optuna_storage, name, url, new_file)
        raise CalibrationInterrupted(stored, name, url) from None
    finally:
        if proc is not None:
            proc.close()

    taus: dict[str, dict[str, Any]] = {}
    for proxy in PROXIES:
        pairs = [(r[proxy], r["train"]) for r in rows if _ok(r.get(proxy)) and _ok(r.get("train"))]
        tau = kendall_tau([p for p, _ in pairs], [t for _, t in pairs]) if len(pairs) >= MIN_RANK_PAIRS else math.nan
        taus[proxy] = {
            "kendall_tau": None if math.isnan(tau) else tau,
            "n": len(pairs),
            "train_steps": int(space.train["steps"]),
            "label": label_for(proxy),
        }
        if math.isnan(tau):
            taus[proxy]["why_missing"] = _no_tau(pairs)
    if any(_ok(r.get("train")) for r in rows):
        stored = {
            k: {key: v[key] for key in ("kendall_tau", "n", "train_steps", "why_missing") if key in v}
            for k, v in taus.items()
        }
        study.set_user_attr("calibration", stored)
    elif created:
        _discard_untrained(optuna_storage, name, url, new_file)
    if reused:
        notes.insert(0, f"{reused} design(s) were short-trained by an earlier run of this calibration and reused")
    if OBJECTIVES[space.quality].is_proxy:
        c = taus.get(space.quality, {})
        said = f"undefined ({c.get('why_missing')})" if c.get("kendall_tau") is None else f"{c['kendall_tau']:+.3f}"
        notes.append(f"this space searches {space.quality}: its Kendall tau against short training is {said} here")
    return CalibrationResult(name, url, int(space.train["steps"]), len(rows), rows, taus, notes, reused)


def _discard_untrained(storage: optuna.storages.RDBStorage, name: str, url: str, new_file: Path | None) -> None:
    """A calibration that trained no design stored nothing: it leaves neither the study nor the database file it
    created. What may be in use is kept: a study in which another calibration stored designs meanwhile, and any
    study of a database that another process has open or that lives on a server (where that cannot be told)."""
    from effscope.profile.store import open_elsewhere, remove_if_empty
    from effscope.search.storage import delete_unused_study
    from effscope.urls import sqlite_path

    path = sqlite_path(url)
    in_use = path is None or open_elsewhere(path)
    if not in_use and CAL_ROWS_ATTR not in storage.get_study_system_attrs(storage.get_study_id_from_name(name)):
        delete_unused_study(storage, name)
    storage.engine.dispose()  # remove_if_empty needs every connection to the file closed
    if new_file is not None:
        remove_if_empty(new_file)


def _no_tau(pairs: list[tuple[float, float]]) -> str:
    """Why a proxy has no Kendall tau against the trained accuracy: too few designs, or one side constant."""
    if len(pairs) < MIN_RANK_PAIRS:
        return (
            f"{len(pairs)} design(s) with both a proxy value and a trained accuracy; a rank correlation needs "
            f"{MIN_RANK_PAIRS} (with 2 it is always ±1)"
        )
    if len({p for p, _ in pairs}) == 1:
        return "the proxy gave every design the same value"
    return "short training gave every design the same accuracy"


def _rows_key(space: Space) -> str:
    """What makes a stored short-trained design reusable: the same training, proxies, workload and data."""
    import hashlib
    import json
    from pathlib import Path

    from effscope.search.objectives import OBJECTIVES
    from effscope.search.predictor import space_revisions

    what = {
        "train": space.train,
        "proxy": space.proxy,
        # a proxy whose definition changed is computed again, not mixed with the old definition's values
        "revisions": {o.name: o.revision for o in OBJECTIVES.values() if o.revision > 1},
        "workload": space.workload.as_dict(),
        "data": str(Path(space.data or "").expanduser().resolve()),
    }
    if blocks := space_revisions(space):  # a revised block trains another network; absent while none is
        what["block_revisions"] = blocks
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _design_key(target: str, knobs: dict[str, Any]) -> str:
    import json

    return json.dumps([target, knobs], sort_keys=True, default=str)


def _ok(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _describe(space: Space, knobs: dict[str, Any]) -> str:
    from effscope.knobs import format_value

    ts = space.targets[0]
    return " ".join(f"{k}={format_value(knobs[k])}" for k in ts.domains if k in knobs)
