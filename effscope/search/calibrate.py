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
from typing import Any

from effscope.errors import SpecError
from effscope.search.objectives import OBJECTIVES, PROXIES, label_for
from effscope.search.space import Space, sample_designs

__all__ = ["CalibrationResult", "calibrate_proxies"]


@dataclass
class CalibrationResult:
    """Per-design values and per-proxy Kendall tau against short-training top-1."""

    study_name: str
    storage_url: str
    train_steps: int
    n: int
    rows: list[dict[str, Any]]
    taus: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)


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

    Raises:
        EffscopeError: a block-level space, no --data, fewer than 3 samples, bad storage.
    """
    import dataclasses

    from effscope.profile.store import RecordStore
    from effscope.search.imagefolder import open_imagefolder
    from effscope.search.objectives import QualityError, QualityProcess, evaluate
    from effscope.search.storage import open_storage, storage_url
    from effscope.search.study import default_study_name, device_name_for, prepare_study
    from effscope.stats import kendall_tau

    if space.kind != "model":
        raise SpecError(
            f"calibrate needs a model-level space (short training needs a classifier); {space.name} is a block space"
        )
    if not space.data:
        raise SpecError("calibrate needs --data DIR (an ImageFolder: root/<class>/<image>)")
    if samples < 3:
        raise SpecError(f"--samples must be >= 3 for a rank correlation, but got {samples}")
    if steps is not None:
        if steps < 1:
            raise SpecError(f"--steps must be >= 1, but got {steps}")
        space = dataclasses.replace(space, train={**space.train, "steps": steps})
    url = storage_url(storage)  # a bad location fails before the data is read
    open_imagefolder(space.data)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    RecordStore(url)
    optuna_storage = open_storage(url)
    device_name = device_name_for(space.workload)
    name = study_name or default_study_name(space)
    study, _, _ = prepare_study(space, optuna_storage, name, device_name=device_name, command=command)

    designs = [(ts.name, config.knob_values()) for ts, config in sample_designs(space, samples, space.seed)]
    if len(designs) < samples:
        raise SpecError(f"the space {space.name} yielded only {len(designs)} distinct valid designs; ask for fewer")
    names = ["train", *PROXIES]
    proc = QualityProcess(threads=space.workload.threads)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        for i, (target, knobs) in enumerate(designs, 1):
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
            row = {"design": _describe(space, knobs), "knobs": knobs, **values}
            for k, v in values.items():
                if isinstance(v, str):
                    notes.append(f"design {i}: {k} failed: {v}")
            rows.append(row)
            if on_design is not None:
                on_design(i, len(designs), row)
    finally:
        proc.close()

    taus: dict[str, dict[str, Any]] = {}
    for proxy in PROXIES:
        pairs = [(r[proxy], r["train"]) for r in rows if _ok(r.get(proxy)) and _ok(r.get("train"))]
        tau = kendall_tau([p for p, _ in pairs], [t for _, t in pairs]) if len(pairs) >= 2 else math.nan
        taus[proxy] = {
            "kendall_tau": None if math.isnan(tau) else tau,
            "n": len(pairs),
            "train_steps": int(space.train["steps"]),
            "label": label_for(proxy),
        }
    study.set_user_attr(
        "calibration",
        {k: {"kendall_tau": v["kendall_tau"], "n": v["n"], "train_steps": v["train_steps"]} for k, v in taus.items()},
    )
    if OBJECTIVES[space.quality].is_proxy:
        t = taus.get(space.quality, {}).get("kendall_tau")
        said = "undefined (constant values)" if t is None else f"{t:+.3f}"
        notes.append(f"this space searches {space.quality}: its Kendall tau against short training is {said} here")
    return CalibrationResult(name, url, int(space.train["steps"]), len(rows), rows, taus, notes)


def _ok(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _describe(space: Space, knobs: dict[str, Any]) -> str:
    from effscope.knobs import format_value

    ts = space.targets[0]
    return " ".join(f"{k}={format_value(knobs[k])}" for k in ts.domains if k in knobs)
