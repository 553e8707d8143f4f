"""Guided feature inversion: the NumPy reference, a model with a known answer, the two steps,
batching, determinism, progress/cancel, bad settings, and the real model on a photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import KERNEL_CARDS, load_by_path, load_reference, reference_nets
from test_contract import assert_same, snapshot
from tiny_models import VggNet, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets.blur import gaussian_blur
from xai_widgets.kernels.spec import Cancelled

REFERENCE = load_reference("feature_inversion")
# the settings the reference was computed with, from the script that wrote it
_SCRIPT = load_by_path("feature_inversion_reference",
                        KERNEL_CARDS / "feature_inversion" / "make_reference.py")
REFERENCE_SETTINGS = {**_SCRIPT.SETTINGS, "iterations": _SCRIPT.ITERATIONS,
                      "step1_iterations": _SCRIPT.STEP1}


class ObjectAndClutter(nn.Module):
    """``features`` = ReLU of input channels 0 (the object) and 1 (clutter); class 0 is the
    mean of the object map, class 1 that of the clutter (times 20)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.ReLU())
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[0, 0] = self.features[0].weight[1, 1] = 1.0
            self.fc.weight.copy_(20 * torch.eye(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


OBJECT = (slice(2, 8), slice(3, 9))
CLUTTER = (slice(9, 15), slice(8, 15))


def object_and_clutter_image() -> torch.Tensor:
    """Object and clutter of random brightness in [0.5, 1] (no ties), zero elsewhere."""
    generator = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 3, 16, 16)
    x[0, 0][OBJECT] = 0.5 + 0.5 * torch.rand(6, 6, generator=generator)
    x[0, 1][CLUTTER] = 0.5 + 0.5 * torch.rand(6, 7, generator=generator)
    return x


@pytest.mark.parametrize("normaliser", ["official", "minmax"])
def test_matches_numpy_reference(normaliser: str) -> None:
    net = reference_nets.tiny_net(REFERENCE)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "feature_inversion", layer="features.3",
                   target=REFERENCE["targets"].tolist(), normaliser=normaliser,
                   **REFERENCE_SETTINGS)
    expected = {"mask": e.map, "w": e.extras["channel_weights"], "loss": e.extras["loss"],
                "probabilities": e.extras["probabilities"]}
    for key, value in expected.items():
        reference = torch.tensor(REFERENCE[f"{normaliser}:{key}"], dtype=torch.float32)
        torch.testing.assert_close(value, reference, rtol=1e-4, atol=2e-6, msg=key)
    torch.testing.assert_close(e.extras["background"],
                               torch.tensor(REFERENCE["blurred"], dtype=torch.float32))


def test_blur_keeps_constants_and_mass() -> None:
    constant = torch.full((1, 3, 9, 12), 0.7)
    torch.testing.assert_close(gaussian_blur(constant, 30.0, border="renormalise"), constant)
    torch.testing.assert_close(gaussian_blur(constant, 0.0), constant)


def test_step1_keeps_the_features() -> None:
    model = VggNet().eval()
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(bundle(model), x, "feature_inversion", layer="features.3",
                   iterations=12, step1_iterations=12, lr=0.05)
    loss, mask = e.extras["loss"], e.map
    assert (loss[:, -1] < loss[:, 0]).all()
    assert mask.min() >= 0 and mask.max() <= 1
    assert (e.extras["channel_weights"] >= 0).all()
    torch.testing.assert_close(e.extras["background_mask"], 1 - mask)
    # the kept blend reproduces the layer better than the background alone
    with torch.no_grad():
        features = model.features[:4]
        reference = features(x)

        def error(image: torch.Tensor) -> torch.Tensor:
            return (features(image) - reference).flatten(1).norm(dim=1)

        assert (error(e.extras["blended"]) < error(e.extras["background"])).all()


def test_known_answer_and_step2_separates_the_class() -> None:
    model, x = ObjectAndClutter().eval(), object_and_clutter_image()
    b = bundle(model, classes=2)
    common = {"layer": "features", "target": 0, "blur_sigma": 4.0}  # the authors' defaults
    first = xw.explain(b, x, "feature_inversion", iterations=11, step1_iterations=11, **common)
    both = xw.explain(b, x, "feature_inversion", iterations=40, step1_iterations=11, **common)
    # step 2 keeps the object and drops the clutter: the known answer for class 0
    w = both.extras["channel_weights"][0]
    assert w[0] > 5 * w[1]
    mask = both.map[0]
    assert mask[OBJECT].mean() > 0.6 > 0.05 > mask[CLUTTER].mean()
    # and it raises the class on the kept blend, lowers it on the removed one
    _, kept_before, removed_before = first.extras["probabilities"][0]
    _, kept_after, removed_after = both.extras["probabilities"][0]
    assert kept_after > kept_before
    assert removed_after < removed_before
    assert kept_after > removed_after


def test_batch_equals_one_by_one() -> None:
    model = VggNet().eval()
    x = torch.randn(3, 3, 16, 16)
    options = {"layer": "features.3", "iterations": 6, "step1_iterations": 3}
    together = xw.explain(bundle(model), x, "feature_inversion", target=[0, 2, 4], **options)
    for i, t in enumerate([0, 2, 4]):
        alone = xw.explain(bundle(model), x[i:i + 1], "feature_inversion", target=t, **options)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.extras["loss"][i:i + 1], alone.extras["loss"],
                                   rtol=1e-4, atol=1e-6)


def test_deterministic_for_a_seed() -> None:
    model = VggNet().eval()
    x = torch.randn(1, 3, 16, 16)

    def run(seed: int) -> torch.Tensor:
        return xw.explain(bundle(model), x, "feature_inversion", layer="features.3",
                          iterations=4, step1_iterations=2, background="noise",
                          seed=seed).map

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_progress_previews_and_cancel_leave_the_model_unchanged() -> None:
    model = VggNet().train()
    before = snapshot(model)
    reports: list[tuple[float, tuple[int, ...]]] = []

    def progress(fraction: float, preview: torch.Tensor | None) -> None:
        assert preview is not None
        reports.append((fraction, tuple(preview.shape)))
        if len(reports) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        xw.explain(bundle(model), torch.randn(2, 3, 16, 16), "feature_inversion",
                   layer="features.3", iterations=20, report_every=3, progress=progress)
    assert reports == [(3 / 20, (2, 16, 16)), (6 / 20, (2, 16, 16))]
    assert_same(before, snapshot(model))
    assert all(p.grad is None for p in model.parameters())


def test_mask_layer_same_is_the_inverted_layer() -> None:
    model = VggNet().eval()
    x = torch.randn(2, 3, 16, 16)
    options = {"layer": "features.3", "iterations": 5, "step1_iterations": 2}
    default = xw.explain(bundle(model), x, "feature_inversion", **options)
    same = xw.explain(bundle(model), x, "feature_inversion", mask_layer="same", **options)
    named = xw.explain(bundle(model), x, "feature_inversion", mask_layer="features.3", **options)
    for other in (same, named):
        assert torch.equal(other.map, default.map)
        assert torch.equal(other.extras["loss"], default.extras["loss"])
    assert default.extras["mask_layer"] == "features.3"
    assert default.extras["layer_mask"].shape == (2, 8, 8)


def test_mask_layer_sets_the_basis_apart_from_the_inverted_layer() -> None:
    """Basis at ``features.1`` (16×16), features inverted at ``features.5`` (4×4): the mask
    is the combination of the 16×16 maps (upsampled 16 -> 16), the step-1 loss still compares
    the 4×4 features, and the result differs from the one-layer run."""
    torch.manual_seed(0)
    model = VggNet().eval()
    x = torch.randn(1, 3, 16, 16)
    options = {"layer": "features.5", "iterations": 4, "step1_iterations": 4}
    apart = xw.explain(bundle(model), x, "feature_inversion", mask_layer="features.1",
                       **options)
    alone = xw.explain(bundle(model), x, "feature_inversion", **options)
    assert apart.extras["mask_layer"] == "features.1"
    assert apart.extras["channel_weights"].shape == (1, 8)
    assert apart.extras["layer_mask"].shape == (1, 16, 16)
    assert alone.extras["layer_mask"].shape == (1, 4, 4)
    with torch.no_grad():
        basis = model.features[:2](x)  # ReLU of the first convolution, 16×16
        inverted = model.features(x)  # features.5, 4×4
        # the mask from the final w, by hand (same size: upsampling is the identity)
        layer_mask = torch.einsum("nk,nkhw->nhw", apart.extras["channel_weights"], basis)
        low = layer_mask.flatten(1).amin(1)[:, None, None]
        high = layer_mask.flatten(1).amax(1)[:, None, None]
        torch.testing.assert_close(apart.map, ((layer_mask - low) / high).clamp(0, 1))
        # the first loss: w = 0.1 everywhere, features compared at the inverted layer
        start = 0.1 * basis.sum(1)
        m = ((start - start.amin()) / start.amax()).clamp(0, 1)[:, None]
        kept = x * m + apart.extras["background"] * (1 - m)
        error = (model.features(kept) - inverted).pow(2).sum() / inverted.pow(2).sum()
        first = error + 5.0 * 8 * 0.1 ** 2
    torch.testing.assert_close(apart.extras["loss"][0, 0], first, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(apart.map, alone.map, atol=1e-2)


@pytest.mark.parametrize(("value", "error", "match"), [
    ("featurs.1", xw.LayerError, r"mask_layer.*did you mean 'features.1'.*'same'"),
    ("classifier", xw.LayerError, "mask_layer.*spatial"),
    (3, xw.ParameterError, "mask_layer.*layer name"),
])
def test_bad_mask_layer_is_refused_clearly(value: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        xw.explain(bundle(VggNet()), torch.randn(1, 3, 16, 16), "feature_inversion",
                   layer="features.3", iterations=2, step1_iterations=1, mask_layer=value)


@pytest.mark.parametrize(("params", "error", "match"), [
    ({"iterations": 0}, xw.ParameterError, "iterations"),
    ({"iterations": 3, "step1_iterations": 5}, xw.ParameterError, "must not exceed"),
    ({"background": "black"}, xw.ParameterError, "background"),
    ({"layer": "classifier"}, xw.LayerError, "spatial"),
    ({"layer": "classifier.3"}, xw.LayerError, "spatial"),
])
def test_bad_settings_raise_clear_errors(params: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        xw.explain(bundle(VggNet()), torch.randn(1, 3, 16, 16), "feature_inversion", **params)


@pytest.mark.slow
def test_real_model_mask_covers_the_cup(embedded, photos) -> None:
    # the espresso cup in the centre crop of "coffee", annotated by looking at the photo,
    # as fractions (left, top, right, bottom); at 128 px to keep the test short
    cup = (0.19, 0.04, 0.78, 0.75)
    size = 128
    small = xw.ModelBundle(embedded.model, xw.Preprocessing(
        resize=146, crop=(size, size), mean=(0.5,) * 3, std=(0.5,) * 3,
        interpolation="bicubic"), embedded.class_names)
    e = xw.explain(small, photos["coffee"], "feature_inversion", target="espresso",
                   iterations=20, step1_iterations=11)
    mask = e.map[0].numpy()
    inside = np.zeros_like(mask, dtype=bool)
    inside[round(cup[1] * size):round(cup[3] * size), round(cup[0] * size):round(cup[2] * size)] \
        = True
    assert mask[inside].mean() > 1.3 * mask[~inside].mean()
    kept = e.extras["probabilities"][0, 1]
    assert kept > 0.5
