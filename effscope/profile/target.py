"""Targets: what the user names on the command line (a block, a model preset, or `module:callable`), resolved."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten

from effscope.errors import SpecError, UnknownNameError
from effscope.knobs import Config
from effscope.registry import did_you_mean

if TYPE_CHECKING:
    from effscope.modules import DeviceLike

__all__ = ["Target", "resolve_target", "expand_patterns", "Bound"]

DEFAULT_IMAGE_SIZE = (224, 224)  # the input of a custom image model that defines no example_args


@dataclass(frozen=True)
class Target:
    """A resolved target: a registered spec with validated knob values, or a user callable returning a module."""

    name: str
    kind: str  # "block", "model" or "custom"
    family: str | None = None
    config: Config | None = None
    factory: Any = field(default=None, compare=False)  # Spec for registered targets, callable for custom ones
    instance: nn.Module | None = field(default=None, compare=False)  # a module given from Python (effscope.profile)

    def knobs(self) -> dict[str, Any]:
        return self.config.knob_values() if self.config is not None else {}

    def derived(self) -> dict[str, Any]:
        return self.config.derived() if self.config is not None else {}

    def revisions(self) -> dict[str, int]:
        """Its modules' revisions above 1 (ConfiguredModule.revisions) for the cache key; none for user code."""
        if self.kind == "custom" or self.factory is None:
            return {}
        return self.factory.module.revisions()  # a registered target's factory is its Spec

    def build(self, device: DeviceLike | None = None) -> nn.Module:
        """Instantiate the module on `device` (fp32 parameters; autocast handles lower precision).

        A `module:callable` target imports its module here, in the measurement process, so an import that
        raises or hangs is one failed Record under the job's timeout, never a dead run.
        """
        if self.instance is not None:
            return self.instance.to(device) if device is not None else self.instance
        if self.kind == "custom":
            module = (self.factory or _import_callable(self.name))()
            if not isinstance(module, nn.Module):
                raise SpecError(f"'{self.name}' must return a torch.nn.Module, but it returned {type(module).__name__}")
            return module.to(device) if device is not None else module
        return self.factory.build(self.config, device=device)

    def example_args(
        self, module: nn.Module, batch: int, size: tuple[int, int] | None, device: DeviceLike | None
    ) -> tuple[Any, ...]:
        """Inputs for `module`: its own `example_args` when it has one, else an image batch (B, 3, H, W)."""
        if hasattr(module, "example_args"):
            return module.example_args(batch, size, device=device)
        h, w = self.input_size(module, size)
        return (torch.randn(batch, 3, h, w, device=device),)

    def input_size(self, module: nn.Module, size: tuple[int, int] | None) -> tuple[int, int] | None:
        """The (H, W) that `example_args` uses for `size`: the size given; else, for a module with its own
        `example_args`, its `default_size` (effscope's blocks: a token grid; models: an image size), None where it
        has none; else 224x224, the image batch made for a plain image model."""
        if size is not None:
            return (int(size[0]), int(size[1]))
        if not hasattr(module, "example_args"):
            return DEFAULT_IMAGE_SIZE
        default = getattr(module, "default_size", None)
        return (int(default[0]), int(default[1])) if default is not None else None


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
        _check_callable(name)  # found, but not imported: user code runs only in the measurement process
        return Target(name, "custom")
    for registry in (blocks(), models()):
        if name in registry:
            spec = registry.get(name)
            values = dict(overrides or {})
            values.update(parse_assignments(spec.config, assignments or []))
            return Target(name, spec.kind, spec.family, spec.configure(values), spec)
    known = blocks().names() + models().names()
    raise UnknownNameError(
        f"unknown target '{name}'{did_you_mean(name, known) or ';'} a target is a block (effscope blocks list), "
        "a model preset (effscope models list), or module:callable or path/to/file.py:callable returning an nn.Module"
    )


def expand_patterns(names: list[str]) -> list[str]:
    """Names with shell-style patterns (`pvtv2_*`, `lightvit_[ts]`) expanded over the registered blocks and models,
    in registry order; other names pass through unchanged, and a name given twice is measured once.

    Raises:
        UnknownNameError: a pattern matches no registered name.
    """
    import fnmatch

    from effscope.spec import blocks, models

    known = blocks().names() + models().names()
    expanded: list[str] = []
    for name in names:
        if ":" in name or not any(c in name for c in "*?["):
            matches = [name]
        else:
            matches = fnmatch.filter(known, name)
            if not matches:
                raise UnknownNameError(
                    f"no block or model matches '{name}'; the names are listed by effscope blocks list and "
                    "effscope models list"
                )
        expanded += [m for m in matches if m not in expanded]
    return expanded


_CALLABLE_FORMS = "module:callable (a module importable from here) or path/to/file.py:callable"


def _split_callable(text: str) -> tuple[str, str]:
    where, _, attr = text.rpartition(":")
    if not where or not attr.isidentifier():
        raise SpecError(f"target '{text}' is not {_CALLABLE_FORMS}")
    return where, attr


def _check_callable(text: str) -> None:
    """Check that the module or file of `module:callable` exists, without running any of its code.

    Raises:
        SpecError: malformed, or no such module or file.
    """
    import importlib.util
    import os
    from importlib.machinery import PathFinder
    from pathlib import Path

    where, _ = _split_callable(text)
    if where.endswith(".py"):
        if not Path(where).expanduser().is_file():
            raise SpecError(f"cannot find the file '{where}' of target '{text}'")
        return
    top = where.split(".")[0]
    # Top-level names only: finding a submodule would import (run) its parent packages here.
    if not top.isidentifier() or not (
        top in sys.modules or importlib.util.find_spec(top) or PathFinder.find_spec(top, [os.getcwd()])
    ):
        raise SpecError(f"cannot import '{where}' for target '{text}': no module named '{top}'; give {_CALLABLE_FORMS}")


def _import_callable(text: str):
    """Import the callable of `module:callable` or `path/to/file.py:callable` (the working folder is searched too)."""
    import importlib.util
    import os
    from pathlib import Path

    where, attr = _split_callable(text)
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser().resolve()
            name = f"_effscope_file_{path.stem}_{abs(hash(str(path))):x}"  # two files may share a stem
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.append(os.getcwd())  # `effscope` run as a console script does not search the cwd
            module = importlib.import_module(where)
    except ImportError as e:
        raise SpecError(f"cannot import '{where}' for target '{text}': {e}") from None
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise SpecError(f"module '{where}' has no attribute '{attr}' (target '{text}')") from None
    if not callable(fn):
        raise SpecError(f"'{text}' is not callable; it must return a torch.nn.Module")
    return fn


def _has_tensor(tree: Any) -> bool:
    return any(isinstance(leaf, torch.Tensor) for leaf in tree_leaves(tree))


class Bound(nn.Module):
    """Wrap a module so that forward takes and returns only tensors: the parts of its arguments that hold no tensor
    (such as a block's (H, W)) are bound, and the output is reduced to its tensor leaves.

    Tracers (fvcore, torch.jit) and timers call `bound(*bound.tensors(args))`. The module is the child `inner`, so
    module names seen through the wrapper read `inner.<name>` (`inner_name` strips the prefix).

    Args:
        module: the module to call.
        args: its positional arguments, any pytree of tensors and constants.
    """

    def __init__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        super().__init__()
        self.inner = module
        # A subtree without tensors stays one constant, so flat arguments (tensors and constants side by side, as
        # every block and model takes) are passed as they are: the timed forward does no pytree work.
        leaves, self._spec = tree_flatten(args, is_leaf=lambda a: not _has_tensor(a))
        self._flat = len(leaves) == len(args) and all(a is leaf for a, leaf in zip(args, leaves, strict=True))
        self._slots = [isinstance(leaf, torch.Tensor) for leaf in leaves]
        self._fixed = [None if t else leaf for leaf, t in zip(leaves, self._slots, strict=True)]

    @staticmethod
    def tensors(args: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
        """The tensors in `args`, in the order forward takes them."""
        return tuple(leaf for leaf in tree_leaves(args) if isinstance(leaf, torch.Tensor))

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        it = iter(tensors)
        leaves = [next(it) if t else leaf for t, leaf in zip(self._slots, self._fixed, strict=True)]
        out = self.inner(*(leaves if self._flat else tree_unflatten(leaves, self._spec)))
        if isinstance(out, torch.Tensor):  # the usual output, without the cost of flattening
            return (out,)
        found = tuple(x for x in tree_leaves(out) if isinstance(x, torch.Tensor))
        if not found:  # tracing would see no work and report 0 MACs, as if the forward were free
            raise SpecError(
                f"the forward returned no tensor (it returned {type(out).__name__}); a target must return its output"
            )
        return found

    @staticmethod
    def inner_name(name: str) -> str | None:
        """A module name seen through the wrapper, as the wrapped module's: 'inner.attn' -> 'attn', 'inner' -> '';
        None for the wrapper itself."""
        if name == "inner":
            return ""
        return name.removeprefix("inner.") if name.startswith("inner.") else None
