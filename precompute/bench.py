"""Benchmark: `python -m precompute.bench` prints a table and writes BENCHMARKS.md.

In one process, on the same model, image size and step count, it times
  1. this engine, batched (every facet in one forward/backward; fp32, and bf16 autocast),
  2. the same algorithm facet by facet (the naive loop),
  3. Lucent (torch-lucent, requirements-bench.txt), one render_vis per neuron, as users run it,
  4. the facet-discovery stage as the engine runs it (batched t-SNE in worker processes) against
     the same stage with scikit-learn's TSNE, one neuron at a time and in worker processes,
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

from .engine.models import REPO_ROOT, load_model
from .engine.synthesis import mfv_schedule, noise_init, render

CASES = {  # model -> (layer, facets, steps); small enough for 2 CPU cores
    "demo": ("fc8", 128, 50),
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
    for name, precision, run in (
        ("engine, batched (fp32)", "fp32", lambda: render(spec, layer, units, init, schedule, keys)),
        ("engine, batched (bf16 autocast)", "bf16",
         lambda: render(spec, layer, units, init, schedule, keys, precision="bf16")),
        ("same algorithm, facet by facet", "fp32", lambda: [render(spec, layer, units[i:i + 1], init[i:i + 1], schedule,
                                                                   keys[i:i + 1]) for i in range(n)]),
    ):
        rows.append({"model": model, "method": name, "precision": precision, "facets": n, "steps": steps,
                     "seconds": _timed(run)})
    lucent = lucent_seconds(spec, layer, units.tolist(), steps, device)
    if lucent is not None:
        rows.append({"model": model, "method": "Lucent render_vis, one neuron per call", "precision": "fp32",
                     "facets": n, "steps": steps, "seconds": lucent})
    flops = step_flops(spec, layer, device)
    for row in rows:
        row["ms_per_image_step"] = 1000 * row["seconds"] / (row["facets"] * row["steps"])
        row["facets_per_s"] = row["facets"] / row["seconds"]
        row["gflops"] = flops * row["facets"] * row["steps"] / row["seconds"] / 1e9   # same network, same steps
    return rows


def sklearn_stage_single_threaded(codes: np.ndarray) -> np.ndarray:
    """sklearn_stage on one thread, as the engine ran it in each worker process before."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        return sklearn_stage(codes)


def sklearn_stage(codes: np.ndarray) -> np.ndarray:
    """The facet-discovery stage with scikit-learn's TSNE (the engine's route before it had its own)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    pca = PCA(min(50, *codes.shape), svd_solver="full", random_state=0).fit_transform(codes)
    embedding = TSNE(2, init="pca", random_state=0).fit_transform(pca)
    return KMeans(10, n_init=4, random_state=0).fit_predict(embedding)


def _exemplar_sets(hidden: int, classes: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """fc7 codes of the demo's exemplar sets: top-300 sets of fc7 units, and whole classes (fc8)."""
    from .engine.activations import scan
    from .demo.data import load_fashion_mnist
    spec = load_model("demo")
    images = load_fashion_mnist(train=True)
    result = scan(spec, images, ["fc7"], 300, torch.device("cpu"), batch_size=1000)
    top = [result.codes.take(result.layers["fc7"].top_indices[u]).numpy() for u in range(hidden)]
    whole = [result.codes.take(torch.nonzero(images.labels == c)[:, 0]).numpy() for c in range(classes)]
    return top, whole


def facet_discovery_rows(hidden: int = 32, classes: int = 1) -> list[dict]:
    """The facet-discovery stage (PCA-50, t-SNE, k-means) on the demo's exemplar sets, by route."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from .engine.facets import FacetFinder
    top, whole = _exemplar_sets(hidden, classes)
    finder = FacetFinder()
    workers = os.cpu_count() or 1
    finder.fit_many(top, workers)   # start and warm up every worker process outside the timing
    rows = []
    for sets, kind in ((top, f"{len(top[0])} exemplars (hidden units)"), (whole, f"{len(whole[0])} exemplars (a class)")):
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(sklearn_stage_single_threaded, top[:workers]))   # warm-up
            routes = [
                ("scikit-learn TSNE, one neuron at a time (its own threads)", lambda: [sklearn_stage(c) for c in sets]),
                (f"scikit-learn TSNE, {workers} worker processes (this engine before)", lambda: list(pool.map(sklearn_stage_single_threaded, sets))),
                (f"engine, {workers} worker processes", lambda: finder.fit_many(sets, workers)),
                ("engine, one process", lambda: finder.fit_many(sets, 1)),
            ]
            for route, run in routes:
                rows.append({"sets": kind, "route": route, "neurons": len(sets), "seconds": _timed(run)})
    for row in rows:
        row["per_neuron_s"] = row["seconds"] / row["neurons"]
    return rows


# The full demo build (every neuron; mfv, center-bias and noise) before the performance work, on this
# machine's 2 cores: scikit-learn t-SNE one neuron at a time, fp32 synthesis in batches of 320.
BUILD_BEFORE = {"seconds": 935.0, "timings": {"scan": 17.0, "facets": 524.0, "synthesis": 384.0}}   # README at 8602b8a^


def build_row(device: torch.device) -> dict:
    """Time the full demo build into a scratch folder, as `python -m precompute demo` runs it."""
    import tempfile

    from .pipeline.atlas import BuildConfig, build_atlas
    with tempfile.TemporaryDirectory() as scratch:
        config = BuildConfig(store=scratch, methods=("mfv", "center-bias", "noise"), device=str(device))
        summary = build_atlas(config)
    return {"seconds": summary.seconds, "timings": summary.timings, "neurons": summary.neurons_built}


def script_output(name: str, capability: str | None = None) -> str:
    """What benchmarks/<name> prints, run in its own process (under ATEN_CPU_CAPABILITY=capability:
    torch reads it when it loads)."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env |= {"ATEN_CPU_CAPABILITY": capability} if capability else {}
    return subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / name)], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def precision_tables() -> str:
    """benchmarks/precision.py under this machine's kernels and under torch's AVX2 and scalar kernels."""
    return "\n\n".join(script_output("precision.py", capability) for capability in (None, "avx2", "default"))


def report(synth: list[dict], discovery: list[dict], peaks: dict[str, float], device: torch.device,
           build: dict | None = None, precision: str | None = None, step_costs: str | None = None) -> str:
    measured = " and ".join(f"{peaks[p] / 1e9:.0f} GFLOP/s ({p})" for p in peaks)
    lines = [f"# Benchmarks\n\nMeasured by `python -m precompute.bench` on {device} "
             f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}); "
             f"matrix-multiply peak measured at {measured}. Each row's GFLOP/s is compared with the peak of "
             f"its own precision.\n",
             "## Synthesis (same model, image size, facets and steps per row)\n",
             "| model | method | facets | steps | seconds | facets/s | ms per image-step | GFLOP/s | vs. naive loop |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in synth):
        rows = [r for r in synth if r["model"] == model]
        naive = next(r for r in rows if "facet by" in r["method"])
        for r in rows:
            gf = f"{r['gflops']:.0f} ({100 * r['gflops'] * 1e9 / peaks[r['precision']]:.0f}% of the {r['precision']} peak)"
            lines.append(f"| {model} | {r['method']} | {r['facets']} | {r['steps']} | {r['seconds']:.2f} | "
                         f"{r['facets_per_s']:.2f} | {r['ms_per_image_step']:.3f} | {gf} | "
                         f"{naive['seconds'] / r['seconds']:.1f}x |")
    lines += ["", "## Facet discovery (PCA-50, t-SNE, k-means with k=10) on the demo's exemplar sets\n",
              "Engine route: batched exact t-SNE in torch (precompute/tsne.py) for sets of up to 1,500 points, "
              "openTSNE's Barnes-Hut for larger ones (a class neuron's whole class).\n",
              "| exemplar sets | route | neurons | seconds | per neuron | vs. scikit-learn TSNE | vs. the engine before |",
              "|---|---|---|---|---|---|---|"]
    for kind in dict.fromkeys(r["sets"] for r in discovery):
        rows = [r for r in discovery if r["sets"] == kind]
        plain, before = rows[0]["seconds"], rows[1]["seconds"]
        lines += [f"| {kind} | {r['route']} | {r['neurons']} | {r['seconds']:.2f} | {r['per_neuron_s']:.3f} s | "
                  f"{plain / r['seconds']:.1f}x | {before / r['seconds']:.1f}x |" for r in rows]
    if build:
        def phases(row):
            return ", ".join(f"{name} {row['timings'].get(name, 0):.0f} s" for name in ("scan", "facets", "synthesis"))
        lines += ["", "## Full demo build (746 neurons x mfv, center-bias, noise)\n",
                  "| build | wall | phases | speed-up |", "|---|---|---|---|",
                  f"| before this engine's performance work | {BUILD_BEFORE['seconds'] / 60:.1f} min ({BUILD_BEFORE['seconds']:.0f} s) | "
                  f"{phases(BUILD_BEFORE)} | 1.0x |",
                  f"| now | {build['seconds'] / 60:.1f} min ({build['seconds']:.0f} s) | {phases(build)} | "
                  f"{BUILD_BEFORE['seconds'] / build['seconds']:.1f}x |"]
    if step_costs:
        lines += ["", "## Step cost by parameterization and method\n",
                  "`python benchmarks/step_costs.py`: the build's schedules, best of 3 (see docs/synthesis.md, *Cost*).\n",
                  step_costs]
    if precision:
        lines += ["", "## Precision: fp32 against bf16 per image-step, by CPU kernel path (`--precision auto`)\n",
                  "`python benchmarks/precision.py`, run under each `ATEN_CPU_CAPABILITY`; the MFV loop in the build's "
                  "batches (demo 30 steps, EfficientNet-Lite0 5 steps).\n", precision]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m precompute.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="demo,efficientnet-lite0", help="comma-separated (default: both)")
    parser.add_argument("--out", default=str(REPO_ROOT / "BENCHMARKS.md"))
    parser.add_argument("--build", action="store_true", help="also time the full demo build (minutes)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    peaks = {"fp32": matmul_peak(device), "bf16": matmul_peak(device, torch.bfloat16)}
    synth = [row for model in args.models.split(",") for row in synthesis_rows(model.strip(), device)]
    discovery = facet_discovery_rows()
    build = build_row(device) if args.build else None
    precision = precision_tables() if device.type == "cpu" else None
    step_costs = script_output("step_costs.py") if device.type == "cpu" else None
    text = report(synth, discovery, peaks, device, build, precision, step_costs)
    Path(args.out).write_text(text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
