"""Shared fixtures: the committed demo weights and one small real build reused by many tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precompute.models import DEMO_WEIGHTS  # noqa: E402

SMALL_BUILD = dict(max_images=2000, top_n=60, k=3, m=5, steps=30, chunk_units=2,
                   layers=("fc8", "fc6", "conv2"), units=(0, 1, 2), methods=("mfv", "noise", "center-bias"))


@pytest.fixture(scope="session")
def demo_weights() -> Path:
    assert DEMO_WEIGHTS.exists(), "the demo weights are committed under data/models/"
    return DEMO_WEIGHTS


@pytest.fixture(scope="session")
def demo_spec(demo_weights):
    from precompute.models import load_model
    return load_model("demo")


@pytest.fixture(scope="session")
def fashion_train():
    from precompute.data import load_fashion_mnist
    return load_fashion_mnist(train=True)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, demo_weights):
    """A real build of 9 neurons x 3 methods on the first 2,000 training images."""
    from precompute.build import BuildConfig, build_atlas
    out = tmp_path_factory.mktemp("store") / "atlas"
    summary = build_atlas(BuildConfig(out=str(out), device="cpu", **SMALL_BUILD))
    return out, summary
