"""The automatic attention core: the rule, that `attend` follows it, that every core computes the same function,
that the measured mode times each distinct call once and uses the faster core, and that the choice is recorded with
every measurement."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from effscope.blocks import attention
from effscope.blocks.attention import (
    CPU_SDPA_FEW_KEYS,
    CPU_SDPA_MIN_KEYS,
    CoreChoice,
    attend,
    attention_impl,
    attention_rule,
    choose_attention,
    measures_attention,
    measuring_attention,
)
from effscope.errors import UnknownNameError
from effscope.profile import env, timing
from effscope.profile.measure import Job, Options, run_job
from effscope.profile.record import Workload
from effscope.spec import BLOCKS


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
    with pytest.raises(UnknownNameError, match="auto, measured, sdpa, explicit"):
        with attention_impl("flash"):
            pass


def test_rule_in_words_and_in_the_environment():
    assert attention_rule("cpu", "auto").startswith("auto: sdpa without a bias when Nk >= 196")
    assert attention_rule("cuda", "auto").startswith("auto: per distinct call, the faster of sdpa and explicit")
    assert attention_rule("cpu", "measured").startswith("measured: per distinct call")
    assert attention_rule("cpu", "explicit") == "explicit (forced)"
    assert env.environment("cpu", dtype=torch.float32)["attention_core"] == attention_rule("cpu", "auto")
    assert env.environment("cpu", dtype=torch.float32, attention="sdpa")["attention_core"] == "sdpa (forced)"


def test_the_automatic_core_is_measured_where_no_rule_was_verified():
    assert not measures_attention("cpu", "auto") and measures_attention("cuda", "auto")
    assert measures_attention("cpu", "measured") and measures_attention("cuda", "measured")
    assert not any(measures_attention(d, impl) for d in ("cpu", "cuda") for impl in ("sdpa", "explicit"))
    assert not measures_attention("meta", "auto") and not measures_attention("meta", "measured")  # nothing to time


@pytest.fixture
def no_measured_calls(monkeypatch):
    """A process that has measured no call yet (choices are kept per process)."""
    monkeypatch.setattr(attention, "_MEASURED", {})


class _FakeTuner:
    """Picks `core` for every call and counts how often it was asked."""

    def __init__(self, core: str) -> None:
        self.core, self.calls = core, 0

    def __call__(self, q, k, v, bias, scale) -> CoreChoice:
        self.calls += 1
        return CoreChoice(self.core, 2.0 if self.core == "explicit" else 0.5, "fake")


@pytest.mark.parametrize(("core", "fused"), [("explicit", 0), ("sdpa", 2)])
def test_the_measured_mode_times_each_distinct_call_once_and_uses_its_choice(no_measured_calls, core, fused):
    q, k, v = _qkv(2, 2, 16, 16)
    tuner, mode = _FakeTuner(core), _CountSDPA()
    with attention_impl("measured"), measuring_attention(tuner) as used, mode:
        first = attend(q, k, v, scale=0.3)
        again = attend(q, k, v, scale=0.3)
    assert tuner.calls == 1 and mode.calls == fused
    torch.testing.assert_close(first, again)
    ((key, choice),) = used.items()
    assert choice.core == core
    assert attention.describe_call(key) == {
        "device": "cpu",
        "dtype": "float64",
        "autocast": None,
        "q": [2, 2, 16, 8],
        "k": [2, 2, 16, 8],
        "bias": None,
    }
    with attention_impl("measured"), measuring_attention(tuner) as used_later:  # a later job: no new timing
        attend(q, k, v, scale=0.3)
        attend(q.transpose(-2, -1).contiguous().transpose(-2, -1), k, v, scale=0.3)  # another layout: timed
    assert tuner.calls == 2 and len(used_later) == 2


def test_an_untimed_call_takes_sdpa_and_is_not_remembered(no_measured_calls):
    q, k, v = _qkv(1, 2, 8, 8)
    tuner = _FakeTuner("explicit")
    with attention_impl("measured"):
        mode = _CountSDPA()
        with mode:
            attend(q, k, v, scale=1.0)  # no tuner
        assert mode.calls == 1
        with measuring_attention(tuner) as used, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fvcore counts through this tracer
            torch.jit.trace(lambda q, k, v: attend(q, k, v, scale=1.0), (q, k, v), check_trace=False)
        assert tuner.calls == 0 and not used and not attention._MEASURED


def test_timing_the_cores_picks_the_faster_one_and_survives_running_out_of_memory(monkeypatch):
    q, k, v = _qkv(1, 2, 64, 64, dtype=torch.float32)
    choice = timing.time_attention_cores(q, k, v, None, 0.3)
    assert choice.sdpa_over_explicit > 0
    assert choice.core == ("explicit" if choice.sdpa_over_explicit > timing.CORE_EXPLICIT_MARGIN else "sdpa")
    assert choice.why == f"sdpa took {choice.sdpa_over_explicit:.2f}x the explicit path's time"

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(timing, "interleaved", no_memory)
    assert timing.time_attention_cores(q, k, v, None, 0.3) == CoreChoice(
        "sdpa", None, "the explicit path ran out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"
    )


def test_a_measured_job_records_every_calls_core_and_says_why_its_peak_is_missing(no_measured_calls):
    job = Job(
        "vit",
        {},
        workload=Workload(size=(7, 7), attention="measured"),
        options=Options(max_time_s=0.1, window_s=0.1, reference=False, count=False, module_times=False),
    )
    r = run_job(job)
    assert r.status == "ok", r.error
    ((choice,),) = [r.details["attention_choices"]]  # one attention layer: one distinct call
    assert choice["q"] == [1, 4, 49, 32] and choice["core"] in ("sdpa", "explicit") and choice["why"]
    assert r.env["attention_core"] == attention_rule("cpu", "measured")
    assert r.memory["peak_rss_bytes"] is None and "timed in this process first" in r.missing["peak_rss_bytes"]
    auto = run_job(replace(job, workload=Workload(size=(7, 7))))
    assert "attention_choices" not in auto.details  # the CPU rule needs no timing


def _graph_breaks(name: str) -> int:
    from effscope.profile.target import resolve_target

    target = resolve_target(name, {})
    module = target.build().eval()
    torch._dynamo.reset()
    return torch._dynamo.explain(module)(*target.example_args(module, 1, None, "cpu")).graph_break_count


@pytest.mark.parametrize("name", sorted(BLOCKS.names()))
def test_every_block_compiles_as_one_graph(name):
    """`--compile` measures what a user's compiled model runs: selecting the core must not split the graph (it did
    at every attention call while the mode was a ContextVar, which torch.compile cannot trace)."""
    assert _graph_breaks(name) == 0


def test_a_new_attention_mode_recompiles():
    """The compiled graph keeps the core of the mode it was traced under; another mode is traced again."""
    from torch._dynamo.testing import CompileCounter

    q, k, v = _qkv(1, 2, 8, 256, dtype=torch.float)
    counter = CompileCounter()
    compiled = torch.compile(lambda q, k, v: attend(q, k, v, scale=0.3), backend=counter)
    torch._dynamo.reset()
    with attention_impl("sdpa"):
        fused = compiled(q, k, v)
    with attention_impl("explicit"):
        explicit = compiled(q, k, v)
    assert counter.frame_count == 2 and counter.op_count > 2  # sdpa is one op, the explicit path several
    torch.testing.assert_close(fused, explicit)


def test_the_mode_is_per_thread_and_restored_whatever_the_order():
    """Two in-process runs in threads, the first to start ending first: each keeps its own mode while it runs, and
    neither leaves its mode behind (a process-wide value read "auto" in the second and was left at "sdpa")."""
    import threading

    seen: dict[str, list[str]] = {"sdpa": [], "explicit": []}
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with attention_impl("sdpa"):
            first_in.set()
            second_in.wait(10)
            seen["sdpa"].append(attention_rule("cpu"))
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with attention_impl("explicit"):
            second_in.set()
            first_out.wait(10)  # the first run has ended and restored what it found
            seen["explicit"].append(attention_rule("cpu"))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"sdpa": ["sdpa (forced)"], "explicit": ["explicit (forced)"]}
    assert attention_rule("cpu").startswith("auto:")  # nothing left behind in this thread either


def test_every_compiled_job_in_one_process_is_compiled(monkeypatch):
    """A search's worker runs many compiled jobs in one process. Dynamo keeps at most 8 compiled entries per code
    object, and every job calls the same wrapper's forward: from the 9th job on, it ran eager without a word."""
    from functools import partial

    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend=counter))  # tracing without inductor
    options = Options(max_time_s=0.01, throughput=False, reference=False, count=False, module_times=False)
    compiled = []
    for i in range(10):
        before = counter.frame_count
        job = Job("vit", {"mlp_ratio": 1.0 + i / 4}, Workload(size=(4, 4), compile=True, threads=1), options)
        record = run_job(job, first_in_process=i == 0)
        assert record.status == "ok", record.error
        compiled.append(counter.frame_count > before)
    assert all(compiled), compiled
