"""What a network makes of a stack of images, read in batches: embedding codes and top-1 classes.

Shared by the evaluation (precompute.evidence.evaluate) and the explanation scores
(precompute.evidence.scoring), which must not import each other.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine.models import ModelSpec

BATCH = 512


def _read(spec: ModelSpec, node: str, pixels: torch.Tensor, device) -> torch.Tensor:
    net = spec.extractor((node,))
    return torch.cat([net(spec.preprocess(pixels[i:i + BATCH].to(device)))[node].float().flatten(1).cpu()
                      for i in range(0, len(pixels), BATCH)])


@torch.no_grad()
def codes_of(spec: ModelSpec, pixels: torch.Tensor, device) -> np.ndarray:
    """The images' codes at the model's embedding node, one flat row per image."""
    return _read(spec, spec.embedding_node, pixels, device).numpy()


@torch.no_grad()
def top1_under(spec: ModelSpec, pixels: torch.Tensor, units: np.ndarray, device) -> np.ndarray:
    """Whether `spec`'s top-1 class of each image is its target unit."""
    return _read(spec, spec.logits_layer, pixels, device).argmax(1).numpy() == units
