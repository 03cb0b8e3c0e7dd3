"""Registry entries for blocks and models, and the two registries that hold them.

Importing this module does not import torch: the CLI can describe the zoo's structure cheaply, and the
registries fill up when `effscope.blocks` / `effscope.models` are imported (see `blocks()` / `models()`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effscope.knobs import Config, with_knobs
from effscope.registry import Registry

if TYPE_CHECKING:
    import torch

    from effscope.modules import ConfiguredModule, DeviceLike

__all__ = ["Reference", "Spec", "BLOCKS", "MODELS", "blocks", "models", "register_block", "register_model"]


@dataclass(frozen=True)
class Reference:
    """Numbers measured from the official implementation (docs/zoo.md#reference-numbers) for this entry's default
    config.

    Attributes:
        params: exact parameter count, including any classifier head.
        macs: fvcore multiply-accumulates at `size` and batch 1 (None where not measured).
        size: token grid (blocks) or image size (models) that `macs` was measured at.
        source: where the numbers come from.
    """

    params: int | None = None
    macs: float | None = None
    size: tuple[int, int] | None = None
    source: str = ""


@dataclass(frozen=True)
class Spec:
    """A registered block or model: its module class, its default (or preset) config and where it comes from."""

    name: str
    kind: str  # "block" or "model"
    family: str
    paper: str
    summary: str
    module: type[ConfiguredModule]
    config: Config
    reference: Reference | None = None
    notes: tuple[str, ...] = field(default=())

    def configure(self, overrides: dict[str, Any] | None = None) -> Config:
        """This entry's config with some knobs replaced (validated)."""
        return with_knobs(self.config, overrides or {})

    def build(
        self,
        config: Config | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> ConfiguredModule:
        """Instantiate the module (on `meta` for counting without memory, or straight on a GPU)."""
        return self.module(config if config is not None else self.config, device=device, dtype=dtype)


BLOCKS: Registry[Spec] = Registry("block")
MODELS: Registry[Spec] = Registry("model")


def register_block(
    name: str,
    *,
    family: str,
    paper: str,
    summary: str,
    config: Config | None = None,
    reference: Reference | None = None,
    notes: tuple[str, ...] = (),
) -> Callable[[type[ConfiguredModule]], type[ConfiguredModule]]:
    """Class decorator registering a block; stack it to register variants of one class under other names."""

    def decorate(cls: type[ConfiguredModule]) -> type[ConfiguredModule]:
        default = config if config is not None else cls.Config()
        BLOCKS.add(name, Spec(name, "block", family, paper, summary, cls, default, reference, notes))
        return cls

    return decorate


def register_model(
    name: str,
    module: type[ConfiguredModule],
    *,
    family: str,
    paper: str,
    summary: str,
    config: Config,
    reference: Reference | None = None,
    notes: tuple[str, ...] = (),
) -> Spec:
    """Register a model preset: a named config of a model class."""
    return MODELS.add(name, Spec(name, "model", family, paper, summary, module, config, reference, notes))


def blocks() -> Registry[Spec]:
    """The block registry, filled (imports torch and every block family)."""
    import effscope.blocks  # noqa: F401  (registers on import)

    return BLOCKS


def models() -> Registry[Spec]:
    """The model registry, filled (imports torch and every model family)."""
    import effscope.models  # noqa: F401  (registers on import)

    return MODELS
