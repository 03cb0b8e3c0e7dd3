"""An unexpected error shown in one line: its first line of text, its type where it has none."""

import pytest

from effscope.errors import error_line, error_text


@pytest.mark.parametrize(
    ("error", "line", "text"),
    [
        (ValueError("bad shape\n  at layer 3"), "bad shape", "ValueError: bad shape"),
        (KeyError(), "KeyError", "KeyError"),
        (RuntimeError("  \n"), "RuntimeError", "RuntimeError"),
        (RuntimeError("\n  CUDA error: x\nmore"), "CUDA error: x", "RuntimeError: CUDA error: x"),
    ],
)
def test_an_error_reads_as_one_line(error, line, text):
    assert error_line(error) == line
    assert error_text(error) == text


def test_a_dtype_probe_that_fails_without_text_names_the_error(monkeypatch):
    # The probe read str(e).splitlines()[0], which raised IndexError for an error with no text.
    import torch

    from effscope.profile import roofline

    def fail(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(torch, "mm", fail)
    assert roofline._dtype_support(torch.device("cpu"), "fp32") == "fp32 matmul does not run on cpu: RuntimeError"
