"""Targets: what the user names on the command line (a block, a model preset, or `module:callable`), resolved."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from effscope.errors import SpecError, UnknownNameError
from effscope.knobs import Config
from effscope.registry import did_you_mean

__all__ = ["Target", "resolve_target", "Bound"]


@dataclass(frozen=True)
class Target:
    """A resolved target: a registered spec with validated knob values, or a user callable returning a module."""

    name: str
    kind: str  # "block", "model" or "custom"
    family: str | None = None
    config: Config | None = None
    factory: Any = field(default=None, compare=False)  # Spec for registered targets, callable for custom ones

    def knobs(self) -> dict[str, Any]:
        return self.config.knob_values() if self.config is not None else {}

    def derived(self) -> dict[str, Any]:
        return self.config.derived() if self.config is not None else {}

    def build(self, device: torch.device | str | None = None) -> nn.Module:
        """Instantiate the module on `device` (fp32 parameters; autocast handles lower precision)."""
        if self.kind == "custom":
            module = self.factory()
            if not isinstance(module, nn.Module):
                raise SpecError(f"'{self.name}' must return a torch.nn.Module, but it returned {type(module).__name__}")
            return module.to(device) if device is not None else module
        return self.factory.build(self.config, device=device)

    def example_args(
        self, module: nn.Module, batch: int, size: tuple[int, int] | None, device: torch.device | str | None
    ) -> tuple[Any, ...]:
        """Inputs for `module`: its own `example_args` when it has one, else an image batch (B, 3, H, W)."""
        if hasattr(module, "example_args"):
            return module.example_args(batch, size, device=device)
        h, w = size or (224, 224)
        return (torch.randn(batch, 3, h, w, device=device),)


def resolve_target(name: str, overrides: dict[str, Any] | None = None, assignments: list[str] | None = None) -> Target:
    """Resolve a block name, a model preset name, or `package.module:callable`.

    Args:
        name: what the user typed.
        overrides: knob values (already typed), e.g. from a search trial.
        assignments: `knob=value` strings from the CLI, parsed against the declared knobs.

    Raises:
        UnknownNameError: no block or model of that name (the message suggests the closest).
        KnobError / SpecError: bad knob values, or an unimportable callable.
    """
    from effscope.knobs import parse_assignments
    from effscope.spec import blocks, models

    if ":" in name:
        if overrides or assignments:
            raise SpecError(f"--set applies to registered blocks and models, not to the callable '{name}'")
        return Target(name, "custom", factory=_import_callable(name))
    for registry in (blocks(), models()):
        if name in registry:
            spec = registry.get(name)
            values = dict(overrides or {})
            values.update(parse_assignments(spec.config, assignments or []))
            return Target(name, spec.kind, spec.family, spec.configure(values), spec)
    known = blocks().names() + models().names()
    raise UnknownNameError(
        f"unknown target '{name}'{did_you_mean(name, known) or ';'} a target is a block (effscope blocks list), "
        "a model preset (effscope models list) or module:callable returning an nn.Module"
    )


def _import_callable(text: str):
    module_name, _, attr = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SpecError(f"cannot import '{module_name}' for target '{text}': {e}") from None
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise SpecError(f"module '{module_name}' has no attribute '{attr}' (target '{text}')") from None
    if not callable(fn):
        raise SpecError(f"'{text}' is not callable; it must return a torch.nn.Module")
    return fn


class Bound(nn.Module):
    """Wrap a module so that forward takes only its tensor inputs (non-tensors such as a block's (H, W) are bound).

    Tracers (fvcore, torch.jit) and timers call `bound(*tensors)`.
    """

    def __init__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        super().__init__()
        self.module = module
        self._slots = [isinstance(a, torch.Tensor) for a in args]
        self._fixed = [None if t else a for a, t in zip(args, self._slots, strict=True)]

    def tensors(self, args: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(a for a, t in zip(args, self._slots, strict=True) if t)

    def forward(self, *tensors: torch.Tensor):
        it = iter(tensors)
        return self.module(*[next(it) if t else f for t, f in zip(self._slots, self._fixed, strict=True)])
