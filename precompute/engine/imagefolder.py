"""Image folders of any size (ImageNet train layout: one sub-folder per class), streamed.

Files are decoded, resized (shorter side to 256/224 of the input size) and centre-cropped by
DataLoader workers. A file that cannot be read is skipped and counted, never fatal.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from ..core.errors import AtlasError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".tif", ".tiff")


def to_pixels(image: Image.Image, size: int, channels: int, margin: bool = True) -> torch.Tensor:
    """A decoded image as the network sees it, C x H x W in [0, 1]: shorter side resized to 256/224 of
    `size` (`margin`, the ImageNet evaluation convention; else to `size`), centre-cropped to size x size."""
    image = image.convert("L" if channels == 1 else "RGB")
    resized = transforms.functional.resize(image, round(size * 256 / 224) if margin else size)
    return transforms.functional.to_tensor(transforms.functional.center_crop(resized, size))


class _Files(Dataset):
    def __init__(self, files: list[Path], size: int, channels: int):
        self.files, self.size, self.channels = files, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.files[i]) as image:
                return i, to_pixels(image, self.size, self.channels)
        except (OSError, ValueError, SyntaxError):   # truncated, corrupt, not an image
            return i, None


def _collate(items):
    good = [(i, x) for i, x in items if x is not None]
    bad = len(items) - len(good)
    if not good:
        return torch.empty(0, dtype=torch.long), None, bad
    return torch.tensor([i for i, _ in good]), torch.stack([x for _, x in good]), bad


class FolderSet:
    """An ImageFolder tree as a dataset: classes are the sub-folder names, sorted."""

    def __init__(self, root: str | Path, size: int, channels: int = 3, workers: int | None = None,
                 max_images: int | None = None):
        root = Path(root)
        if not root.is_dir():
            raise AtlasError(f"data folder {str(root)!r} does not exist")
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        files, labels = [], []
        for label, name in enumerate(self.classes):
            for path in sorted((root / name).rglob("*")):
                if path.suffix.lower() in EXTENSIONS and path.is_file():
                    files.append(path)
                    labels.append(label)
        if not files:
            raise AtlasError(f"no images in {str(root)!r}: expected one sub-folder per class holding "
                             f"{', '.join(EXTENSIONS)} files")
        files, labels = files[:max_images], labels[:max_images]
        self.labels = torch.tensor(labels)
        self.files = _Files(files, size, channels)
        self.workers = min(4, os.cpu_count() or 1) if workers is None else workers
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, start: int, end: int) -> "FolderSet":
        """Images [start, end) as a dataset of their own, indexed from 0 (one shard of a split scan)."""
        part = copy.copy(self)
        part.files = copy.copy(self.files)
        part.files.files = self.files.files[start:end]
        part.labels = self.labels[start:end].clone()
        part.skipped = 0
        return part

    def batches(self, batch_size: int, device=None):
        """(indices, pixels) batches of the readable images; unreadable ones are counted in `skipped`."""
        pin = device is not None and torch.device(device).type == "cuda"
        loader = DataLoader(self.files, batch_size=batch_size, num_workers=self.workers, collate_fn=_collate,
                            pin_memory=pin, persistent_workers=False)
        self.skipped = 0
        for idx, pixels, bad in loader:
            self.skipped += bad
            if pixels is not None:
                yield idx, pixels

    def pixels(self, indices) -> torch.Tensor:
        images = []
        for i in torch.as_tensor(indices).tolist():
            _, x = self.files[i]
            if x is None:
                raise AtlasError(f"image {self.files.files[i]} became unreadable during the build")
            images.append(x)
        return torch.stack(images)
