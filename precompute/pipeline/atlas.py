"""Build (or resume) an atlas: plan, scan, build every chunk on an executor, write the store.

Work is split into chunks of units of one layer; each chunk's parts are written atomically
and its `neurons` part last, so a killed build resumes where it stopped with every neuron
exactly once. A run is one method under one configuration; its id is a hash of that
configuration, so building again with the same settings resumes or extends the same run.
This module keeps the runs (what is done, what is left, their records) and the build's own
reading of the data; the plan says what to build (precompute.pipeline.plan), a chunk builder how
(precompute.pipeline.chunks), an executor where (precompute.pipeline.executors: this process, or Ray workers).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..core.errors import AtlasError
from ..core.store import SCHEMA_VERSION, Store
from ..engine.activations import embed
from ..engine.models import load_model
from .chunks import MfvInputs
from .estimate import synthesis_seconds
from .executors import Job, LocalExecutor, Progress, RayExecutor
from .plan import DATA_FREE, ROBUST_SCALE, BuildConfig, make_plan
from .runtime import Timings, check_precision_runs, class_of_label, code_version, load_images, run_precision

__all__ = ["BuildConfig", "BuildSummary", "build_atlas", "list_layers", "rerun_neuron", "DATA_FREE"]


@dataclass
class BuildSummary:
    store: Path
    run_ids: dict[str, str]
    neurons_built: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    skipped_files: int = 0     # images that could not be read (skipped, not fatal)


class AtlasBuilder:
    """One build: its plan, its store and runs, and the data MFV reads; the chunks go to an executor."""

    def __init__(self, config: BuildConfig, progress: Progress | None = None, executor=None):
        self.executor = executor or LocalExecutor()
        self.plan = make_plan(config)
        self.config, self.spec, self.units = self.plan.config, self.plan.spec, self.plan.units
        self.progress = progress or (lambda task, done, total: None)
        self.store = Store(config.store)
        self.images = None          # the dataset (ImageSet or FolderSet), read when MFV needs it
        self.timings = Timings()
        self.precision: dict[str, str] = {}   # run id -> the precision it runs in (a resumed run: its own)

    # ---- runs -------------------------------------------------------------------------
    def _write_run(self, method: str, run_id: str, seconds: float, status: str) -> None:
        previous = self.store.read("runs", run_id)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        config = dataclasses.asdict(self.config) | {
            "method": method, "schedule": dataclasses.asdict(self.plan.schedule(method)),
            "min_facet_size": self.config.facet_minimum, "precision_ran": self.precision[run_id],
            "model_sha256": self.spec.weights_sha256, "dataset": self.plan.dataset,
            "skipped_files": self.images.skipped if self.images is not None else None}
        self.store.write("runs", run_id, [{
            "run_id": run_id, "created_at": previous[0]["created_at"] if previous else now,
            "finished_at": now if status == "complete" else None, "status": status,
            "model": self.config.model, "model_sha256": self.spec.weights_sha256, "dataset": self.plan.dataset,
            "method": method, "config_json": json.dumps(config, sort_keys=True, default=str),
            "seed": self.config.seed, "device": self.executor.run_device or str(self.plan.device), "code_version": code_version(),
            "seconds": seconds + ((previous[0]["seconds"] or 0.0) if previous else 0.0),
            "schema_version": SCHEMA_VERSION}])
        for depth, (name, info) in enumerate(self.spec.layers.items()):
            if name in self.units:
                self.store.write("layers", f"{run_id}__{name}", [{
                    "run_id": run_id, "layer": name, "depth": depth, "kind": info.kind, "role": info.role,
                    "n_units": info.n_units, "shape": "x".join(map(str, info.shape))} | _field_columns(info, self.plan.fields.get(name))])

    # ---- the build ----------------------------------------------------------------------
    def run(self) -> BuildSummary:
        try:
            return self._run()
        finally:
            self.executor.close()

    def _run(self) -> BuildSummary:
        start = time.perf_counter()
        todo = {}
        for method in self.config.methods:
            run_id = self.plan.run_id(method)
            done = self.store.completed_units(run_id)
            todo[method] = (run_id, {layer: [u for u in units if (layer, u) not in done]
                                     for layer, units in self.units.items()})
            self.precision[run_id] = self._precision(run_id, any(todo[method][1].values()))
        mfv_layers = [layer for layer, units in todo.get("mfv", ("", {}))[1].items() if units]
        labels = self.load_data() if mfv_layers else None
        if any(units for _, layers in todo.values() for units in layers.values()):
            self.executor.connect(self.plan)   # where the work will run is checked before the plan is printed
        left = {method: layers for method, (_, layers) in todo.items()}
        self._say(self._plan(left))
        inputs = self.scan(mfv_layers, labels) if mfv_layers else None
        if isinstance(self.executor, LocalExecutor):   # on Ray the work runs on other machines than this
            self._estimate(todo)
        runs = []   # (method, run_id, units left by layer) of the runs with work left
        for method, (run_id, layers) in todo.items():
            if any(layers.values()):
                runs.append((method, run_id, layers))
                continue
            # a build killed after its last chunk still gets its run marked complete
            previous = self.store.read("runs", run_id)
            if previous and previous[0]["status"] != "complete":
                self._write_run(method, run_id, 0.0, "complete")
        built = self.executor.build(Job(self.plan, self.store, runs, inputs, self.progress, self._write_run,
                                        self.timings)) if runs else 0
        self.store.sweep_temp_files()
        with self.timings.timed("consolidate"):
            self.store.consolidate()
        return BuildSummary(self.store.root, {m: r for m, (r, _) in todo.items()}, built,
                            time.perf_counter() - start, dict(self.timings),
                            self.images.skipped if self.images is not None else 0)

    def _precision(self, run_id: str, work_left: bool) -> str:
        """What a run runs in: a new run, what the asked precision resolves to here; a stored run, what it
        started with, so that a resume on another CPU continues the same run the same way."""
        recorded = run_precision(self.store, run_id)
        if recorded is None or recorded == self.plan.precision or not work_left:
            return recorded or self.plan.precision
        check_precision_runs(recorded, self.plan.device, run_id)
        self._say(f"resuming run {run_id} in {recorded}, as it started (--precision {self.config.precision} "
                  f"would pick {self.plan.precision} here)")
        return recorded

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
                f"({', '.join(layers)}){data}; {c.steps} steps an image; {self.executor.where(self.plan)}, "
                f"{'/'.join(sorted(set(self.precision.values())))}, "
                f"batches of {self.plan.batch_size}")

    def _images_per_neuron(self, method: str) -> int:
        """Images synthesized per neuron (MFV: at most k, fewer for small exemplar sets or merged facets)."""
        return self.config.k if method in ("mfv", "diversity") else 1

    def _estimate(self, todo: dict[str, tuple[str, dict[str, list[int]]]]) -> None:
        """Before synthesis starts: its time for the whole build, each method and layer timed on one batch."""
        work = [(method, layer, self._images_per_neuron(method) * len(units))
                for method, (_, layers) in todo.items() for layer, units in layers.items()]
        if not any(images for *_, images in work):
            return
        started = time.perf_counter()
        with self.timings.timed("estimate"):
            seconds = synthesis_seconds(self.plan, work, {m: self.precision[run_id] for m, (run_id, _) in todo.items()})
        self._say(f"estimate: about {_duration(seconds)} of synthesis for the whole build (each method and layer "
                  f"timed on one batch, in {time.perf_counter() - started:.1f} s)")

    def load_data(self) -> torch.Tensor:
        """Read and check the dataset (a user's mistake surfaces here, before anything is printed);
        returns each dataset label's model class (-1: none)."""
        with self.timings.timed("load data"):
            self.images = load_images(self.spec, self.config.model, self.config.data, self.config.max_images)
        labels = class_of_label(self.images.classes, self.spec.class_names)
        n_classes = self.spec.layers[self.spec.logits_layer].n_units
        if not bool((labels >= 0).any()) and len(self.images.classes) == n_classes:
            # no names match but the counts do (ImageNet's WordNet-id folders, or a user's classifier of
            # these very classes): sorted folder order is class order, the ImageFolder convention
            labels = torch.arange(n_classes)
            self.spec.class_names = self.spec.class_names or list(self.images.classes)
        counts = torch.bincount(self.images.labels, minlength=len(self.images.classes))
        smallest_class = int(counts[labels >= 0].min()) if bool((labels >= 0).any()) else self.config.k
        if self.config.k > smallest_class:
            raise AtlasError(f"k={self.config.k} is larger than the smallest class ({smallest_class} images)")
        return labels

    def scan(self, layers: list[str], labels: torch.Tensor) -> MfvInputs:
        """One pass over the images (on the executor) for the exemplars of `layers`, and their codes;
        `labels` maps dataset labels to model classes (load_data)."""
        with self.timings.timed("scan"):
            result = self.executor.scan(self.plan, self.images, layers, labels, self.progress)
        inputs = MfvInputs(self.images, result, result.codes, labels, self.spec.class_names)
        if inputs.codes is None:   # too many images to keep every code: embed just the exemplars
            needed = [torch.as_tensor(inputs.exemplar_set(self.spec, layer, unit).ids)
                      for layer in layers for unit in self.units[layer]]
            with self.timings.timed("embed"):
                inputs.codes = embed(self.spec, self.images, torch.cat(needed), self.plan.device)
        return inputs


def _field_columns(info, field) -> dict:
    """A layer row's receptive-field columns."""
    if field is not None:
        return {"rf_size": list(field.size), "rf_stride": list(field.stride), "rf_offset": list(field.offset),
                "rf_method": field.method}
    return {"rf_method": None if info.kind == "fc" else "whole image"}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def list_layers(model: str = "demo", weights: str | None = None) -> list[dict]:
    spec = load_model(model, weights)
    alias_of = {node: alias for alias, node in spec.aliases.items() if alias != node}
    return [{"layer": n, "alias": alias_of.get(n, ""), "kind": i.kind, "role": i.role, "n_units": i.n_units,
             "shape": "x".join(map(str, i.shape)), "read": i.how_read} for n, i in spec.layers.items()]


def build_atlas(config: BuildConfig, progress: Progress | None = None) -> BuildSummary:
    """Build or resume the atlas described by `config`; returns what was done."""
    executor = RayExecutor(config) if config.executor == "ray" else None   # Ray first: without it, say so
    return AtlasBuilder(config, progress, executor).run()


# settings a rerun takes from the run it is compared with, unless it overrides them
INHERITED = ("model", "weights", "data", "top_n", "m", "min_facet_size", "thumbs_per_facet", "pca_codes", "max_images",
             "input_size", "mean", "std", "precision", "param", "transforms", "learning_rate", "scale_range", "stop",
             "facet_pull", "seed_penalty")


def rerun_neuron(store: str | Path, layer: str, unit: int, method: str = "mfv", k: int = 10,
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
    config = BuildConfig(store=str(store), layers=(layer,), units=(unit,), methods=(method,), k=k, steps=steps,
                         seed=seed, device=device, **inherited)
    return build_atlas(config, progress).run_ids[method]
