"""Every model preset: exact official parameter count, forward at its size and one other, meta build."""

from __future__ import annotations

import pytest
import torch

from effscope.spec import models

SPECS = list(models())
IDS = [s.name for s in SPECS]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_exact_official_params(spec):
    ref = spec.reference
    assert ref is not None, "every preset states its reference"
    if ref.params is None:  # no official implementation exists (CageViT): the family's own test bounds it
        assert spec.notes, "a preset without an official count says why in its notes"
        pytest.skip(spec.notes[0])
    n = sum(p.numel() for p in spec.build(device="meta").parameters())
    assert n == ref.params


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_forward_two_resolutions(spec):
    m = spec.build().eval()
    h, w = m.default_size
    with torch.no_grad():
        for size in [(h, w), (h + 32, w + 32)]:
            (x,) = m.example_args(1, size)
            out = m(x)
            assert out.shape == (1, m.config.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_meta_forward(spec):
    m = spec.build(device="meta")
    (x,) = m.example_args(2, device="meta")
    assert m(x).shape == (2, m.config.num_classes)
