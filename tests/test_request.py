"""The one path from a request to an explanation: bare modules, layer policy, dtypes, and
models that take one input size."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from tiny_models import PlainNet, VggNet, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets.request import Request, bundle_for


class Counting(nn.Module):
    """PlainNet that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.net = PlainNet()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def test_a_bare_module_is_catalogued_once_not_on_every_call() -> None:
    model = Counting()
    x = torch.randn(2, 3, 16, 16)
    xw.explain(model, x, "grad_cam")
    first = model.calls
    assert first == 2  # the catalogue's dry run and the trace
    xw.explain(model, x, "grad_cam")
    xw.explain(model, x, "saliency")
    assert model.calls == first + 2  # one forward per call, no dry run
    assert bundle_for(model) is bundle_for(model)


def test_a_changed_module_gets_a_new_catalogue() -> None:
    model = Counting()
    x = torch.randn(1, 3, 16, 16)
    before = bundle_for(model)
    assert "net.features.2" in before.layers.names
    model.net.features[2] = nn.Conv2d(8, 8, 3, stride=1, padding=1)  # same name, new module
    model.net.features.append(nn.Identity())
    assert xw.explain(model, x, "grad_cam", layer="net.features.3").map.shape == (1, 16, 16)
    after = bundle_for(model)
    assert after is not before
    assert after.layers["net.features.2"].shape == (8, 16, 16)  # stride 1 now


class Cifar(nn.Module):
    """A student's network: a Linear after flatten, so it takes 32×32 inputs only."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def test_a_model_of_one_input_size_works_with_inputs_of_that_size() -> None:
    e = xw.explain(Cifar(), torch.randn(2, 3, 32, 32), "grad_cam", layer="features.1")
    assert e.map.shape == (2, 32, 32)


def test_a_photo_of_another_size_says_which_size_was_given() -> None:
    photo = (np.random.default_rng(0).random((50, 60, 3)) * 255).astype(np.uint8)
    with pytest.raises(xw.ModelError, match=r"failed on an input of 3×224×224.*Preprocessing"):
        xw.explain(Cifar(), photo, "saliency")
    fitted = xw.ModelBundle(Cifar(), xw.Preprocessing(resize=32, crop=(32, 32)))
    assert xw.explain(fitted, photo, "saliency").map.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["grad_cam", "saliency", "guided_backprop",
                                    "integrated_gradients", "excitation_backprop"])
def test_models_in_other_dtypes_give_float32_maps_close_to_float32(dtype: torch.dtype,
                                                                   method: str) -> None:
    torch.manual_seed(0)
    model = PlainNet()
    x = torch.randn(2, 3, 16, 16)
    reference = xw.explain(bundle(model), x, method, target=1).map
    e = xw.explain(bundle(model.to(dtype)), x, method, target=1)
    assert e.map.dtype == torch.float32
    if dtype == torch.float64:
        torch.testing.assert_close(e.map, reference, rtol=1e-4, atol=1e-6 * reference.abs().max())
    else:  # 8 or 11 bits of mantissa: the same picture
        cosine = torch.nn.functional.cosine_similarity(e.map.flatten(), reference.flatten(),
                                                       dim=0)
        assert cosine > 0.97


def test_half_precision_is_refused_where_the_method_cannot_run_in_it() -> None:
    with pytest.raises(xw.MethodError, match="float32 copy"):
        xw.explain(bundle(VggNet().to(torch.bfloat16)), torch.randn(1, 3, 16, 16),
                   "layerwise_inverse", max_iterations=1)


def test_the_layer_policy_is_one_check() -> None:
    plain = bundle(PlainNet())
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(xw.MethodError, match="takes no layer"):
        xw.explain(plain, x, "saliency", layer="features.3")
    with pytest.raises(xw.MethodError, match="only at the layer that feeds the global pooling"):
        xw.explain(plain, x, "cam", layer="features.1")
    assert xw.explain(plain, x, "cam").layer == plain.layers.pooled  # its own layer
    assert xw.explain(plain, x, "grad_cam").layer == plain.layers.default
    policies = {spec.name: spec.layer_policy for spec in xw.methods().values()}
    assert policies["cam"] == "optional"
    assert {policies[name] for name in ("grad_cam", "score_cam")} == {"required"}
    assert {policies[name] for name in ("saliency", "rise", "smoothgrad")} == {"none"}


def test_the_request_reuses_given_traces() -> None:
    plain = bundle(PlainNet())
    first = Request.make(plain, torch.randn(1, 3, 16, 16), "grad_cam", "top1")
    second = Request.make(plain, None, "grad_cam_pp", "rank2", batch=first.batch,
                          traces=first.traces)
    assert second.traces is first.traces
    order = first.traces.logits.argsort(dim=1, descending=True)
    assert second.targets == (int(order[0, 1]),)
    assert torch.equal(second.run().map, xw.explain(plain, first.batch.inputs, "grad_cam_pp",
                                                     target="rank2").map)


def test_huge_numbers_are_refused_as_parameters() -> None:
    with pytest.raises(xw.ParameterError, match="must lie in"):
        xw.explain(bundle(PlainNet()), torch.randn(1, 3, 16, 16), "integrated_gradients",
                   n_steps=10**400)


def zero_class_model() -> xw.ModelBundle:
    torch.manual_seed(0)
    model = PlainNet()
    with torch.no_grad():
        model.fc.weight[2] = 0.0  # class 2 reads nothing
    return bundle(model, classes=5)


@pytest.mark.parametrize("method", ["grad_cam", "cam", "saliency", "input_x_gradient",
                                    "guided_grad_cam", "layer_cam"])
def test_an_all_zero_map_warns_and_says_so_in_its_caption(method: str) -> None:
    x = torch.randn(2, 3, 16, 16)
    with pytest.warns(xw.EmptyMapWarning, match="all-zero map for input 0.0, input 0.1.*head "
                                                "weights are zero"):
        e = xw.explain(zero_class_model(), x, method, target=2)
    assert e.all_zero.tolist() == [True, True]
    assert all(caption.endswith("· all-zero map") for caption in e.captions())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another class: a real map, no warning
        assert not xw.explain(zero_class_model(), x, method, target=1).all_zero.any()


def test_the_explorer_says_when_a_map_is_all_zero() -> None:
    app = xw.Explorer(zero_class_model(), images={"noise": torch.randn(1, 3, 16, 16)},
                      zoo=False, threaded=False)
    app.session.select(target=2)
    assert "all-zero map" in app.status.value and "xai-status-warning" in app.status.value
    assert app.caption.value.endswith("all-zero map</b>")
    app.session.select(target=1)
    assert app.status.value == ""
