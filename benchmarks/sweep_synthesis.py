"""Sweep the synthesis settings and print one table row per setting: how well the images explain
their neurons (the explanation score), transfer (top-1 under the second network) and how far MFV
moved from its init. The defaults in precompute/plan.py (DEFAULT_SYNTHESIS) come from this table.

    python benchmarks/sweep_synthesis.py --model efficientnet-lite0          # 224 px, photo folders
    python benchmarks/sweep_synthesis.py --model demo                        # 28 px, Fashion-MNIST

Each setting is built into its own store under --work (resumable: rerun to continue) and evaluated
there; a cell is `param/transforms/steps/learning rate`. EfficientNet-Lite0 runs on class neurons of
the photo folders (precompute.evidence.photos: crops of photos that ship with scikit-image and scikit-learn,
with held-out crops for the trials), the demo on its fc8 and 10 fc6 units with Fashion-MNIST's test
split as held-out images. Cost: on 2 CPU cores about 60 ms per image-step at 224 px.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from precompute.pipeline import build_atlas  # noqa: E402
from precompute.pipeline.plan import ROBUST_SCALE, BuildConfig, default_scale_range  # noqa: E402
from precompute.evidence.evaluate import evaluate_store  # noqa: E402
from precompute.engine.models import imagenet_classes  # noqa: E402
from precompute.evidence.photos import PHOTOS, make_photo_folders  # noqa: E402

METRICS = ("explanation", "top1", "top1_model_b", "moved", "act_final")


def cell_name(param: str, transforms: str, steps: int, rate: float | None, scale: float = ROBUST_SCALE) -> str:
    """param-transforms-steps-rate; the scale transform's range is named when it is not Lucid's."""
    transforms = transforms.replace(",", "+")
    if scale != ROBUST_SCALE:
        transforms = transforms.replace("scale", f"scale{scale:g}")
    return f"{param}-{transforms}-{steps}-{rate or 'default'}"


def setting(args, param: str, transforms: str, steps: int, rate: float | None, scale: float,
            work: Path) -> tuple[BuildConfig, str | None]:
    common = dict(store=str(work / cell_name(param, transforms, steps, rate, scale)), methods=tuple(args.methods),
                  k=args.k, m=args.m, steps=steps, param=param, transforms=tuple(transforms.split(",")),
                  learning_rate=rate, scale_range=scale, workers=1, chunk_units=64)
    if args.model == "demo":
        return BuildConfig(model="demo", layers=("fc8", "fc6"), units=tuple(range(10)),
                           max_images=args.max_images, **common), None
    classes = list(PHOTOS)[:args.classes]
    train, heldout = make_photo_folders(work / "photos", classes=tuple(classes))
    names = imagenet_classes()
    units = tuple(names.index(c) for c in classes)
    return BuildConfig(model=args.model, data=str(train), units=units, **common), str(heldout)


def measured(store: str) -> dict[tuple[str, str], float]:
    """(method, metric) -> the run-level aggregate, plus the exemplars' explanation score."""
    con = duckdb.connect(str(Path(store) / "atlas.duckdb"), read_only=True)
    rows = con.execute(f"""SELECT method, metric, value FROM evaluations WHERE unit IS NULL AND layer IS NULL
                           AND metric IN ({",".join("?" * len(METRICS))})""", list(METRICS)).fetchall()
    con.close()
    return {(method, metric): value for method, metric, value in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet-lite0", help="efficientnet-lite0 or demo")
    parser.add_argument("--work", default="/tmp/facet-atlas-sweep", help="where the stores are built (resumable)")
    parser.add_argument("--params", default="pixel,fourier,maco")
    parser.add_argument("--transforms", default="jitter;jitter,scale,rotate", help="';'-separated transform sets")
    parser.add_argument("--steps", default="100", help="comma-separated step counts")
    parser.add_argument("--rates", default="default", help="comma-separated Adam learning rates (fourier, maco)")
    parser.add_argument("--scales", default="default",
                        help="comma-separated ranges of the scale transform, 1 +- F (default: the build's at the model's size)")
    parser.add_argument("--methods", default="mfv,center-bias", type=lambda s: s.split(","))
    parser.add_argument("--classes", type=int, default=8, help="EfficientNet-Lite0: photo classes (1..8)")
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("-m", type=int, default=5)
    parser.add_argument("--max-images", type=int, default=20000, help="demo: training images scanned")
    args = parser.parse_args()
    work = Path(args.work) / args.model
    rates = [None if r == "default" else float(r) for r in args.rates.split(",")]
    default_scale = default_scale_range(28 if args.model == "demo" else 224)
    scales = [default_scale if f == "default" else float(f) for f in args.scales.split(",")]
    grid = list(itertools.product(args.params.split(","), args.transforms.split(";"),
                                  [int(s) for s in args.steps.split(",")], rates, scales))
    header = ["setting", "method", *METRICS, "exemplars' explanation", "seconds"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    for param, transforms, steps, rate, scale in grid:
        if (param == "pixel" and rate is not None) or ("scale" not in transforms and scale != scales[0]):
            continue   # the pixel loop has its own step sizes; without the scale transform its range is moot
        if "scale" not in transforms:
            scale = ROBUST_SCALE
        config, heldout = setting(args, param, transforms, steps, rate, scale, work)
        started = time.perf_counter()
        build_atlas(config)
        evaluate_store(config.store, heldout=heldout)
        seconds = time.perf_counter() - started
        found = measured(config.store)
        for method in args.methods:
            values = [found.get((method, metric)) for metric in METRICS] + [found.get(("exemplars", "explanation"))]
            cells = ["—" if v is None else f"{v:.3f}" for v in values]
            print(f"| {cell_name(param, transforms, steps, rate, scale)} | {method} | " + " | ".join(cells) +
                  f" | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
