"""Public mode: read-only for strangers, reruns only for admin-token holders, no torch needed."""
import re
import shutil
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT

APP = str(ROOT / "dashboard" / "app.py")
PAGES = ["views/atlas.py", "views/neuron.py", "views/sql_console.py", "views/layers.py", "views/rerun.py"]


def page(view, secrets=None, **params):
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in (secrets or {}).items():
        at.secrets[key] = value
    at.run()
    at.switch_page(view)
    at.query_params.update({k: str(v) for k, v in params.items()})
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


@pytest.fixture
def public(monkeypatch):
    monkeypatch.setenv("ATLAS_MODE", "public")


@pytest.mark.parametrize("view", PAGES)
def test_the_mode_is_visible_on_every_page(public, view):
    at = page(view, layer="fc8", unit=1)
    assert any("Public atlas" in s.value for s in at.sidebar.success)


def test_reruns_are_off_without_an_admin_token(public):
    at = page("views/rerun.py")
    assert "Reruns are off on this public atlas" in at.info[0].value
    assert not at.button and not at.text_input


def test_reruns_are_locked_until_the_right_token_is_given(public):
    at = page("views/rerun.py", secrets={"admin_token": "s3cret-token"})
    assert "open to its administrators" in at.info[0].value and not at.button
    at.text_input[0].input("wrong").run()
    assert at.error[0].value == "That token is not valid." and not at.button
    at.text_input[0].input("s3cret-token").run()
    assert not at.exception and at.button            # the rerun form is there now
    assert any(s.label == "Layer" for s in at.selectbox)


def test_local_mode_needs_no_token():
    at = page("views/rerun.py")
    assert at.button and any("Local mode" in c.value for c in at.sidebar.caption)


def test_an_unknown_mode_is_named_with_the_valid_ones(monkeypatch):
    monkeypatch.setenv("ATLAS_MODE", "publik")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert "Unknown ATLAS_MODE 'publik'; valid modes: local, public." in at.error[0].value


def test_token_comparison_is_constant_time_and_exact():
    from dashboard.access import token_matches
    assert token_matches("abc", "abc") and not token_matches("abd", "abc") and not token_matches("", "abc")
    assert "hmac.compare_digest" in (ROOT / "dashboard" / "access.py").read_text()


def test_the_hosted_dashboard_runs_without_torch(tmp_path):
    """The Docker image installs dashboard/requirements.txt only and copies the dashboard and the
    engine's torch-free core: every page must work from exactly that copy, without torch."""
    image = tmp_path / "app"
    for source in re.findall(r"^COPY (dashboard/|precompute/\S*) ", (ROOT / "Dockerfile").read_text(), flags=re.M):
        copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
        (image / source).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / source, image / source)
    assert sorted(p.name for p in (image / "precompute").iterdir()) == ["__init__.py", "core"]
    app = str(image / "dashboard" / "app.py")
    code = f"""
import os, sys
sys.modules['torch'] = None          # any 'import torch' now fails
os.environ['ATLAS_MODE'] = 'public'
os.environ['ATLAS_STORE'] = {str(ROOT / "data" / "demo")!r}
from streamlit.testing.v1 import AppTest
for view in {PAGES!r}:
    at = AppTest.from_file({app!r}, default_timeout=60)
    at.run()
    at.switch_page(view)
    at.query_params.update(layer='fc8', unit='2', q='SELECT count(*) AS n FROM neurons')
    at.run()
    assert not at.exception, (view, [e.message for e in at.exception])
print('ok')
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=image, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    # the image's build step, from the copy and without torch: atlas.duckdb from the store's Parquet parts
    shutil.copytree(ROOT / "data" / "demo" / "parts", tmp_path / "atlas" / "parts")
    build_step = re.search(r'^RUN python -c "(.+)"$', (ROOT / "Dockerfile").read_text(), flags=re.M).group(1)
    built = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; "
                            + build_step.replace("/atlas", str(tmp_path / "atlas"))],
                           cwd=image, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0 and (tmp_path / "atlas" / "atlas.duckdb").exists(), built.stderr[-2000:]
    needs = (ROOT / "dashboard" / "requirements.txt").read_text()
    assert "torch" not in re.sub(r"#.*", "", needs)


def test_the_dockerfile_copies_what_exists():
    text = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+) ", text, flags=re.M):
        if not source.startswith("$"):
            assert (ROOT / source).exists(), source
    assert 'ARG STORE=data/demo' in text and (ROOT / "data" / "demo" / "parts").is_dir()
    assert "ATLAS_MODE=public" in text and "USER nobody" in text
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert "gatherUsageStats = false" in config and "maxUploadSize = 1" in config
    assert ".streamlit/secrets.toml" in (ROOT / ".gitignore").read_text()
