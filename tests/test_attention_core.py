"""The automatic attention core: the rule, that `attend` follows it, that every core computes the same function,
and that the choice is recorded with every measurement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from effscope.blocks.attention import (
    CPU_SDPA_FEW_KEYS,
    CPU_SDPA_MIN_KEYS,
    attend,
    attention_impl,
    attention_rule,
    choose_attention,
)
from effscope.errors import UnknownNameError
from effscope.profile import env


class _CountSDPA(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += func is F.scaled_dot_product_attention
        return func(*args, **(kwargs or {}))


def _qkv(b: int, h: int, nq: int, nk: int, d: int = 8, dtype=torch.double):
    return (
        torch.randn(b, h, nq, d, dtype=dtype),
        torch.randn(b, h, nk, d, dtype=dtype),
        torch.randn(b, h, nk, d, dtype=dtype),
    )


def test_rule_on_the_cpu_and_elsewhere():
    many, few = CPU_SDPA_MIN_KEYS, CPU_SDPA_FEW_KEYS
    assert choose_attention("cpu", True, queries=4096, keys=4096) == "explicit"  # SDPA's math fallback is slower
    assert choose_attention("cpu", False, queries=8, keys=many) == "sdpa"  # long key rows: aggregation, ViT
    assert choose_attention("cpu", False, queries=3136, keys=many - 1) == "explicit"  # 49-key SRA / Lo-Fi / MSA
    assert choose_attention("cpu", False, queries=many, keys=few - 1) == "sdpa"  # a few keys for many queries
    assert choose_attention("cpu", False, queries=many - 1, keys=few - 1) == "explicit"  # tiny windows
    assert choose_attention("cuda", True, queries=1, keys=1) == "sdpa"


SMALL, LARGE = (2, 2, 16, 16), (2, 2, 8, 256)  # 16 and 256 keys


@pytest.mark.parametrize(
    ("shape", "bias", "fused"), [(SMALL, False, 0), (SMALL, True, 0), (LARGE, False, 1), (LARGE, True, 0)]
)
def test_attend_follows_the_rule(shape, bias, fused):
    q, k, v = _qkv(*shape)
    mask = torch.randn(shape[1], shape[2], shape[3], dtype=torch.double) if bias else None
    mode = _CountSDPA()
    with mode:
        out = attend(q, k, v, scale=0.3, bias=mask)
    assert mode.calls == fused
    with attention_impl("sdpa"):
        torch.testing.assert_close(out, attend(q, k, v, scale=0.3, bias=mask))
    with attention_impl("explicit"):
        torch.testing.assert_close(out, attend(q, k, v, scale=0.3, bias=mask))


def test_forced_cores_and_unknown_names():
    q, k, v = _qkv(1, 2, 4, 4)
    for impl, calls in (("sdpa", 1), ("explicit", 0)):
        mode = _CountSDPA()
        with attention_impl(impl), mode:
            attend(q, k, v, scale=1.0)
        assert mode.calls == calls
    with pytest.raises(UnknownNameError, match="auto, sdpa, explicit"):
        with attention_impl("flash"):
            pass


def test_rule_in_words_and_in_the_environment():
    assert attention_rule("cpu", "auto").startswith("auto: sdpa without a bias when Nk >= 196")
    assert attention_rule("cuda", "auto") == "auto: sdpa"
    assert attention_rule("cpu", "explicit") == "explicit (forced)"
    assert env.environment("cpu", dtype=torch.float32)["attention_core"] == attention_rule("cpu", "auto")
    assert env.environment("cpu", dtype=torch.float32, attention="sdpa")["attention_core"] == "sdpa (forced)"
