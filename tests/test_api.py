"""The Python API: effscope.profile on names and module instances, isolated or not, effscope.report, Record.to_dict,
and one sentence (not multiprocessing's traceback) for a script without a main guard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import effscope
from effscope.errors import SpecError, UnknownNameError
from effscope.profile.store import RecordStore

QUICK = {"max_time_s": 0.05, "throughput": False, "reference": False}


class WithLambda(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.act = lambda x: x.relu()  # a lambda cannot be pickled to the measurement process

    def forward(self, x):
        return self.act(self.conv(x))


def test_a_registered_name_with_knobs_is_measured_stored_and_reported(tmp_path):
    db = tmp_path / "r.db"
    record = effscope.profile("hilo", knobs={"window_size": 7}, size=14, db=str(db), **QUICK)
    assert record.status == "ok" and record.knobs["window_size"] == 7 and record.workload["size"] == [14, 14]
    assert record.counts["macs"] > 0 and record.latency["latency_ms_p50"] > 0
    assert json.loads(json.dumps(record.to_dict()))["latency"] == record.latency  # plain data
    assert [r.uid for r in RecordStore(str(db)).records()] == [record.uid]
    html = effscope.report([record], output=tmp_path / "r.html")
    assert html.read_text().startswith("<!DOCTYPE html>") or "<html" in html.read_text()


@pytest.mark.parametrize("isolate", [True, False])
def test_a_module_instance_is_measured_isolated_or_in_this_process(isolate):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    record = effscope.profile(module, size=16, isolate=isolate, **QUICK)
    assert record.status == "ok" and record.target == "Sequential" and record.kind == "custom"
    assert record.counts["params"] == 3 * 8 * 9 + 8 and record.counts["macs"] == 8 * 14 * 14 * 27
    if isolate:
        assert record.memory["peak_rss_bytes"] is not None
    else:
        assert "isolate=False" in record.missing["peak_rss_bytes"]


def test_an_instance_that_cannot_be_pickled_says_so_and_runs_in_process():
    with pytest.raises(SpecError, match="cannot be sent to the measurement process.*isolate=False"):
        effscope.profile(WithLambda(), size=8, **QUICK)
    assert effscope.profile(WithLambda(), size=8, isolate=False, **QUICK).status == "ok"


def test_bad_input_is_one_sentence():
    with pytest.raises(SpecError, match="unknown option\\(s\\) max_time; the options are"):
        effscope.profile("vit", max_time=1)
    with pytest.raises(SpecError, match="knobs apply to registered blocks and presets"):
        effscope.profile(torch.nn.ReLU(), knobs={"heads": 2})
    with pytest.raises(UnknownNameError, match="did you mean 'hilo'"):
        effscope.profile("hilo_atn")
    with pytest.raises(SpecError, match="target must be a name or an nn.Module, but got int"):
        effscope.profile(3)


def test_a_script_without_a_main_guard_gets_one_sentence(tmp_path):
    script = tmp_path / "noguard.py"
    script.write_text("import torch, effscope\neffscope.profile(torch.nn.ReLU(), size=4, max_time_s=0.05)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1
    assert "noguard.py calls effscope.profile() outside `if __name__ == '__main__':`" in r.stderr.splitlines()[-1]
    assert "bootstrapping phase" not in r.stderr  # multiprocessing's own error never gets that far


def test_training_mode_times_a_step_that_really_updates_the_weights():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GELU(), torch.nn.Conv2d(8, 4, 1))
    before = [p.detach().clone() for p in module.parameters()]
    record = effscope.profile(module, size=12, batch=2, mode="train", isolate=False, max_time_s=0.1, window_s=0.1)
    assert record.status == "ok" and record.workload["mode"] == "train"
    assert record.latency["train_step_ms_p50"] > 0 and "latency_ms_p50" not in record.latency
    assert record.throughput["train_img_s"] > 0 and record.memory["peak_rss_bytes"] is None
    assert all(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))  # AdamW stepped
    assert "training step's MACs are not counted" in record.missing["achieved_mac_s"]
    with pytest.raises(SpecError, match="mode must be one of infer, train, but got 'fit'"):
        effscope.profile("vit", mode="fit")


def test_training_mode_gives_the_cache_its_own_key_and_inference_keys_do_not_name_a_mode():
    from effscope.profile.record import PROTOCOL, Workload, canonical_key

    infer, train = Workload(), Workload(mode="train")
    assert canonical_key("vit", {}, infer, "cpu") != canonical_key("vit", {}, train, "cpu")
    without_mode = {k: v for k, v in infer.as_dict().items() if k != "mode"}
    payload = json.dumps(
        {"target": "vit", "knobs": {}, "workload": without_mode, "device": "cpu", "protocol": PROTOCOL}, sort_keys=True
    )
    import hashlib

    assert canonical_key("vit", {}, infer, "cpu") == hashlib.sha256(payload.encode()).hexdigest()[:24]


def test_search_runs_the_command_s_search_and_returns_its_result(tmp_path):
    import optuna

    db = tmp_path / "s.db"
    result = effscope.search("hilo_block", trials=2, storage=str(db), seed=3)
    assert result.study_name == "hilo_block-cpu" and result.created and result.space.name == "hilo_block"
    assert result.storage_url == f"sqlite:///{db}" and not result.failures
    assert result.summary.trials == 2 and result.summary.presets[0]["trial"] == 0
    study = optuna.load_study(study_name="hilo_block-cpu", storage=result.storage_url)
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 2 and study.metric_names == ["synflow", "latency_ms_p50"]
    assert study.user_attrs["command"].startswith("python")  # the API's provenance, as profile() stores it
    uids = {t.user_attrs["record_uid"] for t in done} - {None}
    assert uids and uids <= {r.uid for r in RecordStore(str(db)).records()}
    again = effscope.search("hilo_block", trials=2, storage=str(db), seed=3)  # the same call resumes
    assert not again.created and again.summary.trials == 2 and "already has 2 completed trials" in " ".join(again.notes)
