"""numpy's numbers (what iterating over a DataFrame column gives) passed to the Python API: taken as the Python
numbers they stand for, so that a Record, its cache key and a study stay plain JSON, and refused in the same
sentence as Python's own when they do not fit."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import effscope
from effscope.errors import EffscopeError
from effscope.profile.record import Record

QUICK = {"throughput": False, "reference": False, "isolate": False}


def test_numpy_numbers_measure_as_python_s_and_the_record_stays_json():
    plain = effscope.profile(
        "hilo",
        batch=2,
        size=(7, 7),
        threads=1,
        knobs={"heads": 2, "lofi_heads": 1, "head_dim": 16, "mlp_ratio": 2.0, "window_size": 7},
        max_time_s=0.05,
        warmup_iters=1,
        iters=2,
        **QUICK,
    )
    record = effscope.profile(
        "hilo",
        batch=np.int64(2),
        size=(np.int64(7), np.int32(7)),
        threads=np.int64(1),
        channels_last=np.False_,  # a DataFrame's bool column
        knobs={
            "qkv_bias": np.bool_(True),
            "heads": np.int64(2),
            "lofi_heads": np.int8(1),
            "head_dim": np.int16(16),
            "mlp_ratio": np.float32(2.0),
            "window_size": np.uint8(7),
        },
        max_time_s=np.float32(0.05),
        warmup_iters=np.int64(1),
        iters=np.int64(2),
        **QUICK,
    )
    assert record.status == "ok", record.error
    text = json.dumps(dataclasses.asdict(record))  # no default=str: a numpy number anywhere would raise here
    assert Record.from_dict(json.loads(text)).to_dict() == record.to_dict()
    assert record.workload == plain.workload and record.knobs == plain.knobs and record.key == plain.key
    assert [type(record.workload[k]) for k in ("batch", "threads")] == [int, int]
    assert [type(v) for v in record.workload["size"]] == [int, int]
    assert [type(record.knobs[k]) for k in ("heads", "head_dim", "mlp_ratio", "window_size")] == [int, int, float, int]
    assert type(record.knobs["qkv_bias"]) is bool and type(record.workload["channels_last"]) is bool


def _refusal(**kwargs) -> str:
    with pytest.raises(EffscopeError) as e:
        effscope.profile("hilo", **kwargs, **QUICK)
    return str(e.value)


@pytest.mark.parametrize(
    ("plain", "numpy"),
    [
        pytest.param({"batch": 2.5}, {"batch": np.float64(2.5)}, id="batch-not-whole"),
        pytest.param({"batch": 0}, {"batch": np.int64(0)}, id="batch-out-of-range"),
        pytest.param({"threads": 1.5}, {"threads": np.float64(1.5)}, id="threads"),
        pytest.param({"size": 7.5}, {"size": np.float64(7.5)}, id="size"),
        pytest.param({"size": (0, 7)}, {"size": (np.int64(0), np.int64(7))}, id="size-pair"),
        pytest.param({"iters": 2.5}, {"iters": np.float64(2.5)}, id="iters"),
        pytest.param({"max_time_s": -1.0}, {"max_time_s": np.float32(-1.0)}, id="max_time_s"),
        pytest.param({"knobs": {"heads": 99}}, {"knobs": {"heads": np.int64(99)}}, id="int-knob-out-of-range"),
        pytest.param({"knobs": {"heads": 2.5}}, {"knobs": {"heads": np.float32(2.5)}}, id="int-knob-not-whole"),
        pytest.param({"knobs": {"head_dim": 17}}, {"knobs": {"head_dim": np.int64(17)}}, id="choice-knob"),
        pytest.param({"knobs": {"mlp_ratio": 9.0}}, {"knobs": {"mlp_ratio": np.float32(9.0)}}, id="float-knob"),
    ],
)
def test_a_numpy_number_that_does_not_fit_is_refused_in_the_same_sentence_as_python_s(plain, numpy):
    message = _refusal(**numpy)
    assert message == _refusal(**plain) and "np." not in message


def test_search_takes_numpy_numbers_as_python_s(tmp_path):
    import optuna

    db = tmp_path / "s.db"
    with pytest.raises(EffscopeError) as numpy_refused:
        effscope.search("hilo_block", trials=np.float64(2.5), storage=str(db))
    assert str(numpy_refused.value) == "trials must be an integer, but got 2.5"
    with pytest.raises(EffscopeError, match=r"^workers must be an integer, but got 2.0$"):
        effscope.search("hilo_block", trials=1, workers=2.0, storage=str(db))
    with pytest.raises(EffscopeError, match=r"^budget_ms must be a positive number of milliseconds, but got True$"):
        effscope.search("hilo_block", trials=1, budget_ms=True, storage=str(db))  # it ran with a 1 ms budget
    assert not db.exists()  # refused before anything ran
    result = effscope.search(
        "hilo_block", trials=np.int64(1), budget_ms=np.float32(50.1), seed=np.int64(3), storage=str(db)
    )
    assert result.summary.trials == 1 and not result.failures
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    latency = [b for b in study.user_attrs["budgets"] if b["name"] == "latency"]
    # the float32 as it prints, 50.1 (not 50.099998474121094): a resume given 50.1 is the same search
    assert len(latency) == 1 and latency[0]["limit"] == 50.1
    again = effscope.search("hilo_block", trials=1, budget_ms=50.1, seed=3, storage=str(db))
    assert again.study_name == result.study_name and not again.created
