"""The one Gaussian blur, against SciPy's separable filter for each border rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from xai_widgets.blur import gaussian_blur


def scipy_blur(images: np.ndarray, sigma: float, radius: int, mode: str) -> np.ndarray:
    """Per image and channel, rows then columns, as ``ndimage.gaussian_filter`` does."""
    out = np.empty_like(images)
    for n in range(images.shape[0]):
        for c in range(images.shape[1]):
            out[n, c] = ndimage.gaussian_filter(images[n, c], sigma, mode=mode, radius=radius)
    return out


@pytest.mark.parametrize(("border", "mode"), [("replicate", "nearest"), ("reflect", "mirror")])
def test_padded_borders_match_scipy(border, mode) -> None:
    images = np.random.default_rng(0).normal(size=(2, 3, 17, 23))
    ours = gaussian_blur(torch.from_numpy(images), 2.0, radius=5, border=border)
    np.testing.assert_allclose(ours.numpy(), scipy_blur(images, 2.0, 5, mode), atol=1e-12)


def test_renormalised_border_divides_by_the_blurred_ones() -> None:
    images = np.random.default_rng(1).normal(size=(1, 2, 9, 14))
    ones = np.ones((1, 1, 9, 14))
    expected = scipy_blur(images, 1.5, 5, "constant") / scipy_blur(ones, 1.5, 5, "constant")
    ours = gaussian_blur(torch.from_numpy(images), 1.5, border="renormalise")  # radius ⌈3σ⌉
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("border", ["replicate", "reflect", "renormalise"])
def test_constants_stay_and_sigma_zero_copies(border) -> None:
    constant = torch.full((1, 3, 6, 8), 0.3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(constant, 4.0, border=border), constant)
    images = torch.randn(1, 3, 6, 8)
    copied = gaussian_blur(images, 0.0, border=border)
    assert torch.equal(copied, images) and copied is not images
