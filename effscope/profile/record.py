"""Record: one measurement of one target under one workload, with its environment and provenance.

A Record keeps its numbers in sections whose keys carry their units (`latency_ms_p50`, `peak_mem_bytes`), so the
flat table (`Record.flat()`) needs no renaming. A number that could not be measured is None with a reason in
`missing`, never 0.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NotARecordError",
    "Record",
    "Workload",
    "canonical_key",
    "device_identity",
    "is_finite_number",
    "measured_on",
    "same_device",
]

DTYPES = ("fp32", "bf16", "fp16")
MODES = ("infer", "train")
# The largest workload effscope measures or stores: far past any device's memory for these models, and inside
# torch's integer sizes.
MAX_BATCH = 1 << 20
MAX_SIDE = 1 << 16  # pixels or tokens per side
STATUSES = ("ok", "failed")
# The sections that hold the measured numbers (the metric catalogue's, effscope.metrics, and the figures beside them).
METRIC_SECTIONS = ("counts", "latency", "throughput", "memory", "energy", "reference", "roofline")
# Their entries that are not numbers by design (measure.py, roofline.py): how it was timed, yes/no, an id.
_TEXT_ENTRIES = frozenset({"latency_timer", "reference_id", "calibration_uid", "roofline_bound_by"})
_FLAG_ENTRIES = frozenset({"latency_stable", "latency_aborted", "throttled"})
# The one number that is infinite by design: the FLOP cross-check where effscope counted no GEMM (counting.py).
_UNBOUNDED_ENTRIES = frozenset({"crosscheck_rel_diff"})
# What a strict read requires although the dataclass has a default: a default would invent when it was measured,
# whether it worked and on which machine (the uid is `effscope import`'s own check).
_STRICT_REQUIRED = ("status", "created_at", "env")
_TYPE_NAMES = {str: "text", dict: "an object", list: "a list"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class NotARecordError(ValueError):
    """Stored data that cannot be read back as a Record; the message says why."""


@dataclass(frozen=True)
class Workload:
    """How a target is run: device, precision, batch, input size and the runtime options.

    Attributes:
        device: "cpu", "cuda" or "cuda:N".
        dtype: "fp32", or "bf16"/"fp16" run under autocast with fp32 parameters.
        batch: images (or token maps) per forward.
        size: image size (models) or token grid (blocks), (H, W); None = the target's default.
        threads: torch intra-op threads (CPU); None = torch's current setting.
        channels_last: convert the model and input to channels_last (4-D inputs only).
        compile: torch.compile the module before timing.
        cuda_graph: also time a captured CUDA graph replay (GPU only), beside eager.
        flush_cache: zero a 256 MB buffer before each timed iteration (block micro-benchmarks).
        attention: attention core: "auto" (per call, by device, bias and size; the Record's environment says how),
            "sdpa" or "explicit".
        mode: "infer" (eval, no_grad forward) or "train" (train mode: forward, a scalar loss, backward and an
            AdamW step, timed as one training step).
    """

    device: str = "cpu"
    dtype: str = "fp32"
    batch: int = 1
    size: tuple[int, int] | None = None
    threads: int | None = None
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False
    flush_cache: bool = False
    attention: str = "auto"
    mode: str = "infer"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["size"] = list(self.size) if self.size else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Workload:
        d = dict(d)
        if d.get("size") is not None:
            d["size"] = tuple(d["size"])
        return cls(**d)


# effscope's own timing protocol (docs/measurement.md#timing). It is part of the cache key: numbers measured under an
# earlier protocol are measured again. v2: 25 ms warm-up floor, freed heap kept mapped in the measurement process.
PROTOCOL = "effscope-v2"


def canonical_key(
    target: str,
    knobs: dict[str, Any],
    workload: Workload,
    device_name: str,
    revisions: Mapping[str, int] | None = None,
) -> str:
    """A stable key for (architecture, workload, device, timing protocol): equal keys mean the same measurement
    (search cache). `revisions`: the target's module revisions above 1 (ConfiguredModule.revisions), so that a
    Record of a block measured before its computation changed is not reused."""
    measured = workload.as_dict()
    if measured["mode"] == "infer":
        del measured["mode"]
    identity = {"target": target, "knobs": knobs, "workload": measured, "device": device_name, "protocol": PROTOCOL}
    if revisions:  # absent while every revision is 1: keys made before revisions existed still match
        identity["revisions"] = dict(revisions)
    payload = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


# The environment keys (effscope.profile.env.cpu_info) that tell apart two CPUs a cloud VM names alike ("AMD EPYC"
# for several generations). Not the microcode: an OS update changes it, not which kernels run or how fast.
_IDENTITY_KEYS = ("cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping", "cpu_flags")


def device_identity(env: Mapping[str, Any]) -> str | None:
    """The identity of the CPU that an environment (a Record's env, or cpu_info()) measured on, beyond its name:
    vendor, family, model number, stepping and speed flags, e.g. "AuthenticAMD family 25 model 17 stepping 1, flags
    fma avx2". None for a GPU device (its name is precise) and for an env that records none of them (a Record of an
    older effscope, a host without /proc/cpuinfo): such a device is known by its name alone.

    The text is stored (a study's `device_identity`, a latency table's), so its form must not change. It lives here,
    not in env.py, so that what reads Records (reports, roofline plot data) compares devices without importing torch.
    """
    kind = env.get("device_type") or str(env.get("device") or "cpu").split(":")[0]
    if kind != "cpu":
        return None
    vendor, family, model, stepping, flags = values = [env.get(k) for k in _IDENTITY_KEYS]
    if all(v is None for v in values):
        return None
    named = [str(vendor)] if vendor is not None else []
    numbers = (("family", family), ("model", model), ("stepping", stepping))
    named += [f"{what} {_whole_text(v)}" for what, v in numbers if v is not None]
    speed = None if flags is None else f"flags {flags or 'none'}"  # "": none of SPEED_FLAGS; None: no flag line
    return ", ".join(part for part in (" ".join(named), speed) if part)


def _whole_text(value: Any) -> str:
    """A number of the identity as text: a whole float as its int (a CSV column with blanks reads 25 back as 25.0),
    so that an identity read from a table equals the one stored."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def same_device(name_a: str | None, identity_a: str | None, name_b: str | None, identity_b: str | None) -> bool:
    """Whether two measurements (a Record, a study, a calibration, a latency table, this machine) are of the same
    device: equal names, and equal identities (device_identity) where both are known. A side without one (made
    before effscope recorded it, or a GPU) is matched by name alone, as it always was."""
    return name_a == name_b and (identity_a is None or identity_b is None or identity_a == identity_b)


def measured_on(device_name: str, identity: str | None) -> Callable[[Record], bool]:
    """What a Record found by a cache key (canonical_key with `device_name`) must pass to be reused: measured on the
    same device (same_device). The key holds the name already, so what is left is the identity of the CPU, which a
    cloud VM's generic name does not tell apart (RecordStore.latest(key, where=...))."""
    return lambda record: same_device(device_name, device_identity(record.env), device_name, identity)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Record:
    """One row of results. Sections hold unit-named numbers; `details` holds the bulky breakdowns."""

    target: str
    kind: str  # "block", "model" or "custom"
    workload: dict[str, Any]
    family: str | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    energy: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    roofline: dict[str, Any] = field(default_factory=dict)  # intensity, bound, achieved fraction (roofline.py)
    flags: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # field -> why it could not be measured
    details: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    command: str | None = None
    study: str | None = None
    trial: int | None = None
    created_at: str = field(default_factory=_now)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.command:
            from effscope.urls import mask_command

            self.command = mask_command(self.command)  # a --db URL's password is never stored

    def to_dict(self) -> dict[str, Any]:
        """The Record as plain, JSON-ready data, sections nested (`flat()` gives one flat row instead)."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> Record:
        """The Record that `to_json` wrote; unknown fields (from a newer version) are ignored.

        Raises:
            NotARecordError: the text is not JSON, not an object, or lacks or mistypes a field (damaged data).
        """
        if not isinstance(text, str) or not text.strip():
            raise NotARecordError("its data is empty")
        try:
            data = json.loads(text)
        except ValueError:
            raise NotARecordError("its data is not JSON") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any, *, strict: bool = False) -> Record:
        """The Record whose `to_dict` is `data`: the one place a Record is built from stored or imported data.

        Unknown fields (from a newer version) are ignored, so a store stays readable; `strict` refuses them
        instead, where the Record is to be stored again and would silently lose them. `strict` also refuses values
        effscope never writes (a hand-edited file), which a search reusing the Record would trip over: a metric
        section's entry that is not a finite number or null, a workload's batch, size or threads that is not a
        whole number >= 1, an unknown status, a created_at that is not an ISO 8601 time.

        Raises:
            NotARecordError: `data` is not a mapping, or lacks or mistypes a field, or (`strict`) has unknown ones
                or a value effscope never writes; the message names the field (and entry) and what it allows.
        """
        if not isinstance(data, dict):
            raise NotARecordError(f"its data is a JSON {type(data).__name__}, not an object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in fields.items() if f.default is f.default_factory is dataclasses.MISSING]
        if missing := [name for name in required if name not in data]:
            raise NotARecordError(f"its data lacks {', '.join(missing)}")
        for name, f in fields.items():  # what flat(), reports and searches read with str, dict or list methods
            wanted = str if name in ("target", "kind") else dict if name == "workload" else f.default_factory
            if wanted in (str, dict, list) and name in data and not isinstance(data[name], wanted):
                raise NotARecordError(f"its {name} is not {_TYPE_NAMES[wanted]}")
        if not isinstance(data.get("command"), str | None):  # __post_init__ masks it as text
            raise NotARecordError(f"its command must be text or null, but is {_shown(data['command'])}")
        if strict:
            if unknown := [k for k in data if k not in fields]:
                raise NotARecordError(
                    f"it has field(s) this effscope does not know ({', '.join(map(str, unknown))}), so a newer "
                    "effscope wrote it"
                )
            if lacking := [name for name in _STRICT_REQUIRED if name not in data]:
                raise NotARecordError(f"its data lacks {', '.join(lacking)}, which every effscope Record holds")
            if (problem := _value_problem(data)) is not None:
                raise NotARecordError(problem)
        return cls(**{k: v for k, v in data.items() if k in fields})

    def input_size(self) -> tuple[int, int] | None:
        """The (H, W) measured: the workload's size, else the target's default as the measurement resolved it
        (a token grid for a block, an image size for a model); None where neither is known."""
        size = self.workload.get("size") or self.details.get("input_size")
        return (int(size[0]), int(size[1])) if size else None

    def flat(self) -> dict[str, Any]:
        """One flat row for tables and DataFrames: sections merged, knobs as `knob.NAME`, env as `env.NAME`."""
        from effscope.knobs import format_value

        row: dict[str, Any] = {
            "created_at": self.created_at,
            "uid": self.uid,
            "target": self.target,
            "kind": self.kind,
            "family": self.family,
            "status": self.status,
            "error": self.error,
        }
        # scalars keep their type (a JSON export holds numbers); sequences become the text --set accepts ("2,2,6,2")
        row.update({f"knob.{k}": format_value(v) if isinstance(v, tuple | list) else v for k, v in self.knobs.items()})
        row.update({f"derived.{k}": v for k, v in self.derived.items()})
        workload = dict(self.workload)
        workload.pop("size", None)
        row.update(workload)
        row["height"], row["width"] = self.input_size() or (None, None)
        sections = (self.counts, self.latency, self.throughput, self.memory, self.energy, self.reference, self.roofline)
        for section in sections:
            row.update(section)
        row["flags"] = ",".join(self.flags)
        row["missing"] = "; ".join(f"{k}: {v}" for k, v in self.missing.items())
        row.update({f"env.{k}": v for k, v in self.env.items()})
        changed = self.protocol.get("changed")
        row["protocol"] = (
            f"{self.protocol.get('name')} (changed: {', '.join(changed)})" if changed else self.protocol.get("name")
        )
        row.update({"key": self.key, "command": self.command, "study": self.study, "trial": self.trial})
        return row


def _shown(value: Any) -> str:
    """A value as the JSON file spells it (null, true, "fast", NaN), cut short if long."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else f"{text[:57]}..."


def is_finite_number(value: Any) -> bool:
    """A JSON number that is finite (not true/false, which Python counts as ints; NaN and Infinity are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)  # isfinite would overflow on an int past 1e308


def _whole(value: Any, least: int, most: int | None = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least and (most is None or value <= most)


def _value_problem(data: dict[str, Any]) -> str | None:
    """The first value in a Record's data (field types already checked) that effscope never writes, as "its FIELD
    must be WHAT IS ALLOWED, but is VALUE", or None."""

    def bad(name: str, allowed: str, value: Any) -> str:
        return f"its {name} must be {allowed}, but is {_shown(value)}"

    # Names that tables, filters and the store's columns hold (PostgreSQL refuses a NUL in text).
    for name in ("target", "kind", "family", "study", "key", "uid"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            return bad(name, "text" if name == "uid" else "text or null", value)  # a null uid: import's own check
        if value is not None and _CONTROL.search(value):
            return bad(name, "text without control characters", value)
    for name in ("error", "command"):
        if not isinstance(data.get(name), str | None):
            return bad(name, "text or null", data[name])
    # A null status or created_at is left to the store's check (store.row_problem: "its status is missing").
    status = data.get("status")
    if status is not None and status not in STATUSES:
        return bad("status", " or ".join(STATUSES), status)
    created = data.get("created_at")
    if created is not None and not _iso_time(created):
        return bad("created_at", "an ISO 8601 time with its UTC offset (as 2026-11-28T22:34:35+00:00)", created)
    trial = data.get("trial")
    if trial is not None and not _whole(trial, 0):
        return bad("trial", "a whole number >= 0 or null", trial)
    for flag in data.get("flags", ()):
        if not isinstance(flag, str):
            return bad("flags", "a list of text", data["flags"])
    for key, why in data.get("missing", {}).items():
        if not isinstance(why, str):
            return bad(f"missing.{key}", "text (why it was not measured)", why)
    if (problem := _workload_problem(data["workload"])) is not None:
        return problem
    for section in METRIC_SECTIONS:
        for key, value in data.get(section, {}).items():
            if value is None:
                continue
            if key in _TEXT_ENTRIES and not isinstance(value, str):
                return bad(f"{section}.{key}", "text or null", value)
            if key in _FLAG_ENTRIES and not isinstance(value, bool):
                return bad(f"{section}.{key}", "true, false or null", value)
            if key in _UNBOUNDED_ENTRIES and not (is_finite_number(value) or value in (math.inf, -math.inf)):
                return bad(f"{section}.{key}", "a number (Infinity where no GEMM was counted) or null", value)
            if key not in _TEXT_ENTRIES | _FLAG_ENTRIES | _UNBOUNDED_ENTRIES and not is_finite_number(value):
                return bad(f"{section}.{key}", "a finite number or null", value)
    samples = data.get("details", {}).get("latency_samples_ms")  # the search reads them (early-abort reuse)
    if samples is not None and not (isinstance(samples, list) and all(map(is_finite_number, samples))):
        return bad("details.latency_samples_ms", "a list of finite numbers", samples)
    return None


def _workload_problem(w: dict[str, Any]) -> str | None:
    """What in a Record's workload effscope never writes, or None. The same rules as profile.run.validate_workload
    (which checks what is about to be measured), less the ones that hold on this machine only (threads within its
    CPUs, the sizes torch takes): a Record from a larger machine is still a valid Record. A key an older effscope
    did not write may be absent."""

    def bad(key: str, allowed: str) -> str:
        return f"its workload.{key} must be {allowed}, but is {_shown(w[key])}"

    if "batch" in w and not _whole(w["batch"], 1, MAX_BATCH):
        return bad("batch", f"a whole number in [1, {MAX_BATCH}]")
    size = w.get("size")
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(_whole(v, 1, MAX_SIDE) for v in size)
    ):
        return bad("size", f"null or [height, width], whole numbers in [1, {MAX_SIDE}]")
    if w.get("threads") is not None and not _whole(w["threads"], 1):
        return bad("threads", "null or a whole number >= 1")
    # a roofline calibration's workload lists the dtypes it measured ("fp32,bf16")
    if "dtype" in w and not (isinstance(w["dtype"], str) and set(w["dtype"].split(",")) <= set(DTYPES)):
        return bad("dtype", f"one of {', '.join(DTYPES)}")
    if "mode" in w and w["mode"] not in MODES:
        return bad("mode", f"one of {', '.join(MODES)}")
    if "device" in w and not (isinstance(w["device"], str) and re.fullmatch(r"cpu|cuda|cuda:\d+", w["device"])):
        return bad("device", "cpu, cuda or cuda:N")
    if "attention" in w and not isinstance(w["attention"], str):
        return bad("attention", "text")
    for key in ("channels_last", "compile", "cuda_graph", "flush_cache"):
        if key in w and not isinstance(w[key], bool):
            return bad(key, "true or false")
    return None


def _iso_time(text: Any) -> bool:
    """Whether `text` is an ISO 8601 time with a UTC offset, as _now() writes it."""
    try:
        return _dt.datetime.fromisoformat(text).tzinfo is not None
    except (TypeError, ValueError):
        return False
