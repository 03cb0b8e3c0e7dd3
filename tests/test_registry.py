"""The registry: duplicates fail, misses list names and suggest the closest."""

from __future__ import annotations

import pytest

from effscope.errors import UnknownNameError
from effscope.registry import Registry
from effscope.spec import blocks, models


def test_duplicates_fail_and_misses_suggest():
    r: Registry[int] = Registry("block")
    r.add("hilo", 1)
    r.add("lightvit", 2)
    with pytest.raises(ValueError, match="registered twice"):
        r.add("hilo", 3)
    with pytest.raises(UnknownNameError, match=r"unknown block 'hilo_atn'; did you mean 'hilo'\?"):
        r.get("hilo_atn")
    with pytest.raises(UnknownNameError, match=r"unknown block 'zzz' \(known blocks: hilo, lightvit\)"):
        r.get("zzz")
    assert r.names() == ["hilo", "lightvit"] and len(r) == 2 and "hilo" in r


def test_zoo_registries_hold_what_they_say():
    for spec in blocks():
        assert spec.kind == "block" and blocks().get(spec.name) is spec
    for spec in models():
        assert spec.kind == "model" and models().get(spec.name) is spec
