"""Misbehaving targets for failure-isolation tests, reached as `_targets:NAME` (module:callable targets)."""

from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn


class _Forward(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.fn = fn

    def forward(self, x):
        self.fn()
        return x

    def example_args(self, batch=1, size=None, *, device=None, dtype=None):
        return (torch.randn(batch, 8, device=device, dtype=dtype),)


def tiny():
    """A working 8x8 linear layer: 64 MACs per row."""
    m = nn.Sequential(nn.Linear(8, 8))
    m.example_args = lambda batch=1, size=None, *, device=None, dtype=None: (torch.randn(batch, 8, device=device),)
    return m


def raising():
    def boom():
        raise RuntimeError("forward exploded on purpose")

    return _Forward(boom)


def hungry():
    def eat():
        torch.empty(1 << 40, dtype=torch.uint8).fill_(1)  # 1 TiB

    return _Forward(eat)


def killed():
    return _Forward(lambda: os.kill(os.getpid(), signal.SIGKILL))


def sleepy():
    return _Forward(lambda: time.sleep(600))


def not_a_module():
    return 42
