"""The CLI as a user meets it: real subprocesses, exit codes, one-sentence errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "effscope", *args], capture_output=True, text=True, timeout=120)


def test_blocks_list_names_every_block():
    from effscope.spec import blocks

    r = run("blocks", "list")
    assert r.returncode == 0, r.stderr
    for name in blocks().names():
        assert name in r.stdout


def test_blocks_show_applies_set_and_reports_params():
    r = run("blocks", "show", "vit", "--set", "heads=3", "--set", "head_dim=64")
    assert r.returncode == 0, r.stderr
    assert "dim = 192" in r.stdout and "params: 444,864" in r.stdout


def test_models_list_compares_with_official_counts():
    r = run("models", "list")
    assert r.returncode == 0, r.stderr
    assert "off by" not in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (("blocks", "show", "vitt"), "unknown block 'vitt'; did you mean 'vit'?"),
        (("blocks", "show", "vit", "--set", "heads=0"), "knob 'heads' of vit must be int in [1, 32], but got 0"),
        (("blocks", "show", "vit", "--set", "heads=x"), "but got 'x'"),
        (("blocks", "show", "vit", "--set", "heads"), "--set takes knob=value"),
        (("blocks", "show", "vit", "--set", "head=3"), "did you mean 'heads'?"),
        (("models", "show", "nope"), "unknown model 'nope'"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args, message):
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    r = run("--debug", "blocks", "show", "vitt")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("effscope ")
