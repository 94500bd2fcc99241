"""The scan split by image ranges and merged on the driver equals one scan over every image."""
import pytest
import torch

from precompute.engine import activations
from precompute.engine.activations import merge_scans, scan

pytestmark = pytest.mark.numerics   # run again under other CPU kernels (conftest)


def _scan(spec, images, top_n, batch_size=100):
    return scan(spec, images, ["fc8", "fc6", "conv2"], top_n, torch.device("cpu"), batch_size=batch_size,
                class_of_label=torch.arange(10))


@pytest.fixture(scope="module")
def images(fashion_train):
    return fashion_train.head(700)


@pytest.mark.parametrize("bounds", [(0, 300, 700), (0, 100, 200, 500, 700)])
def test_merged_shards_equal_one_full_scan(demo_spec, images, bounds):
    full = _scan(demo_spec, images, top_n=40)
    shards = [_scan(demo_spec, images.subset(a, b), top_n=40) for a, b in zip(bounds, bounds[1:])]
    merged = merge_scans(shards, top_n=40)
    for name, layer in full.layers.items():
        got = merged.layers[name]
        assert torch.equal(got.top_values, layer.top_values), name
        assert torch.equal(got.top_indices, layer.top_indices), name
        assert torch.equal(got.top_positions, layer.top_positions), name
        assert torch.equal(got.nonfinite, layer.nonfinite)
    assert torch.equal(merged.readable, full.readable) and bool(merged.readable.all())
    assert torch.equal(merged.own_class_logit, full.own_class_logit)
    assert torch.equal(merged.codes.ids, full.codes.ids) and torch.equal(merged.codes.values, full.codes.values)


def test_ties_go_to_the_lower_image_index_however_the_images_are_split(demo_spec, images):
    from precompute.demo.data import ImageSet
    twice = ImageSet(torch.cat([images.images[:350]] * 2), torch.cat([images.labels[:350]] * 2), images.classes)
    full = _scan(demo_spec, twice, top_n=40)   # every activation is tied with the same image's copy
    merged = merge_scans([_scan(demo_spec, twice.subset(a, b), 40) for a, b in ((0, 200), (200, 500), (500, 700))], 40)
    for name, layer in full.layers.items():
        assert torch.equal(merged.layers[name].top_indices, layer.top_indices), name
        pairs = layer.top_indices.view(-1, 20, 2)   # each image, then its copy 350 later
        assert bool((pairs[..., 1] == pairs[..., 0] + 350).all()), name


def test_a_shard_smaller_than_top_n(demo_spec, images):
    full = _scan(demo_spec, images.head(130), top_n=60)
    merged = merge_scans([_scan(demo_spec, images.subset(0, 100), 60), _scan(demo_spec, images.subset(100, 130), 60)], 60)
    assert merged.layers["fc6"].top_values.shape == (256, 60)
    assert torch.equal(merged.layers["fc6"].top_indices, full.layers["fc6"].top_indices)


def test_codes_over_the_budget_are_dropped(demo_spec, images, monkeypatch):
    shards = [_scan(demo_spec, images.subset(a, b), 40) for a, b in ((0, 300), (300, 700))]
    # each shard's codes fit, all of them together do not: the driver embeds just the exemplars instead
    monkeypatch.setattr(activations, "CODE_BUDGET_BYTES", 500 * demo_spec.embedding_dim * 4)
    assert merge_scans(shards, 40).codes is None


def test_each_top_image_keeps_where_the_unit_fired_most(demo_spec, images):
    result = _scan(demo_spec, images, top_n=5)
    conv = result.layers["conv2"]
    ids = conv.top_indices[:, 0]                                   # each unit's strongest image
    with torch.no_grad():
        out = demo_spec.extractor(("conv2",))(demo_spec.preprocess(images.pixels(ids)))["conv2"]
    own = out[torch.arange(len(ids)), torch.arange(len(ids))].flatten(1)   # unit u on its own top image
    assert torch.equal(conv.top_positions[:, 0], own.argmax(1))
    assert torch.allclose(conv.top_values[:, 0], own.amax(1))
    assert bool((result.layers["fc6"].top_positions == -1).all())   # fc units have no position
