"""One pass over the images: top-N exemplars of every unit of the requested layers, and codes.

For each layer the pass keeps, for all units at once, the N largest activations seen so far
(values and image indices), merged batch by batch on the device, so that state is
O(units x N) whatever the dataset size. A conv channel is ranked by its most active spatial
position, which is kept too (where in the image the unit fired). For the logits layer it also keeps each image's logit for its own class (class
neurons use all images of their class, as the paper does).

Embedding codes (fc7) are kept for every image during the pass when they fit in
CODE_BUDGET_BYTES; otherwise `embed` computes them afterwards for just the exemplars needed,
so memory is bounded by units x N codes, not by the dataset.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import ModelSpec

CODE_BUDGET_BYTES = 1 << 30


@dataclass
class LayerScan:
    top_values: torch.Tensor     # units x N, descending
    top_indices: torch.Tensor    # units x N image indices
    nonfinite: torch.Tensor      # units, bool: saw NaN/Inf
    top_positions: torch.Tensor  # units x N: the flat H x W position where the unit fired most (-1: fc)


class Codes:
    """Embedding codes of a set of images, looked up by image index."""

    def __init__(self, ids: torch.Tensor, values: torch.Tensor):
        order = ids.argsort()
        self.ids, self.values = ids[order], values[order]

    def take(self, ids) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long)
        pos = torch.searchsorted(self.ids, ids).clamp(max=len(self.ids) - 1)
        if not bool((self.ids[pos] == ids).all()):
            raise KeyError("codes were not computed for some images")
        return self.values[pos]


@dataclass
class ScanResult:
    layers: dict[str, LayerScan]
    readable: torch.Tensor               # images, bool: decoded and seen by the pass
    own_class_logit: torch.Tensor        # images: logit of the image's own label (NaN if unread)
    codes: Codes | None                  # every image's code, when they fit the budget


def _unit_scores(output: torch.Tensor) -> torch.Tensor:
    """B x units: conv channels at their most active position, fc units as they are."""
    return _unit_peaks(output)[0]


def _unit_peaks(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B x units scores (as _unit_scores) and the flat position of each conv channel's peak (-1: fc)."""
    if output.dim() == 4:
        return output.flatten(2).max(2)
    return output, torch.full_like(output, -1, dtype=torch.long)


def _merge_top(state, scores: torch.Tensor, positions: torch.Tensor, indices: torch.Tensor, top_n: int):
    values, where = scores.T, positions.T             # units x B
    idx = indices.expand(values.shape[0], -1)
    if state is not None:
        values = torch.cat([state[0], values], 1)
        idx = torch.cat([state[1], idx], 1)
        where = torch.cat([state[2], where], 1)
    return _top(values, idx, where, top_n)


def _top(values: torch.Tensor, indices: torch.Tensor, positions: torch.Tensor, top_n: int):
    """Per row, the top_n values, their image indices and peak positions, ties to the lower image index.

    `indices` must ascend along each row among equal values (true when earlier images come first).
    A stable sort then orders by (value desc, image index asc): one total order, so the result does
    not depend on how the images were batched or split (topk leaves the order of ties open, and
    duplicate images, common in real datasets, tie exactly)."""
    best, pos = values.sort(dim=1, descending=True, stable=True)
    keep = min(top_n, values.shape[1])
    return best[:, :keep], indices.gather(1, pos[:, :keep]), positions.gather(1, pos[:, :keep])


@torch.no_grad()
def scan(spec: ModelSpec, dataset, layers: list[str], top_n: int, device: torch.device,
         batch_size: int = 256, progress=None, class_of_label: torch.Tensor | None = None) -> ScanResult:
    """Run the images through the network once and collect exemplars (and codes if they fit).

    `class_of_label[label]` is the model class of a dataset label (-1: none), for own-class logits.
    """
    logits = spec.logits_layer
    nodes = tuple(dict.fromkeys([*layers, spec.embedding_node, logits]))
    net = spec.extractor(nodes)
    n = len(dataset)
    tops = {name: None for name in layers}
    bad = {name: torch.zeros(spec.layers[name].n_units, dtype=torch.bool, device=device) for name in layers}
    readable = torch.zeros(n, dtype=torch.bool)
    own_logit = torch.full((n,), float("nan"))
    keep_codes = n * spec.embedding_dim * 4 <= CODE_BUDGET_BYTES
    code_ids, code_values = [], []
    for idx, pixels in dataset.batches(batch_size, device):
        out = net(spec.preprocess(pixels.to(device, non_blocking=True)))
        on_device = idx.to(device)[None, :]
        for name in layers:
            scores, positions = _unit_peaks(out[name].float())
            bad[name] |= ~torch.isfinite(scores).all(0)
            scores = torch.nan_to_num(scores, nan=-torch.inf, posinf=-torch.inf)
            tops[name] = _merge_top(tops[name], scores, positions, on_device, top_n)
        readable[idx] = True
        if class_of_label is not None:   # gather on the device: only one logit per image comes back
            target = class_of_label[dataset.labels[idx]]
            mine = out[logits].float().gather(1, target.clamp(min=0).to(device)[:, None])[:, 0].cpu()
            own_logit[idx] = torch.where(target >= 0, mine, torch.nan)
        if keep_codes:
            code_ids.append(idx)
            code_values.append(out[spec.embedding_node].float().flatten(1).cpu())
        if progress:
            progress(int(readable.sum()), n)
    codes = Codes(torch.cat(code_ids), torch.cat(code_values)) if keep_codes and code_ids else None
    return ScanResult(
        layers={name: LayerScan(tops[name][0].cpu(), tops[name][1].cpu(), bad[name].cpu(), tops[name][2].cpu())
                for name in layers},
        readable=readable, own_class_logit=own_logit, codes=codes)


def merge_scans(shards: list[ScanResult], top_n: int) -> ScanResult:
    """One ScanResult from the scans of consecutive image ranges, given in image order.

    Each shard was scanned as its own dataset (image indices from 0), so its indices are shifted
    by the number of images before it. A unit's top N over all images is the top N of the shards'
    top Ns (ties to the lower image index in both), so this equals one `scan` over every image.
    Codes are kept only when every shard kept them and all of them fit CODE_BUDGET_BYTES, as one
    pass would decide.
    """
    offsets = [0]
    for shard in shards[:-1]:
        offsets.append(offsets[-1] + len(shard.readable))
    layers = {}
    for name in shards[0].layers:
        parts = [shard.layers[name] for shard in shards]
        values = torch.cat([part.top_values for part in parts], 1)   # in image order, so ties stay
        indices = torch.cat([part.top_indices + offset for part, offset in zip(parts, offsets)], 1)
        positions = torch.cat([part.top_positions for part in parts], 1)
        nonfinite = torch.stack([part.nonfinite for part in parts]).any(0)
        best, ids, where = _top(values, indices, positions, top_n)
        layers[name] = LayerScan(best, ids, nonfinite, where)
    return ScanResult(layers=layers, readable=torch.cat([shard.readable for shard in shards]),
                      own_class_logit=torch.cat([shard.own_class_logit for shard in shards]),
                      codes=_merge_codes(shards, offsets))


def _merge_codes(shards: list[ScanResult], offsets: list[int]) -> Codes | None:
    if any(shard.codes is None for shard in shards):
        return None
    values = torch.cat([shard.codes.values for shard in shards])
    n_images = offsets[-1] + len(shards[-1].readable)
    if n_images * values.shape[1] * 4 > CODE_BUDGET_BYTES:
        return None
    return Codes(torch.cat([shard.codes.ids + offset for shard, offset in zip(shards, offsets)]), values)


@torch.no_grad()
def embed(spec: ModelSpec, dataset, ids: torch.Tensor, device: torch.device, batch_size: int = 256) -> Codes:
    """Embedding codes of just the images `ids` (a second, partial pass for large datasets)."""
    ids = torch.unique(torch.as_tensor(ids, dtype=torch.long))
    net = spec.extractor((spec.embedding_node,))
    values = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        out = net(spec.preprocess(dataset.pixels(chunk).to(device)))[spec.embedding_node]
        values.append(out.float().flatten(1).cpu())
    return Codes(ids, torch.cat(values))
