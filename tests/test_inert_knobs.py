"""A knob a design ignores is recorded as built: one network is one design (docs/zoo.md#knobs)."""

import dataclasses

import pytest
import torch

from effscope.knobs import knobs_of
from effscope.profile.record import Workload, canonical_key
from effscope.profile.target import resolve_target
from effscope.spec import blocks, models

# (target, knobs that make `knob` inert, the value given, the value recorded as built), small enough to run
CASES = [
    ("hilo", {"heads": 4, "head_dim": 16, "window_size": 1}, "lofi_heads", 1, 4),
    ("hilo", {"heads": 2, "head_dim": 16, "window_size": 1}, "lofi_heads", 9, 2),  # over heads: ignored, not refused
    (
        "litv2_s",
        {"embed_dim": 32, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 4, 8), "window_size": 1},
        "lofi_heads",
        1,
        4,
    ),
    (
        "pvtv2_b0",
        {"embed_dims": (16, 16, 32, 32), "num_heads": (1, 1, 2, 2), "depths": (1, 1, 1, 1), "linear": True},
        "sr_ratios",
        (1, 1, 3, 2),
        (8, 4, 2, 1),
    ),
    ("vit_tiny_dw", {"depth": 2, "heads": 1, "head_dim": 16, "num_classes": 10}, "span", 4, 2),
]
IDS = [f"{c[0]}-{c[2]}={c[3]}" for c in CASES]


def _built(name, config, seed=0):
    spec = (blocks() if name in blocks() else models()).get(name)
    torch.manual_seed(seed)
    return spec.build(config).double().eval()


def _forced(config, **values):
    """`config` holding values it would not take: what the module would build from them if the config allowed it."""
    forced = dataclasses.replace(config)
    for name, value in values.items():
        object.__setattr__(forced, name, value)
    return forced


@pytest.mark.parametrize(("name", "context", "knob", "given", "built"), CASES, ids=IDS)
def test_an_ignored_knob_is_recorded_as_built(name, context, knob, given, built):
    target = resolve_target(name, {**context, knob: given})
    assert target.knobs()[knob] == built
    assert target.config.inert_knobs() == {knob: built}
    other = resolve_target(name, {**context, knob: built})
    workload = Workload()
    assert canonical_key(target.name, target.knobs(), workload, "cpu") == canonical_key(
        other.name, other.knobs(), workload, "cpu"
    )  # measured once: the search's cache, the calibration and the latency table key designs by these values


@pytest.mark.parametrize(("name", "context", "knob", "given", "built"), CASES, ids=IDS)
def test_the_ignored_value_builds_the_same_network(name, context, knob, given, built):
    """What makes recording it as built honest: the value given (forced past the config) changes no parameter and
    no output."""
    config = resolve_target(name, {**context, knob: built}).config
    as_given = _built(name, _forced(config, **{knob: given}))
    as_built = _built(name, config)
    shapes = {k: v.shape for k, v in as_built.state_dict().items()}
    assert {k: v.shape for k, v in as_given.state_dict().items()} == shapes
    as_given.load_state_dict(as_built.state_dict())
    args = as_built.example_args(2, None, device="cpu")
    args = tuple(a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    with torch.no_grad():
        torch.testing.assert_close(as_given(*args), as_built(*args), rtol=0, atol=0)


def test_a_knob_that_matters_is_kept_as_given():
    assert resolve_target("hilo", {"window_size": 2, "lofi_heads": 1}).knobs()["lofi_heads"] == 1
    assert resolve_target("pvtv2_b0", {"sr_ratios": (1, 1, 3, 2)}).knobs()["sr_ratios"] == (1, 1, 3, 2)
    assert resolve_target("vit_tiny_dw", {"depth": 4, "span": 3}).knobs()["span"] == 3


def test_every_recorded_value_is_inside_its_knob_domain():
    """The value a config records for an ignored knob must itself be a value the knob takes."""
    for name, context, knob, given, _ in CASES:
        config = resolve_target(name, {**context, knob: given}).config
        assert knobs_of(config)[knob].domain.contains(getattr(config, knob))


def test_profile_notes_a_set_knob_it_records_as_built(tmp_path, monkeypatch, capfd):
    from tests._cli import effscope

    args = ["profile", "hilo", "--set", "window_size=1", "--set", "lofi_heads=2", "--tokens", "4", "--device", "cpu"]
    code, _, err = effscope(monkeypatch, capfd, [*args, "--db", str(tmp_path / "p.db"), "--max-time", "0.05",
                                                 "--format", "json"])  # fmt: skip
    assert code == 0, err
    assert "note: hilo ignores lofi_heads with these knobs; it is recorded as built, lofi_heads=4" in err


def _msa_space(tmp_path, heads: str):
    """The tiny HiLo space at window_size 1 only (plain MSA: lofi_heads is ignored), with these `heads`."""
    from _spaces import TINY, load

    path = tmp_path / "msa.toml"
    text = TINY.format(budget=100, trials=7, max_time=0.05)
    text = text.replace("window_size = [2, 7]", "window_size = [1]").replace("heads = [1, 2]", f"heads = {heads}")
    path.write_text(text.replace("mlp_ratio = [1.0, 2.0]", "mlp_ratio = 1.0"))
    return load(path)


def test_a_search_measures_each_network_once_whatever_the_ignored_knob(tmp_path):
    """Two networks (heads 1 or 2) under 6 knob combinations: each is measured once, its other trials are cached
    repeats of it."""
    import json

    import optuna

    from effscope.search.coordinator import run_search

    run_search(_msa_space(tmp_path, "[1, 2]"), storage=str(tmp_path / "s.db"), command="pytest")
    trials = optuna.load_study(study_name="msa-cpu", storage=f"sqlite:///{tmp_path / 's.db'}").trials
    sampled = [t.user_attrs for t in trials if "preset" not in t.user_attrs]
    assert len(sampled) == 6 and all(u["knobs"]["lofi_heads"] == u["knobs"]["heads"] for u in sampled)
    networks = {json.dumps(u["knobs"], sort_keys=True) for u in sampled}
    measured = [u for u in sampled if u["status"] == "measured"]
    assert len(measured) == len(networks) == len({u["record_uid"] for u in sampled})
    assert all(u["status"] in ("measured", "cached") for u in sampled)


def test_a_space_of_one_network_is_refused(tmp_path):
    from effscope.search.space import SpaceError, check_searchable

    with pytest.raises(SpaceError, match="all 3 knob combinations build the same network"):
        check_searchable(_msa_space(tmp_path, "[2]"))
