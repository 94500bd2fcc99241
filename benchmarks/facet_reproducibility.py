"""How far the demo's MFV facets move between CPU kernel paths, against how far they move between seeds.

    python benchmarks/facet_reproducibility.py find --out /tmp/avx2-s0.npz
    ATEN_CPU_CAPABILITY=default python benchmarks/facet_reproducibility.py find --out /tmp/scalar-s0.npz
    python benchmarks/facet_reproducibility.py find --seed 1 --out /tmp/avx2-s1.npz
    python benchmarks/facet_reproducibility.py compare /tmp/avx2-s0.npz /tmp/scalar-s0.npz /tmp/avx2-s1.npz

`find` scans the demo's training images as a build does (top 300 per hidden unit, every image of its
class per class neuron) and finds the facets of a sample of each layer's live neurons with the
build's FacetFinder; it saves each neuron's exemplar ids and facet labels. `compare` prints, per
layer, the share of neurons with the same exemplar set and the mean adjusted Rand index of the facet
labels of the first file against each of the others (on neurons whose exemplar sets agree).
About 3 minutes a `find` on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.pipeline.atlas import AtlasBuilder, BuildConfig  # noqa: E402
from precompute.pipeline.chunks import ChunkBuilder  # noqa: E402

PER_LAYER = 32      # hidden neurons sampled per layer (evenly over the live ones)
CLASSES = (0, 5)    # class neurons (each a Barnes-Hut t-SNE of 6,000 images)


def find(seed: int, out: str) -> None:
    import tempfile
    builder = AtlasBuilder(BuildConfig(store=tempfile.mkdtemp(), device="cpu", seed=seed))   # nothing is written to it
    layers = list(builder.units)
    chunks = ChunkBuilder(builder.plan, builder.store, builder.scan(layers, builder.load_data()))
    saved = {}
    for layer in layers:
        units = list(CLASSES) if builder.spec.layers[layer].role == "logits" else builder.units[layer]
        _, todo = chunks.facet_inputs(layer, units)
        todo = todo[:: max(1, len(todo) // PER_LAYER)][:PER_LAYER]
        found = chunks.finder.fit_many([codes for *_, codes in todo], chunks.workers)
        for (row, ids, _, _), facets in zip(todo, found):
            saved[f"{layer}/{row['unit']}/ids"] = ids
            saved[f"{layer}/{row['unit']}/labels"] = facets.labels
        print(f"{layer}: {len(todo)} neurons", flush=True)
    np.savez_compressed(out, kernels=torch.backends.cpu.get_cpu_capability(), seed=seed,
                        aten=os.environ.get("ATEN_CPU_CAPABILITY", ""), **saved)


def compare(first: str, others: list[str]) -> None:
    from sklearn.metrics import adjusted_rand_score
    a = np.load(first)
    for other in others:
        b = np.load(other)
        print(f"\n{first} ({a['kernels']}, seed {a['seed']}) against {other} ({b['kernels']}, seed {b['seed']})")
        print("| layer | neurons | same exemplar set | mean ARI of facets | ARI = 1 |")
        print("|---|---|---|---|---|")
        by_layer: dict[str, list[str]] = {}
        for key in a.files:
            if key.endswith("/ids"):
                by_layer.setdefault(key.split("/")[0], []).append(key[:-4])
        for layer, neurons in by_layer.items():
            same = [n for n in neurons if f"{n}/ids" in b.files and np.array_equal(a[f"{n}/ids"], b[f"{n}/ids"])]
            ari = [adjusted_rand_score(a[f"{n}/labels"], b[f"{n}/labels"]) for n in same]
            print(f"| {layer} | {len(neurons)} | {len(same)} | {np.mean(ari):.2f} | {sum(x > 0.9999 for x in ari)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("find", help="find and save a sample of the demo's facets")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True, help="an .npz file")
    c = sub.add_parser("compare", help="compare saved facets")
    c.add_argument("files", nargs="+", help="the reference .npz, then the ones to compare with it")
    args = parser.parse_args()
    if args.command == "find":
        find(args.seed, args.out)
    else:
        compare(args.files[0], args.files[1:])


if __name__ == "__main__":
    main()
