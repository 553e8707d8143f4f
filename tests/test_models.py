"""Model bundles: the embedded real ImageNet model, torchvision by name, any nn.Module."""

from __future__ import annotations

import hashlib
import time

import pytest
import torch
from tiny_models import PlainNet

import xai_widgets as xw
from xai_widgets.models import imagenet_classes

#: what the embedded EfficientNet-Lite0 must see in the bundled photos (among its top 3)
EXPECTED = {
    "chelsea": {"tabby", "tiger cat", "Egyptian cat"},
    "coffee": {"espresso", "cup"},
    "camera": {"tripod"},
    "rocket": {"missile", "projectile"},
    "motorcycle": {"moped", "motor scooter"},
    "grace_hopper": {"military uniform", "academic gown", "mortarboard", "suit"},
}


def test_embedded_model_recognises_the_sample_photos(embedded, photos) -> None:
    names = list(EXPECTED)
    batch = embedded.prepare([photos[n] for n in names])
    with torch.no_grad():
        probabilities = embedded.model(batch.inputs).softmax(dim=1)
    for row, name in zip(probabilities, names, strict=True):
        top3 = {embedded.class_names[i] for i in row.topk(3).indices.tolist()}
        assert top3 & EXPECTED[name], f"{name}: top-3 {top3}"
    assert embedded.class_names[int(probabilities[1].argmax())] == "espresso"
    assert float(probabilities[1].max()) > 0.8


def test_embedded_bundle_describes_its_preprocessing(embedded) -> None:
    p = embedded.preprocessing
    assert (p.resize, p.crop, p.mean, p.std, p.interpolation) == \
        (256, (224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    assert len(embedded.class_names) == 1000
    assert embedded.model.training is False


def test_torchvision_by_name_with_random_weights() -> None:
    bundle = xw.load_model("resnet18", weights=None)
    assert bundle.preprocessing.crop == (224, 224)
    assert bundle.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    assert bundle.class_names is not None and bundle.class_names[281] == "tabby"
    assert bundle.layers.default == "layer4"


def test_offline_download_fails_fast_and_names_the_way_out(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import socket

    def unreachable(*_args, **_kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.monotonic()
    with pytest.raises(xw.ModelDownloadError, match="offline") as error:
        xw.load_model("resnet18")
    assert time.monotonic() - start < 10
    assert "load_model()" in str(error.value) and "weights=None" in str(error.value)
    assert isinstance(error.value, ConnectionError)


def test_unknown_names_are_refused_with_suggestions() -> None:
    with pytest.raises(xw.ModelError, match="did you mean 'resnet50'"):
        xw.load_model("resnet5O")
    with pytest.raises(xw.ModelError, match="IMAGENET1K_V1"):
        xw.load_model("resnet18", weights="IMAGENET2K")


def test_any_module_can_be_wrapped() -> None:
    bundle = xw.ModelBundle.wrap(PlainNet(classes=5))
    assert bundle.class_names is None
    assert bundle.class_name(3) == "class 3"
    assert xw.ModelBundle.wrap(bundle) is bundle
    with pytest.raises(xw.ModelError, match=r"nn\.Module"):
        xw.ModelBundle.wrap("resnet18")  # type: ignore[arg-type]


def test_thousand_class_module_gets_imagenet_names() -> None:
    import torchvision

    bundle = xw.ModelBundle.wrap(torchvision.models.resnet18())
    assert bundle.class_names == imagenet_classes()


class RunsCodeWhenUnpickled:
    """Unpickling this creates the file ``marker`` (as a planted payload would run code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(folder, payload: object, stem: str, name: str | None = None) -> str:
    """Save ``payload`` in ``folder/hub/checkpoints`` as ``name``, or named as torchvision
    names its files (``{stem}-{first 8 hex digits of its SHA-256}.pth``); its SHA-256."""
    checkpoints = folder / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    staged = checkpoints / "staged"
    torch.save(payload, staged)
    sha256 = hashlib.sha256(staged.read_bytes()).hexdigest()
    staged.rename(checkpoints / (name or f"{stem}-{sha256[:8]}.pth"))
    return sha256


def published_as(monkeypatch, weights, sha256: str) -> None:
    """Make ``weights`` point at a file named with this hash."""
    stem = weights.url.rsplit("/", 1)[-1].split("-")[0]
    monkeypatch.setattr(weights.value, "url",
                        f"https://download.pytorch.org/models/{stem}-{sha256[:8]}.pth")


@pytest.fixture
def torch_home(monkeypatch, tmp_path):
    """An empty TORCH_HOME, and no network (a download attempt fails the test)."""
    import socket

    def no_network(*_args, **_kwargs):
        raise AssertionError("the test tried to reach the network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path


def test_a_planted_checkpoint_with_another_hash_is_refused(torch_home) -> None:
    from torchvision.models import ResNet18_Weights

    marker = torch_home / "payload-ran"
    name = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]  # resnet18-f37072fd.pth
    plant(torch_home, {"fc.weight": RunsCodeWhenUnpickled(str(marker))}, "resnet18", name)
    with pytest.raises(xw.ModelError, match=r"not the one published for 'resnet18'.*f37072fd"):
        xw.load_model("resnet18")
    assert not marker.exists()


def test_a_checkpoint_that_runs_code_is_refused_even_with_the_right_hash(
        torch_home, monkeypatch) -> None:
    from torchvision.models import SqueezeNet1_1_Weights

    marker = torch_home / "payload-ran"
    sha256 = plant(torch_home, {"features.0.weight": RunsCodeWhenUnpickled(str(marker))},
                   "squeezenet1_1")
    published_as(monkeypatch, SqueezeNet1_1_Weights.IMAGENET1K_V1, sha256)
    with pytest.raises(xw.ModelError, match="cannot be loaded as plain tensors"):
        xw.load_model("squeezenet1_1")
    assert not marker.exists()


def test_a_cached_checkpoint_with_the_published_hash_loads(torch_home, monkeypatch) -> None:
    import torchvision
    from torchvision.models import SqueezeNet1_1_Weights

    state = torchvision.models.squeezenet1_1().state_dict()
    sha256 = plant(torch_home, state, "squeezenet1_1")
    published_as(monkeypatch, SqueezeNet1_1_Weights.IMAGENET1K_V1, sha256)
    bundle = xw.load_model("squeezenet1_1")
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(value, state[key]), key
