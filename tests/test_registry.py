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


def test_registries_are_subscriptable():
    assert models()["litv2_s"] is models().get("litv2_s")
    with pytest.raises(UnknownNameError, match="did you mean 'litv2_s'"):
        models()["litv2_z"]


def test_the_package_functions_stay_callable_after_the_subpackages_load():
    import subprocess
    import sys

    code = (
        "import effscope; from effscope.models import litv2; "
        "a = effscope.models(); b = effscope.models(); c = effscope.blocks(); d = effscope.blocks(); "
        "assert a is b and c is d and 'litv2_s' in a and 'hilo' in c; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
