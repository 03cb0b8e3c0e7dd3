"""The Python API: effscope.profile on names and module instances, isolated or not, effscope.report, Record.to_dict,
and one sentence (not multiprocessing's traceback) for a script without a main guard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_a_paper_protocol_times_as_the_paper_did_and_records_what_was_changed():
    from effscope.profile.protocols import Timing, apply_protocol

    # The one function the command and the API both apply: the paper's settings, the caller's over them.
    assert apply_protocol("litv2", "cpu") == Timing("bf16", 64, 50, 30, False, "litv2", ())
    assert apply_protocol("litv2", "cuda:0", batch=64, iters=5) == Timing(
        "fp16", 64, 50, 5, False, "litv2", ("iters=5",)
    )
    assert apply_protocol("litv2", "cpu", latency=True).changes == ("latency=True",)
    assert apply_protocol(None, "cpu") == Timing("fp32", 1, None, None, True, None, ())
    record = effscope.profile("hilo", size=7, protocol="litv2", batch=2, warmup_iters=1, iters=3, isolate=False)
    assert record.status == "ok" and record.workload["dtype"] == "bf16" and record.workload["batch"] == 2
    assert record.protocol["name"] == "litv2" and record.protocol["changed"] == ["batch=2", "warmup_iters=1", "iters=3"]
    assert record.flat()["protocol"] == "litv2 (changed: batch=2, warmup_iters=1, iters=3)"  # as the command stores it
    assert (
        record.protocol["iters"] == 3 and record.protocol["repeats"] == "not measured"
    )  # throughput only, as published
    assert record.throughput["throughput_img_s"] > 0


@pytest.mark.parametrize("option", [{"fresh_process": False}, {"abort_above_ms": 1.0}, {"protocol_changes": ()}])
def test_internal_options_are_refused_naming_the_options(option):
    with pytest.raises(SpecError, match=r"set by effscope itself.*; the options are count, elementwise, iters") as e:
        effscope.profile("vit", **option)
    assert "fresh_process" not in str(e.value).split("options are")[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, r"size takes N or \(H, W\) with integers in \[1, 65536\] .*but got 0$"),
        ({"size": (7,)}, r"size takes N or \(H, W\).*but got \(7,\)$"),
        ({"size": "7"}, r"size takes N or \(H, W\).*but got '7'$"),
        ({"size": 7.5}, r"size takes N or \(H, W\).*but got 7.5$"),
        ({"batch": "2"}, r"^batch must be an integer, but got '2'$"),
        ({"batch": 2.5}, r"^batch must be an integer, but got 2.5$"),
        ({"max_time_s": "x"}, r"^option max_time_s must be a number, but got 'x'$"),
        ({"latency": 1}, r"^option latency must be True or False, but got 1$"),
        ({"device": 0}, r"^device must be cpu, cuda or cuda:N \(a str or a torch.device\), but got 0$"),
        ({"protocol": "swin"}, r"^unknown protocol 'swin'; the protocols are lightvit, litv2, timm$"),
        ({"threads": 0}, r"^threads must be in \[1, \d+\] \(the CPUs this process may use\), but got 0$"),
        ({"threads": 10**6}, r"^threads must be in \[1, \d+\] .*but got 1000000$"),
        ({"threads": "2"}, r"^threads must be None or an integer, but got '2'$"),
        ({"threads": True}, r"^threads must be None or an integer, but got True$"),
        ({"channels_last": "yes"}, r"^channels_last must be True or False, but got 'yes'$"),
        ({"compile": "yes"}, r"^compile must be True or False, but got 'yes'$"),
        ({"flush_cache": 1}, r"^flush_cache must be True or False, but got 1$"),
        ({"attention": "flash"}, r"^attention must be one of auto, measured, sdpa, explicit, but got 'flash'$"),
        ({"attention": None}, r"^attention must be a name \(a str\), but got None$"),
        ({"batch": 2**21}, r"^batch must be an integer in \[1, 1048576\], but got 2097152$"),  # not --batch
        ({"mode": "eval"}, r"^mode must be one of infer, train, but got 'eval'$"),
        ({"cuda_graph": True}, r"^cuda_graph needs device='cuda' \(CUDA graphs exist only on NVIDIA GPUs\)$"),
    ],
)
def test_bad_arguments_are_one_sentence_before_anything_runs(kwargs, message):
    with pytest.raises(SpecError, match=message):
        effscope.profile("vit", **kwargs)


def test_threads_channels_last_and_attention_are_the_command_s_and_land_in_the_record():
    # isolated, as `effscope profile --threads 1 --channels-last --attention explicit` measures
    record = effscope.profile("hilo", size=7, threads=1, channels_last=True, attention="explicit", **QUICK)
    assert record.status == "ok", record.error
    runtime = {k: record.workload[k] for k in ("threads", "channels_last", "attention")}
    assert runtime == {"threads": 1, "channels_last": True, "attention": "explicit"}
    assert record.env["threads"] == 1 and record.env["torch_threads"] == 1
    assert record.env["memory_format"] == "channels_last"
    assert record.env["attention_core"] == "explicit (forced)"
    cold = effscope.profile("vit", size=7, flush_cache=True, isolate=False, **QUICK)  # as --flush-cache
    assert cold.status == "ok" and cold.workload["flush_cache"] is True and cold.workload["compile"] is False
    # the defaults are the command's: threads not pinned, contiguous, the automatic attention rule
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    default = effscope.profile(module, size=8, isolate=False, **QUICK)
    assert default.workload["threads"] is None and default.workload["channels_last"] is False
    assert default.env["threads"] is None and default.env["memory_format"] == "contiguous"
    assert default.env["attention_core"].startswith("auto: ")
    # in this process: the module really runs channels_last, and the caller's thread count is put back
    caller = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pinned = effscope.profile(module, size=8, threads=1, channels_last=True, isolate=False, **QUICK)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(caller)
    assert pinned.env["threads"] == 1 and pinned.env["torch_threads"] == 1
    assert pinned.env["memory_format"] == "channels_last"
    assert module[0].weight.is_contiguous(memory_format=torch.channels_last)  # converted in place, as documented
    measured = effscope.profile("hilo", size=7, attention="measured", isolate=False, **QUICK)
    assert measured.env["attention_core"].startswith("measured: per distinct call")
    assert measured.details["attention_choices"]  # each attention call's core was timed


def test_a_records_export_makes_a_report_as_effscope_report_file_does(tmp_path):
    db, csv, js = tmp_path / "r.db", tmp_path / "cli.csv", tmp_path / "cli.json"
    measure = ["profile", "hilo", "--tokens", "7", "--max-time", "0.05", "--no-throughput", "--db", str(db)]
    r = subprocess.run(
        [sys.executable, "-m", "effscope", *measure, "--csv", str(csv), "--json", str(js)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    parquet = RecordStore(str(db)).export(tmp_path / "store.parquet")  # as `effscope export -o store.parquet`
    for export in (csv, str(js), parquet):  # a Path or a str; the command's --csv and --json, an export
        html = effscope.report(export, output=tmp_path / f"{Path(export).stem}.html")
        text = html.read_text(encoding="utf-8")
        assert html == tmp_path / f"{Path(export).stem}.html" and '<section id="gap">' in text
        assert str(export) in text and "hilo" in text  # the export is the report's named source
    small = effscope.report(csv, output=tmp_path / "shared" / "r.html", plotlyjs="directory")  # as --plotlyjs
    assert (small.parent / "plotly.min.js").is_file() and small.stat().st_size < 1e6
    with pytest.raises(
        effscope.EffscopeError, match=r"the suffix must be one of \.csv, \.parquet, \.json \(a database"
    ):
        effscope.report(db, output=tmp_path / "db.html")  # the command's own sentence for a database given as FILE
    with pytest.raises(effscope.EffscopeError, match="no such file"):
        effscope.report(tmp_path / "missing.csv", output=tmp_path / "m.html")
    with pytest.raises(SpecError, match=r"^give one source: records= .*, but got records and db$"):
        effscope.report(csv, db=str(db), output=tmp_path / "two.html")
    with pytest.raises(SpecError, match=r"^study= names a search in storage=, but records= holds Records"):
        effscope.report(csv, study="hilo_block-cpu", output=tmp_path / "s.html")  # was silently ignored
    with pytest.raises(SpecError, match=r"^plotlyjs must be one of inline, directory, cdn, but got None$"):
        effscope.report(csv, output=tmp_path / "p.html", plotlyjs=None)
    with pytest.raises(
        SpecError, match=r"^records takes a list of Records .*\(\.csv, \.parquet, \.json\), but got a list holding int$"
    ):
        effscope.report([1], output=tmp_path / "x.html")
    with pytest.raises(SpecError, match=r"but got a DataFrame: pass the store it came from as db=, or write it"):
        effscope.report(RecordStore(str(db)).dataframe(), output=tmp_path / "df.html")  # said "holding str"
    with pytest.raises(SpecError, match=r"^records takes a list of Records .*, but got 3$"):
        effscope.report(3, output=tmp_path / "x.html")
    assert not [n for n in ("db", "m", "two", "x") if (tmp_path / f"{n}.html").exists()]  # refused, nothing written


def test_arguments_are_checked_as_the_command_checks_them():
    with pytest.raises(SpecError, match=r"^pvtv2_b0 cannot take size 20x20: "):  # the command's meta-forward check
        effscope.profile("pvtv2_b0", size=20)
    with pytest.raises(effscope.EffscopeError, match=r"must be int in \[1, 32\], but got '4' \(a str\)$"):
        effscope.profile("vit", knobs={"heads": "4"})  # a string that looks like a valid number says it is one
    module = torch.nn.Conv2d(3, 4, 3)
    record = effscope.profile(module, size=8, device=torch.device("cpu"), isolate=False, **QUICK)
    assert record.status == "ok" and record.workload["device"] == "cpu"
    from effscope import api

    for function in (api.profile, api.search):  # the one base class to catch is documented
        assert "EffscopeError (effscope.errors" in function.__doc__ and "SpecError and its kin" not in function.__doc__


INTERACTIVE = (
    "import torch, effscope\n"
    "class Mine(torch.nn.Module):\n"
    "    def forward(self, x):\n"
    "        return x * 2\n"
    "effscope.profile(Mine(), size=4, max_time_s=0.05)\n"
)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (
            "-c",
            "Mine is defined interactively (in a notebook, `python -c` or stdin), so effscope's measurement process "
            "cannot import it: define it in a module or .py file, or pass isolate=False",
        ),
        (
            "stdin",
            "effscope.profile() runs in spawned processes, which import the calling script again, but this one "
            "was read from <stdin>: save it as a .py file and run that, or pass isolate=False",
        ),
    ],
)
def test_a_main_the_measurement_process_cannot_import_is_one_sentence(tmp_path, how, message):
    args, stdin = ([sys.executable, "-c", INTERACTIVE], None) if how == "-c" else ([sys.executable, "-"], INTERACTIVE)
    r = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.splitlines()[-1] == f"effscope.errors.SpecError: {message}"


def test_a_class_in_a_script_s_main_is_still_measured_in_its_own_process(tmp_path):
    script = tmp_path / "mine.py"
    script.write_text(
        "import torch, effscope\n"
        "class Mine(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * 2\n"
        "if __name__ == '__main__':\n"
        "    r = effscope.profile(torch.nn.Sequential(Mine()), size=4, max_time_s=0.05, throughput=False,"
        " reference=False)\n"
        "    print(r.status, r.error)\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["ok", "None"], r.stderr


def test_a_search_script_without_a_main_guard_gets_one_sentence(tmp_path):
    script = tmp_path / "noguard.py"
    script.write_text('import effscope\neffscope.search("hilo_block", trials=1, storage="s.db")\n')
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.splitlines()[-1] == (
        "effscope.errors.SpecError: noguard.py calls effscope.search() outside `if __name__ == '__main__':`; "
        "effscope searches in spawned processes, which import the script again, so put the calls under that guard"
    )
    assert "bootstrapping phase" not in r.stderr and "EOFError" not in r.stderr and not (tmp_path / "s.db").exists()


def test_a_search_call_run_again_by_a_starting_worker_is_named_not_an_eof_error(tmp_path):
    # A guard exists, but the call is outside it: each worker, importing the script, stops at the call.
    script = tmp_path / "toplevel.py"
    script.write_text(
        "import effscope\n"
        'result = effscope.search("hilo_block", trials=1, storage="s.db")\n'
        "print([f.reason for f in result.failures])\n"
        "if __name__ == '__main__':\n"
        "    pass\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0 and "EOFError" not in r.stderr and "bootstrapping phase" not in r.stderr, r.stderr
    assert "effscope.search() ran while one of effscope's processes was starting and importing your script" in r.stderr
    assert "exited with code 1 while starting, before it could say why" in r.stdout
    assert "ran effscope.search() outside `if __name__ == '__main__':`" in r.stdout
