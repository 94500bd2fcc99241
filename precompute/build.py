"""Build (or resume) an atlas: scan, find facets, synthesize, write the store.

Work is split into chunks of units of one layer; each chunk's parts are written atomically
and its `neurons` part last, so a killed build resumes where it stopped with every neuron
exactly once. A run is one method under one configuration; its id is a hash of that
configuration, so building again with the same settings resumes or extends the same run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import subprocess
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__
from .activations import Codes, ScanResult, embed, scan
from .data import load_fashion_mnist
from .errors import AtlasError, choose
from .facets import FacetFinder, diversity_null, facet_diversity
from .images import thumbnail, to_png
from .models import REPO_ROOT, ModelSpec, load_model
from .store import SCHEMA_VERSION, Store
from .params import PARAMETERIZATIONS
from .synthesis import (PRECISIONS, Schedule, center_bias_schedule, diversity_schedule, measure, mfv_schedule,
                        noise_init, render)

METHODS = ("mfv", "center-bias", "noise", "diversity")
TRANSFORMS = ("jitter", "scale", "rotate")
ROBUST_SCALE, ROBUST_ROTATE = 0.1, 10.0   # Lucid's transformation robustness: scale 0.9-1.1, rotate +-10 degrees
# At 224 px a wider random scale (0.6-1.4) made the images transfer: top-1 under EfficientNet-Lite2 rose
# from 71-75% to 79-88% across methods at 100 steps (docs/synthesis.md); at 28 px it cost the data-free
# methods transfer, so the demo keeps Lucid's range.
WIDE_SCALE = 0.4
LEARNING_RATES = {"fourier": 0.05, "maco": 0.05}   # Adam's, per parameterization
# The image parameterization and transforms of every method unless a build says otherwise, chosen by
# benchmarks/sweep_synthesis.py (docs/synthesis.md): at 28 px (the demo) the best explanation score and
# transfer to a second network; at 224 px (EfficientNet-Lite0) as good as the others on both while the
# only one that moves MFV's images far from their blurry inits. One setting for every method and size
# (the scale transform's range alone depends on the size: default_scale_range).
DEFAULT_SYNTHESIS = ("fourier", ("jitter", "scale", "rotate"))
PAPER_SYNTHESIS = ("pixel", ("jitter",))   # the released code's loop
DATA_FREE = ("center-bias", "noise", "diversity")   # methods that read no training images
Progress = Callable[[str, int, int], None]   # (task, done, total)


@dataclass
class BuildConfig:
    out: str
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
    scale_range: float | None = None            # the scale transform's range, 1 +- this (None: by input size)
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
    precision: str = "auto"         # fp32, bf16 (autocast) or auto: bf16 where the hardware runs it natively
    workers: int | None = None      # processes for facet finding (default: one per CPU core)
    executor: str = "local"         # "ray": scan shards and chunks as Ray tasks (precompute.executors)
    ray_address: str | None = None  # Ray only: the cluster (default: RAY_ADDRESS, `ray start`, else a local one)
    gpus_per_task: float | None = None   # Ray only: GPUs per worker (default: 1 if the cluster has GPUs)
    cpus_per_task: int | None = None     # Ray only: CPU cores per worker, its torch threads (default 1)
    ray_workers: int | None = None       # Ray only: worker actors (default: as many as the cluster holds)

    def identity(self, method: str, weights_sha256: str, dataset: str) -> dict:
        """What determines a run's results (not where or how fast it runs)."""
        keep = ("model", "top_n", "k", "m", "steps", "seed", "thumbs_per_facet", "pca_codes", "max_images")
        ident = {key: getattr(self, key) for key in keep} | {"min_facet_size": self.facet_minimum}
        ident |= {key: getattr(self, key) for key in ("input_size", "mean", "std") if getattr(self, key) is not None}
        param, transforms, rate = self.synthesis()
        if (param, transforms) != PAPER_SYNTHESIS:   # the paper's loop keeps its old run ids
            ident |= {"param": param, "transforms": list(transforms), "learning_rate": rate}
        if "scale" in transforms and self.scale_range not in (None, ROBUST_SCALE):   # Lucid's range keeps its ids
            ident["scale_range"] = self.scale_range
        if self.precision != "fp32":
            ident["precision"] = self.precision
        ident.update(method=method, model_sha256=weights_sha256, dataset=dataset)
        if method != "mfv":   # baselines use no data (diversity keeps k: its images per neuron)
            for key in ("top_n", "k", "m", "min_facet_size", "thumbs_per_facet", "pca_codes", "dataset", "max_images"):
                if not (method == "diversity" and key == "k"):
                    ident.pop(key)
        return ident

    def synthesis(self) -> tuple[str, tuple[str, ...], float | None]:
        """(parameterization, transforms, Adam's learning rate) of the images: the build's settings,
        and where they are left to default, the sweep's choice."""
        param = DEFAULT_SYNTHESIS[0] if self.param == "auto" else self.param
        transforms = tuple(self.transforms if self.transforms is not None else DEFAULT_SYNTHESIS[1])
        rate = None if param == "pixel" else (self.learning_rate or LEARNING_RATES[param])
        return param, transforms, rate

    def scale_for(self, input_size: int) -> float:
        """The scale transform's range: the build's, or where it is left to default, the sweep's for the size."""
        return default_scale_range(input_size) if self.scale_range is None else self.scale_range

    @property
    def facet_minimum(self) -> int:
        """The smallest facet MFV keeps: every facet's init then averages m images."""
        return self.m if self.min_facet_size is None else self.min_facet_size


@dataclass
class BuildSummary:
    store: Path
    run_ids: dict[str, str]
    neurons_built: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    skipped_files: int = 0     # images that could not be read (skipped, not fatal)


def validate(config: BuildConfig) -> None:
    for method in config.methods:
        choose("method", method, METHODS)
    choose("precision", config.precision, PRECISIONS + ("auto",))
    choose("parameterization", config.param, PARAMETERIZATIONS + ("auto",))
    for name in config.transforms or ():
        choose("transform", name, TRANSFORMS)
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
    from .executors import check_options   # does not import ray
    check_options(config)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AtlasError(f"unknown device {name!r}; valid devices: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AtlasError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise AtlasError(f"unknown device {name!r}; valid devices: auto, cpu, cuda, cuda:N")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """auto -> bf16 on GPUs with bfloat16 and on CPUs with AMX, else fp32: the faster of the two where
    it keeps the result (benchmarks/precision.py; BENCHMARKS.md, "Precision"). Measured per image-step:
    with AMX bf16 is 2.8x faster on the demo and lands within 5% of fp32's activations; on a CPU with
    no native bf16 (AVX2 or scalar kernels) it is 10x slower. AVX512-BF16 without AMX (AMD Zen 4) was
    not reachable to measure, and a full demo build there ran 2x longer than with AMX: fp32."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.cpu._is_amx_tile_supported() else "fp32"


def default_batch_size(input_size: int, device: torch.device) -> int:
    """Images per synthesis batch. A GPU wants large batches; a CPU wants the batch's activations
    to stay in cache: on the demo (28 px, 2 cores, bf16) 128 images run 1.3x faster per
    image-step than 320."""
    per_28px = 320 if device.type == "cuda" else 128
    return max(4, round(per_28px * (28 / input_size) ** 2))


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def image_key(seed: int, method: str, layer: str, unit: int, facet: int) -> int:
    """Per-image seed: an image's randomness depends on what it is, not on its batch."""
    return zlib.crc32(f"{seed}/{method}/{layer}/{unit}/{facet}".encode()) & 0x7FFFFFFF


def default_scale_range(input_size: int) -> float:
    """The scale transform's range where a build does not set it: as the sweeps chose, per input size."""
    return WIDE_SCALE if input_size >= 64 else ROBUST_SCALE


def schedule_for(method: str, spec: ModelSpec, config: BuildConfig) -> Schedule:
    """The method's schedule at the model's input size, with its parameterization and transforms."""
    size = spec.input_shape[1]
    makers = {"center-bias": center_bias_schedule, "diversity": diversity_schedule}
    schedule = makers.get(method, mfv_schedule)(size, config.steps)
    param, transforms, rate = config.synthesis()
    return dataclasses.replace(
        schedule, param=param, learning_rate=rate or 0.0, jitter=schedule.jitter if "jitter" in transforms else 0,
        scale=config.scale_for(size) if "scale" in transforms else 0.0, rotate=ROBUST_ROTATE if "rotate" in transforms else 0.0)


def scan_batch_size(spec: ModelSpec) -> int:
    return max(16, round(1000 * (28 / spec.input_shape[1]) ** 2))   # 1000 at 28 px, 16 at 224


def list_layers(model: str = "demo", weights: str | None = None) -> list[dict]:
    spec = load_model(model, weights)
    alias_of = {node: alias for alias, node in spec.aliases.items() if alias != node}
    return [{"layer": n, "alias": alias_of.get(n, ""), "kind": i.kind, "role": i.role, "n_units": i.n_units,
             "shape": "x".join(map(str, i.shape)), "read": i.how_read} for n, i in spec.layers.items()]


def dataset_name(config: BuildConfig) -> str:
    """What a run's images are, known before they are read (it is part of the run's identity)."""
    if config.model != "demo" and not config.data:
        return "none"   # a data-free build (noise, center-bias, diversity only)
    base = "fashion-mnist-train" if config.model == "demo" else f"folder:{Path(config.data).resolve()}"
    return base + (f"[:{config.max_images}]" if config.max_images else "")


def load_images(config: BuildConfig, spec: ModelSpec):
    if config.model == "demo":
        return load_fashion_mnist(train=True, data_dir=config.data).head(config.max_images)
    from .imagefolder import FolderSet
    return FolderSet(config.data, size=spec.input_shape[1], channels=spec.input_shape[0], max_images=config.max_images)


def class_of_label(classes: list[str], model_classes: list[str]) -> torch.Tensor:
    """For each dataset class, the model class of the same name (case, '_' and ' ' ignored), or -1."""
    def key(name: str) -> str:
        return name.replace("_", " ").strip().lower()
    index = {key(name): i for i, name in enumerate(model_classes)}
    return torch.tensor([index.get(key(name), -1) for name in classes], dtype=torch.long)


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


class AtlasBuilder:
    """Holds what one build shares: model, data, scan, store, settings."""

    def __init__(self, config: BuildConfig, progress: Progress | None = None):
        validate(config)
        self.device = resolve_device(config.device)
        # the run records the precision used, so its id says what the machine actually ran
        self.config = config = dataclasses.replace(config, precision=resolve_precision(config.precision, self.device))
        self.progress = progress or (lambda task, done, total: None)
        if config.model != "demo" and not config.data and "mfv" in config.methods:
            raise AtlasError(f"model {config.model!r} needs --data DIR for mfv: an image folder with one sub-folder "
                             f"per class (the data-free methods {', '.join(DATA_FREE)} need none)")
        self.spec = load_model(config.model, config.weights, config.input_size, config.mean, config.std,
                               config.seed).to(self.device)
        param, transforms, rate = config.synthesis()   # recorded as what runs, so a rerun inherits it
        self.config = config = dataclasses.replace(config, param=param, transforms=transforms, learning_rate=rate,
                                                   scale_range=config.scale_for(self.spec.input_shape[1]))
        self.units = _select_units(self.spec, config)
        self.batch_size = config.batch_size or default_batch_size(self.spec.input_shape[1], self.device)
        self.workers = config.workers or os.cpu_count() or 1
        self.store = Store(config.out)
        self.images = None          # the dataset (ImageSet or FolderSet), read when MFV needs it
        self.codes: Codes | None = None
        self.class_of_label: torch.Tensor | None = None
        self.thumbnailed: set[int] = set()   # image ids with a thumbnail in the store
        self.scan: ScanResult | None = None
        self.finder = FacetFinder(config.k, config.m, config.seed, min_size=config.facet_minimum)
        # (layer, units) -> (neuron rows, facet inputs, facets being found) of chunks started ahead
        self.prefetched: dict[tuple, tuple[list[dict], list[tuple], Callable[[], list]]] = {}
        self.timings: Counter = Counter()
        self.dataset = dataset_name(config)
        self.run_device = str(self.device)   # what runs.device records (the Ray executor: its workers')
        self.image_steps_left = 0   # synthesis work of the build, for the estimate after its first batch
        self.estimated = False

    # ---- runs -------------------------------------------------------------------------
    def run_id(self, method: str) -> str:
        ident = self.config.identity(method, self.spec.weights_sha256, self.dataset)
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.config.model}-{method}-{digest}"

    def _write_run(self, method: str, run_id: str, seconds: float, status: str) -> None:
        previous = self.store.read("runs", run_id)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        config = dataclasses.asdict(self.config) | {
            "method": method, "schedule": dataclasses.asdict(schedule_for(method, self.spec, self.config)),
            "min_facet_size": self.config.facet_minimum,
            "model_sha256": self.spec.weights_sha256, "dataset": self.dataset,
            "skipped_files": self.images.skipped if self.images is not None else None}
        self.store.write("runs", run_id, [{
            "run_id": run_id, "created_at": previous[0]["created_at"] if previous else now,
            "finished_at": now if status == "complete" else None, "status": status,
            "model": self.config.model, "model_sha256": self.spec.weights_sha256, "dataset": self.dataset,
            "method": method, "config_json": json.dumps(config, sort_keys=True, default=str),
            "seed": self.config.seed, "device": self.run_device, "code_version": code_version(),
            "seconds": seconds + ((previous[0]["seconds"] or 0.0) if previous else 0.0),
            "schema_version": SCHEMA_VERSION}])
        for depth, (name, info) in enumerate(self.spec.layers.items()):
            if name in self.units:
                self.store.write("layers", f"{run_id}__{name}", [{
                    "run_id": run_id, "layer": name, "depth": depth, "kind": info.kind, "role": info.role,
                    "n_units": info.n_units, "shape": "x".join(map(str, info.shape))}])

    # ---- the build ----------------------------------------------------------------------
    def run(self) -> BuildSummary:
        start = time.perf_counter()
        todo = {}
        for method in self.config.methods:
            run_id = self.run_id(method)
            done = self.store.completed_units(run_id)
            todo[method] = (run_id, {layer: [u for u in units if (layer, u) not in done]
                                     for layer, units in self.units.items()})
        mfv_layers = [layer for layer, units in todo.get("mfv", ("", {}))[1].items() if units]
        if mfv_layers:
            self._load_data()
        if any(units for _, layers in todo.values() for units in layers.values()):
            self._check_resources()
        left = {method: layers for method, (_, layers) in todo.items()}
        self.image_steps_left = sum(self._images_per_neuron(method) * len(units)
                                    for method, layers in left.items() for units in layers.values()) * self.config.steps
        self._say(self._plan(left))
        if mfv_layers:
            self._scan(mfv_layers)
        runs = []   # (method, run_id, units left by layer) of the runs with work left
        for method, (run_id, layers) in todo.items():
            if any(layers.values()):
                runs.append((method, run_id, layers))
                continue
            # a build killed after its last chunk still gets its run marked complete
            previous = self.store.read("runs", run_id)
            if previous and previous[0]["status"] != "complete":
                self._write_run(method, run_id, 0.0, "complete")
        built = self._build_runs(runs)
        self.store.sweep_temp_files()
        with self._timed("consolidate"):
            self.store.consolidate()
        return BuildSummary(self.store.root, {m: r for m, (r, _) in todo.items()}, built,
                            time.perf_counter() - start, dict(self.timings),
                            self.images.skipped if self.images is not None else 0)

    def _build_runs(self, runs: list[tuple[str, str, dict[str, list[int]]]]) -> int:
        """Build every chunk of these runs, one run after the other; returns the neurons built.
        The Ray executor replaces this (precompute.executors)."""
        built = 0
        for method, run_id, layers in runs:
            if method == "mfv":
                self._prefetch_facets(layers)
        for method, run_id, layers in runs:
            remaining = sum(len(units) for units in layers.values())
            method_start, done = time.perf_counter(), 0
            self._write_run(method, run_id, 0.0, "running")
            for layer, chunk in chunks(layers, self.config.chunk_units):
                def advance(share: float, done=done, n=len(chunk), task=f"{method} neurons") -> None:
                    self.progress(task, done + share * n, remaining)   # moves during the chunk's synthesis
                self._build_chunk(method, run_id, layer, chunk, advance)
                done += len(chunk)
                self.progress(f"{method} neurons", done, remaining)
            built += done
            self._write_run(method, run_id, time.perf_counter() - method_start, "complete")
        return built

    def _check_resources(self) -> None:
        """Where the work will run is checked before the plan is printed (the Ray executor connects)."""

    def _where(self) -> str:
        return self.run_device

    def _say(self, text: str) -> None:
        say = getattr(self.progress, "say", None)   # the terminal's; other callbacks (the dashboard's) lack it
        if say and text:
            say(text)

    def _plan(self, todo: dict[str, dict[str, list[int]]]) -> str:
        """One line: what this build is about to do (before the scan, which can itself take minutes)."""
        runs = {method: sum(map(len, layers.values())) for method, layers in todo.items()}
        runs = {method: n for method, n in runs.items() if n}
        if not runs:
            return "plan: nothing to do, every requested neuron is already built"
        layers = sorted({layer for layers in todo.values() for layer, units in layers.items() if units})
        c = self.config
        data = (f"; mfv: top {c.top_n} exemplars a hidden unit (a class neuron: all of its class), k={c.k}, "
                f"m={c.m}, facets of >= {c.facet_minimum}") if "mfv" in runs else ""
        return (f"plan: {' + '.join(f'{n} {m}' for m, n in runs.items())} neuron-runs of {c.model} "
                f"({', '.join(layers)}){data}; {c.steps} steps an image; {self._where()}, {c.precision}, "
                f"batches of {self.batch_size}")

    def _images_per_neuron(self, method: str) -> int:
        """Images synthesized per neuron (MFV: at most k, fewer for small exemplar sets or merged facets)."""
        return self.config.k if method in ("mfv", "diversity") else 1

    def _estimate(self, seconds: float, images: int, steps: int, layer: str) -> None:
        """After the build's first synthesis batch: the whole build's synthesis time at that rate."""
        if self.estimated or not self.image_steps_left:
            return
        self.estimated = True
        per_step = seconds / (images * steps)
        deeper = len(self.units) > 1 and layer != list(self.units)[-1]
        self._say(f"estimate: about {_duration(per_step * self.image_steps_left)} of synthesis for the whole build "
                  f"at the first batch's rate ({images} images x {steps} steps of {layer} in {seconds:.1f} s"
                  f"{'; deeper layers run slower' if deeper else ''})")

    @contextmanager
    def _timed(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] += time.perf_counter() - start

    def _load_data(self) -> None:
        """Read and check the dataset (a user's mistake surfaces here, before anything is printed)."""
        with self._timed("load data"):
            self.images = load_images(self.config, self.spec)
            self.thumbnailed = self.store.thumbnail_ids(self.dataset)
        self.class_of_label = class_of_label(self.images.classes, self.spec.class_names)
        n_classes = self.spec.layers[self.spec.logits_layer].n_units
        if not bool((self.class_of_label >= 0).any()) and len(self.images.classes) == n_classes:
            # no names match but the counts do (ImageNet's WordNet-id folders, or a user's classifier of
            # these very classes): sorted folder order is class order, the ImageFolder convention
            self.class_of_label = torch.arange(n_classes)
            self.spec.class_names = self.spec.class_names or list(self.images.classes)
        counts = torch.bincount(self.images.labels, minlength=len(self.images.classes))
        smallest_class = int(counts[self.class_of_label >= 0].min()) if bool((self.class_of_label >= 0).any()) else self.config.k
        if self.config.k > smallest_class:
            raise AtlasError(f"k={self.config.k} is larger than the smallest class ({smallest_class} images)")

    def _scan(self, layers: list[str]) -> None:
        with self._timed("scan"):
            self.scan = self._scan_images(layers)
        self.codes = self.scan.codes
        if self.codes is None:   # too many images to keep every code: embed just the exemplars
            needed = [torch.as_tensor(self._exemplar_set(layer, unit)[0]) for layer in layers for unit in self.units[layer]]
            with self._timed("embed"):
                self.codes = embed(self.spec, self.images, torch.cat(needed), self.device)

    def _scan_images(self, layers: list[str]) -> ScanResult:
        """One pass over the images (the Ray executor splits it by image ranges)."""
        return scan(self.spec, self.images, layers, self.config.top_n, self.device,
                    batch_size=scan_batch_size(self.spec), progress=lambda d, t: self.progress("scan images", d, t),
                    class_of_label=self.class_of_label)

    def _build_chunk(self, method: str, run_id: str, layer: str, units: list[int],
                     advance: Callable[[float], None] | None = None) -> None:
        """Build and write one chunk; `advance(share)` is told the share of its synthesis done."""
        name = f"{run_id}__{layer}__{units[0]:05d}"
        if method == "mfv":
            neurons, facets, exemplars, thumbnails = self._mfv_chunk(layer, units, advance)
            exemplars["run_id"] = [run_id] * len(exemplars["unit"])
            self.store.write("thumbnails", name, thumbnails)
            self.store.write("exemplars", name, exemplars)
        elif method == "diversity":
            neurons, facets = self._diversity_chunk(layer, units, advance)
        else:
            neurons, facets = self._baseline_chunk(method, layer, units, advance)
        for row in neurons + facets:
            row["run_id"] = run_id
        self.store.write("facets", name, facets)
        self.store.write("neurons", name, neurons)   # last: marks the chunk complete

    # ---- MFV ------------------------------------------------------------------------------
    def _exemplar_set(self, layer: str, unit: int) -> tuple[np.ndarray, np.ndarray, str, str | None]:
        """(image ids, activations, status, reason) of the images a neuron is clustered on."""
        info, scan_result = self.spec.layers[layer], self.scan.layers[layer]
        if bool(scan_result.nonfinite[unit]):
            return np.empty(0, np.int64), np.empty(0), "failed", "NaN/Inf activation on training images"
        if info.role == "logits" and bool((self.class_of_label == unit).any()):
            mine = (self.class_of_label[self.images.labels] == unit) & self.scan.readable
            ids = torch.nonzero(mine)[:, 0]
            return ids.numpy(), self.scan.own_class_logit[ids].double().numpy(), "ok", None
        values, ids = scan_result.top_values[unit], scan_result.top_indices[unit]
        if info.role == "logits":   # a logit has no "off": its N highest-scoring images
            return ids.numpy(), values.double().numpy(), "ok", None
        fires = values > 0   # units that fire on fewer than N images cluster only those images
        if not bool(fires.any()):
            return np.empty(0, np.int64), np.empty(0), "dead", f"never fires on the {int(self.scan.readable.sum())} training images"
        return ids[fires].numpy(), values[fires].double().numpy(), "ok", None

    def _facet_inputs(self, layer: str, units: list[int]) -> tuple[list[dict], list[tuple]]:
        """Each unit's neuron row, and (row, ids, acts, codes) of the units that get facets."""
        neurons, todo = [], []
        for unit in units:
            ids, acts, status, reason = self._exemplar_set(layer, unit)
            row = _neuron_row(self.spec, layer, unit, status, reason, len(ids))
            neurons.append(row)
            if status != "ok":
                continue
            codes = self.codes.take(ids).numpy()
            if not np.isfinite(codes).all():   # e.g. a NaN unit upstream poisons the embedding layer
                row.update(status="failed", reason="NaN/Inf in the embedding codes of its exemplars")
                continue
            todo.append((row, ids, acts, codes))
        return neurons, todo

    def _prefetch_facets(self, layers: dict[str, list[int]]) -> None:
        """Start finding the facets of every MFV chunk in the worker processes now: they then run
        while this process synthesizes earlier chunks, on the cycles synthesis leaves idle."""
        if self.workers < 2:
            return
        for layer, units in chunks(layers, self.config.chunk_units):
            neurons, todo = self._facet_inputs(layer, units)
            pending = self.finder.submit_many([c for *_, c in todo], self.workers)
            self.prefetched[(layer, tuple(units))] = (neurons, todo, pending)

    def _mfv_chunk(self, layer: str, units: list[int], advance=None):
        jobs, exemplars, thumbnails = [], _columns("exemplars"), []
        prefetched = self.prefetched.pop((layer, tuple(units)), None)
        with self._timed("facets"):
            if prefetched:
                neurons, todo, pending = prefetched
                found_all = pending()
            else:
                neurons, todo = self._facet_inputs(layer, units)
                found_all = self.finder.fit_many([codes for *_, codes in todo], self.workers)
        for (row, ids, acts, codes), found in zip(todo, found_all):
            unit = row["unit"]
            row.update(k=found.k, max_activation=float(acts.max()),
                       facet_diversity=_none_if_nan(facet_diversity(codes, found.labels)),
                       diversity_null=_none_if_nan(diversity_null(found.labels)))
            row.update(_top_class(self.images, ids))
            self._add_exemplars(exemplars, layer, unit, ids, acts, found)
            thumbnails += self._new_thumbnails(ids, found)
            for facet, members in enumerate(self.finder.init_members(found)):
                init = self.images.pixels(ids[members]).mean(0)
                jobs.append((unit, facet, len(found.nearest[facet]), init))
        facets = self._synthesize("mfv", layer, jobs, advance)
        _summarize(neurons, facets)
        return neurons, facets, exemplars, thumbnails

    def _new_thumbnails(self, ids: np.ndarray, found) -> list[dict]:
        """Thumbnails of the exemplars nearest each centroid that the store does not have yet."""
        per_facet = self.config.thumbs_per_facet
        wanted = ids if per_facet < 0 else np.concatenate([ids[m[:per_facet]] for m in found.nearest])
        rows = []
        for image_id in dict.fromkeys(int(i) for i in wanted):
            if image_id not in self.thumbnailed:
                self.thumbnailed.add(image_id)
                rows.append({"dataset": self.dataset, "image_id": image_id,
                             "png": to_png(thumbnail(self.images.pixels([image_id])[0]))})
        return rows

    def _add_exemplars(self, columns: dict, layer: str, unit: int, ids, acts, found) -> None:
        rank = np.empty(len(ids), dtype=np.int64)
        for members in found.nearest:
            rank[members] = np.arange(len(members))
        columns["layer"] += [layer] * len(ids)
        columns["unit"] += [unit] * len(ids)
        columns["image_id"] += ids.tolist()
        columns["activation"] += acts.tolist()
        columns["pca"] += list(found.pca.astype(np.float32)) if self.config.pca_codes else [None] * len(ids)
        columns["tsne_x"] += found.tsne[:, 0].tolist()
        columns["tsne_y"] += found.tsne[:, 1].tolist()
        columns["facet"] += found.labels.tolist()
        columns["rank_in_facet"] += rank.tolist()
        columns["dist_to_centroid"] += found.dist.tolist()

    # ---- baselines -------------------------------------------------------------------------
    def _baseline_chunk(self, method: str, layer: str, units: list[int], advance=None):
        keys = torch.tensor([image_key(self.config.seed, method, layer, u, 0) for u in units])
        inits = noise_init(keys, self.spec.input_shape, "cpu")
        jobs = [(unit, 0, None, init) for unit, init in zip(units, inits)]
        neurons = [_neuron_row(self.spec, layer, u, "ok", None, None) | {"k": 1} for u in units]
        facets = self._synthesize(method, layer, jobs, advance)
        _summarize(neurons, facets)
        return neurons, facets

    def _diversity_chunk(self, layer: str, units: list[int], advance=None):
        """Lucid's diversity baseline: k images of each neuron from independent noise, optimized
        together (one group per unit, see synthesis.diversity_penalty); facet = image index."""
        k = self.config.k
        jobs = []
        for unit in units:
            keys = torch.tensor([image_key(self.config.seed, "diversity", layer, unit, f) for f in range(k)])
            jobs += [(unit, f, None, init) for f, init in enumerate(noise_init(keys, self.spec.input_shape, "cpu"))]
        neurons = [_neuron_row(self.spec, layer, u, "ok", None, None) | {"k": k} for u in units]
        facets = self._synthesize("diversity", layer, jobs, advance)
        _summarize(neurons, facets)
        return neurons, facets

    # ---- synthesis ---------------------------------------------------------------------------
    def _synthesize(self, method: str, layer: str, jobs: list[tuple], advance=None) -> list[dict]:
        """Render every (unit, facet, size, init) job of one layer in batches; one row per image."""
        rows = []
        schedule = schedule_for(method, self.spec, self.config)
        for batch in _batches(jobs, self.batch_size, whole_units=schedule.diversity > 0):
            finished = len(rows)
            def step_done(step: int, steps: int, n=len(batch)) -> None:
                if advance:
                    advance((finished + n * step / steps) / len(jobs))
            units = torch.tensor([j[0] for j in batch], device=self.device)
            keys = torch.tensor([image_key(self.config.seed, method, layer, j[0], j[1]) for j in batch],
                                device=self.device)
            init = torch.stack([j[3] for j in batch]).to(self.device)
            started = time.perf_counter()
            with self._timed("synthesis"):
                final = render(self.spec, layer, units, init, schedule, keys, step_done, self.config.precision)
                before, after = measure(self.spec, layer, units, init), measure(self.spec, layer, units, final)
            self._estimate(time.perf_counter() - started, len(batch), schedule.steps, layer)
            for i, (unit, facet, size, _) in enumerate(batch):
                rows.append({
                    "layer": layer, "unit": unit, "facet": facet, "size": size,
                    "init_png": to_png(init[i]), "image_png": to_png(final[i]),
                    "act_init": float(before["act"][i]), "act_final": float(after["act"][i]),
                    "target_prob": _none_if_nan(float(after["target_prob"][i])),
                    "top1_hit": None if int(after["top1"][i]) < 0 else bool(after["top1"][i]),
                    "steps": schedule.steps})
        return rows


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def chunks(layers: dict[str, list[int]], size: int):
    """(layer, units) chunks of at most `size` units. A resumed build re-chunks what is left the same
    way, since whole chunks are done or not, so a redone chunk overwrites its own unfinished parts."""
    for layer, units in layers.items():
        for i in range(0, len(units), size):
            yield layer, units[i:i + size]


def _batches(jobs: list[tuple], size: int, whole_units: bool = False):
    """Batches of at most `size` jobs. With `whole_units`, one unit's jobs are never split (the
    diversity penalty compares the images of a unit within a batch): a unit with more jobs than
    `size` gets a batch of its own."""
    if not whole_units:
        yield from (jobs[start:start + size] for start in range(0, len(jobs), size))
        return
    batch: list[tuple] = []
    for _, unit_jobs in itertools.groupby(jobs, key=lambda job: job[0]):
        unit_jobs = list(unit_jobs)
        if batch and len(batch) + len(unit_jobs) > size:
            yield batch
            batch = []
        batch += unit_jobs
    if batch:
        yield batch


def _columns(table: str) -> dict[str, list]:
    from .store import SCHEMAS
    return {name: [] for name in SCHEMAS[table].names if name != "run_id"}


def _none_if_nan(value: float):
    return None if value is None or not np.isfinite(value) else value


def _neuron_row(spec: ModelSpec, layer: str, unit: int, status: str, reason, n_exemplars) -> dict:
    return {"layer": layer, "unit": unit, "label": spec.unit_label(layer, unit), "status": status,
            "reason": reason, "n_exemplars": n_exemplars, "k": 0}


def _top_class(images, ids: np.ndarray) -> dict:
    counts = torch.bincount(images.labels[torch.as_tensor(ids)], minlength=len(images.classes))
    best = int(counts.argmax())
    return {"top_class": images.classes[best], "top_class_share": float(counts[best]) / len(ids)}


def _summarize(neurons: list[dict], facets: list[dict]) -> None:
    """Per neuron: the best activation its facets reached; NaN/Inf results fail the neuron."""
    by_unit: dict[int, list[dict]] = {}
    for row in facets:
        by_unit.setdefault(row["unit"], []).append(row)
    for neuron in neurons:
        finals = [row["act_final"] for row in by_unit.get(neuron["unit"], [])]
        if finals and not all(np.isfinite(finals)):
            neuron.update(status="failed", reason="synthesis produced a NaN/Inf activation")
        elif finals:
            neuron["best_act_final"] = max(finals)


def build_atlas(config: BuildConfig, progress: Progress | None = None) -> BuildSummary:
    """Build or resume the atlas described by `config`; returns what was done."""
    if config.executor == "ray":
        from .executors import RayAtlasBuilder   # only now: Ray is an optional dependency
        return RayAtlasBuilder(config, progress).run()
    return AtlasBuilder(config, progress).run()


# settings a rerun takes from the run it is compared with, unless it overrides them
INHERITED = ("model", "weights", "data", "top_n", "m", "min_facet_size", "thumbs_per_facet", "pca_codes", "max_images",
             "input_size", "mean", "std", "precision", "param", "transforms", "learning_rate", "scale_range")


def rerun_neuron(store_dir: str | Path, layer: str, unit: int, method: str = "mfv", k: int = 10,
                 steps: int = 200, seed: int = 0, device: str = "auto", progress: Progress | None = None,
                 like: dict | None = None) -> str:
    """Synthesize one neuron with other settings; saved to the store as its own run. Returns the run id.

    `like` is a stored run's config (runs.config_json): model, weights, data and the exemplar
    settings come from it, so only what the caller changes (method, k, steps, seed) differs.
    """
    inherited = {key: value for key, value in (like or {}).items() if key in INHERITED}
    for key in ("mean", "std", "transforms"):
        if inherited.get(key) is not None:
            inherited[key] = tuple(inherited[key])
    if like and "scale_range" not in like:   # runs from before the range was recorded used Lucid's
        inherited["scale_range"] = ROBUST_SCALE
    config = BuildConfig(out=str(store_dir), layers=(layer,), units=(unit,), methods=(method,), k=k, steps=steps,
                         seed=seed, device=device, **inherited)
    return build_atlas(config, progress).run_ids[method]
