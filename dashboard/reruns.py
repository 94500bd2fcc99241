"""On-demand reruns: a FIFO queue served by one worker thread, so reruns run one at a time,
a second request waits visibly, and no page blocks on a rerun. Torch is imported only here,
only when the first rerun starts."""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class RerunJob:
    store: str
    layer: str
    unit: int
    method: str = "mfv"
    k: int = 10
    steps: int = 200
    seed: int = 0
    device: str = "auto"
    like: dict | None = None        # the stored run's config: model, data, exemplar settings
    id: str = ""
    status: str = "queued"          # queued, running, done, failed
    task: str = ""
    done: int = 0
    total: int = 0
    run_id: str | None = None
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    finished: float | None = None


class RerunQueue:
    def __init__(self, runner=None, on_done=None):
        self._jobs: dict[str, RerunJob] = {}
        self._waiting: deque[str] = deque()
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._runner = runner or _run_with_precompute
        self._on_done = on_done
        threading.Thread(target=self._work, name="facet-atlas-reruns", daemon=True).start()

    def submit(self, job: RerunJob) -> str:
        with self._cond:
            job.id = f"job{next(self._ids)}"
            self._jobs[job.id] = job
            self._waiting.append(job.id)
            self._cond.notify()
        return job.id

    def get(self, job_id: str) -> RerunJob | None:
        return self._jobs.get(job_id)

    def ahead_of(self, job_id: str) -> int:
        """How many jobs run or wait before this one."""
        with self._cond:
            running = sum(1 for j in self._jobs.values() if j.status == "running")
            waiting = list(self._waiting)
            return running + (waiting.index(job_id) if job_id in waiting else 0)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                job = self._jobs[self._waiting.popleft()]
                job.status = "running"
            try:
                job.run_id = self._runner(job, lambda task, done, total: _progress(job, task, done, total))
                job.status = "done"
            except Exception as exc:  # shown to the user; the queue goes on
                job.error = _describe(exc)
                job.status = "failed"
            job.finished = time.time()
            if self._on_done:
                self._on_done(job)


def _progress(job: RerunJob, task: str, done: int, total: int) -> None:
    job.task, job.done, job.total = task, done, total


def _describe(exc: Exception) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name == "torch":
        return "this deployment has no torch: reruns need the full requirements.txt"
    from precompute.core.errors import AtlasError
    if isinstance(exc, AtlasError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def _run_with_precompute(job: RerunJob, progress) -> str:
    from precompute import rerun_neuron
    return rerun_neuron(job.store, job.layer, job.unit, method=job.method, k=job.k, steps=job.steps,
                        seed=job.seed, device=job.device, progress=progress, like=job.like)
