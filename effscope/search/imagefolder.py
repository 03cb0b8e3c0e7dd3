"""A small ImageFolder reader with Pillow (no torchvision): root/<class>/<image>, split into train and validation.

Used for real proxy batches and the `train` quality objective. A root with `train/` and `val/` sub-folders uses
them as given; otherwise every fifth image of each class (in sorted order) is held out for validation, so the
split is the same on every machine.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from effscope.errors import SpecError

if TYPE_CHECKING:
    import torch

__all__ = ["DataError", "ImageFolder", "open_imagefolder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".gif", ".tif", ".tiff")
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, the convention of every model in the zoo
STD = (0.229, 0.224, 0.225)
VAL_EVERY = 5
CHECK_CLASSES = 256  # classes whose first image of each split is decoded up front (evenly spread beyond that)


class DataError(SpecError):
    """The --data directory is missing or not an ImageFolder (root/<class>/<image>)."""


def _classes(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass(frozen=True)
class ImageFolder:
    """Labelled image paths of one dataset, split into train and val.

    Attributes:
        root: the directory given.
        classes: class names (sorted folder names); labels are their indices.
        train, val: (path, label) pairs.
    """

    root: str
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    val: tuple[tuple[str, int], ...]

    def load(
        self, samples: Sequence[tuple[str, int]], size: tuple[int, int], *, flip: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode, resize (shorter side), center-crop to `size` and normalize: a float (N, 3, H, W) batch."""
        import numpy as np
        import torch
        from PIL import Image

        h, w = size
        out = torch.empty(len(samples), 3, h, w)
        for i, (path, _) in enumerate(samples):
            with Image.open(path) as im:
                im = im.convert("RGB")
                scale = max(h / im.height, w / im.width)
                rw, rh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
                im = im.resize((rw, rh), Image.BILINEAR)
                left, top = (rw - w) // 2, (rh - h) // 2
                im = im.crop((left, top, left + w, top + h))
                out[i] = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        if flip is not None:
            out[flip] = out[flip].flip(-1)
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        return (out - mean) / std

    @staticmethod
    def labels(samples: Sequence[tuple[str, int]]) -> torch.Tensor:
        import torch

        return torch.tensor([label for _, label in samples], dtype=torch.long)


def open_imagefolder(root: str | Path) -> ImageFolder:
    """Index an ImageFolder directory and decode the first image of each class in each split (once per process).

    Raises:
        DataError: the directory is missing, has fewer than two class folders, a split has no images, or an image
            checked does not decode.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--data '{root}' is not a directory; give an ImageFolder root (root/<class>/<image>)")
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = _classes(root / "train")
        train = [(str(p), i) for i, c in enumerate(classes) for p in _images(root / "train" / c)]
        val = [
            (str(p), i) for i, c in enumerate(classes) if (root / "val" / c).is_dir() for p in _images(root / "val" / c)
        ]
    else:
        classes = _classes(root)
        train, val = [], []
        for i, c in enumerate(classes):
            for j, p in enumerate(_images(root / c)):
                (val if j % VAL_EVERY == VAL_EVERY - 1 else train).append((str(p), i))
    if len(classes) < 2:
        raise DataError(
            f"--data '{root}' needs at least two class folders (root/<class>/<image>), but has {len(classes)}"
        )
    if not train or not val:
        raise DataError(
            f"--data '{root}' has {len(train)} training and {len(val)} validation images; both splits need images "
            f"(every {VAL_EVERY}th image of a class is held out, or give train/ and val/ folders)"
        )
    # Interleave the validation classes so that a capped validation set still holds every class.
    by_class: dict[int, list[tuple[str, int]]] = {}
    for sample in val:
        by_class.setdefault(sample[1], []).append(sample)
    val = [s for group in itertools.zip_longest(*by_class.values()) for s in group if s is not None]
    folder = ImageFolder(str(root), tuple(classes), tuple(train), tuple(val))
    key = (str(root.resolve()), len(train), len(val))
    if key not in _CHECKED:
        _check_decodes(folder)
        _CHECKED.add(key)
    return folder


_CHECKED: set[tuple[str, int, int]] = set()  # folders checked in this process (a quality process opens it per design)


def _check_decodes(folder: ImageFolder) -> None:
    """Decode one image per class and split, so that a folder of files that are not images fails once, up front,
    instead of every design's training failing on it (PIL's draft mode keeps a JPEG decode cheap)."""
    from PIL import Image

    picked: list[str] = []
    for split in (folder.train, folder.val):
        first: dict[int, str] = {}
        for path, label in split:
            first.setdefault(label, path)
        labels = sorted(first)
        step = max(1, len(labels) // CHECK_CLASSES)
        picked += [first[label] for label in labels[::step]]
    for path in picked:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (32, 32))
                im.load()
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a broken file
            why = type(e).__name__ if path in str(e) else f"{type(e).__name__}: {e}"
            raise DataError(
                f"--data '{folder.root}' holds '{path}', which does not decode as an image ({why}); --data needs an "
                "ImageFolder of images (root/<class>/<image>)"
            ) from None
