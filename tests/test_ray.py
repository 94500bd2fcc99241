"""`--executor ray`: the same store as a local build, a killed worker retried, a killed driver resumed,
and clear errors. Runs on a local Ray instance of 2 CPUs (two 1-core workers)."""
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import ROOT, query, start_and_kill_after_two_chunks
from precompute.pipeline import BuildConfig, build_atlas
from precompute.cli import main
from ray_faults import CRASH_DIR_ENV

requires_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                  reason="Ray is not installed (pip install -r requirements-ray.txt)")
KEYS = {"neurons": ["run_id", "layer", "unit"], "facets": ["run_id", "layer", "unit", "facet"],
        "exemplars": ["run_id", "layer", "unit", "image_id"]}
TINY = dict(max_images=1000, top_n=40, k=2, m=5, steps=10, device="cpu")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray instance; its workers die on a chunk when a marker file in `crash_dir` asks them to
    (tests/ray_faults.py, installed in each worker at its start)."""
    import ray
    crash_dir = tmp_path_factory.mktemp("crash")
    paths = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    ray.init(num_cpus=2, logging_level="WARNING",
             runtime_env={"env_vars": {CRASH_DIR_ENV: str(crash_dir), "PYTHONPATH": paths},
                          "worker_process_setup_hook": "ray_faults.install"})
    yield crash_dir
    ray.shutdown()


def parts(store: Path, table: str) -> pa.Table:
    files = sorted((store / "parts" / table).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by([(k, "ascending") for k in KEYS[table]])


def assert_each_neuron_once(store: Path, expected: int) -> None:
    units = parts(store, "neurons").select(["run_id", "layer", "unit"]).to_pylist()
    assert len(units) == expected and len({tuple(u.values()) for u in units}) == expected
    assert query(store, "SELECT count(*), count(DISTINCT (run_id, layer, unit)) FROM neurons") == [(expected, expected)]
    # no facet was written twice: one row per facet a neuron has
    (facets_wanted, facets), = query(store, "SELECT (SELECT sum(k) FROM neurons), (SELECT count(*) FROM facets)")
    assert facets == facets_wanted > 0
    assert query(store, "SELECT count(*) FROM runs WHERE status <> 'complete'") == [(0,)]
    assert not list(store.rglob("*.tmp"))


@requires_ray
def test_ray_build_equals_the_local_build(ray_cluster, tmp_path):
    settings = dict(max_images=2000, top_n=60, k=3, m=5, steps=30, chunk_units=2, device="cpu",
                    layers=("fc8", "fc6", "conv2"), units=tuple(range(6)), methods=("mfv", "noise", "center-bias"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as many torch threads as a 1-core Ray worker: float sums depend on them
    try:
        local = build_atlas(BuildConfig(store=str(tmp_path / "local"), **settings))
    finally:
        torch.set_num_threads(threads)
    distributed = build_atlas(BuildConfig(store=str(tmp_path / "ray"), executor="ray", cpus_per_task=1, ray_workers=2,
                                          **settings))
    assert distributed.run_ids == local.run_ids and distributed.neurons_built == local.neurons_built == 54
    for table in KEYS:
        assert parts(tmp_path / "ray", table).equals(parts(tmp_path / "local", table)), table
    thumbs = "SELECT dataset, image_id, png FROM thumbnails ORDER BY ALL"
    assert query(tmp_path / "ray", thumbs) == query(tmp_path / "local", thumbs)
    assert query(tmp_path / "ray", "SELECT DISTINCT device FROM runs") == [("ray:2xcpu",)]
    assert_each_neuron_once(tmp_path / "ray", 54)


@requires_ray
def test_a_worker_killed_mid_chunk_is_retried(ray_cluster, tmp_path, monkeypatch):
    from precompute.pipeline import executors
    crash = ray_cluster / "fc6__00002.crash"   # the chunk of units 2,3 dies once, before its neurons part
    crash.touch()
    monkeypatch.setattr(executors, "CONSOLIDATE_EVERY_S", 0.0)   # consolidate after every chunk
    seen = []   # (neurons done, neurons in atlas.duckdb) whenever the bar moves

    def progress(task, done, total):
        if task == "neurons" and (tmp_path / "a" / "atlas.duckdb").exists():
            seen.append((done, query(tmp_path / "a", "SELECT count(*) FROM neurons")[0][0]))

    summary = build_atlas(BuildConfig(store=str(tmp_path / "a"), layers=("fc6",), units=tuple(range(8)),
                                      chunk_units=2, executor="ray", **TINY), progress)
    assert not crash.exists(), "a worker should have died on that chunk"
    assert summary.neurons_built == 8
    assert_each_neuron_once(tmp_path / "a", 8)
    # the atlas was browsable during the build: finished chunks, never more than were done
    assert any(0 < in_db < 8 for _, in_db in seen) and all(in_db <= done for done, in_db in seen)


@requires_ray
def test_a_killed_driver_resumes_with_every_neuron_once(ray_cluster, tmp_path):
    import ray
    out = tmp_path / "atlas"
    args = [sys.executable, "-m", "precompute", "build", "--layers", "fc6", "--units", ",".join(map(str, range(10))),
            "--chunk-units", "1", "--max-images", "1000", "--top-n", "40", "-k", "2", "-m", "5", "--steps", "10",
            "--device", "cpu", "--out", str(out), "--executor", "ray",
            "--ray-address", ray.get_runtime_context().gcs_address]   # the tests' cluster, as a second driver
    neurons = start_and_kill_after_two_chunks(args, out, timeout=180)
    partial = -1   # its workers may finish the chunk in hand before Ray ends them: wait until they are gone
    while partial != len(list(neurons.glob("*.parquet"))):
        partial = len(list(neurons.glob("*.parquet")))
        time.sleep(2)
    assert 2 <= partial < 10, "the kill should land mid-build"
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{10 - partial} neuron-runs built" in result.stdout   # only what was left
    assert_each_neuron_once(out, 10)


@requires_ray
def test_a_user_error_on_a_worker_is_one_line(ray_cluster, tmp_path):
    import ray
    from precompute.core.errors import AtlasError
    from precompute.pipeline.executors import ChunkWorker, RayExecutor
    driver = RayExecutor(BuildConfig(store=str(tmp_path), layers=("fc8",), executor="ray"))
    # as if the weights were at the driver's path but missing on the worker's node
    missing = BuildConfig(store=str(tmp_path), layers=("fc8",), weights=str(tmp_path / "gone.pt"))
    worker = ray.remote(ChunkWorker).options(num_cpus=1, max_restarts=1).remote(missing, 1, [])
    with pytest.raises(AtlasError, match=r"gone\.pt.*does not exist") as error:
        driver._get(worker.build.remote("noise", "run", "fc8", [0]))
    assert "\n" not in str(error.value)
    ray.kill(worker)


@pytest.mark.parametrize("args, message", [
    (("--executor", "spark"), "unknown executor 'spark'; valid executors: local, ray"),
    (("--cpus-per-task", "2"), "--cpus-per-task only apply with --executor ray"),
    (("--executor", "ray", "--gpus-per-task", "-1"), "--gpus-per-task must be 0 or more (fractions share a GPU), got -1"),
    (("--executor", "ray", "--cpus-per-task", "0"), "--cpus-per-task must be at least 1, got 0"),
    (("--executor", "ray", "--ray-workers", "0"), "--ray-workers must be at least 1, got 0"),
    (("--executor", "ray", "--device", "cpu", "--gpus-per-task", "1"), "--gpus-per-task 1 with --device cpu"),
    (("--executor", "ray", "--ray-address", "headnode"), "--ray-address 'headnode': expected auto, local, HOST:PORT"),
    (("--executor", "ray", "--ray-address", "127.0.0.1:1"), "cannot reach the Ray cluster at '127.0.0.1:1'"),
])
def test_bad_executor_options_are_one_clear_line(tmp_path, capsys, args, message):
    assert main(["build", "--out", str(tmp_path), "--layers", "fc8", *args]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_without_ray_installed_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` now fails as if it were not installed
    assert main(["build", "--out", str(tmp_path), "--layers", "fc8", "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --executor ray needs Ray, which is not installed: pip install -r requirements-ray.txt (ray==2.60.0)"
    assert not (tmp_path / "parts").exists()


@requires_ray
def test_asking_for_gpus_the_cluster_lacks(ray_cluster, tmp_path, capsys):
    assert main(["build", "--out", str(tmp_path), "--layers", "fc8", "--max-images", "500", "--executor", "ray",
                 "--gpus-per-task", "1"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["error: --gpus-per-task 1, but the Ray cluster has 0 GPUs; use --gpus-per-task 0 to run on CPUs"]
