"""How the diversity penalty's weight trades activation for spread, on the demo model.

    python benchmarks/diversity_weight.py                    # weights 0,1,3,5,10,30,100; about 5 min on 2 cores
    python benchmarks/diversity_weight.py --weights 0,5 --layers fc8

For each weight: k images per neuron rendered from noise together (the diversity method's
schedule), then the mean final activation, the top-1 share (fc8), and the spread of each
neuron's images (mean pairwise cosine distance of their fc7 codes). The chosen weight
(precompute.engine.synthesis.DIVERSITY_WEIGHT) is the largest that keeps most of the activation.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.pipeline.runtime import image_key  # noqa: E402
from precompute.evidence.measures import mean_pairwise_cosine_distance  # noqa: E402
from precompute.engine.models import load_model  # noqa: E402
from precompute.engine.synthesis import diversity_schedule, measure, noise_init, render  # noqa: E402

UNITS = {"fc8": range(10), "fc6": range(0, 40, 4), "conv3": range(0, 40, 4)}


def sweep_layer(spec, layer: str, units: list[int], weights: list[float], k: int, steps: int) -> list[str]:
    targets = torch.tensor([u for u in units for _ in range(k)])
    keys = torch.tensor([image_key(0, "diversity", layer, u, f) for u in units for f in range(k)])
    init = noise_init(keys, spec.input_shape, "cpu")
    embed = spec.extractor((spec.embedding_node,))
    lines = []
    for weight in weights:
        start = time.perf_counter()
        images = render(spec, layer, targets, init, diversity_schedule(spec.input_shape[1], steps, weight), keys)
        after = measure(spec, layer, targets, images)
        with torch.no_grad():
            codes = embed(spec.preprocess(images))[spec.embedding_node].flatten(1).numpy()
        spread = sum(mean_pairwise_cosine_distance(codes[i * k:(i + 1) * k]) for i in range(len(units))) / len(units)
        top1 = f"{after['top1'].float().mean():.0%}" if layer == "fc8" else "–"
        lines.append(f"| {layer} | {weight:g} | {after['act'].mean():.2f} | {top1} | {spread:.3f} | "
                     f"{time.perf_counter() - start:.0f} s |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="0,1,3,5,10,30,100")
    parser.add_argument("--layers", default="fc8,conv3")
    parser.add_argument("-k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    spec = load_model("demo")
    weights = [float(w) for w in args.weights.split(",")]
    print("| layer | weight | mean activation | top-1 | spread of a neuron's images (fc7) | time |")
    print("|---|---|---|---|---|---|")
    for layer in args.layers.split(","):
        for line in sweep_layer(spec, layer, list(UNITS[layer]), weights, args.k, args.steps):
            print(line, flush=True)


if __name__ == "__main__":
    main()
