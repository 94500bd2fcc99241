"""Where a build's work runs: `LocalExecutor` (this process) or `RayExecutor` (`--executor ray`).

Both take the same plan and the same Job (runs, store, the scan's MfvInputs as a value) and build
each chunk with precompute.pipeline.chunks.ChunkBuilder.build, the public chunk API.

On a Ray cluster the scan is split by images, the neurons by chunks.

How the work is split and merged
  scan     one Ray task per range of images, cut at scan-batch boundaries (so every batch holds the
           same images as in one pass over all of them); the driver merges the ranges' per-unit top N
           (`activations.merge_scans`) and goes on exactly as a local build (codes, exemplar sets).
  neurons  one actor call per chunk of --chunk-units neurons of one run and layer: the worker runs
           `ChunkBuilder.build`, which writes the chunk's Parquet parts into the store itself,
           atomically, its `neurons` part last. The driver keeps every worker busy with one chunk,
           marks each run complete when its last chunk is in, and loads the finished parts into
           atlas.duckdb every CONSOLIDATE_EVERY_S seconds, so a partial atlas can be browsed meanwhile.

Why actors for the chunks, and plain tasks for the scan
  A chunk needs the model, the images, the merged scan and the embedding codes. A worker actor (one
  per --cpus-per-task cores / --gpus-per-task GPUs of the cluster) loads the model once and receives
  the rest once through the object store (the driver puts it there once), then builds chunk after
  chunk; a task per chunk would deserialize all of it again every time. The scan is one task per
  worker slot, so a task that loads the model for itself is the simplest thing that works.

Fault tolerance
  A worker killed mid-chunk (the process, or its node) loses only that chunk: Ray restarts the actor
  (max_restarts), whose constructor rebuilds the same state from the config and the same object
  reference, and calls the chunk again (max_task_retries); the retry overwrites the unfinished
  chunk's parts. Scan tasks are retried the same way (max_retries). A driver killed mid-job takes its
  workers with it; running the same command again resumes from the completed chunks
  (`Store.completed_units`), as a local build does. An exception raised by the build code itself is
  not retried (it would fail again): it stops the build, with the finished chunks saved.

Same results as a local build: the same code builds the same chunks with the same per-image seeds.
Float sums in torch's CPU kernels depend on the number of threads, so the store is bit-identical to
a local build run with as many torch threads as --cpus-per-task; with other thread counts, 200 steps
of gradient ascent and the t-SNE can amplify last-digit differences (docs/scaling.md).

Every node needs this package, the model weights, the images (--data) and the store folder (--store)
at the same paths: run from one checkout on a shared filesystem (see docs/scaling.md).
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable

import torch

from ..core.errors import AtlasError
from ..core.store import Store
from ..engine.activations import ScanResult, merge_scans, scan
from .chunks import ChunkBuilder, MfvInputs, chunks
from .plan import RAY_OPTIONS, BuildConfig, Plan, make_plan
from .runtime import Timings, scan_batch_size

INSTALL_HINT = "pip install -r requirements-ray.txt (ray==2.60.0)"
RETRIES = 3                  # per chunk and per scan range; also restarts per worker
CONSOLIDATE_EVERY_S = 30.0   # how often finished parts are loaded into atlas.duckdb during a build
Progress = Callable[[str, int, int], None]   # (task, done, total)
Runs = list[tuple[str, str, dict[str, list[int]]]]   # (method, run_id, units left by layer)


@dataclass
class Job:
    """A build's chunks, for an executor: what to build, with what, and whom to tell."""
    plan: Plan
    store: Store
    runs: Runs
    inputs: MfvInputs | None                       # the scan's result, for MFV runs
    progress: Progress
    record_run: Callable[[str, str, float, str], None]   # (method, run_id, seconds, status)
    timings: Timings                                # seconds by stage, added to


def _scan(plan: Plan, images, layers: list[str], class_of_label: torch.Tensor, progress=None) -> ScanResult:
    return scan(plan.spec, images, layers, plan.config.top_n, plan.device, batch_size=scan_batch_size(plan.spec),
                progress=progress, class_of_label=class_of_label)


class LocalExecutor:
    """Everything in this process: one scan, then every chunk of one run after the other."""
    run_device = None   # runs record the plan's device

    def connect(self, plan: Plan) -> None:
        pass

    def where(self, plan: Plan) -> str:
        return str(plan.device)

    def close(self) -> None:
        pass

    def scan(self, plan: Plan, images, layers: list[str], class_of_label: torch.Tensor, progress: Progress) -> ScanResult:
        return _scan(plan, images, layers, class_of_label, lambda done, total: progress("scan images", done, total))

    def build(self, job: Job) -> int:
        """Build every chunk of the job's runs; returns the neurons built."""
        builder = ChunkBuilder(job.plan, job.store, job.inputs)
        for method, _, layers in job.runs:
            if method == "mfv":   # facets found in worker processes while earlier chunks synthesize
                builder.prefetch_facets(layers)
        built = 0
        for method, run_id, layers in job.runs:
            remaining = sum(len(units) for units in layers.values())
            method_start, done = time.perf_counter(), 0
            job.record_run(method, run_id, 0.0, "running")
            for layer, chunk in chunks(layers, job.plan.config.chunk_units):
                def advance(share: float, done=done, n=len(chunk), task=f"{method} neurons") -> None:
                    job.progress(task, done + share * n, remaining)   # moves during the chunk's synthesis
                builder.build(method, run_id, layer, chunk, advance)
                done += len(chunk)
                job.progress(f"{method} neurons", done, remaining)
            built += done
            job.record_run(method, run_id, time.perf_counter() - method_start, "complete")
        job.timings.update(builder.timings)
        return built


def import_ray():
    try:
        import ray
    except ImportError:
        raise AtlasError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# ---- the workers (these run in Ray worker processes) -------------------------------------------
def _worker_plan(config: BuildConfig, threads: int) -> Plan:
    torch.set_num_threads(threads)   # the cores Ray gave this worker, not every core of its node
    return make_plan(config)


def _scan_range(config: BuildConfig, threads: int, images, layers: list[str],
                class_of_label: torch.Tensor) -> tuple[ScanResult, int]:
    """Scan one range of images (indexed from 0); also returns how many of its files were unreadable."""
    return _scan(_worker_plan(config, threads), images, layers, class_of_label), images.skipped


class ChunkWorker:
    """A Ray actor: a ChunkBuilder with the model loaded and the driver's scan adopted."""

    def __init__(self, config: BuildConfig, threads: int, shared: list):
        # A user error here (weights missing on this node...) is raised again by every call, so the
        # driver gets it as that call's exception (one line), not as a dead actor that Ray restarts.
        self.error = None
        try:
            plan = _worker_plan(config, threads)
        except AtlasError as exc:
            self.error = exc
            return
        inputs = None
        if shared:   # [a reference to] the MfvInputs the driver's scan made
            import ray
            inputs = ray.get(shared[0])
        self.builder = ChunkBuilder(plan, Store(config.store), inputs)

    def device(self) -> str:
        if self.error:
            raise self.error
        return str(self.builder.device)

    def build(self, method: str, run_id: str, layer: str, units: list[int]) -> dict[str, float]:
        """Build one chunk into the store; returns the seconds this took, by stage."""
        if self.error:
            raise self.error
        before = Counter(self.builder.timings)
        self.builder.build(method, run_id, layer, units)
        return dict(Counter(self.builder.timings) - before)


# ---- the driver --------------------------------------------------------------------------------
class RayExecutor:
    """The scan and the chunks on Ray workers; the runs, resume and consolidation stay with the build."""

    def __init__(self, config: BuildConfig):
        self.ray = import_ray()   # first: without Ray, say so before loading anything
        self.config = config
        self.connected_here = False
        self.slots = 0            # workers the cluster holds; set on connecting
        self.shared: list = []    # [object ref] of what MFV workers share, held until the build ends
        self.run_device = None    # "ray:<workers>x<device>", once the workers are up

    def close(self) -> None:
        if self.connected_here:
            self.ray.shutdown()   # disconnects; stops the Ray instance only if this build started it

    # ---- connecting ----------------------------------------------------------------------------
    def connect(self, plan: Plan) -> None:
        self._connect()

    def where(self, plan: Plan) -> str:
        return f"Ray, {self.slots} worker slots"

    def _connect(self) -> None:
        ray = self.ray
        if self.slots:
            return
        if not ray.is_initialized():   # else a caller (a notebook, the tests) chose the cluster already
            try:
                ray.init(address=self.config.ray_address, logging_level="WARNING")
            except ConnectionError as exc:
                raise AtlasError(f"cannot connect to Ray at --ray-address {self.config.ray_address!r}: {exc}") from None
            self.connected_here = True
        self.slots = self._slots(ray.cluster_resources(), ray.available_resources())

    def _slots(self, total: dict, free: dict) -> int:
        """Size the workers (sets self.threads, self.gpus); returns how many to start."""
        cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
        self.threads = self.config.cpus_per_task or 1
        self.gpus = self.config.gpus_per_task
        if self.gpus is None:   # a GPU each when the cluster has them, unless asked to stay on CPUs
            self.gpus = 1 if gpus >= 1 and self.config.device != "cpu" else 0
        if self.gpus > gpus:
            raise AtlasError(f"--gpus-per-task {self.gpus:g}, but the Ray cluster has {gpus:g} GPUs; "
                             "use --gpus-per-task 0 to run on CPUs")
        if self.threads > cpus:
            raise AtlasError(f"--cpus-per-task {self.threads}, but the Ray cluster has {cpus:g} CPUs")
        if self.config.ray_workers:
            return self.config.ray_workers
        slots = int(free.get("CPU", 0) // self.threads)   # free: other jobs may share the cluster
        if self.gpus:
            slots = min(slots, int(free.get("GPU", 0) // self.gpus))
        return max(1, slots)   # at least one: it waits for resources to free up

    @property
    def resources(self) -> dict:
        return {"num_cpus": self.threads, "num_gpus": self.gpus}

    def worker_config(self, plan: Plan) -> BuildConfig:
        """The config a worker plans with: a local build of the same atlas (the driver's resolved
        config), on the worker's cores."""
        return dataclasses.replace(plan.config, executor="local", workers=self.config.workers or self.threads,
                                   **{name: None for name in RAY_OPTIONS})

    def _get(self, ref):
        """ray.get, with the user's mistakes as one-line AtlasErrors and a worker that kept dying explained."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, AtlasError):
                raise AtlasError(str(exc.cause)) from None
            raise
        except ray.exceptions.RayError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise AtlasError(f"a Ray worker failed and was not recovered ({type(exc).__name__}: "
                             f"{lines[0] if lines else ''}); finished chunks are saved: run the same "
                             "command again to resume") from None

    # ---- the scan, split by image ranges ------------------------------------------------------------
    def scan(self, plan: Plan, images, layers: list[str], class_of_label: torch.Tensor, progress: Progress) -> ScanResult:
        self._connect()
        n = len(images)
        bounds = image_ranges(n, scan_batch_size(plan.spec), self.slots)
        task = self.ray.remote(_scan_range).options(**self.resources, max_retries=RETRIES)
        config = self.worker_config(plan)
        refs = {task.remote(config, self.threads, images.subset(a, b), layers, class_of_label): b - a for a, b in bounds}
        progress("scan images", 0, n)
        done, pending = {}, list(refs)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            done[ready[0]] = self._get(ready[0])
            progress("scan images", sum(refs[ref] for ref in done), n)
        results = [done[ref] for ref in refs]
        images.skipped = sum(skipped for _, skipped in results)
        return merge_scans([result for result, _ in results], plan.config.top_n)

    # ---- the chunks ------------------------------------------------------------------------------
    def build(self, job: Job) -> int:
        todo = deque((method, run_id, layer, units) for method, run_id, layers in job.runs
                     for layer, units in chunks(layers, job.plan.config.chunk_units))
        if not todo:
            return 0
        self._connect()
        workers = self._start_workers(job, min(self.slots, len(todo)))
        try:
            self.run_device = f"ray:{len(workers)}x{self._get(workers[0].device.remote())}"
            for method, run_id, _ in job.runs:
                job.record_run(method, run_id, 0.0, "running")
            return self._dispatch(job, workers, todo)
        finally:
            for worker in workers:
                self.ray.kill(worker)

    def _start_workers(self, job: Job, n: int) -> list:
        # MFV: the data and the merged scan go into the object store once, for every worker. The reference
        # is passed inside a list, so Ray does not resolve it for the constructor: the worker gets it itself,
        # also when restarted, while self.shared keeps the object alive until the build ends.
        if job.inputs is not None:
            images = job.inputs.images.subset(0, len(job.inputs.images))   # compact: `head` keeps a view of every image
            self.shared = [self.ray.put(dataclasses.replace(job.inputs, images=images))]
        actor = self.ray.remote(ChunkWorker).options(**self.resources, max_restarts=RETRIES,
                                                     max_task_retries=RETRIES)
        return [actor.remote(self.worker_config(job.plan), self.threads, self.shared) for _ in range(n)]

    def _dispatch(self, job: Job, workers: list, todo: deque) -> int:
        """Keep every worker busy with one chunk until all are built; record runs as they complete."""
        method_of = {run_id: method for method, run_id, _, _ in todo}
        chunks_left = Counter(run_id for _, run_id, _, _ in todo)
        total, done, running = sum(len(chunk[3]) for chunk in todo), 0, {}
        start = last_consolidated = time.monotonic()
        unconsolidated = False

        def submit(worker) -> None:
            if todo:
                chunk = todo.popleft()
                running[worker.build.remote(*chunk)] = (worker, chunk)

        for worker in workers:
            submit(worker)
        _report(job.progress, 0, total, len(running), len(workers))
        while running:   # the timeout keeps the bar's ETA and the consolidation timer going
            ready, _ = self.ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                worker, (_, run_id, _, units) = running.pop(ref)
                job.timings.update({f"{stage} (workers)": s for stage, s in self._get(ref).items()})
                done, unconsolidated = done + len(units), True
                chunks_left[run_id] -= 1
                if not chunks_left[run_id]:
                    job.record_run(method_of[run_id], run_id, time.monotonic() - start, "complete")
                submit(worker)
            _report(job.progress, done, total, len(running), len(workers))
            if unconsolidated and time.monotonic() - last_consolidated >= CONSOLIDATE_EVERY_S:
                with job.timings.timed("consolidate"):
                    job.store.consolidate()   # a partial atlas to browse while the rest is built
                last_consolidated, unconsolidated = time.monotonic(), False
        return done


def _report(progress: Progress, done: int, total: int, busy: int, workers: int) -> None:
    progress("neurons", done, total)
    note = getattr(progress, "note", None)   # the terminal bar's postfix; other callbacks lack it
    if note:
        note("neurons", f"{busy}/{workers} workers busy")



def image_ranges(n: int, batch_size: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) ranges of `n` images for `parts` scan tasks, cut at multiples of `batch_size`:
    every batch then holds the same images as in one pass, which keeps the merged scan bit-identical."""
    batches = -(-n // batch_size)
    parts = max(1, min(parts, batches))
    cuts = [min(n, round(i * batches / parts) * batch_size) for i in range(parts + 1)]
    return list(zip(cuts, cuts[1:]))
