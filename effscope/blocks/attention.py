"""The attention core every block calls, `attend`, and the selection of its implementation: fused SDPA or the
explicit matmul-softmax-matmul path, chosen per call ("auto") or forced for a whole forward (`attention_impl`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

from effscope.errors import UnknownNameError

__all__ = [
    "ATTENTION_IMPLS",
    "CPU_SDPA_FEW_KEYS",
    "CPU_SDPA_MIN_KEYS",
    "attend",
    "attention_impl",
    "attention_rule",
    "choose_attention",
]

ATTENTION_IMPLS = ("auto", "sdpa", "explicit")
_ATTENTION_IMPL: ContextVar[str] = ContextVar("effscope_attention_impl", default="auto")

# The automatic choice, measured on every attention call the zoo makes by benchmarks/attention_core.py (CPU, 2
# threads, fp32, torch 2.13; reports/attention_core_cpu.json). On the CPU, SDPA with an additive bias falls back to
# its math kernel (1.6-2x slower than matmul-softmax-matmul); without one, its fused kernel wins when the keys are
# many (the logits it never writes are long rows) or fewer than a SIMD vector for many queries (short softmax rows
# vectorize poorly in the explicit path), and loses to the explicit path's three plain ops everywhere else (small
# windows, 49-key Lo-Fi / SRA / MSA attention). On CUDA the fused kernels (flash / memory-efficient, which take a
# bias) are kept.
CPU_SDPA_MIN_KEYS = 196
CPU_SDPA_FEW_KEYS = 16  # below this, SDPA when there are at least CPU_SDPA_MIN_KEYS queries


@contextmanager
def attention_impl(name: str) -> Iterator[None]:
    """Select the attention core inside the block: "auto" (the default: per call, see `attention_rule`), "sdpa"
    (fused) or "explicit" (matmul-softmax-matmul, as the official implementations).

    All three compute the same function; "explicit" also serves to count with tools that miss SDPA.
    """
    if name not in ATTENTION_IMPLS:
        raise UnknownNameError(f"unknown attention implementation '{name}' (choose from {', '.join(ATTENTION_IMPLS)})")
    token = _ATTENTION_IMPL.set(name)
    try:
        yield
    finally:
        _ATTENTION_IMPL.reset(token)


def choose_attention(device_type: str, has_bias: bool, queries: int, keys: int) -> str:
    """The automatic attention core for one call: "sdpa" or "explicit".

    Args:
        device_type: the tensors' device type ("cpu", "cuda", ...).
        has_bias: whether an additive logits bias (mask) is given.
        queries: Nq, the query length.
        keys: Nk, the key length.
    """
    if device_type != "cpu":
        return "sdpa"
    if has_bias:
        return "explicit"
    many_keys = keys >= CPU_SDPA_MIN_KEYS
    few_keys_many_queries = keys < CPU_SDPA_FEW_KEYS and queries >= CPU_SDPA_MIN_KEYS
    return "sdpa" if many_keys or few_keys_many_queries else "explicit"


def attention_rule(device_type: str, impl: str | None = None) -> str:
    """The attention core that `attend` uses on this device type, in words (recorded in every Record's
    environment). `impl` is the selected mode (default: the current one)."""
    impl = impl or _ATTENTION_IMPL.get()
    if impl != "auto":
        return f"{impl} (forced)"
    if device_type != "cpu":
        return "auto: sdpa"
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
    impl = _ATTENTION_IMPL.get()
    if impl == "auto":
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
