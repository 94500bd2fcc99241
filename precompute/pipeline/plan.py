"""A build's plan: its configuration validated and resolved once, before any work starts.

`BuildConfig` is what a user asks for (the command line's options); `make_plan` checks it (every
mistake is one AtlasError naming the bad value and the valid ones), resolves what was left to
default (device, precision, scale range, batch size, facet workers, units) and loads the model. How
each method's images are made resolves per method and input size (`BuildConfig.synthesis`). The
local and Ray executors both run that plan; a Ray worker makes the same plan from the driver's
resolved config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
from dataclasses import dataclass

import torch

from ..core.errors import AtlasError, choose
from ..core.methods import DATA_FREE, FACET_PULL, METHODS, PARAMETERIZATIONS, SEED_PENALTY, STOPS
from ..engine.models import ModelSpec, load_model
from ..core.fields import ReceptiveField
from ..engine.receptive import receptive_fields
from ..engine.synthesis import PRECISIONS, Schedule, center_bias_schedule, diversity_schedule, mfv_schedule
from .runtime import dataset_name, default_batch_size, resolve_device, resolve_precision

TRANSFORMS = ("jitter", "scale", "rotate")
ROBUST_SCALE, ROBUST_ROTATE = 0.1, 10.0   # Lucid's transformation robustness: scale 0.9-1.1, rotate +-10 degrees
# At 224 px a wider random scale (0.6-1.4) made the images transfer: top-1 under EfficientNet-Lite2 rose
# from 71-75% to 79-88% across methods at 100 steps (docs/synthesis.md); at 28 px it cost the data-free
# methods transfer, so the demo keeps Lucid's range.
WIDE_SCALE = 0.4
LEARNING_RATES = {"fourier": 0.05, "maco": 0.05}   # Adam's, per parameterization
# The image parameterization and transforms of a method where a build leaves them to default, chosen by
# sweeps. benchmarks/sweep_synthesis.py (docs/synthesis.md) chose Fourier with every transform by the
# explanation score and transfer; benchmarks/sweep_facets.py then showed that for MFV it erases the facets
# (every facet of a demo fc8 neuron ends as one class picture: retention 0.30 in pixels, chance 0.10; facet
# score 0.65 against the real exemplars' 0.81). Below 64 px MFV therefore runs the paper's pixel loop without
# jitter and keeps each image once it drives its unit as much as the neuron's strongest exemplar: retention
# 1.00 in pixels and in a second network's features, facet score 0.76, gain 1.01. Jitter guards a long
# optimization against pixel-level adversarial patterns; stopped at the exemplar the images move little,
# and jitter cost 2 points of facet score and a quarter of the retention in features. At every size MFV also
# takes the facet pull (core.methods.FACET_PULL), which closed the rest of the gap to the real exemplars.
DEFAULT_SYNTHESIS = ("fourier", ("jitter", "scale", "rotate"))
PAPER_SYNTHESIS = ("pixel", ("jitter",))   # the released code's loop
FACET_SYNTHESIS = ("pixel", ())            # MFV's default below FACET_SIZE_LIMIT px, stopped at the exemplar
FACET_SIZE_LIMIT = 64


@dataclass(frozen=True)
class Synthesis:
    """How a method's images are made: resolved from a build's settings and the defaults."""
    param: str
    transforms: tuple[str, ...]
    learning_rate: float | None   # Adam's (None: the pixel loop's own step)
    stop: str                     # "steps" or "exemplar"
    facet_pull: float = 0.0       # MFV: weight of the reward for keeping the facet's own direction (0: none)
    seed_penalty: float = 0.0     # MFV: weight of the penalty on the mean squared pixel change from the init


EXECUTORS = ("local", "ray")
RAY_OPTIONS = ("ray_address", "gpus_per_task", "cpus_per_task", "ray_workers")


@dataclass
class BuildConfig:
    store: str                # the store folder to create or resume
    model: str = "demo"
    weights: str | None = None
    data: str | None = None
    layers: tuple[str, ...] | None = None     # None: every layer of the demo, fc8 of other models
    units: tuple[int, ...] | None = None      # None: every unit
    methods: tuple[str, ...] = ("mfv",)
    top_n: int = 300          # exemplars of a hidden unit
    k: int = 10               # facets per neuron
    m: int = 15               # images averaged into a facet's init
    min_facet_size: int | None = None   # smaller clusters are dissolved into their neighbours (None: m)
    steps: int = 200          # synthesis steps per image
    param: str = "auto"       # image parameterization: pixel, fourier, maco or auto (by input size)
    transforms: tuple[str, ...] | None = None   # of jitter, scale, rotate (None: by input size)
    learning_rate: float | None = None          # Adam's, for fourier and maco (None: theirs)
    stop: str = "auto"        # MFV: "exemplar" keeps an image once it drives its unit as much as the strongest
                              # exemplar, "steps" runs every step (auto: exemplar below 64 px, with the pixel loop)
    scale_range: float | None = None            # the scale transform's range, 1 +- this (None: by input size)
    facet_pull: float | None = None             # MFV: the step turning the image's code towards its facet's own
                                                # direction, as a share of the unit's step (None: FACET_PULL)
    seed_penalty: float | None = None           # MFV: the penalty holding the pixels near the init (None: by size)
    seed: int = 0
    batch_size: int | None = None   # images per synthesis batch (default: by input size)
    chunk_units: int = 32     # neurons per committed chunk
    device: str = "auto"
    thumbs_per_facet: int = 4 # exemplar thumbnails kept per facet (nearest its centroid); -1: all
    pca_codes: bool = True    # keep each exemplar's PCA-50 code
    max_images: int | None = None   # use only the first N training images (quick trials, tests)
    input_size: int | None = None   # preprocessing overrides (default: the model's own)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    precision: str = "auto"         # asked for: fp32, bf16 (autocast) or auto (bf16 where the hardware runs it natively)
    workers: int | None = None      # processes for facet finding (default: one per CPU core)
    executor: str = "local"         # "ray": scan shards and chunks as Ray tasks (precompute.pipeline.executors)
    ray_address: str | None = None  # Ray only: the cluster (default: RAY_ADDRESS, `ray start`, else a local one)
    gpus_per_task: float | None = None   # Ray only: GPUs per worker (default: 1 if the cluster has GPUs)
    cpus_per_task: int | None = None     # Ray only: CPU cores per worker, its torch threads (default 1)
    ray_workers: int | None = None       # Ray only: worker actors (default: as many as the cluster holds)

    def identity(self, method: str, weights_sha256: str, dataset: str, input_size: int) -> dict:
        """What determines a run's results (not where or how fast it runs)."""
        keep = ("model", "top_n", "k", "m", "steps", "seed", "thumbs_per_facet", "pca_codes", "max_images")
        ident = {key: getattr(self, key) for key in keep} | {"min_facet_size": self.facet_minimum}
        ident |= {key: getattr(self, key) for key in ("input_size", "mean", "std") if getattr(self, key) is not None}
        made = self.synthesis(method, input_size)
        if (made.param, made.transforms) != PAPER_SYNTHESIS:   # the paper's loop keeps its old run ids
            ident |= {"param": made.param, "transforms": list(made.transforms), "learning_rate": made.learning_rate}
        if made.stop == "exemplar":   # every step keeps its old run ids
            ident["stop"] = "exemplar"
        if made.facet_pull > 0:   # no pull keeps its old run ids
            ident["facet_pull"] = made.facet_pull
        if made.seed_penalty > 0:
            ident["seed_penalty"] = made.seed_penalty
        if "scale" in made.transforms and self.scale_range not in (None, ROBUST_SCALE):   # Lucid's range keeps its ids
            ident["scale_range"] = self.scale_range
        if self.precision != "fp32":   # what was asked, not what this machine makes of it: the same request
            ident["precision"] = self.precision   # on another CPU is the same run (Plan.precision: what runs)
        ident.update(method=method, model_sha256=weights_sha256, dataset=dataset)
        if method != "mfv":   # baselines use no data (diversity keeps k: its images per neuron)
            for key in ("top_n", "k", "m", "min_facet_size", "thumbs_per_facet", "pca_codes", "dataset", "max_images"):
                if not (method == "diversity" and key == "k"):
                    ident.pop(key)
        return ident

    def synthesis(self, method: str, input_size: int) -> Synthesis:
        """How `method`'s images are made at `input_size`: the build's settings, and where they are
        left to default, the sweeps' choice (MFV: the facet pull; below 64 px pixels, no transforms, stopped
        at the exemplar; at 64 px and more the seed penalty)."""
        facet_default = method == "mfv" and input_size < FACET_SIZE_LIMIT
        param, transforms = FACET_SYNTHESIS if facet_default else DEFAULT_SYNTHESIS
        param = param if self.param == "auto" else self.param
        transforms = tuple(self.transforms if self.transforms is not None else transforms)
        rate = None if param == "pixel" else (self.learning_rate or LEARNING_RATES[param])
        stop = ("exemplar" if facet_default else "steps") if self.stop == "auto" else self.stop
        if method != "mfv":   # only MFV has exemplars to stop at and facets to keep
            return Synthesis(param, transforms, rate, "steps")
        pull = FACET_PULL if self.facet_pull is None else self.facet_pull
        seed = (0.0 if facet_default else SEED_PENALTY) if self.seed_penalty is None else self.seed_penalty
        return Synthesis(param, transforms, rate, stop, pull, seed)

    def scale_for(self, input_size: int) -> float:
        """The scale transform's range: the build's, or where it is left to default, the sweep's for the size."""
        return default_scale_range(input_size) if self.scale_range is None else self.scale_range

    @property
    def facet_minimum(self) -> int:
        """The smallest facet MFV keeps: every facet's init then averages m images."""
        return self.m if self.min_facet_size is None else self.min_facet_size


@dataclass
class Plan:
    """What a build runs, resolved: the config with every default filled in, the model on its device,
    the units of each layer, and how work is batched."""
    config: BuildConfig
    spec: ModelSpec
    device: torch.device
    units: dict[str, list[int]]     # layer -> units to build, sorted
    batch_size: int                 # images per synthesis batch
    workers: int                    # processes for facet finding
    dataset: str                    # what the images are, part of every run's identity
    fields: dict[str, ReceptiveField | None]   # layer -> receptive field (None: fc, or the whole image)
    precision: str                  # what the asked precision resolves to here (a resumed run keeps its own)

    def run_id(self, method: str) -> str:
        ident = self.config.identity(method, self.spec.weights_sha256, self.dataset, self.spec.input_shape[1])
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.config.model}-{method}-{digest}"

    def schedule(self, method: str) -> Schedule:
        return schedule_for(method, self.spec, self.config)


def make_plan(config: BuildConfig) -> Plan:
    """Validate `config`, resolve its defaults and load its model (AtlasError for a user's mistake)."""
    validate(config)
    device = resolve_device(config.device)
    if config.model != "demo" and not config.data and "mfv" in config.methods:
        raise AtlasError(f"model {config.model!r} needs --data DIR for mfv: an image folder with one sub-folder "
                         f"per class (the data-free methods {', '.join(DATA_FREE)} need none)")
    spec = load_model(config.model, config.weights, config.input_size, config.mean, config.std, config.seed).to(device)
    # the scale range is recorded as what runs; param, transforms and stop stay as asked ("auto" resolves per
    # method: Plan.schedule, and each run's recorded schedule says what ran)
    config = dataclasses.replace(config, scale_range=config.scale_for(spec.input_shape[1]))
    units = _select_units(spec, config)
    return Plan(config, spec, device, units, config.batch_size or default_batch_size(spec.input_shape[1], device),
                config.workers or os.cpu_count() or 1, dataset_name(config), receptive_fields(spec, units),
                resolve_precision(config.precision, device))


def validate(config: BuildConfig) -> None:
    for method in config.methods:
        choose("method", method, METHODS)
    choose("precision", config.precision, PRECISIONS + ("auto",))
    choose("parameterization", config.param, PARAMETERIZATIONS + ("auto",))
    choose("stop", config.stop, STOPS)
    for name in config.transforms or ():
        choose("transform", name, TRANSFORMS)
    if config.facet_pull is not None and not config.facet_pull >= 0:
        raise AtlasError(f"--facet-pull must be 0 (none) or more, got {config.facet_pull:g}")
    if config.seed_penalty is not None and not config.seed_penalty >= 0:
        raise AtlasError(f"--seed-penalty must be 0 (none) or more, got {config.seed_penalty:g}")
    if config.learning_rate is not None and not config.learning_rate > 0:
        raise AtlasError(f"--learning-rate must be positive, got {config.learning_rate}")
    if config.scale_range is not None and not 0 <= config.scale_range < 1:
        raise AtlasError(f"--scale-range must be in [0, 1) (a random scale of 1 +- it), got {config.scale_range}")
    for name in ("top_n", "k", "m", "min_facet_size", "steps", "batch_size", "chunk_units", "max_images", "workers"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise AtlasError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.k > config.top_n:
        raise AtlasError(f"k={config.k} is larger than the exemplar set (top-n={config.top_n}); "
                         f"use k <= {config.top_n} or a larger --top-n")
    _check_executor(config)


def _check_executor(config: BuildConfig) -> None:
    """User errors in the executor options, before anything is loaded (Ray is not imported)."""
    choose("executor", config.executor, EXECUTORS)
    if config.executor == "local":
        given = [_flag(name) for name in RAY_OPTIONS if getattr(config, name) is not None]
        if given:
            raise AtlasError(f"{', '.join(given)} only apply with --executor ray")
        return
    if config.gpus_per_task is not None and not config.gpus_per_task >= 0:
        raise AtlasError(f"--gpus-per-task must be 0 or more (fractions share a GPU), got {config.gpus_per_task:g}")
    for name in ("cpus_per_task", "ray_workers"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise AtlasError(f"{_flag(name)} must be at least 1, got {getattr(config, name)}")
    if config.device.startswith("cuda:"):
        raise AtlasError(f"--device {config.device}: Ray gives each worker its own GPU; use --device cuda or auto")
    if config.device == "cpu" and config.gpus_per_task:
        raise AtlasError(f"--gpus-per-task {config.gpus_per_task:g} with --device cpu would hold GPUs that no one "
                         "uses; use --gpus-per-task 0")
    if config.device == "cuda" and config.gpus_per_task == 0:
        raise AtlasError("--device cuda with --gpus-per-task 0: the workers would have no GPU")
    if config.ray_address is not None:
        _check_address(config.ray_address)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_address(address: str) -> None:
    """Fail fast on an address nothing listens at (Ray itself retries one for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise AtlasError(f"--ray-address {address!r}: expected auto, local, HOST:PORT (the head node's GCS, "
                         "port 6379 by default) or ray://HOST:PORT (Ray Client, port 10001)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise AtlasError(f"cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}); start one with "
                         "'ray start --head' or check the address") from None


def default_scale_range(input_size: int) -> float:
    """The scale transform's range where a build does not set it: as the sweeps chose, per input size."""
    return WIDE_SCALE if input_size >= 64 else ROBUST_SCALE


def schedule_for(method: str, spec: ModelSpec, config: BuildConfig) -> Schedule:
    """The method's schedule at the model's input size, with its parameterization, transforms and stop."""
    size = spec.input_shape[1]
    makers = {"center-bias": center_bias_schedule, "diversity": diversity_schedule}
    schedule = makers.get(method, mfv_schedule)(size, config.steps)
    made = config.synthesis(method, size)
    return dataclasses.replace(
        schedule, param=made.param, learning_rate=made.learning_rate or 0.0, until_exemplar=made.stop == "exemplar",
        facet_weight=made.facet_pull, seed_weight=made.seed_penalty,
        jitter=schedule.jitter if "jitter" in made.transforms else 0,
        scale=config.scale_for(size) if "scale" in made.transforms else 0.0,
        rotate=ROBUST_ROTATE if "rotate" in made.transforms else 0.0)


def _select_units(spec: ModelSpec, config: BuildConfig) -> dict[str, list[int]]:
    if config.layers:
        layers = [spec.resolve(name) for name in config.layers]
    else:   # the demo: every layer; a big model: its class neurons unless asked otherwise
        layers = list(spec.layers) if config.model == "demo" else [spec.logits_layer]
    selected = {}
    for layer in layers:
        n = spec.layers[layer].n_units
        units = list(config.units) if config.units is not None else list(range(n))
        bad = [u for u in units if not 0 <= u < n]
        if bad:
            raise AtlasError(f"unit {bad[0]} is out of range for layer {layer!r}: valid units are 0..{n - 1}")
        selected[layer] = sorted(set(units))
    return selected
