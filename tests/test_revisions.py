"""A block whose computation changed is measured again: its revision is part of the measurement cache's key."""

import pytest

from effscope.modules import ConfiguredModule
from effscope.profile.record import Workload, canonical_key
from effscope.profile.target import resolve_target
from effscope.spec import blocks, models

SPECS = [(reg, name) for reg in (blocks, models) for name in reg().names()]


def _closure(cls: type[ConfiguredModule]) -> set[type[ConfiguredModule]]:
    out = set()
    for part in cls.parts:
        out |= {part, *_closure(part)}
    return out


@pytest.mark.parametrize(("registry", "name"), SPECS, ids=[n for _, n in SPECS])
def test_every_registered_module_a_target_builds_is_among_its_declared_parts(registry, name):
    """Otherwise a revised block inside it would leave the target's stored Records reusable."""
    spec = registry().get(name)
    root = spec.build(device="meta")
    built = {type(m) for m in root.modules() if isinstance(m, ConfiguredModule) and m is not root}
    missing = sorted(c.__name__ for c in built - _closure(type(root)))
    assert not missing, f"{type(root).__name__}.parts lacks {missing}"


def test_a_revision_above_1_changes_the_key_and_revisions_of_1_keep_old_keys():
    workload = Workload()
    merge = resolve_target("lightvit_merge")
    assert merge.revisions() == {"LightViTMerge": 2}
    old = canonical_key(merge.name, merge.knobs(), workload, "cpu")
    assert canonical_key(merge.name, merge.knobs(), workload, "cpu", merge.revisions()) != old
    model = resolve_target("lightvit_t")  # builds merges: its Records are measured again too
    assert model.revisions() == {"LightViTMerge": 2}
    hilo = resolve_target("hilo")
    assert hilo.revisions() == {}
    assert canonical_key("hilo", hilo.knobs(), workload, "cpu", hilo.revisions()) == canonical_key(
        "hilo", hilo.knobs(), workload, "cpu"
    )  # a key stored before revisions existed still matches


def test_user_code_has_no_revision(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(4, 4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_target("mine:build").revisions() == {}


def test_a_latency_table_built_before_a_block_was_revised_is_refused(tmp_path):
    from _spaces import load

    from effscope.search import predictor as P

    path = tmp_path / "merge.toml"
    path.write_text(
        '[space]\ntarget = "lightvit_merge"\n[workload]\nsize = [8, 8]\n[budgets]\nlatency_ms = 10\n'
        "[knobs]\nnum_tokens = [0, 8]\n"
    )
    space = load(path)

    def table(revisions):
        return P.LatencyTable(
            name="t", space=space.name, target=space.target, kind=space.kind, workload=space.workload.as_dict(),
            device_name="dev", statistic=space.latency_budget.statistic, features=[], entries=[],
            fit={"kind": "sum"}, validation={}, revisions=revisions,
        )  # fmt: skip

    old = table({}).to_json().replace(', "revisions": {}', "")  # as a table built before revisions existed
    assert "revisions" not in old
    with pytest.raises(P.PredictorError, match="built before a block of the space was revised"):
        P.check_compatible(P.LatencyTable.from_json(old), space, "dev")
    P.check_compatible(table({"LightViTMerge": 2}), space, "dev")  # built with the current block


def test_a_calibration_reuses_short_trained_designs_only_under_the_same_block_revisions(monkeypatch):
    from effscope.blocks.lightvit import LightViTMerge
    from effscope.search.calibrate import _rows_key
    from effscope.search.space import parse_space

    def space(target):
        text = f'[space]\ntarget = "{target}"\n[budgets]\nlatency_ms = 10\n[knobs]\nqkv_bias = [true, false]\n'
        return parse_space(text, name=target)

    lightvit, litv2 = _rows_key(space("lightvit_t")), _rows_key(space("litv2_s"))
    monkeypatch.setattr(LightViTMerge, "revision", 3)
    assert _rows_key(space("lightvit_t")) != lightvit  # its merges changed: trained again
    assert _rows_key(space("litv2_s")) == litv2  # builds no merge
