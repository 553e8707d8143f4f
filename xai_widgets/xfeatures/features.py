"""The x-feature network's data: the embedding ``Z`` and the CNN's score ``y`` of every image.

An x-feature network (XNN) is trained on vectors the CNN has already computed, never on
images: for every image, the embedding ``Z`` at one layer (default: the penultimate vector,
i.e. the input of the last linear layer: the pooled features of a global-average-pooling head,
fc7 of a VGG) and the CNN's own logit ``y`` for the explained class (the target the XNN must
reproduce: faithfulness). :meth:`FeatureSet.extract` runs the model once over a folder, a list
or an ``ImageFolder``-style tree, in batches under ``torch.inference_mode()``, and caches the
result on disk keyed by the model's weights, the layer, the preprocessing and each file's
contents: training again, with other settings or another class, never runs the CNN again.
With ``client=`` (a Dask ``distributed.Client``) the images that are not in the cache are
read and run through the model on its workers, a batch a task (:mod:`xai_widgets.distributed`:
the same features as in this process).

Layers are named as everywhere else in the toolkit (``"avgpool"``, ``"classifier.4"``): the
module's output, which must be a vector ``(N, D)`` (or ``(N, D, 1, 1)``). ``"<name>:input"``
names the input of a module instead; the default is ``"<last linear>:input"``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .. import distributed
from ..errors import ImageError, LayerError, TargetError, did_you_mean
from ..images import Preprocessing, _model_input, to_pil
from ..models import ModelBundle
from ..scope import eval_mode, forward_hooks, model_lock
from .errors import XFeatureDataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
#: cache format; bump when the stored fields change
CACHE_VERSION = 1

Progress = Callable[..., None]


def default_cache_dir() -> Path:
    """``$XAI_WIDGETS_CACHE/features`` or ``~/.cache/xai_widgets/features``."""
    root = os.environ.get("XAI_WIDGETS_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "xai_widgets"
    return base / "features"


# ------------------------------------------------------------------------------------ layers


def last_linear(model: nn.Module) -> str:
    """The name of the last ``nn.Linear`` module of ``model`` (in registration order)."""
    name = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name = module_name
    if name is None:
        raise LayerError("the model has no nn.Linear layer, so there is no default embedding "
                         "layer; name one whose output is a vector (N, D), e.g. the global "
                         "pooling ('avgpool'), or '<module>:input' for the input of a module")
    return name


@dataclass(frozen=True)
class Embedding:
    """Where ``Z`` is read: the output (or the input) of one module."""

    module: str
    side: str  # "output" or "input"

    @property
    def name(self) -> str:
        return self.module if self.side == "output" else f"{self.module}:input"

    @classmethod
    def resolve(cls, model: nn.Module, layer: str | None) -> Embedding:
        if layer is None:
            return cls(last_linear(model), "input")
        if not isinstance(layer, str):
            raise LayerError(f"the embedding layer is given by name (str), not "
                             f"{type(layer).__name__}; e.g. {last_linear(model) + ':input'!r}")
        module, side = (layer[:-len(":input")], "input") if layer.endswith(":input") \
            else (layer, "output")
        names = [n for n, _ in model.named_modules() if n]
        if module not in names:
            hint = did_you_mean(module, names) or \
                f"the default is the input of the last linear layer, {default_name(model)!r}"
            raise LayerError(f"unknown embedding layer {layer!r}; {hint}")
        return cls(module, side)

    def take(self, args: Any, output: Any) -> torch.Tensor:
        """The vector ``(N, D)`` this layer holds, or a :class:`LayerError`."""
        value = args[0] if self.side == "input" else output
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise LayerError(f"layer {self.name!r} does not hold a tensor")
        if value.ndim == 4 and value.shape[-1] * value.shape[-2] == 1:
            value = value.flatten(1)
        if value.ndim != 2:
            raise LayerError(
                f"layer {self.name!r} holds {tuple(value.shape)}, not a vector (N, D): "
                "x-features are learned on one vector per image; choose a pooled or fully "
                "connected layer, e.g. the default (the input of the last linear layer) or "
                "the global pooling")
        return value


def default_name(model: nn.Module) -> str:
    try:
        return f"{last_linear(model)}:input"
    except LayerError:
        return "<module>:input"


@contextmanager
def capture(model: nn.Module, embedding: Embedding, sink: list[torch.Tensor],
            stop: bool = False) -> Iterator[None]:
    """Record ``Z`` (appended to ``sink``) during the forward passes of the body; with
    ``stop`` the forward pass ends there (:class:`StopForward`)."""
    module = dict(model.named_modules())[embedding.module]

    def hook(_module: nn.Module, args: Any, output: Any) -> None:
        sink.append(embedding.take(args, output))
        if stop:
            raise StopForward

    with forward_hooks({module: hook}):
        yield


class StopForward(Exception):
    """Ends a forward pass once ``Z`` is known (the layers above are not needed)."""


# ------------------------------------------------------------------------------- fingerprints


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's class, parameter and buffer names, shapes and values."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def _content_hash(data: bytes, *extra: object) -> str:
    digest = hashlib.sha256(data)
    for item in extra:
        digest.update(repr(item).encode())
    return digest.hexdigest()[:32]


# ------------------------------------------------------------------------------------ images


@dataclass
class _Item:
    name: str
    source: Any            # a Path, PIL image, array or tensor
    folder_label: bool | None = None


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and \
        not path.name.startswith(".")


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("-", " ")


def _collect(images: Any, class_name: str, index: int) -> tuple[list[_Item], bool]:
    """The images and, for an ImageFolder tree, their labels; True if labelled by folder."""
    if isinstance(images, (str, Path)):
        root = Path(images).expanduser()
        if not root.is_dir():
            if root.is_file():
                return [_Item(root.name, root)], False
            raise XFeatureDataError(f"{str(root)!r} is neither a folder nor a file; pass a "
                                    "folder of images, an ImageFolder tree (one sub-folder per "
                                    "class), or a list of images")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folders:
            wanted = {_normal(class_name), str(index)}
            matching = [f for f in folders if _normal(f.name) in wanted]
            if not matching:
                names = [f.name for f in folders]
                hint = did_you_mean(class_name, names)
                raise XFeatureDataError(
                    f"no sub-folder of {str(root)!r} is named after the class {class_name!r} "
                    f"(found {', '.join(map(repr, names[:8]))}); in an ImageFolder tree the "
                    "positives lie in the folder of the explained class"
                    + (f"; {hint}" if hint else ""))
            items = [_Item(f"{f.name}/{p.name}", p, f in matching)
                     for f in folders for p in sorted(f.rglob("*")) if _is_image(p)]
            items += [_Item(p.name, p, False) for p in sorted(root.iterdir()) if _is_image(p)]
            return items, True
        return [_Item(p.name, p) for p in sorted(root.iterdir()) if _is_image(p)], False
    if isinstance(images, dict):
        return [_Item(str(k), v) for k, v in images.items()], False
    if isinstance(images, (list, tuple)):
        return [_Item(_name_of(v, i), v) for i, v in enumerate(images)], False
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return [_Item(f"input {i}", t) for i, t in enumerate(images)], False
    raise XFeatureDataError(f"images must be a folder, a list or a dict of images, not "
                            f"{type(images).__name__}; e.g. xai_widgets.sample_images()")


def _name_of(item: Any, index: int) -> str:
    if isinstance(item, (str, Path)):
        return Path(item).name
    return f"image {index}"


def _file_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {str(path)!r}: {exc}") from exc


def _digest(item: _Item, preprocessing: Preprocessing) -> str:
    """The content hash of one image, the key of its cached features: of a file's bytes
    (the file is not decoded), else of its pixels (ImageError if unreadable)."""
    if isinstance(item.source, (str, Path)):
        return _content_hash(_file_bytes(item.source))
    return _read(item, preprocessing)[1]


def _read(item: _Item, preprocessing: Preprocessing) -> tuple[torch.Tensor, str]:
    """Model input ``(3, H, W)`` and content hash of one image (ImageError if unreadable)."""
    source = item.source
    if isinstance(source, (str, Path)):
        data = _file_bytes(source)
        picture, _ = to_pil(data)
        return _model_input(picture, preprocessing), _content_hash(data)
    if isinstance(source, torch.Tensor) and source.is_floating_point():
        tensor = source.detach().float().cpu()
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ImageError(f"a float tensor is a normalised model input (3, H, W), got "
                             f"{tuple(tensor.shape)}")
        return tensor, _content_hash(tensor.contiguous().numpy().tobytes(), "tensor",
                                     tuple(tensor.shape))
    picture, _ = to_pil(source)
    rgb = picture.convert("RGB") if isinstance(picture, Image.Image) else picture
    return _model_input(rgb, preprocessing), _content_hash(
        np.asarray(rgb).tobytes(), "pixels", rgb.size)


# ------------------------------------------------------------------------------- feature set


@dataclass
class FeatureSet:
    """Embeddings ``z`` ``(N, D)`` and target scores ``y`` ``(N,)`` (the CNN's logit of the
    class) of ``N`` images, with their names and labels (``positive``: an image of the class,
    by folder or by the CNN's prediction), the layer, the class and the model they came from.

    ``unreadable`` lists ``(name, reason)`` of the images that could not be read (they are
    left out). ``bundle`` is the model the features came from (not saved with an XNN).
    """

    z: torch.Tensor
    y: torch.Tensor
    positive: torch.Tensor
    names: list[str]
    cls: int
    class_name: str
    layer: str
    model_fingerprint: str
    preprocessing: Preprocessing
    bundle: ModelBundle | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    logits: torch.Tensor | None = None
    #: how many images were read from the cache (the rest ran through the model)
    cached: int = 0

    def __len__(self) -> int:
        return int(self.z.shape[0])

    @property
    def dim(self) -> int:
        return int(self.z.shape[1])

    def __repr__(self) -> str:
        return (f"FeatureSet({len(self)} images, {int(self.positive.sum())} of class "
                f"{self.class_name!r}, Z = {self.layer!r} ({self.dim}-d), "
                f"{len(self.unreadable)} unreadable)")

    def split(self, test_fraction: float = 0.2, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and held-out indices, stratified by label, shuffled by ``seed``."""
        if not 0.0 < test_fraction < 1.0:
            raise XFeatureDataError(f"test_fraction must lie strictly between 0 and 1, got "
                                    f"{test_fraction!r}")
        generator = torch.Generator().manual_seed(seed)
        train, test = [], []
        for label in (True, False):
            members = torch.nonzero(self.positive == label).flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            held = round(len(members) * test_fraction)
            held = min(max(held, 1), len(members) - 1) if len(members) >= 2 else 0
            test.append(members[:held])
            train.append(members[held:])
        return torch.cat(train).sort().values, torch.cat(test).sort().values

    def for_class(self, cls: int | str) -> FeatureSet:
        """The same images explained for another class (no model run: all logits are kept)."""
        if self.logits is None or self.bundle is None:
            raise XFeatureDataError("this feature set keeps no logits; extract it again for "
                                    "the other class")
        index, name = resolve_class(self.bundle, cls, int(self.logits.shape[1]))
        predicted = self.logits.argmax(dim=1) == index
        return FeatureSet(self.z, self.logits[:, index].clone(), predicted, list(self.names),
                          index, name, self.layer, self.model_fingerprint, self.preprocessing,
                          self.bundle, list(self.unreadable), self.logits, len(self))

    @classmethod
    def extract(klass, bundle: ModelBundle | nn.Module, images: Any,
                cls: int | str | None = None, layer: str | None = None, *,
                batch_size: int = 32, cache_dir: str | Path | bool | None = None,
                positives: Sequence[bool] | None = None,
                progress: Progress | None = None, client: Any = None) -> FeatureSet:
        """Embeddings and scores of ``images`` for class ``cls`` (name or index).

        ``images``: a folder (positives = images the CNN predicts as the class), an
        ``ImageFolder``-style tree (positives = the class's sub-folder, the rest negatives),
        a list or dict of images (paths, PIL, arrays). ``positives`` overrides the labels.
        ``cache_dir``: where features are cached (default :func:`default_cache_dir`;
        ``False``: no cache). ``progress(fraction)`` is called after every batch. ``client``:
        a Dask ``distributed.Client`` whose workers read and run the images that are not
        cached, a batch a task (the same features).
        """
        bundle = ModelBundle.wrap(bundle)
        if cls is None:
            raise TargetError("say which class the x-features explain: cls='espresso' "
                              "(a class name) or an index")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise XFeatureDataError(f"batch_size must be a positive integer, got {batch_size!r}")
        model = bundle.model
        embedding = Embedding.resolve(model, layer)
        num_classes = bundle.layers.num_classes if bundle.class_names is None \
            else len(bundle.class_names)
        index, name = resolve_class(bundle, cls, num_classes)
        items, by_folder = _collect(images, name, index)
        fingerprint = model_fingerprint(model)
        store = _Cache(cache_dir, fingerprint, embedding.name, bundle.preprocessing)

        hashes: list[str | None] = []
        failures: dict[int, str] = {}
        for position, item in enumerate(items):
            try:
                hashes.append(_digest(item, bundle.preprocessing))
            except (ImageError, OSError, ValueError) as exc:
                failures[position] = str(exc)
                hashes.append(None)
        found = store.lookup([h for h in hashes if h is not None])
        todo = [i for i, h in enumerate(hashes) if h is not None and h not in found]
        computed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        extractor = _Extractor(bundle, embedding)
        outcomes = distributed.run([items[i] for i in todo],
                                   functools.partial(distributed.placed, extractor, model),
                                   _Extractor.batch, client=client, task_size=batch_size,
                                   done=distributed.fractions(len(todo), progress))
        for i, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, str):
                failures[i], hashes[i] = outcome, None
            else:
                computed[hashes[i]] = outcome  # type: ignore[index]
        if computed:
            store.add(computed)
        unreadable = [(items[i].name, failures[i]) for i in sorted(failures)]
        kept = [i for i, h in enumerate(hashes) if h is not None]
        if not kept:
            detail = f"; the first: {unreadable[0][0]}: {unreadable[0][1]}" if unreadable else ""
            raise XFeatureDataError(f"no readable image among the {len(items)} given{detail}; "
                                    "pass a folder of photos (jpg, png, ...) or a list of images")
        rows = {**found, **computed}
        z = torch.stack([rows[hashes[i]][0] for i in kept])  # type: ignore[index]
        logits = torch.stack([rows[hashes[i]][1] for i in kept])  # type: ignore[index]
        names = [items[i].name for i in kept]
        if positives is not None:
            if len(positives) != len(items):
                raise XFeatureDataError(f"positives has {len(positives)} entries for "
                                        f"{len(items)} images; give one bool per image")
            labels = torch.tensor([bool(positives[i]) for i in kept])
        elif by_folder:
            labels = torch.tensor([bool(items[i].folder_label) for i in kept])
        else:
            labels = logits.argmax(dim=1) == index
        result = klass(z, logits[:, index].clone(), labels, names, index, name, embedding.name,
                     fingerprint, bundle.preprocessing, bundle, unreadable, logits,
                     sum(hashes[i] in found for i in kept))
        check_trainable(result, by_folder)
        return result


def check_trainable(data: FeatureSet, by_folder: bool = False) -> None:
    """Clear errors for sets an XNN cannot be trained on."""
    if len(data) < 2:
        raise XFeatureDataError(
            f"only {len(data)} readable image: an x-feature network needs many images (the "
            "original used thousands; the demo set has about a hundred) and a held-out part "
            "to check faithfulness; pass a folder or a list of images")
    if not bool(data.positive.any()):
        how = "in its folder" if by_folder else "predicted as it by the model"
        top = torch.bincount(data.logits.argmax(dim=1)).topk(1).indices.tolist() \
            if data.logits is not None else []
        common = f"; the model predicts mostly {data.bundle.class_name(top[0])!r}" \
            if top and data.bundle is not None else ""
        raise XFeatureDataError(
            f"no image of the class {data.class_name!r} ({how}) among the {len(data)} "
            f"images{common}: the x-features explain a class from its positive and negative "
            "images; add images of the class, use an ImageFolder tree whose sub-folder "
            f"{data.class_name!r} holds them, or pass positives=[...]")
    if bool(data.positive.all()):
        raise XFeatureDataError(
            f"every image is of the class {data.class_name!r}: add negatives (images of "
            "other classes), as the original one-vs-all training did")


def resolve_class(bundle: ModelBundle, cls: int | str, num_classes: int) -> tuple[int, str]:
    """``(index, name)`` of a class given by name or index."""
    if isinstance(cls, bool) or not isinstance(cls, (int, str, np.integer)):
        raise TargetError(f"a class is a name or an index, not {type(cls).__name__}")
    if isinstance(cls, (int, np.integer)):
        if not 0 <= int(cls) < num_classes:
            raise TargetError(f"class index {int(cls)} out of range; the model has "
                              f"{num_classes} classes (0 to {num_classes - 1})")
        return int(cls), bundle.class_name(int(cls))
    names = list(bundle.class_names or [])
    wanted = _normal(cls)
    matches = [i for i, n in enumerate(names) if _normal(n) == wanted]
    if len(matches) == 1:
        return matches[0], names[matches[0]]
    if cls.strip().isdigit():
        return resolve_class(bundle, int(cls), num_classes)
    if not names:
        raise TargetError(f"this model has no class names, so {cls!r} cannot be looked up; "
                          "give a class index")
    hint = did_you_mean(cls, names) or "class names are those of the model, e.g. " + \
        ", ".join(repr(n) for n in names[:3])
    raise TargetError(f"unknown class {cls!r}; {hint}")


@dataclass
class _Extractor:
    """Reads batches of images and runs them through the model (on a worker, or here)."""

    bundle: ModelBundle
    embedding: Embedding

    def batch(self, chunk: list[_Item]) -> list[tuple[torch.Tensor, torch.Tensor] | str]:
        """``(z (D,), logits (C,))`` of each image of ``chunk``, or why it is unreadable."""
        errors: list[str | None] = []
        inputs: list[torch.Tensor] = []
        for item in chunk:
            try:
                inputs.append(_read(item, self.bundle.preprocessing)[0])
                errors.append(None)
            except (ImageError, OSError, ValueError) as exc:
                errors.append(str(exc))
        rows = zip(*_forward(self.bundle, self.embedding, torch.stack(inputs)),
                   strict=True) if inputs else iter(())
        # each row a tensor of its own: a view would carry (and pickle) the whole batch
        return [error if error is not None else tuple(t.clone() for t in next(rows))
                for error in errors]


def _forward(bundle: ModelBundle, embedding: Embedding, batch: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    model = bundle.model
    sink: list[torch.Tensor] = []
    parameter = next(model.parameters(), None)
    x = batch.to(device=bundle.device, dtype=parameter.dtype if parameter is not None else None)
    with model_lock(model), torch.inference_mode(), eval_mode(model), \
            capture(model, embedding, sink):
        logits = model(x)
    if not sink:
        raise LayerError(f"layer {embedding.name!r} does not run in the forward pass")
    return sink[-1].float().cpu(), logits.float().cpu()


class _Cache:
    """One file per (model, layer, preprocessing): rows of Z and logits keyed by content hash."""

    def __init__(self, cache_dir: str | Path | bool | None, fingerprint: str, layer: str,
                 preprocessing: Preprocessing) -> None:
        if cache_dir is False:
            self.path: Path | None = None
            return
        folder = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)  # type: ignore[arg-type]
        key = hashlib.sha256(json.dumps(
            [CACHE_VERSION, fingerprint, layer, repr(preprocessing)]).encode()).hexdigest()[:24]
        self.path = folder / f"{key}.pt"
        self.meta = {"model": fingerprint, "layer": layer, "preprocessing": repr(preprocessing),
                     "version": CACHE_VERSION}

    def _load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            stored = torch.load(io.BytesIO(self.path.read_bytes()), weights_only=True)
        except Exception:
            return None
        if not isinstance(stored, dict) or json.loads(stored.get("meta", "{}")) != self.meta:
            return None
        return stored

    def lookup(self, hashes: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        stored = self._load()
        if stored is None:
            return {}
        position = {h: i for i, h in enumerate(stored["hashes"])}
        return {h: (stored["z"][position[h]], stored["logits"][position[h]])
                for h in hashes if h in position}

    def add(self, rows: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        if self.path is None:
            return
        stored = self._load()
        hashes = list(stored["hashes"]) if stored else []
        z = list(stored["z"]) if stored else []
        logits = list(stored["logits"]) if stored else []
        known = set(hashes)
        for digest, (zi, li) in rows.items():
            if digest not in known:
                hashes.append(digest)
                z.append(zi)
                logits.append(li)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"meta": json.dumps(self.meta), "hashes": hashes,
                    "z": torch.stack(z), "logits": torch.stack(logits)}, temporary)
        os.replace(temporary, self.path)
