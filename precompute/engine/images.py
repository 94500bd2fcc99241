"""PNG encoding of image tensors (the store keeps images as PNG bytes)."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def to_png(pixels: torch.Tensor) -> bytes:
    """C x H x W pixels in [0, 1] (C = 1 or 3) -> PNG bytes."""
    array = (pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    array = array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def thumbnail(pixels: torch.Tensor, max_size: int = 64) -> torch.Tensor:
    """Pixels shrunk (area average) so neither side exceeds `max_size`; small images unchanged."""
    h, w = pixels.shape[-2:]
    if max(h, w) <= max_size:
        return pixels
    scale = max_size / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(pixels[None], size=size, mode="area")[0]


def from_png(data: bytes) -> torch.Tensor:
    """PNG bytes -> C x H x W float pixels in [0, 1]."""
    array = np.asarray(Image.open(io.BytesIO(data)))
    array = array[None] if array.ndim == 2 else np.transpose(array, (2, 0, 1))
    return torch.from_numpy(array.copy()).float() / 255.0
