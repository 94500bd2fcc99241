"""Shared fixtures: the committed demo weights and one small real build reused by many tests."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precompute.engine.models import DEMO_WEIGHTS  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"   # Debian's: the browser tests drive it with Playwright


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's), one per test module; the browser tests skip where it is not installed."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def pytest_configure(config):
    config.addinivalue_line("markers", "numerics: checks numbers torch computes; the README's test command runs "
                                       "these again under ATEN_CPU_CAPABILITY=avx2 (other CPU kernels)")


def query(store: Path, sql: str) -> list[tuple]:
    """Rows of `sql` on a store's atlas.duckdb, opened read-only and closed again."""
    import duckdb
    con = duckdb.connect(str(store / "atlas.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


SMALL_BUILD = dict(max_images=2000, top_n=60, k=3, m=5, steps=30, chunk_units=2,
                   layers=("fc8", "fc6", "conv2"), units=(0, 1, 2),
                   methods=("mfv", "noise", "center-bias", "diversity"))


@pytest.fixture(scope="session")
def demo_weights() -> Path:
    assert DEMO_WEIGHTS.exists(), "the demo weights are committed under data/models/"
    return DEMO_WEIGHTS


@pytest.fixture(scope="session")
def demo_spec(demo_weights):
    from precompute.engine.models import load_model
    return load_model("demo")


@pytest.fixture(scope="session")
def fashion_train():
    from precompute.demo.data import load_fashion_mnist
    return load_fashion_mnist(train=True)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, demo_weights):
    """A real build of 9 neurons x 4 methods on the first 2,000 training images."""
    from precompute.pipeline import BuildConfig, build_atlas
    out = tmp_path_factory.mktemp("store") / "atlas"
    summary = build_atlas(BuildConfig(store=str(out), device="cpu", **SMALL_BUILD))
    return out, summary


@pytest.fixture(scope="session")
def evaluated_store(tmp_path_factory, small_store):
    """A copy of the small store with its evaluations (python -m precompute evaluate)."""
    import shutil
    from precompute.evidence.evaluate import evaluate_store
    out = tmp_path_factory.mktemp("evaluated") / "atlas"
    shutil.copytree(small_store[0] / "parts", out / "parts")
    return out, evaluate_store(out, device="cpu")


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A small ImageNet-layout folder: augmented crops of two photos that ship with scikit-image
    (a cat, a cup of espresso), folders named after their ImageNet classes, plus one corrupt file."""
    import numpy as np
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, photo in (("Egyptian cat", data.chelsea()), ("espresso", data.coffee())):
        folder = root / name
        folder.mkdir()
        h, w = photo.shape[:2]
        for i in range(16):
            side = int(rng.uniform(0.6, 0.95) * min(h, w))
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = Image.fromarray(photo[top:top + side, left:left + side])
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crop.save(folder / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
    (root / "espresso" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture(scope="session")
def effnet_store(tmp_path_factory, photo_folder):
    """A small real EfficientNet-Lite0 MFV build of two units of a conv block (receptive field 67 px)."""
    from precompute.pipeline import BuildConfig, build_atlas
    out = tmp_path_factory.mktemp("effnet") / "atlas"
    build_atlas(BuildConfig(store=str(out), model="efficientnet-lite0", data=str(photo_folder), layers=(EFFNET_CONV,),
                            units=(0, 1), top_n=12, k=2, m=3, steps=5, device="cpu"))
    return out


EFFNET_CONV = "_blocks.4.add"


def start_and_kill_after_two_chunks(args: list[str], out: Path, timeout: float) -> Path:
    """Run a build command and SIGKILL it once two chunks are committed; returns its neurons folder."""
    import signal
    import subprocess
    import time
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    neurons = out / "parts" / "neurons"
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(neurons.glob("*.parquet"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return neurons
