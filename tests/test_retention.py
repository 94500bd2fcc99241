"""Facets that stay facets: retention and spread measures, and MFV synthesis that stops at the strongest exemplar."""
import dataclasses

import numpy as np
import pytest
import torch

from conftest import query
from precompute.evidence.retention import clipped_share, pixel_vectors, retention, spread


def test_retention_is_one_for_kept_facets_and_chance_for_one_stamp():
    rng = np.random.default_rng(0)
    inits = rng.random((10, 64))
    assert retention(inits + 0.05 * rng.random((10, 64)), inits) == 1.0, "each image still nearest its own init"
    stamp = np.tile(rng.random(64), (10, 1))
    assert retention(inits * 0.1 + stamp, inits) <= 0.3, "one stamp painted over faint facets: near chance"
    assert retention(inits + (inits.mean(0) - 0.5), inits) == 1.0, "what every init shares does not count"
    assert retention(np.tile(inits[3], (10, 1)), inits) == 0.1, "one picture ten times: chance"
    assert spread(np.tile(inits[3], (10, 1)), inits) == 0.0 and spread(inits, inits) == pytest.approx(1.0)
    assert np.isnan(retention(inits[:1], inits[:1]))


def test_clipped_share_and_pixels_compared_at_56_px():
    assert clipped_share(np.array([0.0, 1.0, 0.5, 0.2])) == 0.5
    assert pixel_vectors(torch.rand(2, 3, 224, 224)).shape == (2, 3 * 56 * 56)
    assert pixel_vectors(torch.rand(2, 1, 28, 28)).shape == (2, 784)


def test_an_image_is_kept_once_it_reaches_its_target(demo_spec):
    from precompute.engine.synthesis import measure, mfv_schedule, render
    schedule = mfv_schedule(28, 40)
    init = torch.full((2, 1, 28, 28), 0.3)
    stopping = dataclasses.replace(schedule, until_exemplar=True)
    units, keys = torch.tensor([0, 1]), torch.tensor([1, 2])
    start = measure(demo_spec, "fc8", units, init)["act"]
    free = measure(demo_spec, "fc8", units, render(demo_spec, "fc8", units, init, schedule, keys))["act"]
    targets = start + 0.3 * (free - start)
    assert torch.equal(render(demo_spec, "fc8", units, init, schedule, keys, targets=targets),
                       render(demo_spec, "fc8", units, init, schedule, keys)), "targets stop only with until_exemplar"
    kept = render(demo_spec, "fc8", units, init, stopping, keys, targets=targets)
    reached = measure(demo_spec, "fc8", units, kept)["act"]
    assert (reached < free).all(), "stopped well short of where every step goes"
    assert (reached > start).all()


@pytest.mark.numerics
def test_a_default_build_keeps_every_facet_while_driving_its_neuron(tmp_path):
    """The default MFV synthesis at 28 px (benchmarks/sweep_facets.py's choice: pixels, stopped at the
    strongest exemplar): a small build's fc8 facets stay their own (retention in pixels; the Fourier
    default before gave 0.30) and drive their neuron about as much as its best real image."""
    from precompute.engine.images import from_png
    from precompute.pipeline import BuildConfig, build_atlas
    build_atlas(BuildConfig(store=str(tmp_path), layers=("fc8",), units=(0, 3, 5), max_images=3000, k=4, m=5,
                            device="cpu"))
    rows = query(tmp_path, "SELECT f.unit, f.init_png, f.image_png, f.act_final / n.max_activation FROM facets f "
                           "JOIN neurons n USING (run_id, layer, unit) ORDER BY f.unit, f.facet")
    kept, gains = [], [gain for *_, gain in rows]
    for unit in {r[0] for r in rows}:
        mine = [r for r in rows if r[0] == unit]
        inits = pixel_vectors(torch.stack([from_png(r[1]) for r in mine]))
        images = pixel_vectors(torch.stack([from_png(r[2]) for r in mine]))
        kept.append(retention(images, inits))
    assert np.median(kept) >= 0.75, kept
    assert np.median(gains) >= 0.9, gains
