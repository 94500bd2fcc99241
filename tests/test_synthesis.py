import pytest
import torch

import dataclasses

from precompute.engine.synthesis import (center_bias_schedule, crop, facet_directions, hash_keys, measure, mfv_schedule,
                                         noise_init, render, split_steps, total_variation, tv_denoise)

pytestmark = pytest.mark.numerics   # run again under other CPU kernels (conftest)


def test_tv_denoise_reduces_total_variation_and_keeps_the_mean():
    g = torch.Generator().manual_seed(0)
    clean = torch.zeros(4, 1, 28, 28)
    clean[:, :, 8:20, 8:20] = 1.0
    noisy = clean + 0.3 * torch.randn(clean.shape, generator=g)
    weights = torch.tensor([0.02, 0.05, 0.1, 0.3])
    denoised = tv_denoise(noisy, weights, iters=20)
    tv = total_variation(denoised)
    assert (tv < total_variation(noisy)).all()
    assert (tv.diff() < 0).all()                                   # more weight, smoother
    assert (denoised - clean).abs().mean() < (noisy - clean).abs().mean()
    torch.testing.assert_close(denoised.mean((1, 2, 3)), noisy.mean((1, 2, 3)), atol=1e-4, rtol=0)


def test_crop_takes_each_image_at_its_own_offset():
    canvas = torch.arange(2 * 1 * 6 * 6, dtype=torch.float).reshape(2, 1, 6, 6)
    offsets = torch.tensor([[0, 1], [2, 0]])
    out = crop(canvas, offsets, (3, 4))
    torch.testing.assert_close(out[0], canvas[0, :, 0:3, 1:5])
    torch.testing.assert_close(out[1], canvas[1, :, 2:5, 0:4])


def test_hash_is_deterministic_and_spread():
    keys = torch.arange(1000)
    a, b = hash_keys(keys, 5, 1), hash_keys(keys, 5, 1)
    torch.testing.assert_close(a, b)
    assert ((a >= 0) & (a < 2 ** 31)).all()
    assert len(set((a % 7).tolist())) == 7
    assert not torch.equal(hash_keys(keys, 6, 1), a)


def test_schedules_scale_with_input_size():
    small, big = mfv_schedule(28, 200), mfv_schedule(227, 370)
    assert small.steps == 200 and big.steps == 370
    assert [s.steps for s in big.stages] == [190, 150, 20, 10]         # the released code's stages
    assert big.margin == 50 and big.stages[1].upscale == 1.2
    assert small.margin == 6 and small.stages[1].upscale == 1.0
    assert center_bias_schedule(28).stages[0].objective == "log_softmax"
    assert split_steps(7, (190, 150, 20, 10)) == [3, 2, 1, 1]


def test_render_raises_each_target_activation(demo_spec, fashion_train):
    units = torch.tensor([0, 5, 7, 9])
    init = torch.stack([fashion_train.pixels(torch.nonzero(fashion_train.labels == u)[:15, 0]).mean(0)
                        for u in units.tolist()])
    keys = torch.arange(4)
    final = render(demo_spec, "fc8", units, init, mfv_schedule(28, 40), keys)
    before, after = measure(demo_spec, "fc8", units, init), measure(demo_spec, "fc8", units, final)
    assert final.shape == init.shape and final.min() >= 0 and final.max() <= 1
    assert (after["act"] > before["act"]).all()
    assert after["top1"].tolist() == [1, 1, 1, 1]


def test_facet_directions_point_from_the_neurons_centre_to_each_facet():
    codes = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    directions, centres = facet_directions(codes)
    torch.testing.assert_close(centres, torch.ones(3, 2))
    torch.testing.assert_close(directions[:2], torch.tensor([[1.0, -1.0], [-1.0, 1.0]]) / 2 ** 0.5)
    assert directions[2].abs().max() < 1e-6, "a facet at the centre has no direction to keep"


def test_the_facet_pull_keeps_each_image_on_its_own_facets_side(demo_spec, fashion_train):
    """Three facets of the Sneaker neuron (its low-, middle- and high-contrast sneakers): with the pull, the
    images' embedding codes end further along their own facets' directions than without, and still reach
    their targets."""
    sneakers = torch.nonzero(fashion_train.labels == 7)[:450, 0]
    by_contrast = sneakers[fashion_train.pixels(sneakers).std((1, 2, 3)).argsort()]
    groups = [by_contrast[:15], by_contrast[218:233], by_contrast[-15:]]
    init = torch.stack([fashion_train.pixels(g).mean(0) for g in groups])
    with torch.no_grad():
        code = lambda x: demo_spec.extractor((demo_spec.embedding_node,))(demo_spec.preprocess(x))[demo_spec.embedding_node]  # noqa: E731
        means = torch.stack([code(fashion_train.pixels(g)).mean(0) for g in groups])
    directions, centres = facet_directions(means)
    units, keys = torch.tensor([7, 7, 7]), torch.tensor([1, 2, 3])
    targets = 1.5 * measure(demo_spec, "fc8", units, init)["act"]
    schedule = dataclasses.replace(mfv_schedule(28, 60), jitter=0, until_exemplar=True)
    along = {}
    for weight in (0.0, 1.0):
        final = render(demo_spec, "fc8", units, init, dataclasses.replace(schedule, facet_weight=weight), keys,
                       targets=targets, facet_pull=(directions, centres))
        assert (measure(demo_spec, "fc8", units, final)["act"] >= targets).all()
        with torch.no_grad():
            along[weight] = torch.nn.functional.cosine_similarity(code(final) - centres, directions, dim=1)
    assert (along[1.0] > along[0.0] - 0.01).all() and along[1.0].mean() > along[0.0].mean() + 0.05, along


def test_hidden_conv_units_are_optimized_at_the_centre(demo_spec):
    keys = torch.arange(3)
    units = torch.tensor([1, 2, 3])
    init = noise_init(keys, (1, 28, 28), "cpu")
    final = render(demo_spec, "conv3", units, init, mfv_schedule(28, 30), keys)
    before, after = measure(demo_spec, "conv3", units, init), measure(demo_spec, "conv3", units, final)
    assert (after["act"] > before["act"]).all()
    assert torch.isnan(after["target_prob"]).all() and (after["top1"] == -1).all()


def test_an_image_does_not_depend_on_its_batch(demo_spec):
    """Per-image keys drive jitter, so a facet renders the same alone or in a batch."""
    keys = torch.tensor([11, 12, 13])
    units = torch.tensor([3, 4, 5])
    init = noise_init(keys, (1, 28, 28), "cpu")
    together = render(demo_spec, "fc6", units, init, mfv_schedule(28, 15), keys)
    alone = render(demo_spec, "fc6", units[1:2], init[1:2], mfv_schedule(28, 15), keys[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-4, rtol=0)


def test_tv_denoise_matches_scikit_image():
    """Same algorithm as skimage.restoration.denoise_tv_chambolle (fixed iteration count)."""
    import numpy as np
    from skimage.restoration import denoise_tv_chambolle
    rng = np.random.default_rng(0)
    image = rng.random((20, 24))
    ours = tv_denoise(torch.from_numpy(image)[None, None], 0.1, iters=10)[0, 0].numpy()
    theirs = denoise_tv_chambolle(image, weight=0.1, eps=0, max_num_iter=10)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_bf16_autocast_reaches_the_same_activations_as_fp32(demo_spec):
    """bf16 takes each image down a slightly different path (the ascent is chaotic), so images
    differ; what it must keep is the result: every image gains, and the mean final activation
    stays within 5% of fp32's."""
    keys = torch.arange(16)
    units = torch.arange(16) % 10
    init = noise_init(keys, (1, 28, 28), "cpu")
    schedule = mfv_schedule(28, 30)
    start = measure(demo_spec, "fc8", units, init)["act"]
    fp32 = measure(demo_spec, "fc8", units, render(demo_spec, "fc8", units, init, schedule, keys))["act"]
    bf16 = measure(demo_spec, "fc8", units, render(demo_spec, "fc8", units, init, schedule, keys, precision="bf16"))["act"]
    assert (bf16 > start).all()
    assert abs(bf16.mean() - fp32.mean()) / fp32.mean() < 0.05
