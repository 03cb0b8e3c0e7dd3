"""Quality objectives on a generated tiny ImageFolder: the loader, every proxy, short training, calibration, and
the honest labels; plus the CLI's one-sentence errors for bad search input."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from effscope.search.imagefolder import DataError, open_imagefolder
from effscope.search.objectives import OBJECTIVES, QualityError, QualityProcess, dss, evaluate, label_for
from effscope.search.space import parse_space

WORKLOAD = {"device": "cpu", "dtype": "fp32", "size": [32, 32], "threads": 1}
TRAIN = {"steps": 6, "batch": 8, "lr": 2e-3, "weight_decay": 0.0, "val_images": 12, "seed": 0}
TINY_LITV2 = {
    "embed_dim": 16,
    "depths": (1, 1, 1, 1),
    "num_heads": (1, 1, 2, 2),
    "lofi_heads": 1,
    "window_size": 2,
}


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    """3 classes x 10 images: a tinted noise texture per class (learnable in a few steps), mixed sizes and formats."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    tints = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    for c, tint in enumerate(tints):
        (root / f"class{c}").mkdir()
        for i in range(10):
            h, w = (40, 48) if i % 2 else (36, 36)
            img = (rng.random((h, w, 3)) * 80).astype(np.uint8) + np.array(tint, dtype=np.uint8) // 2
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.{'png' if i % 3 else 'jpg'}")
    (root / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_split_and_loading(imagefolder):
    f = open_imagefolder(imagefolder)
    assert f.classes == ("class0", "class1", "class2")
    assert len(f.train) == 24 and len(f.val) == 6  # every 5th image of each class is held out
    assert [label for _, label in f.val[:3]] == [0, 1, 2]  # validation interleaves the classes
    x = f.load(f.train[:4], (32, 32))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(f.labels(f.train[:2]), torch.tensor([0, 0]))
    assert x[:, 0].mean() > x[:, 2].mean()  # class 0 is red: normalization kept the channel order


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        open_imagefolder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="needs at least two class folders"):
        open_imagefolder(tmp_path)


def test_every_proxy_is_finite_deterministic_and_labelled(imagefolder):
    names = ["params", "macs", "dss", "synflow", "jacob_cov"]
    kw = {"workload": WORKLOAD, "proxy": {"batch": 4}, "train": TRAIN, "data": str(imagefolder)}
    a = evaluate("litv2_s", TINY_LITV2, names, **kw)
    b = evaluate("litv2_s", TINY_LITV2, names, **kw)
    assert a == b
    assert all(isinstance(a[n], float) and math.isfinite(a[n]) for n in names), a
    assert a["params"] == sum(p.numel() for p in _tiny_model().parameters())
    blocks = evaluate(
        "hilo", {}, ["dss", "synflow", "jacob_cov"], workload={**WORKLOAD, "size": [7, 7]}, proxy={"batch": 4}, train={}
    )
    assert all(isinstance(v, float) for v in blocks.values()), blocks
    for name, o in OBJECTIVES.items():
        assert o.is_proxy == (name != "train") and ("not accuracy" in o.label or "not converged" in o.label)
    assert "6 steps" in label_for("train", TRAIN)


def _tiny_model():
    from effscope.profile.target import resolve_target

    return resolve_target("litv2_s", TINY_LITV2).build()


def test_dss_counts_attention_by_nuclear_norm_and_mlp_by_saliency():
    from effscope.profile.target import resolve_target

    target = resolve_target("vit", {"heads": 1, "head_dim": 16})
    module = target.build()
    args = list(target.example_args(module, 2, (3, 3), None))
    value = dss(module, args, None)
    module.zero_grad()
    module(*args).sum().backward()
    attn = sum(
        float(torch.linalg.matrix_norm((m.weight * m.weight.grad).detach().abs(), ord="nuc"))
        for m in (module.attn.qkv, module.attn.proj)
    )
    mlp = sum(float((m.weight * m.weight.grad).detach().abs().sum()) for m in (module.mlp.fc1, module.mlp.fc2))
    assert value == pytest.approx(attn + mlp, rel=1e-5)


def test_synflow_sums_the_magnitudes_of_layer_weights_so_its_sign_never_ranks():
    from torch import nn

    from effscope.search.objectives import synflow

    # LayerNorm between layers: with |theta| and a real input the products take both signs (a signed sum was -0.39)
    torch.manual_seed(10)
    net = nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6), nn.Linear(6, 6), nn.LayerNorm(6), nn.Linear(6, 2))
    x = torch.randn(4, 6)
    value = synflow(net, [x])
    layers = [net[0], net[2], net[4]]  # the weights of 2 or more dimensions; not the norms' nor the biases
    net.zero_grad()
    net(x.double()).sum().backward()
    assert value == pytest.approx(sum(float((m.weight * m.weight.grad).detach().abs().sum()) for m in layers), rel=1e-9)
    assert value > 0


def test_a_synflow_study_is_told_apart_from_one_of_the_older_definition():
    text = '[space]\ntarget = "hilo"\n[objectives]\nquality = "synflow"\n[budgets]\nlatency_ms = 5\n'
    space = parse_space(text, name="s")
    assert space.quality_settings()["definition"] == f"revision {OBJECTIVES['synflow'].revision}" == "revision 2"
    assert "definition" not in parse_space(text.replace("synflow", "dss"), name="s").quality_settings()


def test_short_training_is_seeded_and_learns(imagefolder):
    kw = {"workload": WORKLOAD, "proxy": {}, "train": TRAIN, "data": str(imagefolder)}
    a = evaluate("litv2_s", TINY_LITV2, ["train"], **kw)["train"]
    b = evaluate("litv2_s", TINY_LITV2, ["train"], **kw)["train"]
    assert a == b and 0.0 <= a <= 100.0
    longer = evaluate("litv2_s", TINY_LITV2, ["train"], **{**kw, "train": {**TRAIN, "steps": 30}})["train"]
    assert longer > 100.0 / 3  # better than chance on three separable classes


def test_failures_come_back_as_reasons():
    out = evaluate(
        "hilo", {}, ["jacob_cov", "train"], workload={**WORKLOAD, "size": [7, 7]}, proxy={"batch": 1}, train={}
    )
    assert "at least 2 inputs" in out["jacob_cov"] and "needs --data" in out["train"]


def test_quality_process_survives_errors_and_reports_them():
    proc = QualityProcess(threads=1)
    try:
        assert (
            proc.call(
                evaluate,
                {
                    "target_name": "hilo",
                    "knobs": {},
                    "names": ["params"],
                    "workload": {**WORKLOAD, "size": [7, 7]},
                    "proxy": {},
                    "train": {},
                },
                timeout=120,
            )["params"]
            > 0
        )
        with pytest.raises(QualityError, match="unknown target"):
            proc.call(_raise_unknown, {}, timeout=60)
    finally:
        proc.close()


def _raise_unknown():
    from effscope.profile.target import resolve_target

    resolve_target("nope")


def test_calibrate_stores_kendall_tau_with_the_study(imagefolder, tmp_path):
    from effscope.search.calibrate import calibrate_proxies

    space = parse_space(
        f"""
[space]
target = "litv2_s"
[workload]
size = [32, 32]
threads = 1
[objectives]
quality = "synflow"
[budgets]
latency_ms = 100
[proxy]
batch = 4
[train]
steps = 4
batch = 8
val_images = 6
[data]
dir = "{imagefolder}"
[knobs]
embed_dim = [16, 24]
depths = [1, 1, 1, 1]
num_heads = [1, 1, 2, 2]
lofi_heads = [0, 1]
window_size = [1, 2]
""",
        name="cal",
    )
    result = calibrate_proxies(space, samples=4, storage=str(tmp_path / "cal.db"))
    assert result.n == 4 and set(result.taus) == {"params", "macs", "dss", "synflow", "jacob_cov"}
    study = optuna.load_study(study_name="cal-cpu", storage=f"sqlite:///{tmp_path / 'cal.db'}")
    stored = study.user_attrs["calibration"]
    assert stored["params"]["n"] == 4 and stored["params"]["train_steps"] == 4
    assert all(v["kendall_tau"] is None or -1.0 <= v["kendall_tau"] <= 1.0 for v in stored.values())


@pytest.mark.parametrize(
    "args,message",
    [
        (("search", "nope.toml"), "search space file 'nope.toml' does not exist"),
        (("search", "hilo_blok"), "unknown search space 'hilo_blok'; did you mean 'hilo_block'?"),
        (("search", "hilo_block", "--budget-ms", "-1"), "--budget-ms must be a positive number of milliseconds"),
        (("search", "{bad}"), "is not valid TOML"),
        (("search", "{knob}"), "hilo has no knob 'window'; did you mean 'window_size'?"),
        (("search", "{empty}"), "the domain is empty (values = [])"),
        (("search", "hilo_block", "--storage", "postgresql+psycopg2://x@127.0.0.1:1/none"), "cannot reach"),
        (("search", "hilo_block", "--workers", "0"), "--workers must be >= 1"),
        (("search",), "give a SPACE"),
        (("calibrate", "hilo_block", "--data", "."), "calibrate needs a model-level space"),
    ],
)
def test_cli_bad_input_is_one_sentence_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    """In-process through the console entry point (main), as the installed `effscope` runs it."""
    from effscope.cli import main

    base = '[space]\ntarget = "hilo"\n[budgets]\nlatency_ms = 1\n'
    files = {
        "bad": base + "[knobs\n",
        "knob": base + "[knobs]\nwindow = 2\n",
        "empty": base + "[knobs]\nheads = { values = [] }\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text)
    args = tuple(a.format(**{k: str(tmp_path / f"{k}.toml") for k in files}) for a in args)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["effscope", *args])
    with pytest.raises(SystemExit) as e:
        main()
    stderr = capsys.readouterr().err
    assert e.value.code == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_cli_subprocess_error_and_list(tmp_path):
    (tmp_path / "k.toml").write_text('[space]\ntarget = "hilo"\n[budgets]\nlatency_ms = 1\n[knobs]\nwindow = 2\n')
    r = subprocess.run(
        [sys.executable, "-m", "effscope", "search", str(tmp_path / "k.toml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "did you mean 'window_size'?" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "effscope", "search", "--list"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    for name in ("lightvit", "litv2", "cagevit", "hilo_block", "lightvit_block", "attention_zoo"):
        assert name in r.stdout
