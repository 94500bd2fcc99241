"""One layer of an MFV run as site files: a JSON document per neuron (its Neuron page) and the layer's
rows for the Atlas index, each with its card's picture.

The documents hold the facts the dashboard's Neuron page shows (facets with their inits and nearest
exemplars, the t-SNE map, the scores, the other methods) and refer to images by their site paths.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import pandas as pd
from PIL import Image

from ..core.fields import ReceptiveField, layer_field
from ..core.pictures import crop, tile
from .files import SiteFiles, records
from .reads import StoreReader

NEAREST_SHOWN = 4          # exemplars shown under each facet (those nearest its centre that have a thumbnail)
CARD_FACETS = 10           # facet images on an Atlas card
INDEX_COLUMNS = ("unit", "label", "status", "reason", "k", "facet_diversity", "diversity_null", "best_act_final",
                 "top_class", "top_class_share", "explanation", "facet_score")
EXEMPLAR_COLUMNS = ("image_id", "activation", "x", "y", "facet", "rank", "thumb", "crop", "box")


@dataclass
class LayerCanvas:
    """How a layer's pictures are shown: conv layers by their receptive field (facets and inits cropped
    around the central position they were optimized at, exemplars around where the unit fired most, with
    the full canvas and the field's box one click away), the others as they are."""
    field: ReceptiveField | None
    middle: tuple[int, int] | None

    @classmethod
    def of(cls, layer: dict) -> "LayerCanvas":
        return cls(*layer_field(layer["rf_size"], layer["rf_stride"], layer["rf_offset"], layer["rf_method"],
                                layer["shape"]))

    def describe(self, sample_png: bytes | None) -> dict | None:
        """The field for the pages: its size, the input's size, and the box of the central position."""
        if self.field is None or sample_png is None:
            return None
        width = Image.open(io.BytesIO(sample_png)).width
        return {"size": list(self.field.size), "input": width, "box": list(self.field.box(*self.middle))}

    def cropped(self, png: bytes | None) -> bytes | None:
        """A facet or init image cut to what the central position sees (None where there is no field)."""
        if png is None or self.field is None:
            return None
        return crop(png, self.field, *self.middle)

    def box(self, y: int | None, x: int | None) -> list[int] | None:
        """The box an output position sees (an exemplar's, where its unit fired most)."""
        if self.field is None or y is None or x is None:
            return None
        return list(self.field.box(y, x))


def export_layer(reader: StoreReader, files: SiteFiles, run: dict, layer: dict, folder: str,
                 on_neuron=None) -> list[list]:
    """Write the Neuron documents of one layer of `run` under `folder` ({folder}/n/{unit}.json) and return its
    Atlas index rows (INDEX_COLUMNS + the card picture), in the Atlas's default order."""
    name, run_id = layer["layer"], run["run_id"]
    canvas = LayerCanvas.of(layer)
    parts = {"facets": reader.facets(run_id, name), "exemplars": reader.exemplars(run_id, name),
             "others": reader.other_methods(run["model_sha256"], name, run_id),
             "scores": reader.scores(run_id, name), "facet_scores": reader.facet_scores(run_id, name)}
    by_unit = {key: _by_unit(frame) for key, frame in parts.items()}
    rows = []
    for neuron in records(reader.neurons(run_id, name)):
        mine = {key: groups.get(neuron["unit"], []) for key, groups in by_unit.items()}
        files.json(f"{folder}/n/{neuron['unit']}.json", neuron_document(files, run_id, name, neuron, canvas, mine))
        rows.append([neuron[column] for column in INDEX_COLUMNS] + [card_picture(files, canvas, mine["facets"])])
        if on_neuron:
            on_neuron()
    return rows


def _by_unit(frame: pd.DataFrame) -> dict[int, list[dict]]:
    """A frame's rows (JSON-ready records) per unit, in the frame's order."""
    groups: dict[int, list[dict]] = {}
    for row in records(frame):
        groups.setdefault(row["unit"], []).append(row)
    return groups


def card_picture(files: SiteFiles, canvas: LayerCanvas, facets: list[dict]) -> str | None:
    """An Atlas card's picture: the neuron's first facets tiled as the dashboard's cards show them."""
    pngs = [canvas.cropped(f["image_png"]) or f["image_png"] for f in facets[:CARD_FACETS] if f["image_png"] is not None]
    return files.image(tile(pngs, per_row=5, cell=48)) if pngs else None


def neuron_document(files: SiteFiles, run_id: str, layer: str, neuron: dict, canvas: LayerCanvas,
                    mine: dict[str, list[dict]]) -> dict:
    facets, exemplars = mine["facets"], mine["exemplars"]
    sample = next((f["image_png"] for f in facets if f["image_png"] is not None), None)
    return {
        "run": run_id, "layer": layer, "unit": neuron["unit"],
        "neuron": {key: neuron[key] for key in ("label", "status", "reason", "n_exemplars", "k", "facet_diversity",
                                                 "diversity_null", "best_act_final", "max_activation", "top_class",
                                                 "top_class_share")},
        "field": canvas.describe(sample),
        "scores": _scores(mine["scores"]),
        "facet_scores": _scores(mine["facet_scores"]),
        "facets": [_facet(files, canvas, facet, exemplars) for facet in facets],
        "exemplars": {"columns": list(EXEMPLAR_COLUMNS), "rows": [_exemplar(files, canvas, e) for e in exemplars]},
        "others": _others(files, mine["others"]),
    }


def _facet(files: SiteFiles, canvas: LayerCanvas, facet: dict, exemplars: list[dict]) -> dict:
    """A facet: its image and init (whole, and cut to the field), its numbers, and which rows of the
    document's exemplars are the nearest its centre shown under it."""
    positions = [i for i, e in enumerate(exemplars)
                 if e["facet"] == facet["facet"] and e["thumb_png"] is not None][:NEAREST_SHOWN]
    return {
        "facet": facet["facet"], "size": facet["size"],
        "image": files.image(facet["image_png"]), "image_crop": files.image(canvas.cropped(facet["image_png"])),
        "init": files.image(facet["init_png"]), "init_crop": files.image(canvas.cropped(facet["init_png"])),
        **{key: facet[key] for key in ("act_init", "act_final", "target_prob", "top1_hit", "steps")},
        "nearest": positions,
    }


def _exemplar(files: SiteFiles, canvas: LayerCanvas, e: dict) -> list:
    """A point of the t-SNE map: rounded (the map and its tooltip need no more), with its pictures."""
    return [e["image_id"], _round(e["activation"], 4), _round(e["tsne_x"], 3), _round(e["tsne_y"], 3), e["facet"],
            e["rank_in_facet"], files.image(e["thumb_png"]), files.image(e["crop_png"]), canvas.box(e["pos_y"], e["pos_x"])]


def _round(value, digits: int):
    return None if value is None else round(value, digits)


def _scores(rows: list[dict]) -> list[dict]:
    """A neuron's score rows (explanation or facet scores): per facet, and for the neuron (facet null)."""
    return [{key: row[key] for key in ("method", "facet", "score", "trials", "backbone", "heldout")} for row in rows]


def _others(files: SiteFiles, rows: list[dict]) -> list[dict]:
    """The neuron's results from every other run (baselines, reruns), up to ten images each."""
    runs: dict[str, dict] = {}
    for row in rows:
        run = runs.setdefault(row["run_id"], {"run": row["run_id"], "method": row["method"], "images": []})
        if len(run["images"]) < 10:
            run["images"].append([files.image(row["image_png"]), row["act_final"]])
    return list(runs.values())
