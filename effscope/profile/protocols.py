"""Named timing protocols: how each paper (and timm) measured throughput, replayable so a published table can be
compared with a measurement taken the way its authors took theirs (docs/measurement.md#paper-protocols)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from effscope.errors import SpecError

__all__ = ["PROTOCOLS", "Protocol", "Timing", "apply_protocol", "get_protocol"]


@dataclass(frozen=True)
class Protocol:
    """A fixed timing protocol: precision, batch, warm-up and timed iteration counts, and where it comes from.

    `dtype_cuda` / `dtype_cpu`: the precision on each device type (a paper's fp16 AMP runs as bf16 autocast on a
    CPU, where fp16 kernels are slow or missing). `latency`: whether per-iteration latency is also timed (the papers
    publish throughput only). `cudnn_benchmark`: torch.backends.cudnn.benchmark during the run.
    """

    name: str
    source: str
    dtype_cuda: str
    dtype_cpu: str
    batch: int
    warmup_iters: int
    iters: int
    latency: bool = False
    cudnn_benchmark: bool = False

    def dtype(self, device: str) -> str:
        return self.dtype_cuda if device.startswith("cuda") else self.dtype_cpu


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "lightvit",
            "LightViT tools/speed_test.py: fp32, batch 1024, 100 warm-up + 1000 timed iterations, synchronized around "
            "the loop, cudnn.benchmark on",
            "fp32",
            "fp32",
            1024,
            100,
            1000,
            cudnn_benchmark=True,
        ),
        Protocol(
            "litv2",
            "LITv2 main.py --throughput: batch 64, AMP (apex O1, fp16; bf16 autocast on a CPU), 50 warm-up + 30 timed "
            "iterations, synchronized around the loop",
            "fp16",
            "bf16",
            64,
            50,
            30,
        ),
        Protocol(
            "timm",
            "timm benchmark.py inference defaults: fp32, batch 256, 10 warm-up + 40 timed iterations, mean step time",
            "fp32",
            "fp32",
            256,
            10,
            40,
            latency=True,
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The named protocol, or one sentence listing the names."""
    if name not in PROTOCOLS:
        raise SpecError(f"unknown protocol '{name}'; the protocols are {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass(frozen=True)
class Timing:
    """How a run times: its dtype, batch, warm-up and timed iteration counts and whether latency is timed, with the
    paper protocol they replay (`protocol`, None for effscope's own) and the protocol's settings the caller changed
    (`changes`, e.g. ("batch=2",): recorded, so a modified replay never passes for the paper's own)."""

    dtype: str
    batch: int
    warmup_iters: int | None
    iters: int | None
    latency: bool
    protocol: str | None
    changes: tuple[str, ...]

    def options(self) -> dict[str, Any]:
        """The measurement Options fields these settings fill (effscope.profile.measure.Options)."""
        return {
            "latency": self.latency,
            "warmup_iters": self.warmup_iters,
            "iters": self.iters,
            "protocol": self.protocol,
            "protocol_changes": self.changes,
        }


def apply_protocol(
    name: str | None,
    device: str,
    *,
    dtype: str | None = None,
    batch: int | None = None,
    warmup_iters: int | None = None,
    iters: int | None = None,
    latency: bool | None = None,
) -> Timing:
    """The timing settings of a run: the named protocol's, each overridden by a value the caller gave (None: not
    given), or effscope's defaults (fp32, batch 1, time-budgeted warm-up and adaptive repeats) without a protocol.
    What `effscope profile --protocol` and `effscope.profile(protocol=...)` both apply.

    A value given that differs from the protocol's is listed in `changes`. `latency` None times latency where the
    protocol does (the papers publish throughput only); True times it beside a protocol that does not, a change;
    False leaves it unmeasured, which the Record shows, and is not a change to how the protocol's numbers are timed.

    Raises:
        SpecError: an unknown protocol name.
    """
    paper = get_protocol(name) if name else None
    if paper is None:
        return Timing(
            "fp32" if dtype is None else dtype,
            1 if batch is None else batch,
            warmup_iters,
            iters,
            latency is not False,
            None,
            (),
        )
    given = {"dtype": dtype, "batch": batch, "warmup_iters": warmup_iters, "iters": iters}
    preset = {"dtype": paper.dtype(device), "batch": paper.batch, "warmup_iters": paper.warmup_iters}
    preset["iters"] = paper.iters
    changed = [f"{k}={v}" for k, v in given.items() if v is not None and v != preset[k]]
    if latency and not paper.latency:
        changed.append("latency=True")
    value = {k: preset[k] if v is None else v for k, v in given.items()}
    return Timing(
        value["dtype"],
        value["batch"],
        value["warmup_iters"],
        value["iters"],
        paper.latency if latency is None else latency,
        paper.name,
        tuple(changed),
    )
