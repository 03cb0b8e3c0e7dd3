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
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NotARecordError", "Record", "Workload", "canonical_key", "device_identity", "measured_on", "same_device"]

DTYPES = ("fp32", "bf16", "fp16")
MODES = ("infer", "train")
_TYPE_NAMES = {str: "text", dict: "an object", list: "a list"}


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


def canonical_key(target: str, knobs: dict[str, Any], workload: Workload, device_name: str) -> str:
    """A stable key for (architecture, workload, device, timing protocol): equal keys mean the same measurement
    (search cache)."""
    measured = workload.as_dict()
    if measured["mode"] == "infer":
        del measured["mode"]
    payload = json.dumps(
        {"target": target, "knobs": knobs, "workload": measured, "device": device_name, "protocol": PROTOCOL},
        sort_keys=True,
        default=str,
    )
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
        instead, where the Record is to be stored again and would silently lose them.

        Raises:
            NotARecordError: `data` is not a mapping, or lacks or mistypes a field, or (`strict`) has unknown ones.
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
        if strict and (unknown := [k for k in data if k not in fields]):
            raise NotARecordError(
                f"it has field(s) this effscope does not know ({', '.join(map(str, unknown))}), so a newer effscope "
                "wrote it"
            )
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
