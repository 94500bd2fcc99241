"""One pass over the images: top-N exemplars of every unit of the requested layers, and codes.

For each layer the pass keeps, for all units at once, the N largest activations seen so far
(values and image indices), merged batch by batch on the device, so memory stays
O(units x N) whatever the dataset size. A conv channel is ranked by its most active spatial
position. For the logits layer it also keeps each image's logit for its own class (class
neurons use all training images of their class, as the paper does).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import ImageSet
from .models import ModelSpec


@dataclass
class LayerScan:
    top_values: torch.Tensor     # units x N, descending
    top_indices: torch.Tensor    # units x N image indices
    nonfinite: torch.Tensor      # units, bool: saw NaN/Inf


@dataclass
class ScanResult:
    layers: dict[str, LayerScan]
    codes: torch.Tensor          # images x D embedding codes (post-ReLU fc7)
    own_class_logit: torch.Tensor | None   # images: logit of the image's own label


def _unit_scores(output: torch.Tensor) -> torch.Tensor:
    """B x units: conv channels at their most active position, fc units as they are."""
    return output.flatten(2).amax(2) if output.dim() == 4 else output


def _merge_top(state, scores: torch.Tensor, indices: torch.Tensor, top_n: int):
    values = scores.T                                 # units x B
    idx = indices.expand(values.shape[0], -1)
    if state is not None:
        values = torch.cat([state[0], values], 1)
        idx = torch.cat([state[1], idx], 1)
    keep = min(top_n, values.shape[1])
    best, pos = values.topk(keep, dim=1)
    return best, idx.gather(1, pos)


@torch.no_grad()
def scan(spec: ModelSpec, images: ImageSet, layers: list[str], top_n: int,
         device: torch.device, batch_size: int = 1000, progress=None) -> ScanResult:
    """Run the images through the network once and collect exemplars and codes."""
    logits = spec.logits_layer
    nodes = tuple(dict.fromkeys([*layers, spec.embedding_node, logits]))
    net = spec.extractor(nodes)
    tops = {name: None for name in layers}
    bad = {name: torch.zeros(spec.layers[name].n_units, dtype=torch.bool, device=device) for name in layers}
    codes, own_logit = [], []
    n = len(images)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        x = spec.preprocess(images.pixels(idx).to(device))
        out = net(x)
        for name in layers:
            scores = _unit_scores(out[name].float())
            bad[name] |= ~torch.isfinite(scores).all(0)
            scores = torch.nan_to_num(scores, nan=-torch.inf, posinf=-torch.inf)
            tops[name] = _merge_top(tops[name], scores, idx.to(device)[None, :], top_n)
        codes.append(out[spec.embedding_node].float().flatten(1).cpu())
        labels = images.labels[idx].to(device)
        own_logit.append(out[logits].float().gather(1, labels[:, None].clamp(max=out[logits].shape[1] - 1))[:, 0].cpu())
        if progress:
            progress(int(idx[-1]) + 1, n)
    return ScanResult(
        layers={name: LayerScan(tops[name][0].cpu(), tops[name][1].cpu(), bad[name].cpu()) for name in layers},
        codes=torch.cat(codes),
        own_class_logit=torch.cat(own_logit),
    )
