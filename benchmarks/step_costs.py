"""What a synthesis step costs per image, by parameterization and by method, as a build runs it.

    python benchmarks/step_costs.py     # python -m precompute.bench includes this table

For each model, the schedule the build uses (precompute.pipeline.plan.schedule_for) with each image
parameterization under the full transforms (jitter, scale, rotate), and the paper's pixel loop with
jitter alone; MFV's loop against the diversity method's (k images of a unit optimized together, with
a style penalty). Each cell is the best of a few alternating repeats, in ms per image-step, with its
cost relative to the paper's loop (parameterizations) or to MFV's step (diversity).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.pipeline.plan import BuildConfig, schedule_for  # noqa: E402
from precompute.pipeline.runtime import default_batch_size, resolve_precision  # noqa: E402
from precompute.engine.models import load_model  # noqa: E402
from precompute.engine.synthesis import noise_init, render  # noqa: E402

CASES = {"demo": ("fc8", 20), "efficientnet-lite0": ("fc8", 6)}   # model -> (layer, steps)
SETTINGS = (("pixel", ("jitter",)), ("pixel", ("jitter", "scale", "rotate")),
            ("fourier", ("jitter", "scale", "rotate")), ("maco", ("jitter", "scale", "rotate")))
REPEATS = 3
K = 8   # images per unit for the diversity method's groups


PRECISION = resolve_precision("auto", torch.device("cpu"))   # as a build picks it here


def ms_per_image_step(spec, layer: str, method: str, param: str, transforms: tuple, steps: int, n: int) -> float:
    schedule = schedule_for(method, spec, BuildConfig(store="", param=param, transforms=transforms, steps=steps))
    units = torch.arange(n) // K % spec.layers[layer].n_units
    keys = torch.arange(n)
    init = noise_init(keys, spec.input_shape, "cpu")
    start = time.perf_counter()
    render(spec, layer, units, init, schedule, keys, precision=PRECISION)
    return 1000 * (time.perf_counter() - start) / (n * steps)


def rows(model: str) -> list[tuple]:
    layer_alias, steps = CASES[model]
    spec = load_model(model)
    layer = spec.resolve(layer_alias)
    n = max(K, min(default_batch_size(spec.input_shape[1], torch.device("cpu")), 128) // K * K)
    cells = [(method, param, transforms) for param, transforms in SETTINGS for method in ("mfv", "diversity")]
    ms_per_image_step(spec, layer, "mfv", "maco", SETTINGS[-1][1], 2, K)   # warm-up
    best = {cell: min(ms_per_image_step(spec, layer, *cell, steps, n) for _ in range(REPEATS)) for cell in cells}
    paper = best[("mfv", "pixel", ("jitter",))]
    out = []
    for method, param, transforms in cells:
        ms = best[(method, param, transforms)]
        against = f"{ms / paper:.2f}x the paper's loop" if method == "mfv" else \
            f"{ms / best[('mfv', param, transforms)]:.2f}x MFV's step"
        out.append((model, n, steps, method, param, "+".join(transforms), ms, against))
    return out


def main() -> None:
    print(f"{torch.get_num_threads()} threads, precision {PRECISION} (auto)\n")
    print("| model | images | steps | method | param | transforms | ms per image-step | relative |")
    print("|---|---|---|---|---|---|---|---|")
    for model in CASES:
        for model_name, n, steps, method, param, transforms, ms, against in rows(model):
            print(f"| {model_name} | {n} | {steps} | {method} | {param} | {transforms} | {ms:.3f} | {against} |",
                  flush=True)


if __name__ == "__main__":
    main()
