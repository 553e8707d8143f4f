"""Known concepts: the XNN of the synthetic class is faithful and its maps find both patterns."""

from __future__ import annotations

import torch
from xf_synthetic import Synthetic

from xai_widgets import xfeatures

#: map cells are 2×2 pixels; a hit is an argmax within this margin of the pattern's box
MARGIN = 2


def _hits(synthetic: Synthetic, maps: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """``(2, n_x)``: per pattern, the fraction of held-out images containing it on which each
    x-feature's map peaks on it."""
    n = maps.shape[1]
    hits = torch.zeros(2, n)
    counts = torch.zeros(2)
    scale = synthetic.inputs.shape[-1] // maps.shape[-1]
    for j, i in enumerate(test.tolist()):
        for p in range(2):
            if not synthetic.present[i, p]:
                continue
            counts[p] += 1
            top, left, bottom, right = synthetic.boxes[i, p].tolist()
            for k in range(n):
                row, col = divmod(int(maps[j, k].flatten().argmax()), maps.shape[-1])
                y, x = row * scale + scale / 2, col * scale + scale / 2
                hits[p, k] += float(top - MARGIN <= y <= bottom + MARGIN
                                    and left - MARGIN <= x <= right + MARGIN)
    return hits / counts[:, None]


def test_faithful_on_held_out_images(synthetic_xnn: xfeatures.XNN) -> None:
    faithfulness = synthetic_xnn.faithfulness()
    assert faithfulness.r2 >= 0.9
    assert synthetic_xnn.rounds[-1].accepted


def test_each_pattern_is_the_peak_of_some_x_feature(synthetic: Synthetic,
                                                    synthetic_xnn: xfeatures.XNN) -> None:
    _, test = synthetic.data.split(synthetic_xnn.config.test_fraction,
                                   synthetic_xnn.meta["seed"])
    result = synthetic_xnn.explain(list(synthetic.inputs[test]), layer="features.5")
    hits = _hits(synthetic, result.maps, test)
    assert (hits.max(dim=1).values >= 0.9).all(), hits
    # and by different x-features
    assert hits[0].argmax() != hits[1].argmax(), hits


def test_combined_model_reproduces_the_cached_prediction(synthetic: Synthetic,
                                                         synthetic_xnn: xfeatures.XNN) -> None:
    images = list(synthetic.inputs[:5])
    c = synthetic_xnn.contributions(images)
    with torch.inference_mode():
        _, _, y_hat = synthetic_xnn.srae(synthetic.data.z[:5])
        combined = synthetic_xnn.combined()(synthetic.inputs[:5])[:, 0]
    torch.testing.assert_close(c.y_hat, y_hat, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(combined, y_hat, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c.score, synthetic.data.y[:5])
    torch.testing.assert_close(c.contribution, c.activation * c.weight)
