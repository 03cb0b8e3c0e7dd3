"""The base classes of every registered block (`TokenBlock`) and model (`ImageModel`): modules built from a config."""

from __future__ import annotations

from typing import Any, ClassVar, TypeAlias

import torch
from torch import nn

from effscope.knobs import Config

__all__ = ["ConfiguredModule", "DeviceLike", "ImageModel", "TokenBlock"]

DeviceLike: TypeAlias = torch.device | str
"""Where a module's parameters and inputs are created: a torch.device or its name ("cpu", "cuda:1", "meta")."""


class ConfiguredModule(nn.Module):
    """An nn.Module built from one validated knob config.

    Subclasses set `Config` (their frozen config dataclass) and `default_size`, and implement `example_args`,
    which documents the input layout by building it.

    Args:
        config: the knob values; None takes the Config's defaults.
        device: where parameters are created (`meta` builds without memory, for counting).
        dtype: parameter dtype.
    """

    Config: ClassVar[type[Config]]
    default_size: ClassVar[tuple[int, int]] = (28, 28)  # token grid for blocks, image size for models
    # What the module computes, as the measurement cache knows it: bump `revision` when a change alters its outputs,
    # parameters or cost for some knob values, so that Records measured before are not reused (they are measured
    # again). `parts` are the registered modules it builds, whose revisions count too (a test checks the list).
    revision: ClassVar[int] = 1
    parts: ClassVar[tuple[type[ConfiguredModule], ...]] = ()

    @classmethod
    def revisions(cls) -> dict[str, int]:
        """The revisions above 1 of this module and of its parts, by class name: part of a Record's cache key, and
        empty (absent from the key) while every one is 1, so keys made before revisions existed still match."""
        out: dict[str, int] = {}
        for part in cls.parts:
            out.update(part.revisions())
        if cls.revision > 1:
            out[cls.__name__] = cls.revision
        return out

    def __init__(
        self,
        config: Config | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if config is None:
            config = self.Config()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    def example_args(
        self,
        batch: int = 1,
        size: tuple[int, int] | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Any, ...]:
        """Positional arguments for `forward`: random inputs of `batch` items at `size` (default_size if None)."""
        raise NotImplementedError


class TokenBlock(ConfiguredModule):
    """A block on image tokens: `forward(x, hw)` with x (B, leading + H*W, width) on an H x W grid, where a block
    with global or class tokens puts them first (`leading_tokens`) and the width is its config's `dim` unless
    `token_width` says otherwise."""

    def leading_tokens(self) -> int:
        """Tokens in x before the H x W image tokens."""
        return 0

    def token_width(self) -> int:
        """Channels of each input token."""
        return self.config.dim

    def example_args(
        self,
        batch: int = 1,
        size: tuple[int, int] | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple:
        h, w = size or self.default_size
        n = self.leading_tokens() + h * w
        return torch.randn(batch, n, self.token_width(), device=device, dtype=dtype), (h, w)


class ImageModel(ConfiguredModule):
    """A classifier: `forward(images)` with images (B, in_chans, H, W) -> logits (B, num_classes)."""

    default_size = (224, 224)
    in_chans: ClassVar[int] = 3

    @classmethod
    def block_layout(
        cls, config: Config, size: tuple[int, int] | None = None
    ) -> list[tuple[Config, tuple[int, int]]] | None:
        """The registered blocks a design runs, in forward order, each with the token grid it sees, worked out from
        the config alone (nothing is built); None where the model does not declare it.

        The latency predictor decomposes a design with it (effscope.search.predictor), and traces the forward on the
        `meta` device where it is None.

        Args:
            size: the image size (default_size if None).
        """
        return None

    def example_args(
        self,
        batch: int = 1,
        size: tuple[int, int] | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple:
        h, w = size or self.default_size
        return (torch.randn(batch, self.in_chans, h, w, device=device, dtype=dtype),)
