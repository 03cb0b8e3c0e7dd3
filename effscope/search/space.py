"""Search spaces: a TOML file names a target, a workload, objectives and budgets, and narrows or pins declared knobs.

The knobs themselves are declared once, on the block or model config (effscope.knobs); a space may only narrow a
knob's declared domain (a sub-range or a sub-set) or pin it to one value. Knobs a space does not name keep the
value of the base config (the block's default, or the family's base preset). The format is documented in
search_spaces/README.md; every mistake in a file is one sentence naming the file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError, SpecError, UnknownNameError
from effscope.knobs import Choice, Config, Domain, FloatRange, IntRange, Knob, Seq, format_value, knobs_of
from effscope.metrics import GRAPH_TIMED, TIMED, budgetable, peak_memory_key
from effscope.registry import did_you_mean

if TYPE_CHECKING:
    import optuna

    from effscope.profile.record import Workload

__all__ = [
    "SearchBudget",
    "Fixed",
    "Items",
    "Space",
    "SpaceError",
    "TargetSpace",
    "check_searchable",
    "find_space",
    "list_spaces",
    "load_space",
    "parse_space",
    "sample_designs",
    "space_size",
    "spaces_dir",
]

SAMPLERS = ("tpe", "nsga2", "gp", "random")
ZOO_PARAM = "block"  # the categorical choosing the block in a multi-block space


class SpaceError(SpecError):
    """A search space file is missing, malformed, or asks for something its target does not declare."""


# --------------------------------------------------------------------------------------------------- domains


@dataclass(frozen=True)
class Items(Domain):
    """A fixed-length tuple whose i-th item lies in its own domain (a per-stage narrowing of a Seq knob)."""

    items: tuple[Domain, ...]

    def normalize(self, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple) or len(value) != len(self.items):
            raise ValueError(f"{value!r} is not a sequence of {len(self.items)}")
        return tuple(d.normalize(v) for d, v in zip(self.items, value, strict=True))

    def describe(self) -> str:
        return "(" + ", ".join(d.describe() for d in self.items) + ")"

    def parse(self, text: str) -> tuple[Any, ...]:
        parts = text.strip().strip("()[]").split(",")
        if len(parts) != len(self.items):
            raise ValueError(f"{text!r} does not have {len(self.items)} items")
        return tuple(d.parse(p) for d, p in zip(self.items, parts, strict=True))

    def to_optuna(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, d in enumerate(self.items):
            out.update(d.to_optuna(f"{name}[{i}]"))
        return out

    def from_params(self, name: str, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(d.from_params(f"{name}[{i}]", params) for i, d in enumerate(self.items))


@dataclass(frozen=True)
class Fixed(Domain):
    """One item of a per-stage knob pinned to a value: no Optuna parameter (a preset may differ there)."""

    value: Any

    def normalize(self, value: Any) -> Any:
        if value != self.value:
            raise ValueError(f"{value!r} is not {self.value!r}")
        return self.value

    def describe(self) -> str:
        return f"= {format_value(self.value)}"

    def parse(self, text: str) -> Any:
        return self.value

    def to_optuna(self, name: str) -> dict[str, Any]:
        return {}

    def from_params(self, name: str, params: Mapping[str, Any]) -> Any:
        return self.value


def to_params(domain: Domain, name: str, value: Any) -> dict[str, Any]:
    """The Optuna parameters that `domain.from_params(name, ...)` turns back into `value` (for enqueuing presets)."""
    if isinstance(domain, Seq):
        return {k: v for i, item in enumerate(value) for k, v in to_params(domain.item, f"{name}[{i}]", item).items()}
    if isinstance(domain, Items):
        return {
            k: v
            for i, (d, item) in enumerate(zip(domain.items, value, strict=True))
            for k, v in to_params(d, f"{name}[{i}]", item).items()
        }
    if isinstance(domain, Choice):
        return {name: format_value(value) if isinstance(value, tuple) else value}
    if isinstance(domain, Fixed):
        return {}
    return {name: value}


def in_domain(domain: Domain, value: Any) -> bool:
    """Whether `value` lies in `domain` (tuples and lists alike)."""
    return domain.contains(value)


def suggest(trial: optuna.trial.BaseTrial, domain: Domain, name: str) -> Any:
    """Sample one knob value in a define-by-run objective (each Optuna parameter through the public suggest API)."""
    return domain.from_params(name, suggest_params(trial, domain, name))


def suggest_params(trial: optuna.trial.BaseTrial, domain: Domain, name: str, only: set[str] | None = None) -> dict:
    """Suggest the Optuna parameters of one knob (those in `only`, if given); returns them by name."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    params: dict[str, Any] = {}
    for pname, dist in domain.to_optuna(name).items():
        if only is not None and pname not in only:
            continue
        if isinstance(dist, IntDistribution):
            params[pname] = trial.suggest_int(pname, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, FloatDistribution):
            params[pname] = trial.suggest_float(pname, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, CategoricalDistribution):
            params[pname] = trial.suggest_categorical(pname, list(dist.choices))
        else:  # pragma: no cover - knobs.py makes only these three
            raise TypeError(f"unexpected distribution {dist!r}")
    return params


# --------------------------------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SearchBudget:
    """One latency budget (ms, on a stated statistic) or the peak-memory limit (bytes) that a search enforces as a
    trial constraint; stored with the study as `as_dict()`, which reports read back as effscope.report.data.Budget."""

    name: str  # "latency" or "memory"
    statistic: str
    limit: float
    unit: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statistic": self.statistic, "limit": self.limit, "unit": self.unit}


@dataclass(frozen=True)
class TargetSpace:
    """The searchable knobs of one block or model.

    Attributes:
        name: registry name built for sampled designs (the block, or the family's base preset).
        kind: "block" or "model".
        family: the registry family.
        base: the config whose values fill the knobs the space does not search.
        domains: searched knobs and their (narrowed) domains, in declaration order.
        pins: knobs the space fixes to one value.
        presets: published designs of the family (model presets; a block's registered default), name -> config.
        prefix: Optuna parameter prefix ("" for a single target, "<block>." in a multi-block space).
    """

    name: str
    kind: str
    family: str | None
    base: Config
    domains: dict[str, Domain]
    pins: dict[str, Any]
    presets: dict[str, Config]
    prefix: str = ""

    def knobs(self) -> dict[str, Knob]:
        return knobs_of(self.base)

    def suggest(self, trial: optuna.trial.BaseTrial, only: set[str] | None = None) -> dict[str, Any]:
        """Sample the searched knobs; returns the overrides (searched + pinned) to apply on the base config.

        Args:
            only: suggest just these Optuna parameters (a published design outside a narrowed categorical has no
                parameter there); knobs with a parameter left out are not in the result.
        """
        values = dict(self.pins)
        for name, domain in self.domains.items():
            full = self.prefix + name
            names = list(domain.to_optuna(full))
            if only is None or all(n in only for n in names):
                values[name] = suggest(trial, domain, full)
            else:
                suggest_params(trial, domain, full, only)
        return values

    def preset_params(self, config: Config) -> tuple[dict[str, Any], list[str]]:
        """Optuna parameters describing a preset, and the knobs whose preset value lies outside this space.

        A preset is always measured as published; where a narrowed categorical cannot hold its value, that
        parameter is left out (as in a conditional space) instead of being sampled.
        """
        params: dict[str, Any] = {}
        outside: list[str] = []
        for name, domain in self.domains.items():
            value = getattr(config, name)
            if not in_domain(domain, value):
                outside.append(f"{name}={format_value(value)}")
            params.update(_params_for(domain, self.prefix + name, value))
        outside += [f"{k}={format_value(getattr(config, k))}" for k, v in self.pins.items() if getattr(config, k) != v]
        return params, outside

    def describe(self) -> dict[str, str]:
        """Knob -> "searched: <domain>" / "pinned: <value>", for signatures and `search --list`."""
        out = {k: f"searched: {d.describe()}" for k, d in self.domains.items()}
        out.update({k: f"pinned: {format_value(v)}" for k, v in self.pins.items()})
        return out


@dataclass(frozen=True)
class Space:
    """A parsed search space (see search_spaces/README.md for the file format).

    Attributes:
        name: the file's stem.
        path: where it was read from.
        text: the TOML text as read (stored with the study).
        description: one line.
        target: what the file names: a block, a model family or preset, or several blocks.
        targets: the searchable targets (several in a multi-block space such as attention_zoo).
        workload: device, dtype, batch, size, threads.
        quality: the quality objective's name (effscope.search.objectives).
        direction: "maximize" or "minimize" for the quality.
        latency_objective: True: minimize the measured median latency as a second objective.
        budgets: latency budgets (loosest first) and an optional memory limit.
        sampler, trials, seed, n_startup_trials: the Optuna study.
        measure: profiler settings (max_time_s, window_s, throughput, reference, abort_margin, timeout_s, remeasure,
            module_times).
        proxy: zero-cost proxy settings (batch).
        train: short-training settings (steps, batch, lr, weight_decay, val_images, seed).
        data: an ImageFolder directory (real batches for proxies; required by `train`).
    """

    name: str
    path: str
    text: str
    description: str
    target: str
    targets: tuple[TargetSpace, ...]
    workload: Workload
    quality: str
    direction: str
    latency_objective: bool
    budgets: tuple[SearchBudget, ...]
    sampler: str = "tpe"
    trials: int = 20
    seed: int = 0
    n_startup_trials: int | None = None
    measure: dict[str, Any] = field(default_factory=dict)
    proxy: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    data: str | None = None

    @property
    def kind(self) -> str:
        return self.targets[0].kind

    @property
    def latency_budgets(self) -> list[SearchBudget]:
        return [b for b in self.budgets if b.name == "latency"]

    @property
    def latency_budget(self) -> SearchBudget:
        """The loosest latency budget: the one the study constrains (tighter ones are report slices)."""
        return max(self.latency_budgets, key=lambda b: b.limit)

    @property
    def memory_budget(self) -> SearchBudget | None:
        return next((b for b in self.budgets if b.name == "memory"), None)

    @property
    def budgets_graph_replay(self) -> bool:
        """The latency budget is on the CUDA-graph replay (the GPU's work), not on the eager timing loop."""
        return self.latency_budget.statistic.startswith(GRAPH_TIMED)

    @property
    def timing_name(self) -> str:
        """What this space times, in words: a forward, a training step, or a forward replayed as a CUDA graph."""
        if self.budgets_graph_replay:
            return "CUDA-graph latency"
        return "training step" if self.workload.mode == "train" else "latency"

    def timing(self, statistic: str) -> str:
        """The Record key of a timing statistic ("p50", "p90", "iqr") for what this space times: `latency_ms_p50` for
        a forward, `train_step_ms_p50` for a training step ([workload] mode = "train"), `latency_graph_ms_p50` for a
        forward replayed as a CUDA graph (a budget on the replay; it has no IQR)."""
        return (GRAPH_TIMED if self.budgets_graph_replay else TIMED[self.workload.mode]) + statistic

    @property
    def directions(self) -> list[str]:
        return [self.direction, "minimize"] if self.latency_objective else [self.direction]

    def target_named(self, name: str) -> TargetSpace:
        for t in self.targets:
            if t.name == name:
                return t
        raise UnknownNameError(f"space {self.name} has no target '{name}'")

    def suggest(self, trial: optuna.trial.BaseTrial, preset: str | None = None) -> tuple[TargetSpace, dict[str, Any]]:
        """Sample a design: (which target, its knob overrides). Multi-block spaces first choose the block.

        For an enqueued published design (`preset`), only the parameters it was enqueued with are suggested.
        """
        if len(self.targets) == 1:
            ts = self.targets[0]
        else:
            ts = self.target_named(trial.suggest_categorical(ZOO_PARAM, [t.name for t in self.targets]))
        only = None
        if preset is not None and preset in ts.presets:
            only = set(ts.preset_params(ts.presets[preset])[0])
        return ts, ts.suggest(trial, only)

    def presets(self) -> list[tuple[TargetSpace, str, Config]]:
        """Every published design to enqueue first: (target, preset name, config)."""
        return [(t, name, cfg) for t in self.targets for name, cfg in t.presets.items()]

    def with_overrides(
        self,
        *,
        budget_ms: float | None = None,
        device: str | None = None,
        trials: int | None = None,
        data: str | None = None,
        seed: int | None = None,
    ) -> Space:
        """The space with command-line overrides applied (validated)."""
        changes: dict[str, Any] = {}
        if budget_ms is not None:
            number = isinstance(budget_ms, int | float) and not isinstance(budget_ms, bool)  # True is no budget
            if not (number and math.isfinite(budget_ms) and budget_ms > 0):
                raise SpaceError(f"--budget-ms must be a positive number of milliseconds, but got {budget_ms}")
            stat = self.latency_budget.statistic
            rest = tuple(b for b in self.budgets if b.name != "latency")
            changes["budgets"] = (SearchBudget("latency", stat, float(budget_ms), "ms"), *rest)
        if device is not None:
            from effscope.profile.run import validate_workload

            if self.budgets_graph_replay and not device.startswith("cuda"):
                raise SpaceError(
                    f"space {self.name} budgets {self.latency_budget.statistic}, a CUDA-graph replay: --device must "
                    f"be cuda or cuda:N, but got '{device}'"
                )
            changes["workload"] = validate_workload(dataclasses.replace(self.workload, device=device))
            changes["budgets"] = tuple(  # a memory budget limits the figure the new device measures
                dataclasses.replace(b, statistic=peak_memory_key(device)) if b.name == "memory" else b
                for b in changes.get("budgets", self.budgets)
            )
        if trials is not None:
            if trials < 1:
                raise SpaceError(f"--trials must be >= 1, but got {trials}")
            changes["trials"] = trials
        if data is not None:
            changes["data"] = data
        if seed is not None:
            changes["seed"] = seed
        return dataclasses.replace(self, **changes)

    def signature(self) -> dict[str, Any]:
        """What makes two runs the same study (resume) rather than different ones."""
        return {
            "target": self.target,
            "targets": {t.name: t.describe() for t in self.targets},
            "workload": self.workload.as_dict(),
            "quality": self.quality,
            "quality_settings": self.quality_settings(),
            "direction": self.direction,
            "latency_objective": self.latency_objective,
            "budgets": [b.as_dict() for b in self.budgets],
        }

    def quality_settings(self) -> dict[str, Any]:
        """The settings the quality values depend on: a computed proxy's batch and data, short training's settings
        and data; none for a quality read from the measurement (params, MACs)."""
        from effscope.search.objectives import OBJECTIVES

        objective = OBJECTIVES[self.quality]
        if objective.source == "record":
            return {}
        settings = {"train": self.train} if self.quality == "train" else {"proxy": self.proxy}
        # a changed definition is another search; the first revision is left out, as studies before revisions hold
        definition = {"definition": f"revision {objective.revision}"} if objective.revision > 1 else {}
        return {**settings, "data": self.data, **definition}


def budget_statistics(workload: Workload) -> list[str]:
    """The catalogue's budgetable statistics that a search on `workload` measures: its timing loop's (a forward's, or
    a training step's) and, for a forward on a CUDA device, the CUDA-graph replay's."""
    prefixes = [TIMED[workload.mode]]
    if workload.mode == "infer" and workload.device.startswith("cuda"):
        prefixes.append(GRAPH_TIMED)
    return [s for s in budgetable() if s.startswith(tuple(prefixes))]


ENUMERATE_LIMIT = 20_000  # knob combinations a space may have for an exact count of its valid designs
PATIENCE = 1_000  # random draws in a row without a new design before a sample stops drawing
CHUNK = 1_000  # draws per throwaway study: Optuna's in-memory ask scans every trial, so long studies get slow


def _domain_size(domain: Domain) -> int | None:
    """How many values a (narrowed) domain holds; None for a float range (unbounded)."""
    if isinstance(domain, Choice):
        return len(domain.options)
    if isinstance(domain, IntRange):
        return (domain.high - domain.low) // domain.step + 1
    if isinstance(domain, FloatRange):
        return 1 if domain.low == domain.high else None
    if isinstance(domain, Fixed):
        return 1
    if isinstance(domain, Seq | Items):
        items = domain.items if isinstance(domain, Items) else (domain.item,) * domain.length
        sizes = [_domain_size(d) for d in items]
        return None if None in sizes else math.prod(sizes)  # type: ignore[arg-type]
    return None


def _domain_values(domain: Domain) -> list[Any]:
    """Every value of a finite domain (_domain_size is not None), in order."""
    import itertools

    if isinstance(domain, Choice):
        return list(domain.options)
    if isinstance(domain, IntRange):
        return list(range(domain.low, domain.high + 1, domain.step))
    if isinstance(domain, FloatRange):
        return [domain.low]
    if isinstance(domain, Fixed):
        return [domain.value]
    items = domain.items if isinstance(domain, Items) else (domain.item,) * domain.length  # type: ignore[union-attr]
    return [tuple(v) for v in itertools.product(*(_domain_values(d) for d in items))]


def space_size(space: Space) -> int | None:
    """Knob combinations the space holds (before cross-knob rules), over all its targets; None when unbounded."""
    total = 0
    for ts in space.targets:
        sizes = [_domain_size(d) for d in ts.domains.values()]
        if None in sizes:
            return None
        total += math.prod(sizes)  # type: ignore[arg-type]
    return total


def check_searchable(space: Space) -> None:
    """Refuse, before anything is stored, a space whose every trial would be the same design or would fail the same
    way: no knob with two values, not one valid knob combination or one network only (counted when the space is
    small enough), or a workload grid that no design fits (checked on the `meta` device).

    Raises:
        SpaceError: one sentence naming the file and what to change.
    """
    size = space_size(space)
    if size == 1:
        ts = space.targets[0]
        raise SpaceError(
            f"search space {space.path}: the space searches no knob: [knobs] gives none of {ts.base.owner()}'s knobs "
            f"two or more values, so every trial would be the same design; give one a range or a list "
            f"(knobs: {', '.join(knobs_of(ts.base))})"
        )
    sampled = sample_designs(space, min(4, size or 4), space.seed, exact=False)
    if not sampled and size is not None and size <= ENUMERATE_LIMIT:  # counted exactly: not one valid combination
        raise SpaceError(
            f"search space {space.path}: no design of the space is valid: all {size} knob combinations break a rule "
            f"({_first_rule(space)}); widen the knobs that the rule ties together"
        )
    if len(sampled) == 1 and size is not None and size <= ENUMERATE_LIMIT:  # counted exactly: one network
        raise SpaceError(
            f"search space {space.path}: all {size} knob combinations build the same network (the knobs the space "
            "searches are ignored with the values of the others), so every trial would be the same design; give a "
            "knob that changes the network two or more values"
        )
    _check_workload_fits(space, sampled)


def _first_rule(space: Space) -> str:
    """The rule the first knob combination breaks (a space without one valid design)."""
    from effscope.knobs import with_knobs

    ts = space.targets[0]
    first = {**ts.pins, **{k: _domain_values(d)[0] for k, d in ts.domains.items()}}
    try:
        with_knobs(ts.base, first)
    except EffscopeError as e:
        return str(e)
    return "a rule of the design"


def _check_workload_fits(space: Space, sampled: list[tuple[TargetSpace, Config]]) -> None:
    """Refuse a workload size that no checked design accepts: each target's base design (pins applied) and a few
    sampled designs run a forward on the `meta` device; only a size error counts (anything else is left to the
    trials, which report it)."""
    from effscope.errors import InputSizeError, KnobError
    from effscope.knobs import with_knobs
    from effscope.profile.run import meta_forward
    from effscope.profile.target import resolve_target

    checked: list[tuple[TargetSpace, Config]] = []
    for ts in space.targets:
        try:
            checked.append((ts, with_knobs(ts.base, ts.pins)))
        except (KnobError, SpecError):
            pass
    checked += sampled
    first: InputSizeError | None = None
    for ts, config in checked:
        try:
            meta_forward(resolve_target(ts.name, overrides=config.knob_values()), space.workload.size)
        except InputSizeError as e:
            first = first or e
            continue
        except Exception:  # noqa: BLE001 - not every module runs on meta; the trials will tell
            pass
        return
    if first is not None:
        size = "x".join(map(str, space.workload.size or ()))
        raise SpaceError(
            f"search space {space.path}: no design fits [workload] size = {size or 'the default'} ({first}); "
            "choose a size every design of the space can take"
        )


def sample_designs(
    space: Space, n: int, seed: int, *, asked: str = "", exact: bool = True
) -> list[tuple[TargetSpace, Config]]:
    """`n` distinct valid designs drawn at random from the space (its own sampling API, a RandomSampler).

    Designs are told apart by the network they build: knobs a design ignores (Config.inert_knobs) take the value
    that says what is built, so combinations differing only there are one design. An invalid draw (a cross-knob
    rule) is drawn again; drawing stops after PATIENCE draws in a row found nothing new.
    A space of at most ENUMERATE_LIMIT knob combinations is then completed from the list of its valid designs (seeded
    order), so the answer is exact and quick even when `n` is all of them.

    Args:
        asked: the option that asked for `n` ("--samples"), for the message.
        exact: False returns what was found (up to `n`) instead of refusing.

    Raises:
        SpaceError: (exact) the space cannot yield `n` distinct valid designs; the message says how many it has.
    """
    import optuna

    from effscope.errors import KnobError
    from effscope.knobs import with_knobs

    bound = space_size(space)
    seen: set[tuple[str, str]] = set()
    out: list[tuple[TargetSpace, Config]] = []

    def add(ts: TargetSpace, overrides: dict[str, Any]) -> str:
        """Whether the combination is a "new" design, "invalid" (breaks a rule) or the "same" as one found."""
        try:
            config = with_knobs(ts.base, overrides)
        except (KnobError, UnknownNameError, SpecError):
            return "invalid"
        key = (ts.name, repr(sorted(config.knob_values().items())))
        if key in seen:
            return "same"
        seen.add(key)
        out.append((ts, config))
        return "new"

    enumerable = bound is not None and bound <= ENUMERATE_LIMIT
    where = f"the {n} asked for" + (f" ({asked})" if asked else "")
    too_few = bound is not None and bound < n
    if too_few and not enumerable and exact:
        raise SpaceError(
            f"space {space.name} holds at most {bound} distinct designs (its knob combinations), fewer than "
            f"{where}; ask for at most {bound}"
        )
    draw = not (too_few and enumerable)  # with fewer combinations than asked, only a full count can answer
    draws = 0
    if draw:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            sampler = optuna.samplers.RandomSampler(seed=seed)  # one sampler across the chunks: one random stream
            misses = 0
            while len(out) < n and draws < 200 * max(1, n) and misses < PATIENCE:
                if draws % CHUNK == 0:
                    study = optuna.create_study(sampler=sampler, directions=space.directions)
                trial = study.ask()
                ts, overrides = space.suggest(trial)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                draws += 1
                misses = 0 if add(ts, overrides) == "new" else misses + 1
        finally:
            optuna.logging.set_verbosity(verbosity)
    if len(out) < n and enumerable:
        import itertools
        import random

        rest: list[tuple[TargetSpace, dict[str, Any]]] = []
        for ts in space.targets:
            names = list(ts.domains)
            for values in itertools.product(*(_domain_values(d) for d in ts.domains.values())):
                rest.append((ts, {**ts.pins, **dict(zip(names, values, strict=True))}))
        random.Random(seed).shuffle(rest)
        invalid = 0
        for ts, overrides in rest:
            if len(out) >= n:
                break
            invalid += add(ts, overrides) == "invalid"
        if len(out) < n and exact:  # every combination was tried: the counts are exact
            same = bound - invalid - len(out)
            why = [f"{invalid} break a rule of the design"] if invalid else []
            why += [f"{same} build the same network as another (a knob the design then ignores)"] if same else []
            raise SpaceError(
                f"space {space.name} holds {len(out)} distinct valid design(s) "
                f"({', '.join([f'{bound} knob combinations', *why])}), fewer than {where}; ask for at most {len(out)}"
            )
    if len(out) < n and exact:
        raise SpaceError(
            f"space {space.name} yielded only {len(out)} distinct valid design(s) in {draws} random draws, fewer than "
            f"{where}; ask for fewer or widen the space"
        )
    return out


# --------------------------------------------------------------------------------------------------- files


def spaces_dir() -> Path:
    """Where the shipped spaces live: inside the installed package, or the repository's search_spaces/."""
    packaged = Path(__file__).resolve().parent / "spaces"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "search_spaces"


def list_spaces() -> list[Space]:
    """Every shipped space, parsed, by name."""
    folder = spaces_dir()
    return [load_space(str(p)) for p in sorted(folder.glob("*.toml"))]


def find_space(name_or_path: str) -> Path:
    """A path to a TOML file, or the name of a shipped space ("hilo_block")."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.exists() or "/" in name_or_path:
        if path.is_dir():
            raise SpaceError(f"search space '{name_or_path}' is a folder; give a .toml file or a shipped space's name")
        if not path.is_file():
            raise SpaceError(f"search space file '{name_or_path}' does not exist")
        return path
    shipped = spaces_dir() / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in spaces_dir().glob("*.toml"))
    raise SpaceError(
        f"unknown search space '{name_or_path}'{did_you_mean(name_or_path, names)} (a space is a .toml file or one "
        f"of {', '.join(names)}: effscope search --list)"
    )


def load_space(name_or_path: str) -> Space:
    """Read and validate a space by shipped name or file path."""
    path = find_space(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")  # TOML is UTF-8 whatever the locale says
    except UnicodeDecodeError as e:
        raise SpaceError(
            f"search space '{path}' is not a UTF-8 TOML file (byte {e.object[e.start]:#04x} at offset {e.start} is not "
            "UTF-8); save it as UTF-8"
        ) from None
    except OSError as e:
        raise SpaceError(f"cannot read search space '{path}': {e}") from None
    return parse_space(text, name=path.stem, path=str(path))


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


SECTIONS = {
    "space": {"description", "target", "base"},
    "workload": {"device", "dtype", "batch", "size", "threads", "channels_last", "compile", "attention", "mode"},
    "objectives": {"quality", "direction", "latency"},
    "budgets": {"latency_ms", "statistic", "memory_bytes"},
    "search": {"sampler", "trials", "seed", "n_startup_trials"},
    "measure": {
        "max_time_s",
        "window_s",
        "throughput",
        "reference",
        "abort_margin",
        "timeout_s",
        "remeasure",
        "module_times",
    },
    "proxy": {"batch"},
    "train": {"steps", "batch", "lr", "weight_decay", "val_images", "seed"},
    "data": {"dir"},
    "knobs": None,  # keys checked against the target's knobs
}
MEASURE_DEFAULTS = {
    "max_time_s": 1.0,
    "window_s": 0.5,
    "throughput": True,
    "reference": False,
    "abort_margin": 1.5,
    "timeout_s": 300.0,
    "remeasure": 1,  # times a design whose budget statistic is uncertain against the budget is measured again
    "module_times": False,  # per-module times for the report's breakdown: 6 more forwards a design
}
PROXY_DEFAULTS = {"batch": 8}
TRAIN_DEFAULTS = {"steps": 100, "batch": 32, "lr": 1e-3, "weight_decay": 0.05, "val_images": 256, "seed": 0}


class _Reader:
    """Typed access to one TOML table with errors that name the file and the key."""

    def __init__(self, where: str, section: str, table: Any) -> None:
        self.where, self.section = where, section
        if not isinstance(table, dict):
            raise SpaceError(f"{where}: [{section}] must be a table, but got {toml_text(table)}")
        allowed = SECTIONS[section]
        if allowed is not None:
            for key in table:
                if key not in allowed:
                    raise SpaceError(
                        f"{where}: unknown key '{key}' in [{section}]{did_you_mean(key, sorted(allowed))} "
                        f"(valid keys: {', '.join(sorted(allowed))})"
                    )
        self.table = table

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, what: str = "") -> Any:
        value = self.table.get(key, default)
        if value is None:
            return None
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
        if not ok:
            raise SpaceError(
                f"{self.where}: [{self.section}] {key} must be {what or _kind_name(kind)}, but got {toml_text(value)}"
            )
        return value

    def positive(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, zero: bool = False) -> Any:
        value = self.get(key, kind, default)
        # inf is a TOML float: an endless timeout or window would hang a trial
        if value is not None and not (math.isfinite(value) and (value > 0 or (zero and value == 0))):
            raise SpaceError(
                f"{self.where}: [{self.section}] {key} must be {_kind_name(kind, finite=True)} "
                f"{'>= 0' if zero else '> 0'}, but got {toml_text(value)}"
            )
        return value


def toml_text(value: Any) -> str:
    """A value as it is written in TOML (true, "text", {low = 1}), for messages about a space file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...], *, finite: bool = False) -> str:
    number = "a finite number" if finite else "a number"
    kinds = _as_tuple(kind)
    if int in kinds and float in kinds:  # an integer is a number
        kinds = tuple(k for k in kinds if k is not int)
    names = {int: "an integer", float: number, str: "a string", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_space(text: str, *, name: str, path: str = "<string>") -> Space:
    """Parse and validate a space's TOML text.

    Raises:
        SpaceError: malformed TOML, unknown sections or keys, unknown knobs, knob values outside the declared
            domain, empty domains, non-positive budgets; one sentence each.
    """
    from effscope.profile.measure import peak_rss_hidden
    from effscope.profile.record import Workload
    from effscope.profile.run import validate_workload
    from effscope.search.objectives import OBJECTIVES

    where = f"search space {path}"
    try:
        doc = _toml().loads(text)
    except Exception as e:  # tomllib.TOMLDecodeError; the message carries the line and column
        raise SpaceError(f"{where} is not valid TOML: {e}") from None
    for section in doc:
        if section not in SECTIONS:
            raise SpaceError(
                f"{where}: unknown section [{section}]{did_you_mean(section, list(SECTIONS))} "
                f"(valid sections: {', '.join(SECTIONS)})"
            )
    if "space" not in doc or "target" not in doc["space"]:
        raise SpaceError(
            f"{where}: [space] target is required (a block, a model family or preset, or a list of blocks)"
        )

    sp = _Reader(where, "space", doc["space"])
    raw_target = doc["space"]["target"]
    if isinstance(raw_target, str):
        target_names = [raw_target]
    elif isinstance(raw_target, list) and raw_target and all(isinstance(t, str) for t in raw_target):
        target_names = list(raw_target)
    else:
        raise SpaceError(
            f"{where}: [space] target must be a name or a non-empty list of block names, but got "
            f"{toml_text(raw_target)}"
        )
    if len(set(target_names)) != len(target_names):
        raise SpaceError(f"{where}: [space] target lists a block twice: {', '.join(target_names)}")
    base_name = sp.get("base", str)

    knob_table = doc.get("knobs", {})
    if not isinstance(knob_table, dict):
        raise SpaceError(f"{where}: [knobs] must be a table, but got {toml_text(knob_table)}")
    targets = _resolve_targets(where, target_names, base_name, knob_table)

    # workload
    wl = _Reader(where, "workload", doc.get("workload", {}))
    size = wl.get("size", (list, int), what="N or [H, W]")
    if size is not None:
        size = [size, size] if isinstance(size, int) else size
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise SpaceError(
                f"{where}: [workload] size must be N or [H, W] with positive integers, but got {toml_text(size)}"
            )
        size = (size[0], size[1])
    workload = validate_workload(
        Workload(
            device=wl.get("device", str, "cpu"),
            dtype=wl.get("dtype", str, "fp32"),
            batch=wl.get("batch", int, 1),
            size=size,
            threads=wl.get("threads", int),
            channels_last=wl.get("channels_last", bool, False),
            compile=wl.get("compile", bool, False),
            attention=wl.get("attention", str, "auto"),
            mode=wl.get("mode", str, "infer"),
        ),
        where,
    )

    # objectives
    ob = _Reader(where, "objectives", doc.get("objectives", {}))
    quality = ob.get("quality", str, "params")
    if quality not in OBJECTIVES:
        raise SpaceError(
            f"{where}: unknown quality objective '{quality}'{did_you_mean(quality, list(OBJECTIVES))} "
            f"(objectives: {', '.join(OBJECTIVES)})"
        )
    direction = ob.get("direction", str, OBJECTIVES[quality].direction)
    if direction not in ("maximize", "minimize"):
        raise SpaceError(f"{where}: [objectives] direction must be 'maximize' or 'minimize', but got '{direction}'")
    latency_objective = ob.get("latency", bool, True)
    if quality == "train" and targets[0].kind != "model":
        raise SpaceError(f"{where}: quality 'train' needs a model-level space (a block has no classifier to train)")

    # budgets
    bu = _Reader(where, "budgets", doc.get("budgets", {}))
    if "latency_ms" not in bu.table:
        raise SpaceError(f"{where}: [budgets] latency_ms is required (one budget in ms, or a list of them)")
    raw = bu.table["latency_ms"]
    limits = raw if isinstance(raw, list) else [raw]
    if not limits:
        raise SpaceError(f"{where}: [budgets] latency_ms must name at least one budget")
    for v in limits:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise SpaceError(
                f"{where}: [budgets] latency_ms must be positive numbers of milliseconds, but got {toml_text(v)}"
            )
    statistic = bu.get("statistic", str, f"{TIMED[workload.mode]}p90")
    allowed = budget_statistics(workload)
    if statistic not in allowed:
        graph = statistic in budgetable() and statistic.startswith(GRAPH_TIMED)
        why = " (a CUDA-graph replay needs [workload] device = 'cuda' and mode = 'infer')" if graph else ""
        raise SpaceError(
            f"{where}: [budgets] statistic must be one of {', '.join(allowed)} with [workload] device = "
            f"'{workload.device}' and mode = '{workload.mode}', but got '{statistic}'{why}"
        )
    if statistic.startswith(GRAPH_TIMED):  # the trials must replay the forward as a CUDA graph to measure it
        workload = dataclasses.replace(workload, cuda_graph=True)
    budgets = [SearchBudget("latency", statistic, float(v), "ms") for v in sorted(set(limits), reverse=True)]
    memory = bu.positive("memory_bytes", (int, float))
    if memory is not None:
        hidden = peak_rss_hidden(workload)
        if hidden:
            raise SpaceError(
                f"{where}: [budgets] memory_bytes needs the peak RSS, which [workload] attention = "
                f"'{workload.attention}' cannot give on the CPU ({hidden}); use 'auto', 'sdpa' or 'explicit', or "
                "drop the memory budget"
            )
        budgets.append(SearchBudget("memory", peak_memory_key(workload.device), float(memory), "bytes"))

    # search, measure, proxy, train, data
    se = _Reader(where, "search", doc.get("search", {}))
    sampler = se.get("sampler", str, "tpe")
    if sampler not in SAMPLERS:
        raise SpaceError(f"{where}: [search] sampler must be one of {', '.join(SAMPLERS)}, but got '{sampler}'")
    trials = se.positive("trials", int, 20)
    seed = se.get("seed", int, 0)
    startup = se.positive("n_startup_trials", int, zero=True)

    me = _Reader(where, "measure", doc.get("measure", {}))
    measure = dict(MEASURE_DEFAULTS)
    for key in ("max_time_s", "window_s", "timeout_s"):
        measure[key] = float(me.positive(key, (int, float), measure[key]))
    for key in ("throughput", "reference", "module_times"):
        measure[key] = me.get(key, bool, measure[key])
    margin = me.get("abort_margin", (int, float, bool), measure["abort_margin"], what="a number >= 1 or false")
    if margin is True or (margin is not False and margin < 1):
        raise SpaceError(f"{where}: [measure] abort_margin must be a number >= 1 or false, but got {toml_text(margin)}")
    measure["abort_margin"] = None if margin is False else float(margin)
    measure["remeasure"] = me.positive("remeasure", int, measure["remeasure"], zero=True)

    pr = _Reader(where, "proxy", doc.get("proxy", {}))
    proxy = {"batch": pr.positive("batch", int, PROXY_DEFAULTS["batch"])}
    if quality == "jacob_cov" and proxy["batch"] < 2:
        raise SpaceError(f"{where}: [proxy] batch must be >= 2 for jacob_cov (a correlation across inputs)")
    tr = _Reader(where, "train", doc.get("train", {}))
    train = {
        "steps": tr.positive("steps", int, TRAIN_DEFAULTS["steps"]),
        "batch": tr.positive("batch", int, TRAIN_DEFAULTS["batch"]),
        "lr": float(tr.positive("lr", (int, float), TRAIN_DEFAULTS["lr"])),
        "weight_decay": float(tr.positive("weight_decay", (int, float), TRAIN_DEFAULTS["weight_decay"], zero=True)),
        "val_images": tr.positive("val_images", int, TRAIN_DEFAULTS["val_images"]),
        "seed": tr.get("seed", int, TRAIN_DEFAULTS["seed"]),
    }
    da = _Reader(where, "data", doc.get("data", {}))
    data = da.get("dir", str)

    return Space(
        name=name,
        path=path,
        text=text,
        description=sp.get("description", str, "") or "",
        target=", ".join(target_names),
        targets=tuple(targets),
        workload=workload,
        quality=quality,
        direction=direction,
        latency_objective=latency_objective,
        budgets=tuple(budgets),
        sampler=sampler,
        trials=trials,
        seed=seed,
        n_startup_trials=startup,
        measure=measure,
        proxy=proxy,
        train=train,
        data=data,
    )


def _resolve_targets(where: str, names: list[str], base_name: str | None, knob_table: dict) -> list[TargetSpace]:
    from effscope.spec import blocks, models

    bl, mo = blocks(), models()
    multi = len(names) > 1
    if multi:
        for n in names:
            if n not in bl:
                raise SpaceError(f"{where}: a multi-target space takes block names only, but '{n}' is not a block")
        unknown = [k for k in knob_table if k not in names]
        if unknown:
            raise SpaceError(
                f"{where}: in a multi-block space [knobs] holds one table per block, but '{unknown[0]}' is not "
                f"one of the targets ({', '.join(names)})"
            )
    out = []
    for n in names:
        table = knob_table.get(n, {}) if multi else knob_table
        if not isinstance(table, dict):
            raise SpaceError(f"{where}: [knobs.{n}] must be a table, but got {toml_text(table)}")
        if n in bl:
            if base_name is not None:
                raise SpaceError(f"{where}: [space] base applies to model families, not to the block '{n}'")
            spec = bl.get(n)
            presets = {f"{n} (default)": spec.config}
            base = spec.config
            kind, family, built = "block", spec.family, n
        else:
            family_presets = [s for s in mo if s.family == n]
            if n in mo:  # a preset: its family's presets are the comparison
                spec = mo.get(n)
                family_presets = [s for s in mo if s.family == spec.family]
            elif not family_presets:
                known = bl.names() + sorted({s.family for s in mo}) + mo.names()
                raise SpaceError(
                    f"{where}: unknown target '{n}'{did_you_mean(n, known)} (a target is a block: effscope blocks "
                    "list, or a model family or preset: effscope models list)"
                )
            if base_name is not None:
                if base_name not in [s.name for s in family_presets]:
                    names = ", ".join(s.name for s in family_presets)
                    raise SpaceError(
                        f"{where}: [space] base must be a preset of the family ({names}), but got '{base_name}'"
                    )
                spec = mo.get(base_name)
            elif n not in mo:
                spec = family_presets[0]
            presets = {s.name: s.config for s in family_presets if type(s.config) is type(spec.config)}
            base, kind, family, built = spec.config, "model", spec.family, spec.name
        domains, pins = _narrow_all(f"{where}: [knobs{'.' + n if multi else ''}]", base, table)
        out.append(TargetSpace(built, kind, family, base, domains, pins, presets, prefix=f"{n}." if multi else ""))
    return out


def _narrow_all(where: str, base: Config, table: dict) -> tuple[dict[str, Domain], dict[str, Any]]:
    declared = knobs_of(base)
    domains: dict[str, Domain] = {}
    pins: dict[str, Any] = {}
    for name in table:
        if name not in declared and isinstance(table[name], dict) and _is_target_name(name):
            raise SpaceError(
                f"{where}: [knobs.{name}] tables are for multi-block spaces (target = [...]); this space searches "
                f"{base.owner()} alone, so its knobs go straight under [knobs] ({', '.join(declared)})"
            )
        if name not in declared:
            raise SpaceError(
                f"{where}: {base.owner()} has no knob '{name}'{did_you_mean(name, list(declared))} "
                f"(knobs: {', '.join(declared)})"
            )
    for name, k in declared.items():  # declaration order
        if name not in table:
            continue
        kind, value = _narrow(f"{where} {name}", k, k.domain, table[name], top=True)
        if kind == "pin":
            pins[name] = value
        else:
            domains[name] = value
    # Cross-knob rules are checked per design: a combination that breaks one completes as invalid, with its reason.
    return domains, pins


def _narrow(where: str, k: Knob, domain: Domain, spec: Any, *, top: bool = False) -> tuple[str, Any]:
    """("pin", value) or ("domain", narrowed Domain) for one knob spec, checked against the declared domain."""
    allowed = f"allowed: {domain.describe()}"
    if spec == "full":
        return "domain", domain
    if isinstance(spec, dict):
        keys = set(spec)
        if keys <= {"low", "high", "step", "log"} and keys & {"low", "high"}:
            return "domain", _sub_range(where, domain, spec)
        if keys == {"values"}:
            values = spec["values"]
            if not isinstance(values, list):
                raise SpaceError(f"{where}: values must be a list, but got {toml_text(values)}")
            return "domain", _subset(where, domain, values)
        if keys == {"items"}:
            if not isinstance(domain, Seq):
                raise SpaceError(f"{where}: items applies to per-stage knobs only; this knob is {domain.describe()}")
            items = spec["items"]
            if not isinstance(items, list) or len(items) != domain.length:
                raise SpaceError(
                    f"{where}: items must list {domain.length} per-stage specs, but got {toml_text(items)}"
                )
            parts = [_narrow(f"{where}[{i}]", k, domain.item, s) for i, s in enumerate(items)]
            if all(kind == "pin" for kind, _ in parts):
                return "pin", tuple(v for _, v in parts)
            return "domain", Items(tuple(v if kind == "domain" else Fixed(v) for kind, v in parts))
        unknown = sorted(keys - {"low", "high", "step", "log", "values", "items"})
        raise SpaceError(
            f"{where}: a knob takes a value (pin), a list or {{values = [...]}} (sub-set), {{low, high[, step]}} "
            f'(sub-range), {{items = [...]}} (per stage) or "full", but got {toml_text(spec)}'
            + (f" (unknown key {', '.join(unknown)})" if unknown else "")
        )
    if isinstance(spec, list) and not isinstance(domain, Seq | Items):
        return "domain", _subset(where, domain, spec)
    try:
        return "pin", _value(domain, spec)
    except ValueError:
        raise SpaceError(f"{where}: {_not_in(domain, spec)} ({allowed})") from None


def _value(domain: Domain, v: Any) -> Any:
    """A TOML value in its canonical form; strings may use the CLI spelling of tuple options ("3,5")."""
    try:
        return domain.normalize(v)
    except ValueError:
        if not isinstance(v, str):
            raise
        return domain.normalize(domain.parse(v))


def _not_in(domain: Domain, v: Any) -> str:
    """Why a TOML value is refused: the wrong type, or a value of the right type outside the domain."""
    if isinstance(domain, IntRange | FloatRange):
        want, parse = ("an integer", int) if isinstance(domain, IntRange) else ("a number", float)
        try:
            ok = not isinstance(v, bool) and (isinstance(v, int | float) or parse(v) is not None)
        except (TypeError, ValueError):
            ok = False
        if isinstance(domain, IntRange) and isinstance(v, float) and not v.is_integer():
            ok = False
        if not ok:
            return f"{toml_text(v)} is not {want}"
    return f"{format_value(v)} is outside the declared domain"


def _is_target_name(name: str) -> bool:
    from effscope.spec import blocks, models

    return name in blocks() or name in models() or any(s.family == name for s in models())


def _subset(where: str, domain: Domain, values: list) -> Domain:
    if not values:
        raise SpaceError(f"{where}: the domain is empty (values = []); list at least one value")
    out = []
    for v in values:
        try:
            nv = _value(domain, v)
        except ValueError:
            raise SpaceError(f"{where}: {_not_in(domain, v)} (allowed: {domain.describe()})") from None
        if nv not in out:
            out.append(nv)
    return Choice(tuple(out))


def _sub_range(where: str, domain: Domain, spec: dict) -> Domain:
    if isinstance(domain, Seq):
        return Seq(_sub_range(where, domain.item, spec), domain.length)
    if isinstance(domain, Choice):  # numeric options in [low, high]
        low, high = spec.get("low", -math.inf), spec.get("high", math.inf)
        if set(spec) - {"low", "high"}:
            raise SpaceError(f"{where}: step and log apply to ranges; this knob is {domain.describe()}")
        kept = tuple(
            o for o in domain.options if isinstance(o, int | float) and not isinstance(o, bool) and low <= o <= high
        )
        if not kept:
            raise SpaceError(f"{where}: the domain is empty: no option of {domain.describe()} lies in [{low}, {high}]")
        return Choice(kept)
    for key, v in spec.items():
        if key == "log":
            if not isinstance(v, bool):
                raise SpaceError(f"{where}: log must be true or false, but got {toml_text(v)}")
        elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise SpaceError(f"{where}: {key} must be a finite number, but got {toml_text(v)}")
    if isinstance(domain, IntRange):
        if "log" in spec:
            raise SpaceError(f"{where}: log applies to float knobs; this knob is {domain.describe()}")
        low, high, step = spec.get("low", domain.low), spec.get("high", domain.high), spec.get("step", domain.step)
        if any(isinstance(v, float) and not v.is_integer() for v in (low, high, step)):
            raise SpaceError(
                f"{where}: low, high and step must be integers for an integer knob, but got {toml_text(spec)}"
            )
        low, high, step = int(low), int(high), int(step)
        if low > high:
            raise SpaceError(f"{where}: the domain is empty: low <= high must hold, but got (low={low}, high={high})")
        if low < domain.low or high > domain.high:
            raise SpaceError(
                f"{where}: [{low}, {high}] is not inside the declared domain ({domain.describe()}); "
                "a space may only narrow"
            )
        if step < 1 or step % domain.step or (low - domain.low) % domain.step or (high - low) % step:
            raise SpaceError(
                f"{where}: step must be a multiple of the declared step {domain.step}, start on the declared grid and "
                f"divide high - low, but got (low={low}, high={high}, step={step})"
            )
        return IntRange(low, high, step)
    if isinstance(domain, FloatRange):
        if "step" in spec:
            raise SpaceError(f"{where}: float knobs take low/high/log; for a few values use values = [...]")
        low, high, log = (
            float(spec.get("low", domain.low)),
            float(spec.get("high", domain.high)),
            spec.get("log", domain.log),
        )
        if low > high:
            raise SpaceError(
                f"{where}: the domain is empty: low <= high must hold, but got (low={low:g}, high={high:g})"
            )
        if low < domain.low or high > domain.high:
            raise SpaceError(
                f"{where}: [{low:g}, {high:g}] is not inside the declared domain ({domain.describe()}); "
                "a space may only narrow"
            )
        if log and low <= 0:
            raise SpaceError(f"{where}: log needs low > 0, but got low={low:g}")
        return FloatRange(low, high, log)
    raise SpaceError(f"{where}: a range does not apply to {domain.describe()}; use values = [...]")


def _params_for(domain: Domain, name: str, value: Any) -> dict[str, Any]:
    """Parameters for `value`, leaving out categorical items that cannot hold it (numbers outside a range stay)."""
    if isinstance(domain, Seq | Items):
        items = domain.items if isinstance(domain, Items) else (domain.item,) * domain.length
        out: dict[str, Any] = {}
        for i, (d, v) in enumerate(zip(items, value, strict=True)):
            out.update(_params_for(d, f"{name}[{i}]", v))
        return out
    if isinstance(domain, Choice) and not in_domain(domain, value):
        return {}
    return to_params(domain, name, value)
