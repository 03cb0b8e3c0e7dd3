"""The attention core every block calls, `attend`, and the selection of its implementation: fused SDPA or the
explicit matmul-softmax-matmul path, chosen per call ("auto": a verified rule on the CPU, a measurement elsewhere;
"measured": a measurement everywhere) or forced for a whole forward (`attention_impl`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

import torch
import torch.nn.functional as F

from effscope.errors import UnknownNameError

__all__ = [
    "ATTENTION_IMPLS",
    "CPU_SDPA_FEW_KEYS",
    "CPU_SDPA_MIN_KEYS",
    "RULE_DEVICE_TYPES",
    "CoreChoice",
    "Tuner",
    "attend",
    "attention_impl",
    "attention_rule",
    "choose_attention",
    "describe_call",
    "measures_attention",
    "measuring_attention",
]

ATTENTION_IMPLS = ("auto", "measured", "sdpa", "explicit")
# The selected mode, per thread. Not a ContextVar: torch.compile cannot trace ContextVar.get and broke the graph at
# every attention call; a thread-local attribute it reads as a constant and guards (a new mode recompiles).
_selected = threading.local()


def _attention_impl() -> str:
    return getattr(_selected, "impl", "auto")


# The automatic choice, measured on every attention call the zoo makes by benchmarks/attention_core.py (CPU, 2
# threads, fp32, torch 2.13; reports/attention_core_cpu.json). On the CPU, SDPA with an additive bias falls back to
# its math kernel (1.6-2x slower than matmul-softmax-matmul); without one, its fused kernel wins when the keys are
# many (the logits it never writes are long rows) or fewer than a SIMD vector for many queries (short softmax rows
# vectorize poorly in the explicit path), and loses to the explicit path's three plain ops everywhere else (small
# windows, 49-key Lo-Fi / SRA / MSA attention).
CPU_SDPA_MIN_KEYS = 196
CPU_SDPA_FEW_KEYS = 16  # below this, SDPA when there are at least CPU_SDPA_MIN_KEYS queries
# Device types whose automatic choice is that verified rule. Elsewhere no rule has held: on an H200 at fp32, SDPA made
# LITv2's HiLo block 1.09x the official matmul-softmax-matmul, while at bf16 on an H100 it made it 0.76x. There
# "auto" times both cores on each distinct call instead (`measuring_attention`).
RULE_DEVICE_TYPES = frozenset({"cpu"})
_UNTIMED_DEVICE_TYPES = frozenset({"meta"})  # shapes without data: nothing to time, the rule's core is taken
UNMEASURED_CORE = "sdpa"  # the core of a call the measured mode could not time (no tuner, tracing, graph capture)


class CoreChoice(NamedTuple):
    """The measured mode's choice for one distinct call: the core, its time ratio, and why it was chosen."""

    core: str
    sdpa_over_explicit: float | None  # median of interleaved per-round time ratios; None when not timed
    why: str


# Times both cores on one call (q, k, v, bias, scale) on the call's own device and returns the faster.
Tuner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, float], CoreChoice]
_MEASURED: dict[tuple, CoreChoice] = {}  # per process: a call's choice is measured once
_TUNER: ContextVar[Tuner | None] = ContextVar("effscope_attention_tuner", default=None)
_USED: ContextVar[dict[tuple, CoreChoice] | None] = ContextVar("effscope_attention_used", default=None)


@contextmanager
def attention_impl(name: str) -> Iterator[None]:
    """Select the attention core inside the block: "auto" (the default: per call, see `attention_rule`), "measured"
    (per call, the faster core as timed on the call's device, see `measuring_attention`), "sdpa" (fused) or
    "explicit" (matmul-softmax-matmul, as the official implementations).

    All compute the same function; "explicit" also serves to count with tools that miss SDPA.
    """
    if name not in ATTENTION_IMPLS:
        raise UnknownNameError(f"unknown attention implementation '{name}' (choose from {', '.join(ATTENTION_IMPLS)})")
    outer = _attention_impl()
    _selected.impl = name
    try:
        yield
    finally:
        _selected.impl = outer


def measures_attention(device_type: str, impl: str | None = None) -> bool:
    """Whether `attend` chooses by measurement on this device type in mode `impl` (default: the current one)."""
    impl = impl or _attention_impl()
    if device_type in _UNTIMED_DEVICE_TYPES:
        return False
    return impl == "measured" or (impl == "auto" and device_type not in RULE_DEVICE_TYPES)


@contextmanager
def measuring_attention(tuner: Tuner) -> Iterator[dict[tuple, CoreChoice]]:
    """Within the block, a call that the measured mode meets for the first time in this process is timed by `tuner`
    (not while tracing, compiling or capturing a CUDA graph: there it gets sdpa, unrecorded). Yields the choices of
    the calls made inside, keyed by call, filled as they are made."""
    used: dict[tuple, CoreChoice] = {}
    tuner_token, used_token = _TUNER.set(tuner), _USED.set(used)
    try:
        yield used
    finally:
        _TUNER.reset(tuner_token)
        _USED.reset(used_token)


def describe_call(key: tuple) -> dict[str, object]:
    """A call key in words: device, dtype (and autocast dtype), the q and k shapes and the bias shape."""
    device, dtype, autocast, q_shape, _, k_shape, _, _, _, bias_shape, _ = key
    name = lambda t: None if t is None else str(t).removeprefix("torch.")  # noqa: E731
    shape = lambda s: None if s is None else list(s)  # noqa: E731
    return {
        "device": str(device),
        "dtype": name(dtype),
        "autocast": name(autocast),
        "q": shape(q_shape),
        "k": shape(k_shape),
        "bias": shape(bias_shape),
    }


def _call_key(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> tuple:
    """What a core's speed depends on: device, dtypes, shapes and strides (layouts take different kernels). Built on
    every attention call of the measured mode, so it holds torch's own hashable objects; `describe_call` names them."""
    dev = q.device
    autocast = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else None
    return (
        dev,
        q.dtype,
        autocast,
        q.shape,
        q.stride(),
        k.shape,
        k.stride(),
        v.shape,
        v.stride(),
        None if bias is None else bias.shape,
        None if bias is None else bias.stride(),
    )


def _measured_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float) -> str:
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return UNMEASURED_CORE
    key = _call_key(q, k, v, bias)
    choice = _MEASURED.get(key)
    if choice is None:
        tuner = _TUNER.get()
        if tuner is None or (q.is_cuda and torch.cuda.is_current_stream_capturing()):
            return UNMEASURED_CORE
        choice = _MEASURED[key] = tuner(q, k, v, bias, scale)
    used = _USED.get()
    if used is not None:
        used[key] = choice
    return choice.core


def choose_attention(device_type: str, has_bias: bool, queries: int, keys: int) -> str:
    """The verified rule's attention core for one call: "sdpa" or "explicit" (device types in RULE_DEVICE_TYPES;
    elsewhere "auto" measures, and this returns the core of a call that was not measured).

    Args:
        device_type: the tensors' device type ("cpu", "cuda", ...).
        has_bias: whether an additive logits bias (mask) is given.
        queries: Nq, the query length.
        keys: Nk, the key length.
    """
    if device_type not in RULE_DEVICE_TYPES:
        return UNMEASURED_CORE
    if has_bias:
        return "explicit"
    many_keys = keys >= CPU_SDPA_MIN_KEYS
    few_keys_many_queries = keys < CPU_SDPA_FEW_KEYS and queries >= CPU_SDPA_MIN_KEYS
    return "sdpa" if many_keys or few_keys_many_queries else "explicit"


def attention_rule(device_type: str, impl: str | None = None) -> str:
    """The attention core that `attend` uses on this device type, in words (recorded in every Record's
    environment). `impl` is the selected mode (default: the current one)."""
    impl = impl or _attention_impl()
    if measures_attention(device_type, impl):
        return (
            f"{impl}: per distinct call, the faster of sdpa and explicit as timed on this device before the first "
            f"measurement (details: attention_choices); {UNMEASURED_CORE} where it could not be timed"
        )
    if impl != "auto":
        return f"{impl} (forced)"
    return (
        f"auto: sdpa without a bias when Nk >= {CPU_SDPA_MIN_KEYS} or (Nk < {CPU_SDPA_FEW_KEYS} and "
        f"Nq >= {CPU_SDPA_MIN_KEYS}), else explicit"
    )


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q kᵀ scale + bias) v over the last two dims.

    Args:
        q: (..., Nq, d) queries.
        k: (..., Nk, d) keys.
        v: (..., Nk, dv) values.
        scale: multiplies the logits (usually d ** -0.5).
        bias: additive logits bias broadcastable to (..., Nq, Nk), e.g. a relative position bias.

    Returns:
        (..., Nq, dv).
    """
    impl = _attention_impl()
    if measures_attention(q.device.type, impl):
        impl = _measured_core(q, k, v, bias, scale)
    elif impl in ("auto", "measured"):  # where nothing can be timed
        impl = choose_attention(q.device.type, bias is not None, q.shape[-2], k.shape[-2])
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    if q.shape[-1] <= k.shape[-2]:  # scale the smaller of q (Nq x d) and the logits (Nq x Nk)
        logits = (q * scale) @ k.transpose(-2, -1)
    else:
        logits = (q @ k.transpose(-2, -1)).mul_(scale)  # a fresh product: in place, autograd allows it
    if bias is not None:
        logits += bias
    return logits.softmax(dim=-1) @ v
