"""Benchmark: `python -m precompute.bench` prints a table and writes BENCHMARKS.md.

In one process, on the same model, image size and step count, it times
  1. this engine, batched (every facet in one forward/backward; fp32, and bf16 autocast),
  2. the same algorithm facet by facet (the naive loop),
  3. Lucent (torch-lucent, requirements-bench.txt), one render_vis per neuron, as users run it,
  4. facet discovery as the engine runs it (neurons in worker processes) against scikit-learn's
     TSNE one neuron at a time (and openTSNE if installed),
on the demo model (28 px) and EfficientNet-Lite0 (224 px), and reports facets per second and
the achieved FLOP/s of the synthesis loop against a measured matrix-multiply peak.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import REPO_ROOT, load_model
from .synthesis import UnitObjective, measure, mfv_schedule, noise_init, render

CASES = {  # model -> (layer, facets, steps); small enough for 2 CPU cores
    "demo": ("fc8", 64, 50),
    "efficientnet-lite0": ("fc8", 8, 10),
}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_peak(device: torch.device, dtype=torch.float32, n: int = 2048) -> float:
    """Measured FLOP/s of a large matrix multiply on this device (the peak to compare against)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    reps = 5
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = _timed(lambda: [a @ b for _ in range(reps)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / seconds


def step_flops(spec, layer: str, device) -> float:
    """Forward + backward FLOPs of one image-step of the synthesis loop (counted by torch)."""
    net = spec.extractor((layer,))
    x = torch.rand(1, *spec.input_shape, device=device, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        out = net(spec.preprocess(x))[layer]
        out.flatten(1)[:, 0].sum().backward()
    return float(counter.get_total_flops())


def lucent_seconds(spec, layer: str, units: list[int], steps: int, device) -> float | None:
    """Lucent rendering each neuron for `steps` steps with its standard transforms, one call per neuron."""
    try:
        from lucent.optvis import objectives, param, render as lucent_render, transform
    except ImportError:
        return None
    channels, size = spec.input_shape[0], spec.input_shape[1]
    name = layer.replace(".", "_")
    total = 0.0
    for unit in units:
        model = copy.deepcopy(spec.module).to(device).eval()   # Lucent never removes its hooks: fresh model each call
        transforms = list(transform.standard_transforms) + [spec.preprocess]
        total += _timed(lambda: lucent_render.render_vis(
            model, objectives.channel(name, unit), lambda: param.image(size, channels=channels, decorrelate=channels == 3),
            transforms=transforms, thresholds=(steps,), preprocess=False, progress=False, show_image=False,
            fixed_image_size=size))
    return total


def synthesis_rows(model: str, device: torch.device) -> list[dict]:
    layer_alias, n, steps = CASES[model]
    spec = load_model(model).to(device)
    layer = spec.resolve(layer_alias)
    units = torch.arange(n, device=device) % spec.layers[layer].n_units
    keys = torch.arange(n, device=device)
    init = noise_init(keys.cpu(), spec.input_shape, device)
    schedule = mfv_schedule(spec.input_shape[1], steps)
    render(spec, layer, units[:2], init[:2], mfv_schedule(spec.input_shape[1], 4), keys[:2])   # warm-up
    rows = []
    for name, run in (
        ("engine, batched (fp32)", lambda: render(spec, layer, units, init, schedule, keys)),
        ("engine, batched (bf16 autocast)", lambda: render(spec, layer, units, init, schedule, keys, precision="bf16")),
        ("same algorithm, facet by facet", lambda: [render(spec, layer, units[i:i + 1], init[i:i + 1], schedule,
                                                           keys[i:i + 1]) for i in range(n)]),
    ):
        rows.append({"model": model, "method": name, "facets": n, "steps": steps, "seconds": _timed(run)})
    lucent = lucent_seconds(spec, layer, units.tolist(), steps, device)
    if lucent is not None:
        rows.append({"model": model, "method": "Lucent render_vis, one neuron per call", "facets": n, "steps": steps,
                     "seconds": lucent})
    flops = step_flops(spec, layer, device)
    for row in rows:
        row["ms_per_image_step"] = 1000 * row["seconds"] / (row["facets"] * row["steps"])
        row["facets_per_s"] = row["facets"] / row["seconds"]
        row["gflops"] = flops * row["facets"] * row["steps"] / row["seconds"] / 1e9   # same network, same steps
    return rows


def facet_discovery_rows(neurons: int = 24, n: int = 300) -> list[dict]:
    """t-SNE pipelines on exemplar-set-sized inputs (fc7 codes of the demo's top-300 sets)."""
    from sklearn.manifold import TSNE

    from .activations import scan
    from .data import load_fashion_mnist
    from .facets import FacetFinder

    spec = load_model("demo")
    images = load_fashion_mnist(train=True)
    result = scan(spec, images, ["fc7"], n, torch.device("cpu"), batch_size=1000)
    sets = [result.codes.take(result.layers["fc7"].top_indices[u]).numpy() for u in range(neurons)]
    finder = FacetFinder()
    workers = os.cpu_count() or 1
    finder.fit_many(sets[:workers], workers)   # start the worker processes outside the timing
    rows = [{"route": f"engine: PCA-50, t-SNE (scikit-learn Barnes-Hut), k-means; {workers} worker processes",
             "seconds": _timed(lambda: finder.fit_many(sets, workers))},
            {"route": "engine pipeline, one neuron at a time", "seconds": _timed(lambda: [finder.fit(c) for c in sets])},
            {"route": "scikit-learn TSNE alone", "seconds": _timed(
                lambda: [TSNE(2, init="pca", random_state=0).fit_transform(finder._pca(codes)) for codes in sets])}]
    try:
        from openTSNE import TSNE as OpenTSNE
        rows.append({"route": "openTSNE alone (2 threads)", "seconds": _timed(
            lambda: [OpenTSNE(n_jobs=2, random_state=0, verbose=False).fit(finder._pca(codes)) for codes in sets])})
    except ImportError:
        pass
    for row in rows:
        row["neurons"], row["per_neuron_s"] = neurons, row["seconds"] / neurons
    return rows


def report(synth: list[dict], discovery: list[dict], peak: float, device: torch.device) -> str:
    lines = [f"# Benchmarks\n\nMeasured by `python -m precompute.bench` on {device} "
             f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}); "
             f"matrix-multiply peak measured at {peak / 1e9:.0f} GFLOP/s (fp32).\n",
             "## Synthesis (same model, image size, facets and steps per row)\n",
             "| model | method | facets | steps | seconds | facets/s | ms per image-step | GFLOP/s | vs. naive loop |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in synth):
        rows = [r for r in synth if r["model"] == model]
        naive = next(r for r in rows if "facet by" in r["method"])
        for r in rows:
            gf = f"{r['gflops']:.0f} ({100 * r['gflops'] * 1e9 / peak:.0f}% of peak)"
            lines.append(f"| {model} | {r['method']} | {r['facets']} | {r['steps']} | {r['seconds']:.2f} | "
                         f"{r['facets_per_s']:.2f} | {r['ms_per_image_step']:.3f} | {gf} | "
                         f"{naive['seconds'] / r['seconds']:.1f}x |")
    lines += ["", "## Facet discovery (PCA, t-SNE, k-means) on demo exemplar sets of 300\n",
              "| route | neurons | seconds | per neuron | vs. scikit-learn TSNE |", "|---|---|---|---|---|"]
    sklearn = next(r["seconds"] for r in discovery if r["route"] == "scikit-learn TSNE alone")
    lines += [f"| {r['route']} | {r['neurons']} | {r['seconds']:.2f} | {r['per_neuron_s']:.3f} s | "
              f"{sklearn / r['seconds']:.1f}x |" for r in discovery]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m precompute.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="demo,efficientnet-lite0", help="comma-separated (default: both)")
    parser.add_argument("--out", default=str(REPO_ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    peak = matmul_peak(device)
    synth = [row for model in args.models.split(",") for row in synthesis_rows(model.strip(), device)]
    discovery = facet_discovery_rows()
    text = report(synth, discovery, peak, device)
    Path(args.out).write_text(text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
