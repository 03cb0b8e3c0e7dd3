"""Named timing protocols: how each paper (and timm) measured throughput, replayable so a published table can be
compared with a measurement taken the way its authors took theirs (docs/measurement.md#paper-protocols)."""

from __future__ import annotations

from dataclasses import dataclass

from effscope.errors import SpecError

__all__ = ["PROTOCOLS", "Protocol", "get_protocol"]


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
