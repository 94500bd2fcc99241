"""Build an atlas on a Ray cluster (`--executor ray`): the scan split by images, the neurons by chunks.

How the work is split and merged
  scan     one Ray task per range of images, cut at scan-batch boundaries (so every batch holds the
           same images as in one pass over all of them); the driver merges the ranges' per-unit top N
           (`activations.merge_scans`) and goes on exactly as a local build (codes, exemplar sets).
  neurons  one actor call per chunk of --chunk-units neurons of one run and layer: the worker runs
           `AtlasBuilder._build_chunk`, which writes the chunk's Parquet parts into the store itself,
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
of gradient ascent and the t-SNE can amplify last-digit differences (README, "Scaling out").

Every node needs this package, the model weights, the images (--data) and the store folder (--out)
at the same paths: run from one checkout on a shared filesystem (see README, "Scaling out").
"""
from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections import Counter, deque

import torch

from .activations import ScanResult, merge_scans, scan
from .build import AtlasBuilder, BuildConfig, chunks, scan_batch_size
from .errors import AtlasError, choose
from .store import Store

EXECUTORS = ("local", "ray")
RAY_OPTIONS = ("ray_address", "gpus_per_task", "cpus_per_task", "ray_workers")
INSTALL_HINT = "pip install -r requirements-ray.txt (ray==2.60.0)"
RETRIES = 3                  # per chunk and per scan range; also restarts per worker
CONSOLIDATE_EVERY_S = 30.0   # how often finished parts are loaded into atlas.duckdb during a build
CRASH_DIR_ENV = "FACET_ATLAS_CRASH_DIR"   # fault injection for the tests, see _CrashingStore


def check_options(config: BuildConfig) -> None:
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


def import_ray():
    try:
        import ray
    except ImportError:
        raise AtlasError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# ---- the workers (these run in Ray worker processes) -------------------------------------------
def _worker_builder(config: BuildConfig, threads: int) -> AtlasBuilder:
    torch.set_num_threads(threads)   # the cores Ray gave this worker, not every core of its node
    builder = AtlasBuilder(config)
    if os.environ.get(CRASH_DIR_ENV):
        builder.store = _CrashingStore(builder.store.root)
    return builder


def _scan_range(config: BuildConfig, threads: int, images, layers: list[str],
                class_of_label: torch.Tensor) -> tuple[ScanResult, int]:
    """Scan one range of images (indexed from 0); also returns how many of its files were unreadable."""
    builder = _worker_builder(config, threads)
    result = scan(builder.spec, images, layers, config.top_n, builder.device,
                  batch_size=scan_batch_size(builder.spec), class_of_label=class_of_label)
    return result, images.skipped


class ChunkWorker:
    """A Ray actor: an AtlasBuilder with the model loaded and the driver's scan adopted."""

    def __init__(self, config: BuildConfig, threads: int, shared: list):
        # A user error here (weights missing on this node...) is raised again by every call, so the
        # driver gets it as that call's exception (one line), not as a dead actor that Ray restarts.
        self.error = None
        try:
            self.builder = _worker_builder(config, threads)
        except AtlasError as exc:
            self.error = exc
            return
        if shared:   # [a reference to] what AtlasBuilder._scan computed on the driver
            import ray
            shared, b = ray.get(shared[0]), self.builder
            b.images, b.scan, b.codes = shared["images"], shared["scan"], shared["codes"]
            b.class_of_label, b.spec.class_names = shared["class_of_label"], shared["class_names"]
            b.thumbnailed = b.store.thumbnail_ids(b.dataset)

    def device(self) -> str:
        if self.error:
            raise self.error
        return str(self.builder.device)

    def build(self, method: str, run_id: str, layer: str, units: list[int]) -> dict[str, float]:
        """Build one chunk into the store; returns the seconds this took, by stage."""
        if self.error:
            raise self.error
        before = Counter(self.builder.timings)
        self.builder._build_chunk(method, run_id, layer, units)
        return dict(Counter(self.builder.timings) - before)


class _CrashingStore(Store):
    """Fault injection for the tests: if <$FACET_ATLAS_CRASH_DIR>/<layer>__<first unit>.crash exists, the
    worker building that chunk deletes it and dies abruptly (like a killed worker) after writing the
    chunk's other parts and before its `neurons` part; so it happens once, and a retry must clean up."""

    def write(self, table, name, rows):
        if table == "neurons":
            marker = os.path.join(os.environ[CRASH_DIR_ENV], "__".join(name.split("__")[-2:]) + ".crash")
            try:
                os.remove(marker)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        return super().write(table, name, rows)


# ---- the driver --------------------------------------------------------------------------------
class RayAtlasBuilder(AtlasBuilder):
    """An AtlasBuilder whose scan and chunks run on Ray workers; the rest (runs, resume, consolidation)
    is the local builder's, on the driver."""

    def __init__(self, config: BuildConfig, progress=None):
        self.ray = import_ray()   # first: without Ray, say so before loading anything
        super().__init__(config, progress)
        self.connected_here = False
        self.slots = 0            # workers the cluster holds; set on connecting
        self.shared: list = []    # [object ref] of what MFV workers share, held until the build ends

    def run(self):
        try:
            return super().run()
        finally:
            if self.connected_here:
                self.ray.shutdown()   # disconnects; stops the Ray instance only if this build started it

    # ---- connecting ----------------------------------------------------------------------------
    def _check_resources(self) -> None:
        self._connect()

    def _where(self) -> str:
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

    @property
    def worker_config(self) -> BuildConfig:
        """The config a worker builds with: a local build of the same atlas, on the worker's cores."""
        return dataclasses.replace(self.config, executor="local", workers=self.config.workers or self.threads,
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
    def _scan_images(self, layers: list[str]) -> ScanResult:
        self._connect()
        n = len(self.images)
        bounds = image_ranges(n, scan_batch_size(self.spec), self.slots)
        task = self.ray.remote(_scan_range).options(**self.resources, max_retries=RETRIES)
        refs = {task.remote(self.worker_config, self.threads, self.images.subset(a, b), layers,
                            self.class_of_label): b - a for a, b in bounds}
        self.progress("scan images", 0, n)
        done, pending = {}, list(refs)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            done[ready[0]] = self._get(ready[0])
            self.progress("scan images", sum(refs[ref] for ref in done), n)
        results = [done[ref] for ref in refs]
        self.images.skipped = sum(skipped for _, skipped in results)
        return merge_scans([result for result, _ in results], self.config.top_n)

    # ---- the chunks ------------------------------------------------------------------------------
    def _build_runs(self, runs: list[tuple[str, str, dict[str, list[int]]]]) -> int:
        todo = deque((method, run_id, layer, units) for method, run_id, layers in runs
                     for layer, units in chunks(layers, self.config.chunk_units))
        if not todo:
            return 0
        self._connect()
        workers = self._start_workers(min(self.slots, len(todo)))
        try:
            self.run_device = f"ray:{len(workers)}x{self._get(workers[0].device.remote())}"
            for method, run_id, _ in runs:
                self._write_run(method, run_id, 0.0, "running")
            return self._dispatch(workers, todo)
        finally:
            for worker in workers:
                self.ray.kill(worker)

    def _start_workers(self, n: int) -> list:
        # MFV: the data and the merged scan go into the object store once, for every worker. The reference
        # is passed inside a list, so Ray does not resolve it for the constructor: the worker gets it itself,
        # also when restarted, while self.shared keeps the object alive until the build ends.
        if self.scan is not None:
            images = self.images.subset(0, len(self.images))   # compact: `head` keeps a view of every image
            self.shared = [self.ray.put({"images": images, "scan": self.scan, "codes": self.codes,
                                         "class_of_label": self.class_of_label,
                                         "class_names": self.spec.class_names})]
        actor = self.ray.remote(ChunkWorker).options(**self.resources, max_restarts=RETRIES,
                                                     max_task_retries=RETRIES)
        return [actor.remote(self.worker_config, self.threads, self.shared) for _ in range(n)]

    def _dispatch(self, workers: list, todo: deque) -> int:
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
        self._report(0, total, len(running), len(workers))
        while running:   # the timeout keeps the bar's ETA and the consolidation timer going
            ready, _ = self.ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                worker, (_, run_id, _, units) = running.pop(ref)
                self.timings.update({f"{stage} (workers)": s for stage, s in self._get(ref).items()})
                done, unconsolidated = done + len(units), True
                chunks_left[run_id] -= 1
                if not chunks_left[run_id]:
                    self._write_run(method_of[run_id], run_id, time.monotonic() - start, "complete")
                submit(worker)
            self._report(done, total, len(running), len(workers))
            if unconsolidated and time.monotonic() - last_consolidated >= CONSOLIDATE_EVERY_S:
                with self._timed("consolidate"):
                    self.store.consolidate()   # a partial atlas to browse while the rest is built
                last_consolidated, unconsolidated = time.monotonic(), False
        return done

    def _report(self, done: int, total: int, busy: int, workers: int) -> None:
        self.progress("neurons", done, total)
        note = getattr(self.progress, "note", None)   # the terminal bar's postfix; other callbacks lack it
        if note:
            note("neurons", f"{busy}/{workers} workers busy")


def image_ranges(n: int, batch_size: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) ranges of `n` images for `parts` scan tasks, cut at multiples of `batch_size`:
    every batch then holds the same images as in one pass, which keeps the merged scan bit-identical."""
    batches = -(-n // batch_size)
    parts = max(1, min(parts, batches))
    cuts = [min(n, round(i * batches / parts) * batch_size) for i in range(parts + 1)]
    return list(zip(cuts, cuts[1:]))
