"""Search spaces: TOML validation (one sentence per mistake), narrowing, and the knob-to-distribution mapping."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from effscope.errors import SpecError
from effscope.knobs import Choice, IntRange, Seq
from effscope.search.space import Fixed, Items, SpaceError, list_spaces, load_space, parse_space, suggest, to_params

BASE = """
[space]
target = "hilo"
[workload]
size = [7, 7]
[budgets]
latency_ms = 2.0
"""


def parse(extra: str = "", base: str = BASE):
    return parse_space(base + extra, name="t", path="t.toml")


def test_minimal_space_defaults():
    s = parse()
    assert s.kind == "block" and s.target == "hilo" and s.quality == "params" and s.direction == "maximize"
    assert s.directions == ["maximize", "minimize"]
    assert s.latency_budget.limit == 2.0 and s.latency_budget.statistic == "latency_ms_p90"
    assert s.targets[0].domains == {} and s.targets[0].pins == {}  # unlisted knobs keep the block's defaults
    assert list(s.targets[0].presets) == ["hilo (default)"]


def test_a_training_space_budgets_the_training_step():
    s = parse(base=BASE.replace("size = [7, 7]", 'size = [7, 7]\nmode = "train"'))
    assert s.workload.mode == "train" and s.latency_budget.statistic == "train_step_ms_p90"  # the default there
    assert s.timing("p50") == "train_step_ms_p50" and parse().timing("p50") == "latency_ms_p50"
    with pytest.raises(SpecError, match=r"\[workload\] mode must be one of infer, train, but got 'training'"):
        parse(base=BASE.replace("size = [7, 7]", 'size = [7, 7]\nmode = "training"'))


def test_a_gpu_space_may_budget_the_cuda_graph_replay():
    """Eager GPU timing measures the host's kernel launches as much as the GPU; a budget on the replay limits the
    GPU's work. The trials then replay every design, and the study's latency is the replay's."""
    gpu = BASE.replace("size = [7, 7]", 'size = [7, 7]\ndevice = "cuda"')
    s = parse('statistic = "latency_graph_ms_p90"\n', gpu)
    assert s.budgets_graph_replay and s.workload.cuda_graph
    assert s.timing("p50") == "latency_graph_ms_p50" and s.latency_budget.statistic == "latency_graph_ms_p90"
    assert not parse(base=gpu).workload.cuda_graph  # an eager budget does not pay for the replay
    assert s.with_overrides(device="cuda:1").workload.cuda_graph
    with pytest.raises(SpaceError, match="budgets latency_graph_ms_p90, a CUDA-graph replay: --device must be cuda"):
        s.with_overrides(device="cpu")
    train = gpu.replace('device = "cuda"', 'device = "cuda"\nmode = "train"')
    with pytest.raises(SpaceError, match="needs \\[workload\\] device = 'cuda' and mode = 'infer'"):
        parse('statistic = "latency_graph_ms_p50"\n', train)


def test_narrowing_forms_map_to_domains_and_distributions():
    s = parse(
        """
[knobs]
heads = { values = [2, 4] }
lofi_heads = { low = 0, high = 4 }
window_size = [1, 2, 7]
mlp_ratio = { low = 2.0, high = 4.0 }
head_dim = 16
"""
    )
    t = s.targets[0]
    assert t.domains["heads"] == Choice((2, 4))
    assert t.domains["lofi_heads"] == IntRange(0, 4)
    assert t.domains["window_size"] == Choice((1, 2, 7))
    assert t.pins == {"head_dim": 16}
    dists = {k: d for name, dom in t.domains.items() for k, d in dom.to_optuna(name).items()}
    assert dists["heads"] == CategoricalDistribution([2, 4])
    assert dists["lofi_heads"] == IntDistribution(0, 4)
    assert dists["mlp_ratio"] == FloatDistribution(2.0, 4.0)
    knobs = t.suggest(optuna.trial.FixedTrial({"heads": 4, "lofi_heads": 3, "window_size": 7, "mlp_ratio": 3.0}))
    assert knobs == {"head_dim": 16, "heads": 4, "lofi_heads": 3, "window_size": 7, "mlp_ratio": 3.0}


def test_per_stage_knobs_items_and_pins():
    s = load_space("litv2")
    t = s.targets[0]
    depths, heads = t.domains["depths"], t.domains["num_heads"]
    assert isinstance(depths, Items) and depths.items[2] == IntRange(2, 18, 2)
    assert heads.items[0] == Fixed(3) and heads.items[2] == Choice((8, 12, 16))
    names = list(heads.to_optuna("num_heads"))
    assert names == ["num_heads[2]", "num_heads[3]"]  # pinned stages are no Optuna parameter
    params = {"depths[0]": 1, "depths[1]": 2, "depths[2]": 10, "depths[3]": 1, "num_heads[2]": 8, "num_heads[3]": 16}
    assert depths.from_params("depths", params) == (1, 2, 10, 1)
    assert heads.from_params("num_heads", params) == (3, 6, 8, 16)
    # A preset outside a pinned stage is still enqueued (measured as published), with that outside noted.
    params_b, outside = t.preset_params(t.presets["litv2_b"])
    assert params_b["num_heads[2]"] == 16 and outside == ["num_heads=4,8,16,32"]


def test_seq_range_narrows_every_item_and_tuple_choices_round_trip():
    s = parse_space(
        """
[space]
target = "litv2_s"
[budgets]
latency_ms = 50
[knobs]
depths = { low = 1, high = 4 }
""",
        name="t",
    )
    d = s.targets[0].domains["depths"]
    assert d == Seq(IntRange(1, 4), 4)
    assert to_params(d, "depths", (1, 2, 3, 4)) == {"depths[0]": 1, "depths[1]": 2, "depths[2]": 3, "depths[3]": 4}
    s2 = parse_space(
        """
[space]
target = "dw_shortcut"
[budgets]
latency_ms = 5
[knobs]
kernels = ["3", "3,5"]
""",
        name="t",
    )
    kd = s2.targets[0].domains["kernels"]
    assert kd == Choice(((3,), (3, 5)))
    assert kd.to_optuna("kernels")["kernels"] == CategoricalDistribution(["3", "3,5"])  # tuples travel as text
    assert suggest(optuna.trial.FixedTrial({"kernels": "3,5"}), kd, "kernels") == (3, 5)
    assert to_params(kd, "kernels", (3, 5)) == {"kernels": "3,5"}


def test_multi_block_space_is_conditional():
    s = load_space("attention_zoo")
    assert len(s.targets) == 8 and s.kind == "block"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    blocks = set()
    for _ in range(12):
        trial = study.ask()
        ts, knobs = s.suggest(trial)
        blocks.add(ts.name)
        assert all(p == "block" or p.startswith(ts.name + ".") for p in trial.params)  # only the chosen block's knobs
        study.tell(trial, 0.0)
    assert len(blocks) > 2


def test_every_shipped_space_parses_and_enqueues_its_presets():
    spaces = {s.name: s for s in list_spaces()}
    assert {"lightvit", "litv2", "cagevit", "hilo_block", "lightvit_block", "attention_zoo"} <= set(spaces)
    for s in spaces.values():
        assert s.presets(), s.name
        for ts, name, cfg in s.presets():
            params, _ = ts.preset_params(cfg)
            assert params, (s.name, name)
    assert [n for _, n, _ in spaces["litv2"].presets()] == ["litv2_s", "litv2_m", "litv2_b"]
    assert spaces["lightvit"].kind == "model" and spaces["lightvit_block"].kind == "block"


@pytest.mark.parametrize(
    "extra,base,message",
    [
        (
            "[knobs]\nlofi_head = 2\n",
            BASE,
            "hilo has no knob 'lofi_head'; did you mean 'lofi_heads'? (knobs: heads, head_dim",
        ),
        ("[knobs]\nheads = { values = [] }\n", BASE, "the domain is empty (values = [])"),
        ("[knobs]\nheads = { low = 6, high = 2 }\n", BASE, "the domain is empty: low <= high must hold"),
        ("[knobs]\nheads = { low = 0, high = 80 }\n", BASE, "is not inside the declared domain (int in [1, 64])"),
        ("[knobs]\nhead_dim = [16, 20]\n", BASE, "20 is outside the declared domain"),
        ("[knobs]\nwindow_size = 99\n", BASE, "99 is outside the declared domain"),
        ("[knobs]\nheads = { lo = 1 }\n", BASE, "a knob takes a value (pin)"),
        ("[budget]\nx = 1\n", BASE, "unknown section [budget]; did you mean 'budgets'?"),
        ("[search]\ntrails = 3\n", BASE, "unknown key 'trails' in [search]; did you mean 'trials'?"),
        ("[search]\nsampler = 'cmaes'\n", BASE, "sampler must be one of tpe, nsga2, gp, random"),
        ("[search]\ntrials = 0\n", BASE, "[search] trials must be an integer > 0, but got 0"),
        ("[search]\ntrials = 5.5\n", BASE, "[search] trials must be an integer, but got 5.5"),
        ("[measure]\ntimeout_s = inf\n", BASE, "[measure] timeout_s must be a finite number > 0, but got inf"),
        ("[measure]\nwindow_s = inf\n", BASE, "[measure] window_s must be a finite number > 0, but got inf"),
        ("[measure]\nabort_margin = true\n", BASE, "abort_margin must be a number >= 1 or false, but got true"),
        (
            "[knobs]\nmlp_ratio = { low = nan, high = 4.0 }\n",
            BASE,
            "mlp_ratio: low must be a finite number, but got nan",
        ),
        (
            "[knobs]\nheads = { low = 1, high = 2, foo = 1 }\n",
            BASE,
            "but got {low = 1, high = 2, foo = 1} (unknown key foo)",
        ),
        ("[objectives]\nquality = 'synflo'\n", BASE, "unknown quality objective 'synflo'; did you mean 'synflow'?"),
        ("[objectives]\nquality = 'train'\n", BASE, "quality 'train' needs a model-level space"),
        ("", BASE.replace("2.0", "-1.0"), "latency_ms must be positive numbers of milliseconds, but got -1.0"),
        ("", BASE.replace("latency_ms = 2.0", ""), "[budgets] latency_ms is required"),
        ("", BASE.replace('"hilo"', '"hiloo"'), "unknown target 'hiloo'; did you mean 'hilo'?"),
        ("", BASE + "[workload]\n", "is not valid TOML"),
        ("", BASE.replace("[7, 7]", "[7, 0]"), "size must be N or [H, W] with positive integers"),
        ("", "[space]\ntarget = ['vit', 'litv2_s']\n[budgets]\nlatency_ms = 1\n", "takes block names only"),
        ("[measure]\nabort_margin = 0.5\n", BASE, "abort_margin must be a number >= 1 or false"),
        (
            "",
            BASE + 'statistic = "train_step_ms_p50"\n',
            "statistic must be one of latency_ms_p50, latency_ms_p90, latency_ms_p99, latency_ms_mean with "
            "[workload] device = 'cpu' and mode = 'infer', but got 'train_step_ms_p50'",
        ),
        (
            "",
            BASE.replace("size = [7, 7]", 'size = [7, 7]\nmode = "train"') + 'statistic = "latency_ms_p90"\n',
            "statistic must be one of train_step_ms_p50, train_step_ms_p90 with [workload] device = 'cpu' and "
            "mode = 'train', but got 'latency_ms_p90'",
        ),
        (
            "",
            BASE + 'statistic = "latency_graph_ms_p90"\n',
            "but got 'latency_graph_ms_p90' (a CUDA-graph replay needs [workload] device = 'cuda' and mode = 'infer')",
        ),
    ],
)
def test_bad_spaces_are_one_sentence(extra, base, message):
    with pytest.raises(SpaceError) as e:
        parse(extra, base)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_unknown_name_and_bad_overrides(tmp_path):
    with pytest.raises(SpaceError, match="search space file '.*nope.toml' does not exist"):
        load_space(str(tmp_path / "nope.toml"))
    with pytest.raises(SpaceError, match="unknown search space 'hilo_blok'; did you mean 'hilo_block'"):
        load_space("hilo_blok")
    s = load_space("hilo_block")
    with pytest.raises(SpaceError, match="--budget-ms must be a positive number"):
        s.with_overrides(budget_ms=-3)
    with pytest.raises(SpaceError, match="--budget-ms must be a positive number of milliseconds, but got True"):
        s.with_overrides(budget_ms=True)  # a bool is an int to isinstance: it became a 1 ms budget
    with pytest.raises(SpaceError, match="--trials must be >= 1"):
        s.with_overrides(trials=0)
    narrowed = s.with_overrides(budget_ms=5, trials=3, device="cpu")
    assert [b.limit for b in narrowed.latency_budgets] == [5.0] and narrowed.trials == 3
