"""Similarity of two batches of maps, one value per image (for the sanity checks).

``spearman``: rank correlation (average ranks for ties; NaN when a map is constant).
``ssim``: structural similarity (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004) from
scikit-image. ``hog``: Pearson correlation of the histograms of oriented gradients
(Dalal & Triggs, CVPR 2005), also from scikit-image.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rank correlation of ``a`` and ``b`` ``(N, ...)`` per image: ``(N,)``."""
    ranks_a = rankdata(a.flatten(1).double().numpy(), axis=1)
    ranks_b = rankdata(b.flatten(1).double().numpy(), axis=1)
    return torch.from_numpy(_pearson(ranks_a, ranks_b)).float()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM of 2-D maps ``a`` and ``b`` ``(N, H, W)`` per image: ``(N,)``. The window is 7
    pixels, or the largest odd size that fits a smaller map."""
    from skimage.metrics import structural_similarity

    side = min(a.shape[-2:])
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        return torch.full((len(a),), float("nan"))
    return torch.tensor([
        float(structural_similarity(x.double().numpy(), y.double().numpy(),
                                    data_range=data_range, win_size=window))
        for x, y in zip(a, b, strict=True)], dtype=torch.float32)


def hog(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Correlation of the HOG features of 2-D maps ``(N, H, W)`` per image: ``(N,)``."""
    from skimage.feature import hog as features

    cell = max(2, min(a.shape[-2:]) // 16)

    def describe(maps: torch.Tensor) -> np.ndarray:
        return np.stack([features(m.double().numpy(), pixels_per_cell=(cell, cell),
                                  cells_per_block=(1, 1)) for m in maps])

    return torch.from_numpy(_pearson(describe(a), describe(b))).float()


SIMILARITIES = ("spearman", "spearman_abs", "ssim", "hog")


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of ``(N, D)`` arrays; NaN for a constant row."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norms = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1),
                        np.nan)
