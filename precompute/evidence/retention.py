"""Did synthesis keep each facet? Retention and spread of a neuron's facet images against their inits.

MFV starts each facet's image from that facet's mean image (its init). A synthesis that keeps the
facet ends with images that still tell the facets apart as the inits do; one that paints the class
picture over every init ends with k near-identical images. Two numbers per neuron:

- retention: the share of its facet images whose nearest init, among the neuron's k inits, is
  their own. Vectors are centred on the mean of the k inits first, so only what tells the facets
  apart counts (what all inits share, the class, cancels). 1.0: every facet kept its identity;
  1/k is chance.
- spread: mean pairwise distance of the facet images / the same of their inits (about 1: the
  images differ as much as the facets do; near 0: one picture k times).

Both are measured in pixels (downsampled to at most 56 px, so 224 px images compare their layout,
not their texture) and in the mid-level features of a second network (the second demo CNN's conv2;
EfficientNet-Lite2 after block 10, average-pooled to 8 x 8): deep features of a network of the same
kind share the class stamp, early and mid-level ones still see which item it is. Numpy in, numbers out.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PIXELS_MAX = 56   # pixels are compared at this size at most
POOL = 8          # mid-level feature maps are average-pooled to this size at most


def retention(images: np.ndarray, inits: np.ndarray) -> float:
    """Share of images (row i: facet i) whose nearest init by cosine, all centred on the inits' mean,
    is init i. NaN below two facets."""
    k = len(inits)
    if k < 2:
        return float("nan")
    own, _ = _centred(images, inits)
    return float(np.mean(own.argmax(1) == np.arange(k)))


def spread(images: np.ndarray, inits: np.ndarray) -> float:
    """Mean pairwise Euclidean distance of the images / that of the inits. NaN below two facets."""
    if len(inits) < 2:
        return float("nan")
    base = _mean_pairwise(_rows(inits))
    return _mean_pairwise(_rows(images)) / base if base > 1e-12 else float("nan")


def clipped_share(images: np.ndarray) -> float:
    """Share of pixel values at the ends of [0, 1] (0 or 255 in an 8-bit PNG)."""
    images = np.asarray(images)
    return float(np.mean((images <= 0.5 / 255) | (images >= 1 - 0.5 / 255)))


def _rows(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def _centred(images: np.ndarray, inits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of each image (rows) to each init (columns), centred on the inits' mean."""
    a, b = _rows(images), _rows(inits)
    mean = b.mean(0)
    a, b = a - mean, b - mean
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T, mean


def _mean_pairwise(rows: np.ndarray) -> float:
    n = len(rows)
    squared = (rows ** 2).sum(1)
    d = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * rows @ rows.T, 0))
    return float(d.sum() / (n * (n - 1)))


def pixel_vectors(pixels: torch.Tensor) -> np.ndarray:
    """Images N x C x H x W in [0, 1] as compared in pixels: area-downsampled to at most 56 px."""
    if pixels.shape[-1] > PIXELS_MAX:
        pixels = F.adaptive_avg_pool2d(pixels, PIXELS_MAX)
    return pixels.reshape(len(pixels), -1).double().numpy()


@torch.no_grad()
def feature_vectors(backbone, node: str, pixels: torch.Tensor, device="cpu") -> np.ndarray:
    """Images as compared in a second network's mid-level features: its `node`, average-pooled to
    at most 8 x 8, images resized to its input and given its channels."""
    net = backbone.extractor((node,))
    channels, size = backbone.input_shape[0], tuple(backbone.input_shape[1:])
    out = []
    for start in range(0, len(pixels), 256):
        batch = pixels[start:start + 256].to(device)
        if batch.shape[1] != channels:
            batch = batch.mean(1, keepdim=True).expand(-1, channels, -1, -1)
        if tuple(batch.shape[-2:]) != size:
            batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
        found = net(backbone.preprocess(batch))[node].float()
        if found.dim() == 4 and found.shape[-1] > POOL:
            found = F.adaptive_avg_pool2d(found, POOL)
        out.append(found.reshape(len(found), -1).cpu())
    return torch.cat(out).double().numpy()


# the second network's mid-level layer facets are compared in, by the explained model's name
FEATURE_NODES = {"demo": "conv2", "efficientnet-lite0": "_blocks.10.add", "efficientnet-lite1": "_blocks.10.add",
                 "efficientnet-lite2": "_blocks.10.add"}
