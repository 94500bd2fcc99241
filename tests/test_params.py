"""Image parameterizations (pixel, fourier, maco) and transformation robustness."""
import dataclasses

import pytest
import torch

from precompute.engine.params import FourierImage, MacoImage, frequency_scale, random_affine
from precompute.engine.synthesis import measure, mfv_schedule, noise_init, render

pytestmark = pytest.mark.numerics


def photo_like(channels=3, size=32, seed=0):
    """Smooth blobs plus a little noise: an image with structure at several scales."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2, channels, 4, 4, generator=g)
    image = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    return (0.2 + 0.6 * image + 0.05 * torch.rand(2, channels, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_fourier_starts_exactly_at_its_init(channels):
    init = photo_like(channels)
    torch.testing.assert_close(FourierImage(init)(), init, atol=1e-5, rtol=0)


def test_maco_keeps_the_inits_layout_and_mean_colour_but_not_its_contrast():
    init = photo_like()
    image = MacoImage(init)()
    faint = MacoImage(0.5 + 0.1 * (init - 0.5))()   # the same picture at a tenth of the contrast
    assert image.shape == init.shape and 0 <= image.min() and image.max() <= 1
    flat_init, flat = init.flatten(2) - init.mean((2, 3)).unsqueeze(-1), image.flatten(2) - image.mean((2, 3)).unsqueeze(-1)
    correlation = (torch.nn.functional.cosine_similarity(flat_init, flat, dim=2)).mean()
    assert correlation > 0.5, "the phase keeps where the init's structure is"
    torch.testing.assert_close(torch.logit(image.clamp(1e-3, 1 - 1e-3)).mean((2, 3)),
                               torch.logit(init.clamp(1e-3, 1 - 1e-3)).mean((2, 3)), atol=0.15, rtol=0)
    torch.testing.assert_close(faint.std((2, 3)), image.std((2, 3)), atol=0.02, rtol=0)   # contrast is natural


def test_maco_optimizes_only_the_phase():
    maco = MacoImage(photo_like())
    assert [name for name, _ in maco.named_parameters()] == ["phase"]
    maco().sum().backward()
    assert maco.phase.grad.abs().sum() > 0


def test_the_spectrum_weights_fall_with_frequency():
    scale = frequency_scale(16, 16)
    assert scale[0, 0] == scale.max() and scale[8, 8] == scale.min()


def test_random_affine_is_the_identity_without_scale_or_rotation_and_per_image_otherwise():
    views = photo_like()
    assert random_affine(views, torch.rand(2, 2), 0.0, 0.0) is views
    draws = torch.tensor([[0.5, 0.5], [1.0, 0.9]])   # the first: scale 1, angle 0
    moved = random_affine(views, draws, 0.1, 10.0)
    torch.testing.assert_close(moved[0], views[0], atol=1e-5, rtol=0)
    assert (moved[1] - views[1]).abs().mean() > 0.01


@pytest.mark.parametrize("param", ["fourier", "maco"])
def test_spectral_renders_raise_their_units_and_do_not_depend_on_the_batch(demo_spec, param):
    units, keys = torch.tensor([0, 3, 7]), torch.tensor([11, 12, 13])
    init = noise_init(keys, (1, 28, 28), "cpu")
    schedule = dataclasses.replace(mfv_schedule(28, 25), param=param, learning_rate=0.05, scale=0.1, rotate=10.0)
    final = render(demo_spec, "fc8", units, init, schedule, keys)
    assert final.shape == init.shape and 0 <= final.min() and final.max() <= 1
    assert (measure(demo_spec, "fc8", units, final)["act"] > measure(demo_spec, "fc8", units, init)["act"] + 1).all()
    alone = render(demo_spec, "fc8", units[1:2], init[1:2], schedule, keys[1:2])
    # Adam turns rounding differences of batched FFTs into small steps: close, not bitwise
    torch.testing.assert_close(alone, final[1:2], atol=5e-3, rtol=0)
