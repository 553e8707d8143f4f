"""The public one-call API: targets, batches, errors at the boundary, the result object."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import InplaceResNet, PlainNet, bundle

import xai_widgets as xw
from xai_widgets.kernels.spec import Param

CLASSES = ["cat", "dog", "crane", "crane", "owl"]


@pytest.fixture
def named() -> xw.ModelBundle:
    tiny = bundle(InplaceResNet(classes=5).eval())
    return xw.ModelBundle(tiny.model, tiny.preprocessing, CLASSES, "tiny")


def test_target_forms(named: xw.ModelBundle) -> None:
    x = torch.randn(2, 3, 16, 16)
    logits = xw.explain(named, x, "saliency").logits
    order = logits.argsort(dim=1, descending=True)
    assert xw.explain(named, x, "saliency").targets == tuple(order[:, 0].tolist())
    assert xw.explain(named, x, "saliency", target="top1").targets == tuple(order[:, 0].tolist())
    assert xw.explain(named, x, "saliency", target="rank2").targets == tuple(order[:, 1].tolist())
    assert xw.explain(named, x, "saliency", target=4).targets == (4, 4)
    assert xw.explain(named, x, "saliency", target="OWL").targets == (4, 4)
    assert xw.explain(named, x, "saliency", target=["dog", 0]).targets == (1, 0)
    assert xw.explain(named, x, "saliency", target=np.array([2, 3])).targets == (2, 3)


@pytest.mark.parametrize(("target", "message"), [
    (5, "out of range: this model has 5 classes \\(0..4\\)"),
    (-1, "out of range"),
    ("dgo", "did you mean 'dog'"),
    ("crane", "names 2 classes \\(2, 3\\)"),
    ([1, 2, 3], "3 targets for 2 images"),
    (True, "bool"),
    (1.5, "not float"),
    ("rank9", "ranks go from rank1 to rank5"),
    ("top9", "choose top1 to top5"),
    ("top2", "2 most probable classes.*use 'rank2'"),
])
def test_bad_targets(named: xw.ModelBundle, target: object, message: str) -> None:
    with pytest.raises(xw.TargetError, match=message):
        xw.explain(named, torch.randn(2, 3, 16, 16), "grad_cam", target=target)


def test_names_need_class_names() -> None:
    with pytest.raises(xw.TargetError, match="no class names"):
        xw.explain(bundle(PlainNet()), torch.randn(1, 3, 16, 16), "saliency", target="cat")


def test_bad_methods_layers_and_parameters(named: xw.ModelBundle) -> None:
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(xw.MethodError, match="did you mean 'saliency'"):
        xw.explain(named, x, "salency")
    with pytest.raises(xw.MethodError, match="takes no layer"):
        xw.explain(named, x, "saliency", layer="layer1")
    with pytest.raises(xw.LayerError, match="did you mean 'layer1'"):
        xw.explain(named, x, "grad_cam", layer="layr1")
    with pytest.raises(xw.ParameterError, match="grad_cam has no parameter 'steps'; it takes none"):
        xw.explain(named, x, "grad_cam", steps=3)


def test_parameter_validation() -> None:
    steps = Param("steps", 8, int, "number of steps", low=1, high=100)
    assert steps.validate(3.0, "m") == 3
    for bad, message in ((0, "must lie in \\[1, 100\\]"), (2.5, "an integer"), ("3", "an integer"),
                         (True, "an integer")):
        with pytest.raises(xw.ParameterError, match=message):
            steps.validate(bad, "m")
    noise = Param("noise", 0.1, float, "noise", low=0.0)
    with pytest.raises(xw.ParameterError, match="finite"):
        noise.validate(float("nan"), "m")
    kind = Param("kind", "black", str, "baseline", choices=("black", "blur"))
    with pytest.raises(xw.ParameterError, match="one of 'black', 'blur'"):
        kind.validate("white", "m")
    flag = Param("flag", False, bool, "flag")
    with pytest.raises(xw.ParameterError, match="True or False"):
        flag.validate(1, "m")


@pytest.mark.parametrize("method", ["cam", "layer_cam", "saliency", "guided_backprop",
                                    "deconvnet", "guided_grad_cam"])
def test_batch_equals_one_by_one(named: xw.ModelBundle, method: str) -> None:
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(named, x, method, target=[0, 4, 1])
    for i, target in enumerate([0, 4, 1]):
        alone = xw.explain(named, x[i:i + 1], method, target=target)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-4, atol=1e-6)


def test_the_result_object(named: xw.ModelBundle, tmp_path) -> None:
    e = xw.explain(named, torch.randn(2, 3, 16, 16), "grad_cam", target=["cat", "owl"])
    assert e.map.dtype == torch.float32 and e.map.shape == (2, 8, 8)
    assert e.layer == "layer2" and e.target_names == ["cat", "owl"]
    torch.testing.assert_close(e.probabilities.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(e.scores, e.logits[[0, 1], [0, 4]])
    top = e.top(3)
    assert len(top) == 2 and len(top[0]) == 3
    assert top[0][0][2] >= top[0][1][2] >= top[0][2][2]
    assert e.captions()[1].startswith("Grad-CAM · owl (p=") and e.captions()[1].endswith(
        "· layer layer2")
    assert e._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert e.to_pil(1).size == (16, 16)
    np.testing.assert_array_equal(np.load(e.save(tmp_path / "m.npy")), e.map.numpy())
    assert e.save(tmp_path / "m.png").stat().st_size > 1000
    assert "grad_cam" in repr(e)
    assert set(xw.methods()) >= {"cam", "grad_cam", "saliency", "guided_backprop"}
