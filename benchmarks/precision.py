"""fp32 against bf16 synthesis per image-step on this CPU's kernel path: what `--precision auto` rests on.

    python benchmarks/precision.py                              # this machine's best kernels
    ATEN_CPU_CAPABILITY=avx2 python benchmarks/precision.py     # torch's AVX2 kernels (any x86-64 CPU)
    ATEN_CPU_CAPABILITY=default python benchmarks/precision.py  # torch's scalar kernels

Prints one Markdown row per model and precision: ms per image-step of the MFV loop (batched, as a
build runs it), the mean final activation, and bf16's activation relative to fp32's (does bf16 keep
the result?), with the CPU's native bf16 support and what `auto` picks here.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.pipeline.runtime import default_batch_size, resolve_precision  # noqa: E402
from precompute.engine.models import load_model  # noqa: E402
from precompute.engine.synthesis import measure, mfv_schedule, noise_init, render  # noqa: E402

CASES = {"demo": ("fc8", 30), "efficientnet-lite0": ("fc8", 5)}   # model -> (layer, steps)


def time_precision(spec, layer: str, steps: int, precision: str) -> tuple[float, float]:
    n = default_batch_size(spec.input_shape[1], torch.device("cpu"))
    units = torch.arange(n) % spec.layers[layer].n_units
    keys = torch.arange(n)
    init = noise_init(keys, spec.input_shape, "cpu")
    render(spec, layer, units[:2], init[:2], mfv_schedule(spec.input_shape[1], 2), keys[:2], precision=precision)
    start = time.perf_counter()
    final = render(spec, layer, units, init, mfv_schedule(spec.input_shape[1], steps), keys, precision=precision)
    seconds = time.perf_counter() - start
    return 1000 * seconds / (n * steps), float(measure(spec, layer, units, final)["act"].mean())


def main() -> None:
    path = torch.backends.cpu.get_cpu_capability()
    native = f"AMX {torch.cpu._is_amx_tile_supported()}, AVX512-BF16 {torch.cpu._is_avx512_bf16_supported()}"
    print(f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '(unset)')}: kernels {path}; {native}; "
          f"{torch.get_num_threads()} threads; auto picks {resolve_precision('auto', torch.device('cpu'))}\n")
    print("| kernels | model | precision | ms per image-step | mean final activation | bf16 vs fp32 |")
    print("|---|---|---|---|---|---|")
    for model, (layer, steps) in CASES.items():
        spec = load_model(model)
        layer = spec.resolve(layer)
        fp32_ms, fp32_act = time_precision(spec, layer, steps, "fp32")
        bf16_ms, bf16_act = time_precision(spec, layer, steps, "bf16")
        print(f"| {path} | {model} | fp32 | {fp32_ms:.3f} | {fp32_act:.2f} | |")
        print(f"| {path} | {model} | bf16 | {bf16_ms:.3f} | {bf16_act:.2f} | "
              f"{fp32_ms / bf16_ms:.2f}x the speed, {bf16_act / fp32_act:.0%} of the activation |")


if __name__ == "__main__":
    main()
