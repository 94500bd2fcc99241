"""Building one chunk: the neurons of some units of one layer, for one run, written to the store.

A chunk is the unit of work of every executor (precompute.pipeline.executors): MFV finds each neuron's
facets in its exemplars' codes and synthesizes one image per facet from the facet's mean image;
the baselines synthesize from noise. Everything a chunk reads is passed in: the plan, the store,
and for MFV the scan's result (`MfvInputs`), computed once per build.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch

from ..core.store import SCHEMAS, Store
from ..engine.activations import Codes, ScanResult
from ..engine.facets import FacetFinder, diversity_null, facet_diversity
from ..engine.images import thumbnail, to_png
from ..engine.models import ModelSpec
from ..engine.receptive import crop
from ..engine.synthesis import facet_directions, measure, noise_init, render
from .plan import Plan
from .runtime import Timings, image_key, run_precision


class Exemplars(NamedTuple):
    """The images a neuron is clustered on, or why it has none."""
    ids: np.ndarray               # image ids
    activations: np.ndarray
    positions: np.ndarray | None  # conv and token layers: flat H x W position of the unit's peak in each
    status: str                   # "ok", "dead" or "failed"
    reason: str | None = None


@dataclass
class MfvInputs:
    """What MFV chunks read from the build's one pass over the images."""
    images: object                 # the dataset (ImageSet or FolderSet)
    scan: ScanResult
    codes: Codes                   # embedding codes of (at least) every exemplar
    class_of_label: torch.Tensor   # dataset label -> model class (-1: none)
    class_names: list[str]         # the model's, or the folder's when folder order is class order

    def exemplar_set(self, spec: ModelSpec, layer: str, unit: int) -> Exemplars:
        """The images a neuron is clustered on."""
        info, scan_result = spec.layers[layer], self.scan.layers[layer]
        none = np.empty(0, np.int64), np.empty(0), None
        if bool(scan_result.nonfinite[unit]):
            return Exemplars(*none, "failed", "NaN/Inf activation on training images")
        if info.role == "logits" and bool((self.class_of_label == unit).any()):
            mine = (self.class_of_label[self.images.labels] == unit) & self.scan.readable
            ids = torch.nonzero(mine)[:, 0]
            return Exemplars(ids.numpy(), self.scan.own_class_logit[ids].double().numpy(), None, "ok")
        values, ids = scan_result.top_values[unit], scan_result.top_indices[unit]
        positions = scan_result.top_positions[unit] if info.kind != "fc" else None
        # a logit has no "off": its N highest-scoring images; a unit that fires on fewer than N images
        # clusters only those images
        keep = torch.ones_like(values, dtype=torch.bool) if info.role == "logits" else values > 0
        if not bool(keep.any()):
            return Exemplars(*none, "dead", f"never fires on the {int(self.scan.readable.sum())} training images")
        return Exemplars(ids[keep].numpy(), values[keep].double().numpy(),
                         None if positions is None else positions[keep].numpy(), "ok")


class ChunkBuilder:
    """Builds chunks of one plan into one store (`build`); MFV chunks need the scan's `inputs`."""

    def __init__(self, plan: Plan, store: Store, inputs: MfvInputs | None = None):
        self.plan, self.store, self.inputs = plan, store, inputs
        self.spec, self.config, self.device = plan.spec, plan.config, plan.device
        self.batch_size, self.workers, self.dataset = plan.batch_size, plan.workers, plan.dataset
        if inputs is not None:
            self.spec.class_names = inputs.class_names
        self.thumbnailed = store.thumbnail_ids(plan.dataset) if inputs is not None else set()   # ids in the store
        self.finder = FacetFinder(self.config.k, self.config.m, self.config.seed, min_size=self.config.facet_minimum)
        # (layer, units) -> (neuron rows, facet inputs, facets being found) of chunks started ahead
        self.prefetched: dict[tuple, tuple[list[dict], list[tuple], Callable[[], list]]] = {}
        self.timings = Timings()
        self.precision = plan.precision   # the chunk being built's run's (build)

    def build(self, method: str, run_id: str, layer: str, units: list[int],
              advance: Callable[[float], None] | None = None) -> None:
        """Build and write one chunk; `advance(share)` is told the share of its synthesis done."""
        name = f"{run_id}__{layer}__{units[0]:05d}"
        # the run's recorded precision, which a run resumed on another machine keeps (its row is written
        # before its first chunk, by whichever executor)
        self.precision = run_precision(self.store, run_id) or self.plan.precision
        if method == "mfv":
            neurons, facets, exemplars, thumbnails = self._mfv_chunk(layer, units, advance)
            exemplars["run_id"] = [run_id] * len(exemplars["unit"])
            self.store.write("thumbnails", name, thumbnails)
            self.store.write("exemplars", name, exemplars)
        elif method == "diversity":
            neurons, facets = self._diversity_chunk(layer, units, advance)
        else:
            neurons, facets = self._baseline_chunk(method, layer, units, advance)
        for row in neurons + facets:
            row["run_id"] = run_id
        self.store.write("facets", name, facets)
        self.store.write("neurons", name, neurons)   # last: marks the chunk complete

    # ---- MFV ------------------------------------------------------------------------------
    def facet_inputs(self, layer: str, units: list[int]) -> tuple[list[dict], list[tuple]]:
        """Each unit's neuron row, and (row, exemplars, codes) of the units that get facets."""
        neurons, todo = [], []
        for unit in units:
            exemplars = self.inputs.exemplar_set(self.spec, layer, unit)
            row = _neuron_row(self.spec, layer, unit, exemplars.status, exemplars.reason, len(exemplars.ids))
            neurons.append(row)
            if exemplars.status != "ok":
                continue
            codes = self.inputs.codes.take(exemplars.ids).numpy()
            if not np.isfinite(codes).all():   # e.g. a NaN unit upstream poisons the embedding layer
                row.update(status="failed", reason="NaN/Inf in the embedding codes of its exemplars")
                continue
            todo.append((row, exemplars, codes))
        return neurons, todo

    def prefetch_facets(self, layers: dict[str, list[int]]) -> None:
        """Start finding the facets of every MFV chunk in the worker processes now: they then run
        while this process synthesizes earlier chunks, on the cycles synthesis leaves idle."""
        if self.workers < 2:
            return
        for layer, units in chunks(layers, self.config.chunk_units):
            neurons, todo = self.facet_inputs(layer, units)
            pending = self.finder.submit_many([c for *_, c in todo], self.workers)
            self.prefetched[(layer, tuple(units))] = (neurons, todo, pending)

    def _mfv_chunk(self, layer: str, units: list[int], advance=None):
        jobs, exemplars, thumbnails = [], _columns("exemplars"), []
        prefetched = self.prefetched.pop((layer, tuple(units)), None)
        with self.timings.timed("facets"):
            if prefetched:
                neurons, todo, pending = prefetched
                found_all = pending()
            else:
                neurons, todo = self.facet_inputs(layer, units)
                found_all = self.finder.fit_many([codes for *_, codes in todo], self.workers)
        mean_codes = {}
        for (row, chosen, codes), found in zip(todo, found_all):
            unit, ids = row["unit"], chosen.ids
            row.update(k=found.k, max_activation=float(chosen.activations.max()),
                       facet_diversity=_none_if_nan(facet_diversity(codes, found.labels)),
                       diversity_null=_none_if_nan(diversity_null(found.labels)))
            row.update(_top_class(self.inputs.images, ids))
            shown = self._shown(found)
            crops = self._crops(layer, chosen, shown)
            self._add_exemplars(exemplars, layer, unit, chosen, found, crops)
            thumbnails += self._new_thumbnails(ids[shown], crops.pixels)
            means = torch.tensor(np.stack([codes[near].mean(0) for near in found.nearest]), dtype=torch.float32)
            pulls = zip(*facet_directions(means))   # each facet's own direction, for the facet pull
            for facet, (members, pull) in enumerate(zip(self.finder.init_members(found), pulls)):
                init = self.inputs.images.pixels(ids[members]).mean(0)
                jobs.append((unit, facet, len(found.nearest[facet]), init, row["max_activation"], pull))
                mean_codes[unit, facet] = means[facet].tolist()
        facets = self._synthesize("mfv", layer, jobs, advance)
        for row in facets:   # what a reverse lookup compares an image's code with
            row["mean_code"] = mean_codes[row["unit"], row["facet"]]
        _summarize(neurons, facets)
        return neurons, facets, exemplars, thumbnails

    def _shown(self, found) -> np.ndarray:
        """Which exemplars get a thumbnail (and a receptive-field crop): those nearest each centroid."""
        per_facet = self.config.thumbs_per_facet
        if per_facet < 0:
            return np.arange(len(found.labels))
        return np.concatenate([members[:per_facet] for members in found.nearest])

    def _new_thumbnails(self, ids: np.ndarray, pixels: torch.Tensor | None) -> list[dict]:
        """Thumbnails of the images `ids` that the store does not have yet (`pixels`: theirs, if read already)."""
        rows = []
        for i, image_id in enumerate(int(i) for i in ids):
            if image_id not in self.thumbnailed:
                self.thumbnailed.add(image_id)
                image = pixels[i] if pixels is not None else self.inputs.images.pixels([image_id])[0]
                rows.append({"dataset": self.dataset, "image_id": image_id, "png": to_png(thumbnail(image))})
        return rows

    def _crops(self, layer: str, chosen: Exemplars, shown: np.ndarray) -> _Crops:
        """Receptive-field crop thumbnails of the `shown` exemplars, around each one's peak (none for fc
        layers and those that see the whole image)."""
        field = self.plan.fields.get(layer)
        if field is None or chosen.positions is None:
            return _Crops(shown, [], None)
        width = self.spec.layers[layer].shape[2]
        pixels = self.inputs.images.pixels(chosen.ids[shown])   # read once: the thumbnails use them too
        pngs = [to_png(thumbnail(crop(image, field, *divmod(int(p), width))))
                for image, p in zip(pixels, chosen.positions[shown])]
        return _Crops(shown, pngs, pixels)

    def _add_exemplars(self, columns: dict, layer: str, unit: int, chosen: Exemplars, found, shown: _Crops) -> None:
        ids = chosen.ids
        rank = np.empty(len(ids), dtype=np.int64)
        for members in found.nearest:
            rank[members] = np.arange(len(members))
        columns["layer"] += [layer] * len(ids)
        columns["unit"] += [unit] * len(ids)
        columns["image_id"] += ids.tolist()
        columns["activation"] += chosen.activations.tolist()
        columns["pca"] += list(found.pca.astype(np.float32)) if self.config.pca_codes else [None] * len(ids)
        columns["tsne_x"] += found.tsne[:, 0].tolist()
        columns["tsne_y"] += found.tsne[:, 1].tolist()
        columns["facet"] += found.labels.tolist()
        columns["rank_in_facet"] += rank.tolist()
        columns["dist_to_centroid"] += found.dist.tolist()
        crops: list[bytes | None] = [None] * len(ids)
        for i, png in zip(shown.rows, shown.pngs):
            crops[i] = png
        columns["crop_png"] += crops
        if chosen.positions is None:
            columns["pos_y"] += [None] * len(ids)
            columns["pos_x"] += [None] * len(ids)
        else:
            y, x = np.divmod(chosen.positions, self.spec.layers[layer].shape[2])
            columns["pos_y"] += y.tolist()
            columns["pos_x"] += x.tolist()

    # ---- baselines -------------------------------------------------------------------------
    def _baseline_chunk(self, method: str, layer: str, units: list[int], advance=None):
        keys = torch.tensor([image_key(self.config.seed, method, layer, u, 0) for u in units])
        inits = noise_init(keys, self.spec.input_shape, "cpu")
        jobs = [(unit, 0, None, init) for unit, init in zip(units, inits)]
        neurons = [_neuron_row(self.spec, layer, u, "ok", None, None) | {"k": 1} for u in units]
        facets = self._synthesize(method, layer, jobs, advance)
        _summarize(neurons, facets)
        return neurons, facets

    def _diversity_chunk(self, layer: str, units: list[int], advance=None):
        """Lucid's diversity baseline: k images of each neuron from independent noise, optimized
        together (one group per unit, see synthesis.diversity_penalty); facet = image index."""
        k = self.config.k
        jobs = []
        for unit in units:
            keys = torch.tensor([image_key(self.config.seed, "diversity", layer, unit, f) for f in range(k)])
            jobs += [(unit, f, None, init) for f, init in enumerate(noise_init(keys, self.spec.input_shape, "cpu"))]
        neurons = [_neuron_row(self.spec, layer, u, "ok", None, None) | {"k": k} for u in units]
        facets = self._synthesize("diversity", layer, jobs, advance)
        _summarize(neurons, facets)
        return neurons, facets

    # ---- synthesis ---------------------------------------------------------------------------
    def _synthesize(self, method: str, layer: str, jobs: list[tuple], advance=None) -> list[dict]:
        """Render every (unit, facet, size, init) job of one layer in batches; one row per image."""
        rows = []
        schedule = self.plan.schedule(method)
        for batch in _batches(jobs, self.batch_size, whole_units=schedule.diversity > 0):
            finished = len(rows)
            def step_done(step: int, steps: int, n=len(batch)) -> None:
                if advance:
                    advance((finished + n * step / steps) / len(jobs))
            units = torch.tensor([j[0] for j in batch], device=self.device)
            keys = torch.tensor([image_key(self.config.seed, method, layer, j[0], j[1]) for j in batch],
                                device=self.device)
            init = torch.stack([j[3] for j in batch]).to(self.device)
            targets = (torch.tensor([j[4] for j in batch], dtype=torch.float32, device=self.device)
                       if schedule.until_exemplar else None)
            pull = (tuple(torch.stack(t) for t in zip(*(j[5] for j in batch)))
                    if method == "mfv" and schedule.facet_weight > 0 else None)
            with self.timings.timed("synthesis"):
                final = render(self.spec, layer, units, init, schedule, keys, step_done, self.precision,
                               targets=targets, facet_pull=pull)
                before, after = measure(self.spec, layer, units, init), measure(self.spec, layer, units, final)
            for i, (unit, facet, size, *_) in enumerate(batch):
                rows.append({
                    "layer": layer, "unit": unit, "facet": facet, "size": size,
                    "init_png": to_png(init[i]), "image_png": to_png(final[i]),
                    "act_init": float(before["act"][i]), "act_final": float(after["act"][i]),
                    "target_prob": _none_if_nan(float(after["target_prob"][i])),
                    "top1_hit": None if int(after["top1"][i]) < 0 else bool(after["top1"][i]),
                    "steps": schedule.steps})
        return rows


class _Crops(NamedTuple):
    rows: np.ndarray                 # which exemplars (positions in the neuron's exemplar set)
    pngs: list[bytes]                # their crops, in that order (empty: the layer has no receptive field)
    pixels: torch.Tensor | None      # their images, when read for the crops


def chunks(layers: dict[str, list[int]], size: int):
    """(layer, units) chunks of at most `size` units. A resumed build re-chunks what is left the same
    way, since whole chunks are done or not, so a redone chunk overwrites its own unfinished parts."""
    for layer, units in layers.items():
        for i in range(0, len(units), size):
            yield layer, units[i:i + size]


def _batches(jobs: list[tuple], size: int, whole_units: bool = False):
    """Batches of at most `size` jobs. With `whole_units`, one unit's jobs are never split (the
    diversity penalty compares the images of a unit within a batch): a unit with more jobs than
    `size` gets a batch of its own."""
    if not whole_units:
        yield from (jobs[start:start + size] for start in range(0, len(jobs), size))
        return
    batch: list[tuple] = []
    for _, unit_jobs in itertools.groupby(jobs, key=lambda job: job[0]):
        unit_jobs = list(unit_jobs)
        if batch and len(batch) + len(unit_jobs) > size:
            yield batch
            batch = []
        batch += unit_jobs
    if batch:
        yield batch


def _columns(table: str) -> dict[str, list]:
    return {name: [] for name in SCHEMAS[table].names if name != "run_id"}


def _none_if_nan(value: float):
    return None if value is None or not np.isfinite(value) else value


def _neuron_row(spec: ModelSpec, layer: str, unit: int, status: str, reason, n_exemplars) -> dict:
    return {"layer": layer, "unit": unit, "label": spec.unit_label(layer, unit), "status": status,
            "reason": reason, "n_exemplars": n_exemplars, "k": 0}


def _top_class(images, ids: np.ndarray) -> dict:
    counts = torch.bincount(images.labels[torch.as_tensor(ids)], minlength=len(images.classes))
    best = int(counts.argmax())
    return {"top_class": images.classes[best], "top_class_share": float(counts[best]) / len(ids)}


def _summarize(neurons: list[dict], facets: list[dict]) -> None:
    """Per neuron: the best activation its facets reached; NaN/Inf results fail the neuron."""
    by_unit: dict[int, list[dict]] = {}
    for row in facets:
        by_unit.setdefault(row["unit"], []).append(row)
    for neuron in neurons:
        finals = [row["act_final"] for row in by_unit.get(neuron["unit"], [])]
        if finals and not all(np.isfinite(finals)):
            neuron.update(status="failed", reason="synthesis produced a NaN/Inf activation")
        elif finals:
            neuron["best_act_final"] = max(finals)
