"""Inverted representation: the NumPy reference, the priors, convergence, batching,
determinism, progress/cancel and bad settings."""

from __future__ import annotations

import pytest
import torch
from support import KERNEL_CARDS, load_by_path, load_reference, reference_nets
from test_contract import assert_same, snapshot
from tiny_models import VggNet, bundle

import xai_widgets as xw
from xai_widgets.kernels.inverted_representation import total_variation
from xai_widgets.kernels.spec import Cancelled

REFERENCE = load_reference("inverted_representation")
# the settings of each reference case, from the script that wrote them (loaded by path)
_SCRIPT = load_by_path("inverted_representation_reference",
                        KERNEL_CARDS / "inverted_representation" / "make_reference.py")
CASES, ITERATIONS = _SCRIPT.CASES, _SCRIPT.ITERATIONS


@pytest.mark.parametrize("case", list(CASES))
def test_matches_numpy_reference(case: str) -> None:
    net = reference_nets.tiny_net(REFERENCE)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "inverted_representation", layer="features.1",
                   iterations=ITERATIONS, **CASES[case])
    torch.testing.assert_close(e.map, torch.tensor(REFERENCE[f"{case}:image"],
                                                   dtype=torch.float32), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(e.extras["loss"], torch.tensor(REFERENCE[f"{case}:loss"],
                                                              dtype=torch.float32),
                               rtol=1e-4, atol=1e-7)


def test_total_variation_by_hand() -> None:
    x = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])  # (1, 1, 2, 3)
    # grid cells (0, 0) and (0, 1): (2² + 1²) + (1² + 2²)
    assert total_variation(x, 2.0).item() == 10.0
    torch.testing.assert_close(total_variation(x, 1.0), torch.tensor([2 * 5 ** 0.5]))


def test_reconstruction_approaches_the_features() -> None:
    model = VggNet().eval()
    x = torch.rand(2, 3, 16, 16)
    e = xw.explain(bundle(model), x, "inverted_representation", layer="features.1",
                   iterations=60, lr=3.0, decay_every=30, lr_decay=0.5)
    loss = e.extras["loss"]
    assert (loss[:, -1] < 0.5 * loss[:, 0]).all()
    assert e.map.shape == (2, 3, 16, 16)
    assert e.map.min() >= 0 and e.map.max() <= 1  # the pixel range of identity normalisation
    torch.testing.assert_close(e.extras["picture"], e.map)
    assert (e.extras["relative_feature_error"] < 0.5).all()


def test_deterministic_for_a_seed() -> None:
    model = VggNet().eval()
    x = torch.rand(2, 3, 16, 16)
    options = {"layer": "features.3", "iterations": 5, "lr": 1.0}
    first = xw.explain(bundle(model), x, "inverted_representation", **options)
    again = xw.explain(bundle(model), x, "inverted_representation", **options)
    other = xw.explain(bundle(model), x, "inverted_representation", seed=1, **options)
    assert torch.equal(first.map, again.map)
    assert not torch.equal(first.map, other.map)


def test_batch_equals_one_by_one() -> None:
    # the first image of a batch starts from the same noise as the image alone (the batch's
    # initial tensor is drawn from one seeded stream), so each image is put first in turn;
    # a random start, not x = 0, keeps max-pool windows free of ties
    model = VggNet().eval()
    x = torch.rand(3, 3, 16, 16)
    options = {"layer": "features.3", "iterations": 5, "lr": 1.0}
    for i in range(3):
        order = [i, *(j for j in range(3) if j != i)]
        together = xw.explain(bundle(model), x[order], "inverted_representation", **options)
        alone = xw.explain(bundle(model), x[i:i + 1], "inverted_representation", **options)
        torch.testing.assert_close(together.map[:1], alone.map, rtol=1e-4, atol=1e-6)


def test_progress_previews_and_cancel_leave_the_model_unchanged() -> None:
    model = VggNet().train()
    before = snapshot(model)
    fractions: list[float] = []

    def progress(fraction: float, preview: torch.Tensor | None) -> None:
        assert preview is not None
        assert preview.shape == (1, 3, 16, 16)
        fractions.append(fraction)
        if len(fractions) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        xw.explain(bundle(model), torch.rand(1, 3, 16, 16), "inverted_representation",
                   layer="features.1", iterations=30, report_every=5, progress=progress)
    assert fractions == [5 / 30, 10 / 30]
    assert_same(before, snapshot(model))


@pytest.mark.parametrize(("params", "error"), [
    ({"iterations": 0}, xw.ParameterError),
    ({"layer": "classifier.3"}, xw.LayerError),
    ({"lr": 1e8, "clip_to_image": False, "alpha": 12.0, "alpha_weight": 1.0}, xw.MethodError),
])
def test_bad_settings_raise_clear_errors(params: dict, error: type) -> None:
    with pytest.raises(error):
        xw.explain(bundle(VggNet()), torch.rand(1, 3, 16, 16), "inverted_representation",
                   **{"iterations": 5, **params})
