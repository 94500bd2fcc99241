"""Image datasets: what the scan streams through and what inits and thumbnails are cut from.

A dataset has `classes`, `labels` (one per image), `len()`, `pixels(indices)` (float
pixels in [0, 1], N x C x H x W), `batches(batch_size)` (an iterator of (indices, pixels)) and
`skipped` (unreadable files). `ImageSet` holds small datasets in memory (the demo's
Fashion-MNIST, read with torchvision's reader from ``--data DIR``, Debian's
``dataset-fashion-mnist`` files, or a torchvision download); `precompute.engine.imagefolder.FolderSet`
streams image folders of any size.
"""
from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import AtlasError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_RAW_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@dataclass
class ImageSet:
    """Images as uint8 N x C x H x W, with integer labels and class names."""
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def head(self, n: int | None) -> "ImageSet":
        """The first n images (all when n is None)."""
        if n is None or n >= len(self):
            return self
        return ImageSet(self.images[:n], self.labels[:n], self.classes)

    def subset(self, start: int, end: int) -> "ImageSet":
        """Images [start, end) as a dataset of their own, indexed from 0 (one shard of a split scan)."""
        return ImageSet(self.images[start:end].clone(), self.labels[start:end].clone(), self.classes)   # not a view:
        # pickled (to a Ray worker) it then carries its own images, not the whole set's storage

    skipped = 0   # nothing unreadable in memory

    def pixels(self, indices) -> torch.Tensor:
        """Images at `indices` as float pixels in [0, 1]."""
        return self.images[torch.as_tensor(indices, dtype=torch.long)].float() / 255.0

    def batches(self, batch_size: int, device=None):
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)))
            yield idx, self.pixels(idx)


def cache_dir() -> Path:
    return Path(os.environ.get("FACET_ATLAS_CACHE", Path.home() / ".cache" / "facet-atlas"))


def _find_raw_source(data_dir: Path | None) -> Path | None:
    candidates = [data_dir] if data_dir else [DEBIAN_FASHION_MNIST]
    for folder in candidates:
        for sub in (folder, folder / "FashionMNIST" / "raw", folder / "raw"):
            if all((sub / f).exists() or (sub / f"{f}.gz").exists() for f in _RAW_FILES):
                return sub
    return None


def _stage_raw_files(source: Path, root: Path) -> None:
    """Copy (and gunzip) the idx files into the layout torchvision's reader expects."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in _RAW_FILES:
        target = raw / name
        if target.exists():
            continue
        tmp = target.with_suffix(".tmp")
        if (source / name).exists():
            shutil.copyfile(source / name, tmp)
        else:
            with gzip.open(source / f"{name}.gz", "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(tmp, target)


def load_fashion_mnist(train: bool = True, data_dir: str | Path | None = None) -> ImageSet:
    """Fashion-MNIST train or test split; raise AtlasError saying how to get it if absent."""
    from torchvision.datasets import FashionMNIST

    data_dir = Path(data_dir) if data_dir else None
    if data_dir is not None and not data_dir.exists():
        raise AtlasError(f"data folder {str(data_dir)!r} does not exist")
    root = cache_dir() / "datasets"
    source = _find_raw_source(data_dir)
    if source is None and data_dir is not None:
        raise AtlasError(f"Fashion-MNIST not found in {data_dir}: expected the idx files "
                         f"({', '.join(_RAW_FILES)}, optionally .gz) there or under FashionMNIST/raw")
    if source is not None:
        _stage_raw_files(source, root)
        dataset = FashionMNIST(str(root), train=train, download=False)
    else:
        try:
            dataset = FashionMNIST(str(root), train=train, download=True)
        except Exception as exc:  # no network: say how to get the files
            raise AtlasError(
                f"Fashion-MNIST not found in {DEBIAN_FASHION_MNIST} and could not be downloaded ({type(exc).__name__}); "
                "install it with 'apt-get install dataset-fashion-mnist' or pass --data DIR "
                "holding train-images-idx3-ubyte(.gz) and the other idx files") from None
    return ImageSet(
        images=dataset.data.unsqueeze(1).contiguous(),
        labels=dataset.targets.clone(),
        classes=list(FASHION_CLASSES),
    )
