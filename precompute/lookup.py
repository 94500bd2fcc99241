"""Reverse lookup: which neurons, and which of their facets, does an image drive?

For an image (a file, or an image of the store's dataset by id) and a store's MFV run:
- per layer, the units the image drives most, ranked by how strong that is *for the unit*: the
  image's activation as a percentile of the unit's exemplar activations (its top N training images;
  a class neuron's: every image of its class), ties broken by the activation relative to the unit's
  strongest exemplar. A raw value would favour units with large activations, not units this image
  is typical of;
- for each of those units, the facet the image belongs to: the facet whose mean embedding code
  (facets.mean_code) is nearest the image's own code, in the space the exemplars were clustered in;
- the same for the class neuron of the model's top-1 prediction.
Conv units also say where in the image they fired, with the receptive-field crop around it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import torch

from .pipeline.runtime import images_of_run, resolve_device, spec_of_run
from .core.errors import AtlasError, choose
from .core.store import READ_ONLY_CONFIG, ensure_database
from .core.uploads import decode_image
from .engine.activations import _unit_peaks
from .engine.imagefolder import to_pixels
from .engine.images import thumbnail, to_png
from .core.fields import ReceptiveField
from .engine.receptive import crop

FILE_LIMITS = {"max_bytes": 64 << 20, "max_pixels": 10 ** 8}   # local files; uploads: core.uploads' defaults


@dataclass
class Hit:
    """One unit as the image drives it."""
    layer: str
    unit: int
    label: str
    activation: float
    percentile: float                    # share of the unit's exemplar activations at or below this one
    of_strongest: float                  # the activation relative to the unit's strongest exemplar's
    facet: int | None                    # the nearest facet (None: the neuron has no facets)
    facet_distance: float | None
    position: tuple[int, int] | None     # conv units: the output position where the unit fired most
    crop_png: bytes | None = field(default=None, repr=False)   # the receptive field around it


@dataclass
class Result:
    name: str
    predicted: int                       # the model's top-1 class
    predicted_label: str
    probability: float
    layers: dict[str, list[Hit]]         # per layer of the run, the units driven most, strongest first
    exemplar_level: dict[str, int]       # per layer, how many units it drives as strongly as an exemplar of theirs
    class_neuron: Hit | None             # the top-1 class's logit unit (None: the run lacks the logits layer)
    code: np.ndarray = field(repr=False, default=None)   # the image's embedding (fc7) code
    input_png: bytes = field(repr=False, default=None)  # the image as the network saw it

    def as_json(self) -> dict:
        found = asdict(self)
        found.pop("code")
        found.pop("input_png")
        for hit in [*(h for hits in found["layers"].values() for h in hits), found["class_neuron"]]:
            if hit:
                hit.pop("crop_png")
        return found


@dataclass
class _Unit:
    """What a lookup compares an image with, per unit of the run."""
    sorted_acts: torch.Tensor            # units x N exemplar activations, ascending, padded with +inf
    counts: torch.Tensor                 # units: exemplars of each (0: none, e.g. a dead unit)
    strongest: torch.Tensor              # units: the largest exemplar activation
    labels: dict[int, str]
    mean_codes: dict[int, np.ndarray]    # unit -> facets x code dims


class Lookup:
    """A store's MFV run, its model and what its neurons are compared by; call it with images."""

    def __init__(self, store: str | Path, run_id: str | None = None, device: str = "cpu", connect=None):
        """`connect()`: a DuckDB connection to the store's database to read it with, closed after use
        (default: a new one, set up as every reader's; the dashboard passes a cursor of its own)."""
        database = ensure_database(store)
        if connect is None and not database.exists():
            raise AtlasError(f"no atlas store at {str(store)!r} (no atlas.duckdb or Parquet parts)")
        self.connect = connect or (lambda: duckdb.connect(str(database), read_only=True, config=dict(READ_ONLY_CONFIG)))
        con = self.connect()
        try:
            self.run = _pick_run(con, run_id)
            self.spec = spec_of_run(self.run).to(resolve_device(device))
            self.device = next(self.spec.module.parameters()).device
            self.layers, self.fields = _layers(con, self.run["run_id"])
            self.units = {layer: _units(con, self.run["run_id"], layer, self.spec.layers[layer].n_units)
                          for layer in self.layers}
        finally:
            con.close()
        self.class_names = self.spec.class_names
        self._images = None

    def exemplar_sets(self, min_units: int = 1) -> list[tuple[str, int, list[int], list[int]]]:
        """(layer, unit, exemplar image ids, their facets) of every neuron with facets, in layers of at
        least `min_units` units."""
        wanted = [layer for layer in self.layers if self.spec.layers[layer].n_units >= min_units]
        if not wanted:
            return []
        with self.connect() as con:
            return [tuple(row) for row in con.execute(f"""
                SELECT layer, unit, list(image_id ORDER BY image_id), list(facet ORDER BY image_id)
                FROM exemplars WHERE run_id = ? AND layer IN ({','.join('?' * len(wanted))})
                GROUP BY layer, unit ORDER BY layer, unit""", [self.run["run_id"], *wanted]).fetchall()]

    # ---- images ---------------------------------------------------------------------------
    def pixels_of_bytes(self, data: bytes, name: str = "the upload", **limits) -> torch.Tensor:
        """An image file's bytes, decoded safely (ImageRejected otherwise) and sized as the store's images
        were: an image folder's way (precompute.engine.imagefolder), or, for the demo's Fashion-MNIST,
        resized to 28 x 28 whole (so a dataset image saved as a file looks up as itself)."""
        channels, size = self.spec.input_shape[0], self.spec.input_shape[1]
        folder = json.loads(self.run["config_json"])["model"] != "demo"
        return to_pixels(decode_image(data, name, **limits), size, channels, margin=folder)

    def pixels_of_file(self, path: str | Path) -> torch.Tensor:
        """A local image file: the user's own, so a camera's photo is fine (limits of FILE_LIMITS)."""
        path = Path(path)
        if not path.is_file():
            raise AtlasError(f"no image file {str(path)!r}")
        with open(path, "rb") as file:
            data = file.read(FILE_LIMITS["max_bytes"] + 1)
        return self.pixels_of_bytes(data, repr(str(path)), **FILE_LIMITS)

    def pixels_of_id(self, image_id: int) -> torch.Tensor:
        """An image of the dataset the store was built from, by its image_id."""
        images = self._dataset()
        if not 0 <= image_id < len(images):
            raise AtlasError(f"image id {image_id} is out of range: the store's dataset has ids 0..{len(images) - 1}")
        return images.pixels([image_id])[0]

    def _dataset(self):
        if self._images is None:
            self._images = images_of_run(self.run, self.spec)
        return self._images

    # ---- the lookup -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, names: list[str], top: int = 10) -> list[Result]:
        """Look up a batch of B x C x H x W images in [0, 1] (`names` label the results)."""
        logits_layer, embedding = self.spec.logits_layer, self.spec.embedding_node
        net = self.spec.extractor(tuple(dict.fromkeys([*self.layers, embedding, logits_layer])))
        out = net(self.spec.preprocess(pixels.to(self.device)))
        codes = out[embedding].float().flatten(1).cpu().numpy()
        probabilities = out[logits_layer].float().softmax(1).cpu()
        per_layer = {layer: [p.cpu() for p in _unit_peaks(out[layer].float())] for layer in self.layers}
        results = []
        for i, name in enumerate(names):
            predicted = int(probabilities[i].argmax())
            ranked, driven = {}, {}
            for layer, (acts, where) in per_layer.items():
                share = self.percentiles(layer, acts[i])
                ranked[layer] = self._ranked(layer, share, acts[i], where[i], pixels[i], codes[i], top)
                driven[layer] = int((share > 0).sum())
            class_neuron = None
            if logits_layer in per_layer:
                acts, where = per_layer[logits_layer]
                class_neuron = self._hit(logits_layer, predicted, acts[i], where[i], pixels[i], codes[i])
            label = self.class_names[predicted] if predicted < len(self.class_names) else str(predicted)
            results.append(Result(name, predicted, label, float(probabilities[i, predicted]), ranked, driven, class_neuron,
                                  codes[i], to_png(pixels[i])))
        return results

    def percentiles(self, layer: str, acts: torch.Tensor) -> torch.Tensor:
        """Each unit's activation as a share of its exemplar activations at or below it (NaN: no exemplars)."""
        units = self.units[layer]
        below = torch.searchsorted(units.sorted_acts, acts.double()[:, None], right=True)[:, 0]
        return torch.where(units.counts > 0, below / units.counts.clamp(min=1), torch.nan)

    def relative(self, layer: str, acts: torch.Tensor) -> torch.Tensor:
        """Each unit's activation relative to its strongest exemplar's."""
        return acts.double() / self.units[layer].strongest.abs().clamp(min=1e-12)

    def _ranked(self, layer: str, share, acts, where, pixels, code, top: int) -> list[Hit]:
        relative = self.relative(layer, acts)
        known = torch.nonzero(~share.isnan())[:, 0].numpy()
        order = known[np.lexsort((-relative.numpy()[known], -share.numpy()[known]))][:top]
        return [self._hit(layer, int(unit), acts, where, pixels, code, share) for unit in order]

    def _hit(self, layer: str, unit: int, acts, where, pixels, code, share=None) -> Hit:
        share = self.percentiles(layer, acts) if share is None else share
        facet, distance = self.nearest_facet(layer, unit, code)
        position, crop_png = None, None
        if self.spec.layers[layer].kind != "fc":
            position = divmod(int(where[unit]), self.spec.layers[layer].shape[2])
            field = self.fields.get(layer)
            if field is not None:
                crop_png = to_png(thumbnail(crop(pixels, field, *position), 112))
        return Hit(layer, unit, self.units[layer].labels.get(unit, f"{layer}/{unit}"), float(acts[unit]),
                   float(share[unit]), float(self.relative(layer, acts)[unit]), facet, distance, position, crop_png)

    def nearest_facet(self, layer: str, unit: int, code: np.ndarray) -> tuple[int | None, float | None]:
        means = self.units[layer].mean_codes.get(unit)
        if means is None:
            return None, None
        distances = np.linalg.norm(means - code[None], axis=1)
        return int(distances.argmin()), float(distances.min())


def _pick_run(con, run_id: str | None) -> dict:
    runs = con.execute("""SELECT r.*, count(n.unit) AS neurons FROM runs r LEFT JOIN neurons n USING (run_id)
                          WHERE r.method = 'mfv' GROUP BY ALL ORDER BY neurons DESC, r.created_at""").fetchall()
    names = [d[0] for d in con.description]
    runs = [dict(zip(names, row)) for row in runs]
    if not runs:
        raise AtlasError("the store has no MFV run: a lookup compares images with MFV exemplars and facets")
    if run_id is None:
        return runs[0]
    choose("run", run_id, [run["run_id"] for run in runs])
    return next(run for run in runs if run["run_id"] == run_id)


def _layers(con, run_id: str) -> tuple[list[str], dict[str, ReceptiveField]]:
    rows = con.execute("""SELECT layer, rf_size, rf_stride, rf_offset, rf_method FROM layers
                          WHERE run_id = ? ORDER BY depth""", [run_id]).fetchall()
    fields = {layer: ReceptiveField.from_row(*rf) for layer, *rf in rows}
    return [row[0] for row in rows], {layer: field for layer, field in fields.items() if field}


def _units(con, run_id: str, layer: str, n_units: int) -> _Unit:
    rows = con.execute("""SELECT unit, list(activation ORDER BY activation) FROM exemplars
                          WHERE run_id = ? AND layer = ? GROUP BY unit""", [run_id, layer]).fetchall()
    width = max((len(acts) for _, acts in rows), default=1)
    sorted_acts = torch.full((n_units, width), torch.inf, dtype=torch.float64)
    counts = torch.zeros(n_units, dtype=torch.long)
    for unit, acts in rows:
        sorted_acts[unit, :len(acts)] = torch.tensor(acts, dtype=torch.float64)
        counts[unit] = len(acts)
    strongest = torch.where(counts > 0, sorted_acts.gather(1, (counts - 1).clamp(min=0)[:, None])[:, 0], torch.nan)
    labels = dict(con.execute("SELECT unit, label FROM neurons WHERE run_id = ? AND layer = ?", [run_id, layer]).fetchall())
    facets = con.execute("""SELECT unit, list(mean_code ORDER BY facet) FROM facets
                            WHERE run_id = ? AND layer = ? AND mean_code IS NOT NULL GROUP BY unit""",
                         [run_id, layer]).fetchall()
    return _Unit(sorted_acts, counts, strongest, labels,
                 {unit: np.asarray(codes, dtype=np.float32) for unit, codes in facets})


# ---- how well it works: exemplars looked up ------------------------------------------------------
def check_exemplars(lookup: Lookup, n: int = 200, top: int = 10, seed: int = 0, batch: int = 50,
                    progress=None) -> dict:
    """Look up `n` exemplar images (a neuron drawn uniformly among those with facets in layers of more
    than `top` units, then one of its exemplars uniformly) and measure how often the exemplar's own
    neuron is among its layer's `top` units, and how often its stored facet is the nearest (chance: 1/k).

    Also the ceiling of the first: an image that is an exemplar of m units of the layer (its activation
    at or above each one's weakest exemplar) was drawn through any of them alike, so no ranking that
    sees only the image puts the drawn one in the top `top` more often than min(1, top / m)."""
    neurons = lookup.exemplar_sets(min_units=top + 1)
    if not neurons:
        raise AtlasError(f"the run has no neurons with facets in a layer of more than {top} units to check")
    rng = np.random.default_rng(seed)
    picks = []
    for i in rng.integers(0, len(neurons), n):
        layer, unit, ids, facets = neurons[i]
        j = int(rng.integers(0, len(ids)))
        picks.append((layer, unit, int(ids[j]), int(facets[j]), len(set(facets))))
    by_layer: dict[str, list] = {}   # layer -> rows of (own in top, ceiling, same facet, chance)
    for start in range(0, n, batch):
        chunk = picks[start:start + batch]
        pixels = torch.stack([lookup.pixels_of_id(image_id) for _, _, image_id, _, _ in chunk])
        for (layer, unit, _, facet, k), result in zip(chunk, lookup(pixels, [str(p[2]) for p in chunk], top)):
            driven = int(result.exemplar_level[layer])
            row = [any(hit.unit == unit for hit in result.layers[layer]), min(1.0, top / max(driven, 1)),
                   lookup.nearest_facet(layer, unit, result.code)[0] == facet, 1 / k]
            by_layer.setdefault(layer, []).append(row)
        if progress:
            progress("look up exemplars", min(start + batch, n), n)
    by_layer = {layer: np.array(rows, dtype=float) for layer, rows in by_layer.items()}
    every = np.vstack(list(by_layer.values()))
    summary = lambda rows: {"images": len(rows), "own_neuron_in_top": rows[:, 0].mean(), "ceiling": rows[:, 1].mean(),
                            "stored_facet_nearest": rows[:, 2].mean(), "chance_facet": rows[:, 3].mean()}
    return {**summary(every), "top": top, "seed": seed, "run_id": lookup.run["run_id"],
            "layers": {layer: summary(by_layer[layer]) for layer in lookup.layers if layer in by_layer}}


def describe(result: Result, show: int = 3) -> str:
    """A result as text: the prediction, then per layer the `show` units driven most."""
    lines = [f"{result.name}: predicted {result.predicted_label!r} (p = {result.probability:.2f})"]
    if result.class_neuron:
        lines.append(_line("class neuron", result.class_neuron))
    for layer, hits in result.layers.items():
        lines += [_line(layer if i == 0 else "", hit) for i, hit in enumerate(hits[:show])]
    return "\n".join(lines)


def describe_check(found: dict) -> str:
    """check_exemplars's numbers as a table, all layers and each."""
    lines = [f"{found['images']} exemplar images of run {found['run_id']} (seed {found['seed']}), looked up:",
             f"  {'layer':<8} {'images':>6}  own neuron in top {found['top']:<3} (ceiling)   stored facet nearest (chance 1/k)"]
    for name, row in [("all", found), *found["layers"].items()]:
        lines.append(f"  {name:<8} {row['images']:>6}  {row['own_neuron_in_top']:>10.1%} ({row['ceiling']:>6.1%})"
                     f"   {row['stored_facet_nearest']:>12.1%} ({row['chance_facet']:.1%})")
    return "\n".join(lines)


def _line(title: str, hit: Hit) -> str:
    facet = f"facet {hit.facet} (distance {hit.facet_distance:.1f})" if hit.facet is not None else "no facets"
    where = f" at {hit.position}" if hit.position else ""
    return (f"  {title:<16} {hit.label:<22} {hit.percentile:>6.1%} of its exemplars at or below, "
            f"{hit.of_strongest:.0%} of its strongest (act {hit.activation:.2f}{where}) · {facet}")


def as_json(results: list[Result]) -> str:
    return json.dumps([result.as_json() for result in results], indent=2)
