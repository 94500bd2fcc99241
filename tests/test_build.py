"""End to end: a real build into a temporary store, queried with DuckDB; resume after a kill."""
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SMALL_BUILD, query, start_and_kill_after_two_chunks
from precompute.core.store import SCHEMA_VERSION, TABLES


def test_store_has_every_table_as_a_real_table(small_store):
    store, _ = small_store
    kinds = dict(query(store, "SELECT table_name, table_type FROM information_schema.tables"))
    for table in TABLES:
        assert kinds[table] == "BASE TABLE"
    assert query(store, "SELECT value FROM atlas_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


@pytest.mark.numerics
def test_every_requested_neuron_once_per_method(small_store):
    store, summary = small_store
    rows = query(store, """SELECT r.method, count(*), count(DISTINCT (n.layer, n.unit))
                           FROM neurons n JOIN runs r USING (run_id) GROUP BY r.method ORDER BY 1""")
    assert rows == [("center-bias", 9, 9), ("diversity", 9, 9), ("mfv", 9, 9), ("noise", 9, 9)]
    assert set(summary.run_ids) == {"mfv", "noise", "center-bias", "diversity"}


def test_runs_record_their_config_and_seed(small_store):
    store, _ = small_store
    import json
    for method, config_json, seed, sha, status in query(
            store, "SELECT method, config_json, seed, model_sha256, status FROM runs"):
        config = json.loads(config_json)
        assert config["method"] == method and config["seed"] == seed == 0
        assert config["k"] == 3 and config["steps"] == 30 and config["schedule"]["stages"]
        assert len(sha) == 64 and status == "complete"
        assert config["precision"] == "auto", "the run records what was asked"
        assert config["precision_ran"] in ("fp32", "bf16"), "and what it ran in"
        assert config["param"] == config["stop"] == "auto", "synthesis settings recorded as asked"
        ran = ("pixel", 0.0, True) if method == "mfv" else ("fourier", 0.1, False)   # 28 px: MFV keeps its facets
        assert (config["schedule"]["param"], config["schedule"]["scale"], config["schedule"]["until_exemplar"]) == ran
        assert config["scale_range"] == 0.1, "28 px: Lucid's scale range, recorded"
        assert (config["schedule"]["rotate"] > 0) == (config["schedule"]["jitter"] > 0) == (method != "mfv")


def test_synthesis_defaults_per_method_and_size_and_the_papers_loop_keeping_its_run_ids():
    from precompute.pipeline import BuildConfig
    from precompute.pipeline.plan import Synthesis
    auto = BuildConfig(store="")
    assert auto.synthesis("mfv", 28) == Synthesis("pixel", (), None, "exemplar", 1.0), "small MFV keeps its facets"
    assert auto.synthesis("noise", 28) == Synthesis("fourier", ("jitter", "scale", "rotate"), 0.05, "steps")
    assert auto.synthesis("mfv", 224) == Synthesis("fourier", ("jitter", "scale", "rotate"), 0.05, "steps", 1.0, 100.0)
    maco = BuildConfig(store="", param="maco", learning_rate=0.02).synthesis("mfv", 28)
    assert (maco.param, maco.transforms, maco.learning_rate) == ("maco", (), 0.02)
    assert BuildConfig(store="", stop="steps").synthesis("mfv", 28).stop == "steps"
    assert BuildConfig(store="", stop="exemplar").synthesis("noise", 28).stop == "steps", "only MFV has exemplars"
    assert BuildConfig(store="", facet_pull=2.0).synthesis("noise", 28).facet_pull == 0, "only MFV has facets"
    assert BuildConfig(store="", facet_pull=2.0).synthesis("mfv", 224).facet_pull == 2.0
    assert auto.identity("mfv", "sha", "data", 28)["facet_pull"] == 1.0
    paper = BuildConfig(store="", param="pixel", transforms=("jitter",), stop="steps", facet_pull=0.0)
    assert "param" not in paper.identity("mfv", "sha", "data", 28), "stores built with the paper's loop resume"
    assert "stop" not in paper.identity("mfv", "sha", "data", 28)
    assert "facet_pull" not in paper.identity("mfv", "sha", "data", 28)
    assert auto.identity("mfv", "sha", "data", 28)["stop"] == "exemplar"
    assert auto.identity("noise", "sha", "data", 28)["param"] == "fourier"
    assert auto.identity("noise", "sha", "data", 28) == BuildConfig(store="", stop="exemplar").identity(
        "noise", "sha", "data", 28), "a baseline's run id does not depend on MFV's stop"
    assert auto.identity("mfv", "sha", "data", 224)["facet_pull"] == 1.0, "a pulled 224 px run is a new run"
    assert auto.identity("mfv", "sha", "data", 224)["seed_penalty"] == 100.0
    assert "seed_penalty" not in auto.identity("mfv", "sha", "data", 28)
    assert BuildConfig(store="", seed_penalty=5.0).synthesis("noise", 224).seed_penalty == 0, "only MFV has a seed"
    old = BuildConfig(store="", facet_pull=0.0, seed_penalty=0.0).identity("mfv", "sha", "data", 224)
    assert "facet_pull" not in old and "seed_penalty" not in old, "224 px runs without them keep their ids"


def test_scale_range_is_chosen_by_input_size_and_a_wider_one_gets_its_own_run_ids():
    from types import SimpleNamespace

    from precompute.pipeline.plan import BuildConfig, schedule_for
    at = lambda size: SimpleNamespace(input_shape=(3, size, size))   # noqa: E731 (only the size is read)
    assert schedule_for("noise", at(28), BuildConfig(store="")).scale == 0.1
    assert schedule_for("noise", at(224), BuildConfig(store="")).scale == 0.4
    assert schedule_for("noise", at(224), BuildConfig(store="", scale_range=0.2)).scale == 0.2
    assert schedule_for("mfv", at(224), BuildConfig(store="", transforms=("jitter",))).scale == 0.0
    ids = [BuildConfig(store="", scale_range=f).identity("noise", "sha", "data", 28) for f in (0.1, 0.4)]
    assert "scale_range" not in ids[0], "stores built with Lucid's range resume"
    assert ids[1]["scale_range"] == 0.4


def test_auto_precision_is_bf16_only_where_it_was_measured_faster(monkeypatch):
    import torch
    from precompute.pipeline.runtime import resolve_precision
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32", "AVX512-BF16 without AMX: not faster"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")   # ATEN_CPU_CAPABILITY=avx2
    assert resolve_precision("auto", torch.device("cpu")) == "fp32", "AMX is reached only by the AVX512 kernels"


def test_a_run_is_the_same_run_on_every_cpu_and_resumes_in_the_precision_it_started_with(tmp_path, monkeypatch):
    """A request that resolves to bf16 on a CPU with AMX and to fp32 on one without names one run; a run
    started on the one and resumed on the other keeps its precision and says so in one line."""
    from precompute.pipeline import BuildConfig, build_atlas, plan
    config = dict(store=str(tmp_path / "atlas"), device="cpu", layers=("fc8",), methods=("noise",), steps=2)
    said = []
    progress = lambda task, done, total: None   # noqa: E731
    progress.say = said.append
    monkeypatch.setattr(plan, "resolve_precision", lambda name, device: "bf16")   # a CPU with AMX
    started = build_atlas(BuildConfig(units=(0,), **config), progress)
    monkeypatch.setattr(plan, "resolve_precision", lambda name, device: "fp32")   # a CPU without
    resumed = build_atlas(BuildConfig(units=(0, 1), **config), progress)
    assert resumed.run_ids == started.run_ids and resumed.neurons_built == 1
    (run_id,) = started.run_ids.values()
    assert f"resuming run {run_id} in bf16, as it started (--precision auto would pick fp32 here)" in said
    assert query(tmp_path / "atlas", "SELECT count(*), any_value(json_extract_string(config_json, '$.precision_ran')) "
                                     "FROM runs") == [(1, "bf16")]
    fresh = build_atlas(BuildConfig(units=(0,), **config | {"store": str(tmp_path / "new")}), progress)
    assert fresh.run_ids == started.run_ids, "a new build of the same request here is the same run"
    assert query(tmp_path / "new", "SELECT json_extract_string(config_json, '$.precision_ran') FROM runs") == [("fp32",)]


@pytest.mark.numerics
def test_mfv_neurons_facets_and_exemplars(small_store):
    store, _ = small_store
    mfv = "(SELECT run_id FROM runs WHERE method = 'mfv')"
    # class neurons cluster every (loaded) training image of their class
    n_ex, labels = zip(*query(store, f"SELECT n_exemplars, label FROM neurons WHERE run_id = {mfv} AND layer = 'fc8' ORDER BY unit"))
    assert labels == ("T-shirt/top", "Trouser", "Pullover") and all(n > 150 for n in n_ex)
    # hidden neurons that fire: at most top-n exemplars, k facets, sizes add up
    for layer, unit, status, n, k, div, null in query(
            store, f"SELECT layer, unit, status, n_exemplars, k, facet_diversity, diversity_null FROM neurons WHERE run_id = {mfv}"):
        if status != "ok":
            assert status == "dead" and k == 0
            continue
        sizes = query(store, f"""SELECT sum(size), count(*), min(size) FROM facets
                                 WHERE run_id = {mfv} AND layer = '{layer}' AND unit = {unit}""")
        assert sizes[0][:2] == (n, k)
        assert k == 1 or sizes[0][2] >= SMALL_BUILD["m"], "no facet below the minimum size (m by default)"
        assert layer == "fc8" or n <= SMALL_BUILD["top_n"]
        assert (div is None) if k == 1 else (0 <= div <= 1 and null == pytest.approx((k - 1) / (n - 1)))
        ex = query(store, f"""SELECT count(*), count(t.png) FILTER (e.rank_in_facet < 4), count(pca)
                              FROM exemplars e JOIN runs r USING (run_id)
                              LEFT JOIN thumbnails t ON t.dataset = r.dataset AND t.image_id = e.image_id
                              WHERE e.run_id = {mfv} AND e.layer = '{layer}' AND e.unit = {unit}""")[0]
        assert ex[0] == n and ex[1] == min(n, 4 * k) and ex[2] == n   # thumbnails for the 4 nearest per facet


@pytest.mark.numerics
def test_facet_rows_hold_pngs_and_metrics(small_store):
    store, _ = small_store
    rows = query(store, """SELECT f.layer, f.init_png, f.image_png, f.act_init, f.act_final, f.target_prob, f.top1_hit, f.steps
                           FROM facets f JOIN runs r USING (run_id) WHERE r.method = 'mfv'""")
    assert rows
    for layer, init_png, image_png, act_init, act_final, prob, top1, steps in rows:
        assert init_png[:8] == image_png[:8] == b"\x89PNG\r\n\x1a\n"
        assert steps == 30
        if layer == "fc8":
            assert 0 <= prob <= 1 and top1 in (True, False)
        else:
            assert prob is None and top1 is None
    raised = query(store, """SELECT avg((act_final > act_init)::INT) FROM facets f JOIN runs r USING (run_id)
                             WHERE r.method = 'mfv' AND layer = 'fc8'""")[0][0]
    assert raised >= 0.9


def test_the_readme_query_answers(small_store):
    store, _ = small_store
    rows = query(store, "SELECT layer, unit, label, facet_diversity FROM neurons ORDER BY facet_diversity DESC NULLS LAST")
    assert len(rows) == 36 and rows[0][3] is not None


def test_building_again_is_a_no_op(small_store):
    from precompute.pipeline import BuildConfig, build_atlas
    store, first = small_store
    again = build_atlas(BuildConfig(store=str(store), device="cpu", **SMALL_BUILD))
    assert again.neurons_built == 0 and again.run_ids == first.run_ids
    assert query(store, "SELECT count(*) FROM neurons") == [(36,)]


def _cli(*args):
    return [sys.executable, "-m", "precompute", *args]


def test_resume_after_kill_builds_every_neuron_exactly_once(tmp_path):
    out = tmp_path / "atlas"
    args = _cli("build", "--layers", "fc6", "--units", "0,1,2,3,4,5,6,7", "--chunk-units", "1", "--max-images",
                "1000", "--top-n", "40", "-k", "2", "-m", "5", "--steps", "20", "--device", "cpu", "--out", str(out))
    neurons = start_and_kill_after_two_chunks(args, out, timeout=120)
    partial = len(list(neurons.glob("*.parquet")))
    assert 2 <= partial < 8, "the kill should land mid-build"
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    units = sorted(u for f in neurons.glob("*.parquet") for u in pq.read_table(f)["unit"].to_pylist())
    assert units == list(range(8))
    assert query(out, "SELECT count(*), count(DISTINCT unit) FROM neurons") == [(8, 8)]
    assert not list(out.rglob("*.tmp"))


def test_nan_weights_fail_the_neuron_and_the_run_goes_on(tmp_path, demo_weights):
    import torch
    from precompute.pipeline import BuildConfig, build_atlas
    state = torch.load(demo_weights, weights_only=True)
    original = state["fc8.weight"][3].clone()
    state["fc8.weight"][3] = float("nan")           # class 3's logit is NaN
    weights = tmp_path / "nan.pt"
    torch.save(state, weights)
    small = dict(max_images=500, top_n=30, k=2, m=5, steps=5, device="cpu", weights=str(weights))
    build_atlas(BuildConfig(store=str(tmp_path / "a"), layers=("fc6", "fc8"), units=(2, 3, 4), **small))
    status = {(l, u): (s, r) for l, u, s, r in query(tmp_path / "a", "SELECT layer, unit, status, reason FROM neurons")}
    assert status[("fc8", 3)] == ("failed", "NaN/Inf activation on training images")
    # NaN weights poison every gradient through that layer: its other units fail in synthesis
    assert status[("fc8", 2)] == ("failed", "synthesis produced a NaN/Inf activation")
    # ...and the run goes on: the layer below is built as usual
    assert all(status[("fc6", u)][0] in ("ok", "dead") for u in (2, 3, 4))

    state["fc8.weight"][3] = original
    state["fc6.weight"][2] = float("nan")           # fc6 unit 2 is NaN, and so is fc7 above it
    torch.save(state, weights)
    build_atlas(BuildConfig(store=str(tmp_path / "b"), layers=("fc6",), units=(0, 2), **small))
    status = {u: (s, r) for u, s, r in query(tmp_path / "b", "SELECT unit, status, reason FROM neurons")}
    assert status[2] == ("failed", "NaN/Inf activation on training images")
    assert status[0] == ("failed", "NaN/Inf in the embedding codes of its exemplars")   # fc6/0 fires


def test_rerun_inherits_the_stored_runs_settings(small_store, tmp_path):
    import json
    import shutil
    from precompute.pipeline import rerun_neuron
    store, summary = small_store
    copy = tmp_path / "copy"
    shutil.copytree(store / "parts", copy / "parts")
    (config,) = query(store, f"SELECT config_json FROM runs WHERE run_id = '{summary.run_ids['mfv']}'")[0]
    like = json.loads(config)
    # same settings as the stored run: the same run, nothing to redo
    assert rerun_neuron(copy, "fc8", 1, k=3, steps=30, device="cpu", like=like) == summary.run_ids["mfv"]
    # another k: a new run that keeps the stored run's data and exemplar settings
    new = rerun_neuron(copy, "fc8", 1, k=2, steps=30, device="cpu", like=like)
    assert new != summary.run_ids["mfv"]
    (new_config,) = query(copy, f"SELECT config_json FROM runs WHERE run_id = '{new}'")[0]
    new_config = json.loads(new_config)
    assert new_config["k"] == 2 and new_config["max_images"] == 2000 and new_config["top_n"] == 60
    assert query(copy, f"SELECT count(*) FROM facets WHERE run_id = '{new}'") == [(2,)]


def test_progress_moves_during_synthesis_and_the_plan_comes_first(tmp_path):
    from precompute.pipeline import BuildConfig, build_atlas

    class Recorder:
        def __init__(self):
            self.events = []

        def __call__(self, task, done, total):
            self.events.append((task, done, total))

        def say(self, text):
            self.events.append(("say", text, None))

    recorder = Recorder()
    build_atlas(BuildConfig(store=str(tmp_path), methods=("noise",), layers=("fc8",), units=(0, 1), steps=12,
                            batch_size=1, chunk_units=2, device="cpu"), recorder)
    said = [text for task, text, _ in recorder.events if task == "say"]
    assert recorder.events[0][0] == "say" and said[0].startswith("plan: 2 noise neuron-runs of demo (fc8)")
    assert said[1].startswith("estimate: about ") and len(said) == 2
    done = [d for task, d, total in recorder.events if task == "noise neurons"]
    assert done == sorted(done) and done[-1] == 2
    assert any(0 < d < 1 for d in done) and any(1 < d < 2 for d in done)   # within the one chunk, per image-step
