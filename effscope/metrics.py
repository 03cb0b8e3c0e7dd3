"""The catalogue of measured numbers and flags: each declared once, read by the report (hover text, labels, the flag
table) and by anything else that shows or limits a number.

A number's name is its Record key and carries its unit (`latency_ms_p50`, `peak_mem_bytes`). To add one: declare
it here (or `register_metric` from your own code) and write the code that measures it into a Record section; the
report then shows it wherever a design's numbers are listed. See README "Extending effscope".
"""

from __future__ import annotations

from dataclasses import dataclass

from effscope.errors import SpecError

__all__ = [
    "FLAGS",
    "GRAPH_TIMED",
    "METRICS",
    "MODULE_TIME_REPEATS",
    "TIMED",
    "Metric",
    "budgetable",
    "display_value",
    "peak_memory_key",
    "register_flag",
    "register_metric",
]

MIB = 2**20
# What a timing loop timed, by workload mode: the prefix of its Record keys (latency_ms_p50, train_step_ms_p50).
TIMED = {"infer": "latency_ms_", "train": "train_step_ms_"}
# The prefix of a forward's CUDA-graph replay times (GPU only): the GPU's work without the host launching kernels.
GRAPH_TIMED = "latency_graph_ms_"
# Forwards timed (after one warm forward) for the per-module times of the report's breakdown
MODULE_TIME_REPEATS = 5
SI = 0.0  # a scale of SI means: shown with an SI prefix (13.98 K, 9.38 M), for counts spanning many decades


@dataclass(frozen=True)
class Metric:
    """One measured number.

    Attributes:
        name: the Record key (unit in the name).
        label: how tables and hover text name it, with the unit it is shown in.
        scale: shown as value / scale (MIB for bytes as MiB); SI for counts shown with an SI prefix.
        direction: "minimize" or "maximize" when lower or higher is better, "none" otherwise.
        budgetable: a search space's latency budget may be stated on it ([budgets] statistic).
        help: one sentence: what it is and how it is measured.
    """

    name: str
    label: str
    scale: float = 1.0
    direction: str = "minimize"
    budgetable: bool = False
    help: str = ""


METRICS: dict[str, Metric] = {}
FLAGS: dict[str, str] = {}  # flag -> what it means for the numbers


def register_metric(metric: Metric) -> Metric:
    """Add a number to the catalogue (the same declaration twice is fine; a different one under a used name is not).

    Raises:
        SpecError: the name is taken by a different declaration, or the direction is unknown.
    """
    if metric.direction not in ("minimize", "maximize", "none"):
        raise SpecError(f"metric '{metric.name}': direction must be minimize, maximize or none")
    known = METRICS.get(metric.name)
    if known is not None and known != metric:
        raise SpecError(f"metric '{metric.name}' is already declared differently: {known}")
    METRICS[metric.name] = metric
    return metric


def register_flag(name: str, meaning: str) -> None:
    """Add a flag a Record may carry, with what it means for the numbers."""
    FLAGS[name] = meaning


def budgetable() -> list[str]:
    """The numbers a search's latency budget may be stated on, in catalogue order."""
    return [m.name for m in METRICS.values() if m.budgetable]


def display_value(metric: Metric, value: float) -> float | str:
    """A value in the unit its label names: scaled, or as an SI-prefixed string."""
    from effscope.units import si

    return si(value) if metric.scale == SI else value / metric.scale


for _m in (
    Metric("latency_ms_p50", "latency p50 (ms)", budgetable=True, help="median time of one forward"),
    Metric("latency_ms_p90", "latency p90 (ms)", budgetable=True, help="90th percentile time of one forward"),
    Metric("latency_ms_p10", "latency p10 (ms)", help="10th percentile time of one forward"),
    Metric("latency_ms_p99", "latency p99 (ms)", budgetable=True, help="99th percentile time of one forward"),
    Metric("latency_ms_iqr", "latency IQR (ms)", help="interquartile range of the forward times"),
    Metric("latency_ms_mean", "latency mean (ms)", budgetable=True, help="mean time of one forward"),
    Metric(
        "latency_graph_ms_p50",
        "CUDA-graph latency p50 (ms)",
        budgetable=True,
        help="median time of a CUDA-graph replay of the forward",
    ),
    Metric(
        "latency_graph_ms_p90",
        "CUDA-graph latency p90 (ms)",
        budgetable=True,
        help="90th percentile time of a CUDA-graph replay of the forward",
    ),
    Metric("host_bound_ratio", "eager / CUDA-graph latency", direction="none", help="over 1.25: host-bound"),
    Metric(
        "timed_s",
        "timed seconds",
        direction="none",
        help="seconds inside the target's timed iterations (latency, CUDA-graph replay, throughput window)",
    ),
    Metric("predicted_latency_ms", "predicted latency (ms)", help="the latency predictor's estimate"),
    Metric("throughput_img_s", "throughput (img/s)", direction="maximize", help="images over a synchronized window"),
    Metric(
        "train_step_ms_p50",
        "training step p50 (ms)",
        budgetable=True,
        help="median time of forward, backward and an AdamW step",
    ),
    Metric(
        "train_step_ms_p90",
        "training step p90 (ms)",
        budgetable=True,
        help="90th percentile time of forward, backward and an AdamW step",
    ),
    Metric("train_img_s", "training throughput (img/s)", direction="maximize", help="images per second in training"),
    Metric("params", "params", SI, help="parameters"),
    Metric("macs", "MACs", SI, help="multiply-accumulates of one image's forward (fvcore, every op counted)"),
    Metric("peak_mem_bytes", "peak GPU memory (MiB)", MIB, help="torch.cuda.max_memory_allocated"),
    Metric("peak_rss_bytes", "peak RSS increase (MiB)", MIB, help="peak resident memory over the process baseline"),
    Metric("energy_j_per_img", "energy (J/img)", help="NVML energy counter over the throughput window, per image"),
    Metric("reference_ms_p50", "reference module p50 (ms)", help="the fixed reference workload, same process"),
    Metric("latency_vs_reference", "latency / reference", direction="none", help="compare this across sessions"),
    Metric(
        "roofline_fraction",
        "share of the roofline bound",
        direction="maximize",
        help="achieved MAC/s over the device's roofline bound at the design's estimated intensity",
    ),
):
    register_metric(_m)


def peak_memory_key(device: str) -> str:
    """The peak-memory figure a device's Records carry: allocated GPU memory on CUDA, the RSS increase on the CPU."""
    return "peak_mem_bytes" if device.startswith("cuda") else "peak_rss_bytes"


for _flag, _meaning in (
    ("cpu-contention", "other processes took CPU cores while timing (reference-module CPU utilization below 90 %)"),
    (
        "device-contention",
        "the reference workload's time drifted over 1.2x around the target: the GPU, or the host launching its "
        "kernels, changed speed",
    ),
    (
        "host-bound",
        "eager latency was over 1.25x the CUDA-graph replay's: it measures the host launching kernels more than the "
        "GPU",
    ),
    ("gpu-throttled", "the GPU throttled (power or thermal) during the measurement window"),
    (
        "calibration-contended",
        "no roofline calibration of this device and dtype ran on idle cores: the one used ran while other processes "
        "took CPU cores, so its roofs read low and roofline_fraction reads high; calibrate again on an idle machine",
    ),
    (
        "latency-unstable",
        "the stop rule (IQR/median <= 5 % over at least 10 samples) was not met before the time cap: a wide spread, "
        "or too few samples to judge",
    ),
    (
        "throughput-latency-mismatch",
        "on a CPU, the throughput window and the latency repeats timed speeds over 1.25x apart: the machine changed "
        "speed between them, or the latency samples have a heavy tail; measure again on a quiet machine",
    ),
    ("aborted-over-budget", "timing stopped early because the design was clearly over the latency budget"),
    (
        "latency-uncertain",
        "the budgeted statistic's 95 % interval still contained the budget after measuring again: feasible or not "
        "by chance",
    ),
):
    register_flag(_flag, _meaning)
