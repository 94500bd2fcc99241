"""The demo sheet: every fc8 neuron of the committed demo store x its MFV facets, each init beside its image.

    python benchmarks/demo_sheet.py            # writes docs/figures/demo_sheet.png

One row per class neuron; per facet two cells, the facet's init (the mean of its exemplars) and
the image synthesized from it, so a reader sees whether the facets a neuron's clustering found
survive synthesis. Reads the store only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from benchmarks.contact_sheet import tile  # noqa: E402
from precompute.core.store import READ_ONLY_CONFIG, Store  # noqa: E402

CELL, GAP, LABEL, NAME = 56, 6, 16, 92


def facets_of(store: str, layer: str) -> dict[str, list[tuple[bytes, bytes]]]:
    """Neuron label -> [(init png, image png)] of its MFV facets, in unit and facet order."""
    con = duckdb.connect(str(Store(store).consolidate()), read_only=True, config=READ_ONLY_CONFIG)
    rows = con.execute("""SELECT n.label, f.init_png, f.image_png FROM facets f JOIN runs r USING (run_id)
                          JOIN neurons n USING (run_id, layer, unit)
                          WHERE r.method = 'mfv' AND f.layer = ? ORDER BY f.unit, f.facet""", [layer]).fetchall()
    found: dict[str, list] = {}
    for label, init, image in rows:
        found.setdefault(label, []).append((init, image))
    return found


def sheet(found: dict[str, list[tuple[bytes, bytes]]]) -> Image.Image:
    k = max(len(pairs) for pairs in found.values())
    pair = 2 * CELL + GAP
    canvas = Image.new("RGB", (NAME + k * pair, LABEL + CELL * len(found)), "white")
    draw = ImageDraw.Draw(canvas)
    for f in range(k):
        draw.text((NAME + f * pair + 2, 2), f"facet {f}: init | image", fill="black")
    for r, (label, pairs) in enumerate(found.items()):
        y = LABEL + r * CELL
        draw.text((4, y + CELL // 2 - 6), label[:14], fill="black")
        for f, (init, image) in enumerate(pairs):
            canvas.paste(tile(init).resize((CELL, CELL)), (NAME + f * pair, y))
            canvas.paste(tile(image).resize((CELL, CELL)), (NAME + f * pair + CELL, y))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="data/demo")
    parser.add_argument("--layer", default="fc8")
    parser.add_argument("--out", default="docs/figures/demo_sheet.png")
    args = parser.parse_args()
    found = facets_of(args.store, args.layer)
    if not found:
        raise SystemExit(f"error: no MFV facets of layer {args.layer!r} in {args.store!r}")
    sheet(found).save(args.out)
    print(f"wrote {args.out} ({len(found)} neurons)")


if __name__ == "__main__":
    main()
