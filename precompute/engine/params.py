"""Image parameterizations: what the optimizer changes to change the image.

- ``pixel``: the pixels themselves (the paper's; precompute.engine.synthesis steps them by normalized
  gradient ascent and TV-denoises them after every step).
- ``fourier``: Lucid's. Colours are decorrelated (the square root of ImageNet's colour covariance)
  and each channel is a Fourier spectrum scaled by 1/frequency, so a step changes coarse structure
  more than fine texture; pixels are the sigmoid of the result.
- ``maco``: MaCo's (Fel et al., 2023). As ``fourier``, but only the spectrum's phase is optimized;
  its magnitude stays a natural 1/f spectrum and the image is standardized to a natural contrast, so
  the image cannot drift into high-frequency noise or grey.

Every parameterization starts from an image (MFV's facet mean, or noise): ``fourier`` reproduces
it exactly; ``maco`` keeps its phase (where its edges are) and its mean colour, and gives it the
natural magnitude and contrast. Images are B x C x H x W with pixels in [0, 1]; one channel
(the demo's grey images) skips the colour decorrelation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# Lucid's colour correlation: square root (by SVD) of ImageNet's RGB covariance, normalized so its
# largest column has unit length.
_COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR = _COLOUR_SQRT / _COLOUR_SQRT.norm(dim=0).max()
NATURAL_STD = 1.0    # MaCo's standardization: unit std of the decorrelated image before the sigmoid
_EPS = 1e-3          # pixels are clamped to [eps, 1 - eps] before the logit, so 0 and 1 stay finite


def frequency_scale(h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """H x (W // 2 + 1): Lucid's 1 / max(frequency, 1 / max(h, w)) ** decay spectrum weights."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return 1.0 / torch.sqrt(fx ** 2 + fy ** 2).clamp_min(1.0 / max(h, w)) ** decay


class _Spectral(nn.Module):
    """Shared by fourier and maco: pixels <-> decorrelated logits <-> spectra."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.size = tuple(shape[-2:])
        colour = COLOUR if shape[1] == 3 else torch.eye(shape[1])
        self.register_buffer("colour", colour)
        self.register_buffer("scale", frequency_scale(*self.size))

    def decorrelate(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = torch.logit(pixels.clamp(_EPS, 1 - _EPS))
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.colour), logits)

    def to_pixels(self, decorrelated: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.einsum("ij,bjhw->bihw", self.colour, decorrelated))


class FourierImage(_Spectral):
    def __init__(self, init: torch.Tensor):
        super().__init__(init.shape)
        spectrum = torch.fft.rfft2(self.decorrelate(init.float()), norm="ortho") / self.scale
        self.spectrum = nn.Parameter(torch.view_as_real(spectrum).contiguous())

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        return self.to_pixels(torch.fft.irfft2(spectrum, s=self.size, norm="ortho"))


class MacoImage(_Spectral):
    def __init__(self, init: torch.Tensor):
        super().__init__(init.shape)
        decorrelated = self.decorrelate(init.float())
        self.register_buffer("mean", decorrelated.mean((2, 3), keepdim=True))
        self.register_buffer("magnitude", self.scale.expand(init.shape[:2] + self.scale.shape).clone())
        self.phase = nn.Parameter(torch.fft.rfft2(decorrelated, norm="ortho").angle())

    def forward(self) -> torch.Tensor:
        spectrum = torch.polar(self.magnitude, self.phase)
        image = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        image = image - image.mean((2, 3), keepdim=True)
        image = image / image.std((2, 3), keepdim=True).clamp_min(1e-6) * NATURAL_STD
        return self.to_pixels(image + self.mean)


def make_image(kind: str, init: torch.Tensor) -> nn.Module:
    """The module whose parameters are optimized and whose forward() is the image (fourier, maco)."""
    makers = {"fourier": FourierImage, "maco": MacoImage}
    if kind not in makers:
        raise ValueError(f"no spectral parameterization {kind!r}; valid: {', '.join(makers)}")
    return makers[kind](init).to(init.device)


def random_affine(views: torch.Tensor, unit_draws: torch.Tensor, scale: float, rotate: float) -> torch.Tensor:
    """Transformation robustness: each image scaled by 1 +- `scale` and rotated by +- `rotate`
    degrees, the amounts from its own draws (B x 2 in [0, 1)); reflection fills the corners."""
    if scale <= 0 and rotate <= 0:
        return views
    factor = 1 + scale * (2 * unit_draws[:, 0] - 1)
    angle = math.radians(rotate) * (2 * unit_draws[:, 1] - 1)
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta.to(views.dtype), list(views.shape), align_corners=False)
    return torch.nn.functional.grid_sample(views, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
