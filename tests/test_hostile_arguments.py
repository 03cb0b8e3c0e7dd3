"""Arguments of the wrong kind and output that cannot be written: one sentence each, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import effscope
from effscope.errors import EffscopeError
from effscope.output import OutputError, check_output


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("args", [["blocks", "list"], ["models", "list", "--format", "json"]])
def test_standard_output_on_a_full_device_is_one_sentence(args):
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "effscope", *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: cannot write to standard output: No space left on device"


def test_an_output_name_longer_than_the_file_system_allows_is_one_sentence(tmp_path):
    for path in (tmp_path / ("a" * 300 + ".csv"), tmp_path / ("a" * 300) / "x.csv"):
        with pytest.raises(OutputError, match=r"a name in it is longer than the file system allows$"):
            check_output(path)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: effscope.search(5), "space must be a path or a string, but got 5"),
        (lambda: effscope.search("hilo_block", storage=5), "storage must be a path or a string, but got 5"),
        (lambda: effscope.search("hilo_block", study=5), "study must be a string, but got 5"),
        (lambda: effscope.search("hilo_block", device=5), "device must be a string, but got 5"),
        (lambda: effscope.report(db="x.db", output=5), "output must be a path or a string, but got 5"),
        (lambda: effscope.report(storage="x.db", study=5, output="y.html"), "study must be a string, but got 5"),
        (lambda: effscope.search("hilo_block", trials=0), "trials must be >= 1, but got 0"),  # not "--trials"
        (lambda: effscope.search("hilo_block", workers=0), "workers must be >= 1, but got 0"),
        (lambda: effscope.search("hilo_block", heartbeat=0), "heartbeat must be >= 1 s, but got 0"),
        (
            lambda: effscope.search("hilo_block", budget_ms=float("inf")),
            "budget_ms must be a positive number of milliseconds, but got inf",
        ),
        (lambda: effscope.blocks().get(5), "a block name is a string, but got 5"),
        (lambda: effscope.models().get(["a"]), "a model name is a string, but got ['a']"),
    ],
)
def test_an_argument_of_the_wrong_kind_is_named(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the checkout
    with pytest.raises(EffscopeError) as e:
        call()
    assert str(e.value) == message
