"""Every dashboard page under streamlit's AppTest, on the committed demo store."""
import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT

APP = str(ROOT / "dashboard" / "app.py")


def page(view: str | None = None, timeout: float = 60, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.query_params.update({k: str(v) for k, v in params.items()})
    at.run()
    if view:
        at.switch_page(f"views/{view}.py")
        at.query_params.update({k: str(v) for k, v in params.items()})
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [s.value for s in at.subheader] + [e.value for e in at.error] + [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def test_atlas_page_shows_neuron_cards_for_the_layer():
    at = page(layer="fc8")
    assert at.title[0].value == "Atlas"
    assert "**10** of 10 neurons in `fc8` match" in texts(at)
    assert "Trouser" in texts(at) and "Ankle boot" in texts(at)


def test_atlas_filters_by_label_and_says_when_nothing_matches():
    at = page(layer="fc8", q="sandal")
    assert "**1** of 10 neurons in `fc8` match" in texts(at)
    at = page(layer="fc8", q="no-such-thing")
    assert "No neurons match" in texts(at)


def test_atlas_paginates_large_layers():
    at = page(layer="fc6", page=2)
    assert "of 256 neurons in `fc6` match" in texts(at)
    assert at.number_input[0].value == 2


def test_neuron_page_shows_facets_map_and_baselines():
    at = page("neuron", layer="fc8", unit=7)
    assert at.title[0].value.startswith("Sneaker")
    body = texts(at)
    assert "Facets" in body and "t-SNE map of the exemplars" in body and "Other methods and reruns" in body
    assert "noise" in body and "center-bias" in body
    assert len(at.get("vega_lite_chart")) + len(at.get("arrow_vega_lite_chart")) >= 1


def test_neuron_page_scores_every_facet_against_the_exemplars():
    at = page("neuron", layer="fc8", unit=7)
    score = next(m for m in at.metric if m.label == "Explanation score")
    assert score.value.endswith("%") and "vs exemplars" in score.delta
    assert sum("explains" in c.value for c in at.caption) >= 2      # one per facet


def test_atlas_cards_show_and_sort_by_the_explanation_score():
    at = page(layer="fc6", sort="explanation score, low first")
    scores = [float(c.value.split("explains ")[1].split("%")[0]) for c in at.caption if "explains" in c.value]
    assert len(scores) >= 10 and scores == sorted(scores)


def test_neuron_page_rejects_bad_addresses():
    assert "Unknown layer 'fc99'" in texts(page("neuron", layer="fc99", unit=0))
    assert "Unit 12 is out of range for layer 'fc8': valid units are 0..9" in texts(page("neuron", layer="fc8", unit=12))


def test_neuron_page_explains_dead_units():
    from dashboard.sql import run_readonly
    dead = run_readonly(ROOT / "data" / "demo", "SELECT layer, unit FROM neurons WHERE status = 'dead' LIMIT 1")
    if dead.empty:
        pytest.skip("no dead unit in this demo store")
    at = page("neuron", layer=dead["layer"][0], unit=int(dead["unit"][0]))
    assert "dead" in "\n".join(w.value for w in at.warning)


def test_sql_page_runs_a_shared_query_from_the_url():
    at = page("sql_console", q="SELECT layer, unit, label FROM neurons WHERE layer = 'fc8' ORDER BY unit LIMIT 3")
    assert "**3 rows**" in texts(at)
    assert at.dataframe and list(at.dataframe[0].value.columns)[:3] == ["open", "layer", "unit"]


def test_sql_page_rejects_writes_with_a_message():
    at = page("sql_console", q="DROP TABLE neurons")
    assert at.error and "SELECT" in at.error[0].value


def test_sql_page_renders_image_columns():
    at = page("sql_console", q="SELECT layer, unit, image_png FROM facets LIMIT 2")
    assert at.dataframe[0].value["image_png"][0].startswith("data:image/png;base64,")


def test_layers_page_summarizes_every_layer():
    at = page("layers")
    table = at.dataframe[0].value
    assert table["layer"].tolist() == ["conv1", "conv2", "conv3", "fc6", "fc7", "fc8"]
    assert table["neurons"].tolist() == [32, 64, 128, 256, 256, 10]


def test_rerun_page_renders_its_form():
    at = page("rerun", layer="fc8", unit=3)
    assert at.title[0].value == "Rerun"
    assert at.selectbox[0].value == "fc8" and at.number_input[0].value == 3


def test_a_missing_store_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_STORE", str(tmp_path / "nowhere"))
    at = page()
    assert "No atlas store at" in at.error[0].value


def test_the_dashboard_does_not_import_torch():
    import subprocess
    import sys
    code = ("import sys; sys.argv=['x']; from streamlit.testing.v1 import AppTest; "
            f"at=AppTest.from_file({APP!r}, default_timeout=60); at.run(); "
            "at.switch_page('views/neuron.py'); at.query_params.update(layer='fc8', unit='1'); at.run(); "
            "assert not at.exception; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr[-2000:]


def test_a_rerun_runs_in_the_background_and_is_saved_as_a_new_run(tmp_path, monkeypatch):
    import shutil
    store = tmp_path / "store"
    shutil.copytree(ROOT / "data" / "demo" / "parts", store / "parts")
    monkeypatch.setenv("ATLAS_STORE", str(store))
    at = page("rerun", layer="fc8", unit=3)
    at.selectbox[1].set_value("noise")
    at.number_input[2].set_value(12)          # steps
    next(box for box in at.selectbox if box.label == "Parameterization").set_value("maco")
    at.button[0].click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.query_params.get("job")
    deadline = time.time() + 120
    while time.time() < deadline and not at.success:
        time.sleep(1)
        at.run()
    assert at.success and "saved as run" in at.success[0].value, texts(at)
    from dashboard.sql import run_readonly
    runs = run_readonly(store / "atlas.duckdb", "SELECT method, config_json FROM runs WHERE method = 'noise' ORDER BY created_at")
    assert len(runs) == 2 and '"steps": 12' in runs["config_json"][1]
    assert json.loads(runs["config_json"][1])["schedule"]["param"] == "maco"


def test_switching_to_a_smaller_layer_keeps_the_unit_in_range():
    at = page("neuron", layer="fc7", unit=200, facet=1)
    at.sidebar.selectbox[-1].set_value("fc8").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.endswith("fc8/9")                      # 200 clamped to the last class
    assert "facet" not in at.query_params                            # the old highlight is dropped


def test_atlas_survives_hand_edited_links():
    at = page(layer="fc8", dmin="1.5", dmax="0", page="99", sort="nonsense")
    assert "of 10 neurons in `fc8` match" in texts(at)        # range reordered, page clamped, sort defaulted


@pytest.fixture
def dashboard_connections_closed():
    """The dashboard caches its read-only connections per process; close them after a test whose
    store other tests open too (DuckDB refuses a second connection with another configuration)."""
    yield
    from dashboard.sql import close_all
    close_all()


def test_layers_page_shows_the_evidence_when_the_store_has_evaluations(evaluated_store, monkeypatch,
                                                                       dashboard_connections_closed):
    store, summary = evaluated_store
    monkeypatch.setenv("ATLAS_STORE", str(store))
    at = page("layers")
    body = texts(at)
    assert "Evidence" in [h.value for h in at.header]
    for verdict in summary.verdicts:                     # every claim with its computed verdict
        assert verdict.evidence in body
    methods = at.dataframe[1].value                       # [0] is the per-layer summary
    assert list(methods.index) == ["MFV", "diversity (Lucid)", "noise", "center-bias", "real exemplars (reference)"]
    assert "image diversity" in methods.columns
    assert len(at.get("vega_lite_chart")) + len(at.get("arrow_vega_lite_chart")) >= 2


def test_layers_page_says_how_to_evaluate_a_store_without_evaluations(small_store, tmp_path, monkeypatch):
    import shutil
    shutil.copytree(small_store[0] / "parts", tmp_path / "store" / "parts",
                    ignore=shutil.ignore_patterns("evaluations"))
    monkeypatch.setenv("ATLAS_STORE", str(tmp_path / "store"))
    at = page("layers")
    assert any("python -m precompute evaluate --store" in i.value for i in at.info), texts(at)


def test_lookup_page_by_dataset_id_is_a_link():
    at = page("lookup", id=0)
    body = texts(at)
    assert "Predicted: Ankle boot" in body and "its class neuron" in body and "of its exemplars at or below" in body
    assert at.number_input[0].value == 0
    at = page("lookup", id=60000)
    assert "image id 60000 is out of range: the store's dataset has ids 0..59999" in texts(at)


@pytest.mark.parametrize("mode, setting, message", [
    ("public", None, "Lookups are off on this atlas"),
    ("local", "off", "Lookups are off on this atlas"),
    ("public", "maybe", "Unknown ATLAS_LOOKUP 'maybe'; valid values: on, off."),
])
def test_lookup_is_off_in_public_mode_unless_the_admin_turns_it_on(monkeypatch, mode, setting, message):
    monkeypatch.setenv("ATLAS_MODE", mode)
    if setting:
        monkeypatch.setenv("ATLAS_LOOKUP", setting)
    at = page("lookup")
    assert message in texts(at) and not at.get("file_uploader")


def test_public_mode_with_lookup_on_takes_uploads(monkeypatch):
    monkeypatch.setenv("ATLAS_MODE", "public")
    monkeypatch.setenv("ATLAS_LOOKUP", "on")
    at = page("lookup")
    assert "Lookups are off" not in texts(at) and len(at.get("file_uploader")) == 1


def test_lookups_run_one_at_a_time_under_a_time_limit(monkeypatch):
    import threading
    from dashboard import lookups
    release = threading.Event()
    monkeypatch.setattr(lookups, "_run", lambda *args: release.wait(30) and "done")
    monkeypatch.setattr(lookups, "TIME_LIMIT_S", 0.5)
    with pytest.raises(lookups.LookupRefused, match="longer than 0.5 s"):
        lookups.look_up("store", "db", "run", image_id=0)
    with pytest.raises(lookups.LookupRefused, match="Another lookup is running"):   # the slow one still holds the worker
        lookups.look_up("store", "db", "run", image_id=1)
    release.set()
    deadline = time.time() + 10
    while lookups._busy.locked() and time.time() < deadline:
        time.sleep(0.05)
    monkeypatch.setattr(lookups, "TIME_LIMIT_S", 5)
    assert lookups.look_up("store", "db", "run", image_id=2) == "done"
