"""The contact sheet: EfficientNet-Lite0 class neurons x methods x parameterizations in one PNG.

    python benchmarks/contact_sheet.py            # writes docs/figures/contact_sheet.png

One row per class neuron (the photo folders of precompute.evidence.photos); for each parameterization
(pixel, fourier, maco) MFV's first facet init, its final image, and center-bias's and noise's
images, so a reader sees at a glance how far each loop moves from its init. The stores are the sweep's
(benchmarks/sweep_synthesis.py, same --work and settings), built here when missing (resumable);
it prints each method's mean "moved from init" per parameterization.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from benchmarks.sweep_synthesis import setting  # noqa: E402
from precompute.pipeline import build_atlas  # noqa: E402
from precompute.pipeline.plan import default_scale_range  # noqa: E402
from precompute.evidence.evaluate import evaluate_store  # noqa: E402
from precompute.engine.images import from_png  # noqa: E402

CELL, LABEL = 112, 18


def images_of(store: str) -> dict[tuple[str, int], dict]:
    """(method, unit) -> first image, its init, and the neuron's label and mean moved-from-init."""
    con = duckdb.connect(str(Path(store) / "atlas.duckdb"), read_only=True)
    rows = con.execute("""SELECT r.method, f.unit, n.label, f.image_png, f.init_png
                          FROM facets f JOIN runs r USING (run_id) JOIN neurons n USING (run_id, layer, unit)
                          WHERE f.facet = 0 ORDER BY f.unit""").fetchall()
    moved = dict(con.execute("""SELECT method, value FROM evaluations
                                WHERE metric = 'moved' AND unit IS NULL AND layer IS NULL""").fetchall())
    con.close()
    return {(m, u): {"label": label, "image": img, "init": init, "moved": moved.get(m)}
            for m, u, label, img, init in rows}


def tile(png: bytes) -> Image.Image:
    array = (from_png(png).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(array.squeeze() if array.shape[2] == 1 else array).resize((CELL, CELL), Image.LANCZOS)


def sheet(found: dict[str, dict], params: list[str]) -> Image.Image:
    columns = [(p, kind) for p in params for kind in ("mfv init", "mfv", "center-bias", "noise")]
    units = sorted({u for m, u in next(iter(found.values())) if m == "mfv"})
    width, height = 120 + CELL * len(columns), LABEL * 2 + CELL * len(units)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (param, kind) in enumerate(columns):
        x = 120 + c * CELL
        if kind == "mfv init":
            draw.text((x + 4, 2), param, fill="black")
        draw.text((x + 4, LABEL + 2), kind, fill="black")
        for r, unit in enumerate(units):
            entry = found[param][("mfv" if kind == "mfv init" else kind, unit)]
            canvas.paste(tile(entry["init"] if kind == "mfv init" else entry["image"]), (x, LABEL * 2 + r * CELL))
            if c == 0:
                draw.text((4, LABEL * 2 + r * CELL + CELL // 2), entry["label"][:18], fill="black")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/figures/contact_sheet.png")
    parser.add_argument("--work", default="/tmp/facet-atlas-sweep")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--transforms", default="jitter,scale,rotate")
    parser.add_argument("--scale-range", type=float, default=default_scale_range(224),
                        help="the scale transform's range (default: the build's at 224 px)")
    args = parser.parse_args()
    options = argparse.Namespace(model="efficientnet-lite0", classes=8, k=3, m=5, methods=["mfv", "center-bias", "noise"],
                                 max_images=None)
    work = Path(args.work) / options.model
    params = ["pixel", "fourier", "maco"]
    found = {}
    for param in params:
        config, heldout = setting(options, param, args.transforms, args.steps, None, args.scale_range, work)
        if not (Path(config.store) / "parts" / "scores").is_dir():
            build_atlas(config)
            evaluate_store(config.store, heldout=heldout)
        found[param] = images_of(config.store)
        moved = {m: e["moved"] for (m, _), e in found[param].items()}
        print(f"{param:8s} moved from init (mean |final - init|, pixels in [0, 1]): "
              + ", ".join(f"{m} {v:.3f}" for m, v in sorted(moved.items()) if v is not None))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet(found, params).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
