"""The Optuna study of a search: created once (its attributes, the presets enqueued), checked on resume, sampled.

One study per space and device unless --study says otherwise; re-running the same command resumes it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError, SpecError
from effscope.search.objectives import OBJECTIVES, label_for
from effscope.search.space import ZOO_PARAM, Space

if TYPE_CHECKING:
    import optuna

    from effscope.profile.record import Workload

__all__ = [
    "DASHBOARD_ATTR",
    "NAME_MAX",
    "SPACE_TOML_ATTR",
    "check_name",
    "default_study_name",
    "device_identity_for",
    "device_name_for",
    "enqueue_presets",
    "make_sampler",
    "objectives_attr",
    "prepare_study",
    "space_toml",
    "study_info",
    "study_name_for",
]

SPACE_TOML_ATTR = "effscope:space_toml"  # study system attr: the space's TOML (user attr effscope_space has its hash)
DASHBOARD_ATTR = "effscope:dashboard_constraints"  # study system attr: trials also carry optuna-dashboard's list


NAME_MAX = 200  # the Records' `study` column and the latency tables' `name` column are VARCHAR(200)


def default_study_name(space: Space) -> str:
    """One study per space and device unless --study says otherwise (so re-running the command resumes)."""
    return f"{space.name}-{space.workload.device.replace(':', '')}"


def check_name(name: str, what: str = "--study") -> str:
    """A study or table name: not blank, printable, no surrounding spaces, at most NAME_MAX characters.

    Raises:
        SpecError: one sentence naming `what` (the option, or where a default name came from).
    """
    rule = f"a name of 1 to {NAME_MAX} printable characters, not starting or ending with a space"
    if not name.strip():
        raise SpecError(f"{what} must be {rule}, but got {name!r}")
    bad = next((c for c in name if not c.isprintable() and c != " "), None)
    if bad is not None:
        raise SpecError(f"{what} must be {rule}, but {name!r} holds the control character {bad!r}")
    if name != name.strip():
        raise SpecError(f"{what} must be {rule}, but {name!r} starts or ends with a space")
    if len(name) > NAME_MAX:
        raise SpecError(f"{what} must be {rule}, but got one of {len(name)} characters")
    return name


def study_name_for(space: Space, given: str | None) -> str:
    """The study a command uses: `given` (--study) as typed, even when empty, else `<space>-<device>`; checked."""
    if given is not None:
        return check_name(given)
    return check_name(default_study_name(space), "the default study name <space>-<device> (pass --study NAME)")


def objectives_attr(space: Space) -> list[dict[str, Any]]:
    q = OBJECTIVES[space.quality]
    out = [
        {
            "name": q.name,
            "label": label_for(q.name, space.train),
            "direction": space.direction,
            "is_proxy": q.is_proxy,
        }
    ]
    if space.latency_objective:
        out.append(
            {
                "name": space.timing("p50"),
                "label": f"median {space.timing_name} (ms, measured)",
                "direction": "minimize",
                "is_proxy": False,
            }
        )
    return out


def prepare_study(
    space: Space,
    storage: optuna.storages.RDBStorage,
    study_name: str,
    *,
    device_name: str,
    command: str,
    device_identity: str | None = None,
) -> tuple[optuna.Study, bool, list[str]]:
    """Create the study once (attrs, presets enqueued) or check that an existing one is the same search.

    `device_identity` (device_identity_for) is stored with a new study; a study that has one is resumed only on a
    CPU of that identity, one without (made by an older effscope) by the device name alone.

    Returns:
        (study, created, notes): notes say which presets were enqueued or left out and why.

    Raises:
        SpecError: a study of that name exists with another space, workload, objective, budget or device.
    """
    import optuna

    from effscope._version import __version__
    from effscope.urls import mask_command

    check_name(study_name)
    signature = space.signature()
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        created = False
    except KeyError:
        study = optuna.create_study(
            study_name=study_name, storage=storage, directions=space.directions, load_if_exists=True
        )
        created = True
    study_id = storage.get_study_id_from_name(study_name)
    stored = storage.get_study_system_attrs(study_id).get("effscope:signature")
    if stored is not None and _differences(stored, signature):
        raise SpecError(
            f"study '{study_name}' exists with other settings (changed: {_differences(stored, signature)}); pass "
            "--study NAME to start another study, or run the same space and options to resume it"
        )
    if stored is not None:
        _check_device(study, study_name, device_name, device_identity)
    if [d.name.lower() for d in study.directions] != space.directions:
        raise SpecError(f"study '{study_name}' has directions {study.directions}; pass --study NAME for a new one")
    notes: list[str] = []
    if stored is None:
        budgets = [b.as_dict() for b in space.budgets]
        attrs = {
            "effscope_space": _space_attr(space),
            "target": space.target,
            "kind": space.kind,
            "workload": space.workload.as_dict(),
            "device_name": device_name,
            "objectives": objectives_attr(space),
            "budgets": budgets,
            "command": mask_command(command),
            "effscope_version": __version__,
        }
        if device_identity is not None:  # absent (a GPU, or made by an older effscope): resumed by the name alone
            attrs["device_identity"] = device_identity
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        storage.set_study_system_attr(study_id, SPACE_TOML_ATTR, space.text)
        storage.set_study_system_attr(study_id, DASHBOARD_ATTR, True)
        notes += enqueue_presets(study, space)
        # Last: marks the study as prepared (a run stopped before this point prepares it again, idempotently).
        storage.set_study_system_attr(study_id, "effscope:signature", signature)
    _for_optuna_tools(study, storage, study_id, space)
    return study, created, notes


def _check_device(study: optuna.Study, study_name: str, device_name: str, device_identity: str | None) -> None:
    """Refuse to resume a study measured on another device: another name, or (a study that recorded it) another CPU
    of the same name, which a cloud VM's generic name ("AMD EPYC") does not tell apart."""
    from effscope.profile.record import same_device

    theirs, their_identity = study.user_attrs.get("device_name"), study.user_attrs.get("device_identity")
    if theirs is None or same_device(theirs, their_identity, device_name, device_identity):
        return
    if theirs != device_name:
        raise SpecError(
            f"study '{study_name}' is measured on '{theirs}' but this machine has '{device_name}'; latencies from "
            "different devices do not belong in one study: pass --study NAME for this device"
        )
    raise SpecError(
        f"study '{study_name}' is measured on '{theirs}' ({their_identity}) but this machine's '{device_name}' is "
        f"another CPU ({device_identity}); latencies from different CPUs do not belong in one study: pass --study "
        "NAME to start another study for this CPU"
    )


def _differences(stored: dict[str, Any], signature: dict[str, Any]) -> str:
    """The signature fields that differ ("" when none); for the same targets, the knobs whose range differs; for
    the same workload, its fields. A field that a study made by an older effscope did not store is not compared."""
    diff = sorted(k for k in signature if k in stored and stored[k] != signature[k])
    if "target" in diff and "targets" in diff:
        diff.remove("targets")  # a different target has different knobs, said once
    elif "targets" in diff:
        old, new = stored.get("targets"), signature["targets"]
        if isinstance(old, dict) and set(old) == set(new):
            knobs = sorted({k for t in new for k in {*old[t], *new[t]} if old[t].get(k) != new[t].get(k)})
            diff[diff.index("targets")] = f"knob ranges ({', '.join(knobs)})"
    for name in ("workload", "quality_settings"):
        old, new = stored.get(name), signature[name]
        if name in diff and isinstance(old, dict):
            keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
            diff[diff.index(name)] = f"{name.replace('_', ' ')} ({', '.join(keys)})"
    return ", ".join(diff)


def _space_attr(space: Space) -> dict[str, str]:
    """The study's user attr effscope_space: short (Optuna's `optuna studies` prints every user attr in full)."""
    return {"name": space.name, "path": space.path, "sha256": _toml_hash(space.text)}


def _toml_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _for_optuna_tools(study: optuna.Study, storage: optuna.storages.BaseStorage, study_id: int, space: Space) -> None:
    """What Optuna's own tools read, also for a study an older effscope created: the objectives' names
    (`trials_dataframe`, `plot_pareto_front`, optuna-dashboard) and short user attrs (the TOML moved out)."""
    import optuna

    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o["name"] for o in objectives_attr(space)])
    old = study.user_attrs.get("effscope_space")
    if isinstance(old, dict) and "toml" in old:  # written by effscope before the TOML moved to a system attr
        storage.set_study_system_attr(study_id, SPACE_TOML_ATTR, old["toml"])
        short = {k: v for k, v in old.items() if k != "toml"}
        short["sha256"] = _toml_hash(old["toml"])
        study.set_user_attr("effscope_space", short)


def space_toml(storage: optuna.storages.BaseStorage, study_name: str) -> str | None:
    """The TOML of the space a study was created with (None for a study effscope did not prepare)."""
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(study_name))
    return attrs.get(SPACE_TOML_ATTR)


def enqueue_presets(study: optuna.Study, space: Space) -> list[str]:
    """Enqueue each published design once; one note per preset that lies outside the narrowed space.

    "Once" is by preset name, not by parameters (Optuna's skip_if_exists): presets that differ only in knobs the
    space pins or narrows away have equal parameters, and each must still be measured.
    """
    notes = []
    existing = {t.user_attrs.get("preset") for t in study.get_trials(deepcopy=False)}
    for ts, name, config in space.presets():
        params, outside = ts.preset_params(config)
        if len(space.targets) > 1:
            params = {ZOO_PARAM: ts.name, **params}
        if name in existing:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.enqueue_trial(params, user_attrs={"preset": name})
        if outside:
            notes.append(f"preset {name} lies outside the narrowed space ({', '.join(outside)}); measured as published")
    return notes


def make_sampler(space: Space, seed: int) -> optuna.samplers.BaseSampler:
    """The space's sampler: TPE (multivariate, grouped for conditional spaces) by default."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if space.sampler == "tpe":
            # group: the chosen block (or a preset outside a narrowed categorical) decides which parameters exist
            kwargs: dict[str, Any] = {"multivariate": True, "group": True, "seed": seed, "constant_liar": True}
            if space.n_startup_trials is not None:
                kwargs["n_startup_trials"] = space.n_startup_trials
            return optuna.samplers.TPESampler(**kwargs)
        if space.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if space.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        try:
            import scipy  # noqa: F401
        except ImportError:
            raise SpecError("sampler 'gp' needs scipy (pip install scipy); use tpe or nsga2 otherwise") from None
        return optuna.samplers.GPSampler(seed=seed)


def study_info(study: optuna.Study) -> dict[str, Any]:
    """What `summarize` needs from a study: its objectives and budgets (as stored when it was created)."""
    return {"objectives": study.user_attrs["objectives"], "budgets": study.user_attrs["budgets"]}


def device_name_for(workload: Workload) -> str:
    """The device name a Record's environment will carry (the cache key's device), without timing anything.

    CPU: read here. CUDA: asked in a spawned process, so the coordinator never creates a CUDA context.
    """
    if workload.device == "cpu":
        from effscope.profile.env import cpu_info

        return str(cpu_info()["cpu_model"])
    from effscope.search.objectives import QualityError, QualityProcess

    proc = QualityProcess()
    try:
        return proc.call(_cuda_device_name, {"device": workload.device}, timeout=120)
    except QualityError as e:
        raise SpecError(f"--device {workload.device}: {e}") from None
    finally:
        proc.close()


def device_identity_for(workload: Workload) -> str | None:
    """What tells this machine's CPU apart from others of its name (effscope.profile.record.device_identity), as a
    Record's environment will carry it, without timing anything; None for a CUDA device, whose name is precise."""
    if workload.device != "cpu":
        return None
    from effscope.profile.env import cpu_info
    from effscope.profile.record import device_identity

    return device_identity(cpu_info())


def _cuda_device_name(device: str) -> str:
    import torch

    if not torch.cuda.is_available():
        raise EffscopeError(
            f"device '{device}' was asked for, but this torch ({torch.__version__}) sees no CUDA device; "
            "use --device cpu or install a CUDA build of torch"
        )
    index = torch.device(device).index
    return torch.cuda.get_device_properties(index if index is not None else 0).name
