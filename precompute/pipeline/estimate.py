"""How long a build's synthesis will take, said before it starts.

Each (method, layer) with work left is timed on one batch of the build's own size, with its own
schedule cut to one step a stage (after one untimed step, which pays for kernel selection); the
estimate is that time per step times the steps of every image left. Timing each layer matters:
a deep layer costs many times a shallow one (the network is cut after the layer optimized), so
the first batch's rate, which the estimate used before, said 7 min for a 24 min build.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from ..engine.synthesis import Schedule, noise_init, render
from .plan import Plan


def seconds_per_image_step(plan: Plan, method: str, layer: str, precision: str) -> float:
    """One image-step of `method` at `layer`, measured on a batch of the build's size."""
    schedule = plan.schedule(method)
    n = plan.batch_size
    if schedule.diversity > 0:   # diversity renders a neuron's images together
        n = max(plan.config.k, n - n % plan.config.k)
    units = torch.zeros(n, dtype=torch.long, device=plan.device)
    keys = torch.arange(n)
    init = noise_init(keys, plan.spec.input_shape, plan.device)
    groups = torch.arange(n, device=plan.device) // plan.config.k if schedule.diversity > 0 else None
    probe = dataclasses.replace(schedule, stages=tuple(dataclasses.replace(s, steps=1) for s in schedule.stages))
    render(plan.spec, layer, units, init, _first_step(probe), keys, precision=precision, groups=groups)   # warm-up
    start = time.perf_counter()
    render(plan.spec, layer, units, init, probe, keys, precision=precision, groups=groups)
    return (time.perf_counter() - start) / (n * len(probe.stages))


def _first_step(schedule: Schedule) -> Schedule:
    return dataclasses.replace(schedule, stages=schedule.stages[:1])


def synthesis_seconds(plan: Plan, work: list[tuple[str, str, int]], precision: dict[str, str]) -> float:
    """Seconds of synthesis for `work`: (method, layer, images) triples; `precision` by method."""
    return sum(images * plan.config.steps * seconds_per_image_step(plan, method, layer, precision[method])
               for method, layer, images in work if images)
