"""Images in, model tensors and display arrays out, from one geometry.

Anything a user may hand us (a path, a PIL image, a NumPy array, a tensor, or a list of
those) is checked here, once, and becomes a :class:`PreparedBatch`: the normalised model
input ``(N, 3, H, W)`` and the display array ``(N, Hd, Wd, 3)`` of exactly the same field of
view, so a map upsampled to the display size lines up with the photo by construction.

A float tensor ``(N, 3, H, W)`` (or ``(3, H, W)``) is taken as the model input as it is,
already normalised: that is how scripts and other libraries call explanation methods.
"""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ImageError

#: Largest image (in pixels) we decode; bigger files are refused before decoding.
MAX_PIXELS = 60_000_000

Interpolation = Literal["bilinear", "bicubic", "nearest"]
_PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes a model input: resize, centre crop, normalise.

    ``resize`` is the target length of the shorter side (``None``: squash the whole image to
    the crop size); ``crop`` is ``(height, width)``; ``mean``/``std`` normalise RGB in [0, 1].
    """

    resize: int | None = 256
    crop: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: Interpolation = "bilinear"

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region ``(left, top, right, bottom)`` of a ``width × height`` image that the
        model sees."""
        crop_h, crop_w = self.crop
        if self.resize is None:
            return (0.0, 0.0, float(width), float(height))
        scale = self.resize / min(width, height)
        resized_w, resized_h = width * scale, height * scale
        left = (resized_w - crop_w) / 2
        top = (resized_h - crop_h) / 2
        return (left / scale, top / scale, (left + crop_w) / scale, (top + crop_h) / scale)

    def normalise(self, rgb01: torch.Tensor) -> torch.Tensor:
        """``(..., 3, H, W)`` RGB in [0, 1] -> model input."""
        mean = torch.tensor(self.mean, dtype=rgb01.dtype, device=rgb01.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=rgb01.dtype, device=rgb01.device).view(3, 1, 1)
        return (rgb01 - mean) / std

    def denormalise(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model input ``(..., 3, H, W)`` -> RGB in [0, 1] (clipped)."""
        mean = torch.tensor(self.mean, dtype=inputs.dtype, device=inputs.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=inputs.dtype, device=inputs.device).view(3, 1, 1)
        return (inputs * std + mean).clamp(0, 1)


@dataclass
class PreparedBatch:
    """A batch ready for a model and for display.

    ``inputs``: float32 ``(N, 3, H, W)``, normalised. ``display``: uint8 ``(N, Hd, Wd, 3)``,
    the same field of view as ``inputs``. ``names``: one label per image.
    """

    inputs: torch.Tensor
    display: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def prepare(images: Any, preprocessing: Preprocessing, display_scale: int = 2) -> PreparedBatch:
    """Turn one image or a list of images into a :class:`PreparedBatch`.

    ``display_scale`` caps the display resolution at that multiple of the crop size (the
    display is never upsampled beyond the photo's own resolution).
    """
    items = _as_items(images)
    if not items:
        raise ImageError("no image given; pass a path, a PIL image, an array or a tensor")
    inputs: list[torch.Tensor] = []
    displays: list[np.ndarray] = []
    names: list[str] = []
    whole: torch.Tensor | None = None
    for index, item in enumerate(items):
        if isinstance(item, torch.Tensor) and item.is_floating_point():
            batch = _check_model_input(item, index)
            whole = batch if len(items) == 1 else None
            inputs.extend(batch)
            shown = (preprocessing.denormalise(batch) * 255).round().to(torch.uint8)
            displays.extend(shown.permute(0, 2, 3, 1).cpu().numpy())
            names.extend(f"input {index}" if len(batch) == 1 else f"input {index}.{j}"
                         for j in range(len(batch)))
            continue
        picture, name = to_pil(item, index)
        inputs.append(_model_input(picture, preprocessing))
        displays.append(_display_array(picture, preprocessing, display_scale))
        names.append(name)
    _check_same_size([tuple(t.shape) for t in inputs], "model input")
    display_shapes = {d.shape for d in displays}
    if len(display_shapes) > 1:  # photos of different sizes: show them all at the input size
        height, width = int(inputs[0].shape[-2]), int(inputs[0].shape[-1])
        displays = [np.asarray(Image.fromarray(d).resize((width, height), _PIL_FILTERS["bicubic"]))
                    for d in displays]
    # one float batch is the model input as it is, not copied (whatever writes to a model
    # input works on a copy, e.g. a Trace clones the input it differentiates)
    model_input = whole if whole is not None else torch.stack(inputs)
    return PreparedBatch(model_input, np.stack(displays), names)


def to_pil(item: Any, index: int = 0) -> tuple[Image.Image, str]:
    """Read one image (path, bytes, PIL, array, integer tensor) as an RGB PIL image and a name.

    Whatever goes wrong reading it raises :class:`ImageError`; the name is valid Unicode (the
    bytes of a file name that are not UTF-8 become U+FFFD)."""
    if isinstance(item, (str, Path)):
        return _open_path(Path(item)), _printable(Path(item).name)
    if isinstance(item, (bytes, bytearray)):
        return _decode(io.BytesIO(item), f"image {index} (bytes)"), f"image {index}"
    if isinstance(item, Image.Image):
        _check_pixels(item.width, item.height, f"image {index}")
        with _reading(f"image {index} (a PIL image)"):
            picture = _pil_to_rgb(item)
        return picture, _printable(getattr(item, "filename", "") or f"image {index}")
    if isinstance(item, torch.Tensor):
        _check_tensor(item, index)
        return _array_to_pil(item.detach().cpu().numpy(), index, channels_first=True), \
            f"image {index}"
    if isinstance(item, np.ndarray):
        return _array_to_pil(item, index, channels_first=None), f"image {index}"
    raise ImageError(
        f"image {index} is a {type(item).__name__}, which is not an image; accepted: a file "
        "path, a PIL image, a NumPy array (H, W[, C]) or (C, H, W), a tensor, or a list of those"
    )


@functools.lru_cache(maxsize=1)
def _sample_photos() -> dict[str, Image.Image]:
    import matplotlib.cbook
    import skimage.data

    photos = {
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "motorcycle": skimage.data.stereo_motorcycle()[0],
        "astronaut": skimage.data.astronaut(),
        "camera": skimage.data.camera(),
    }
    pictures = {name: _array_to_pil(array, 0, channels_first=False)
                for name, array in photos.items()}
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    pictures["grace_hopper"] = _open_path(Path(str(path)))
    return pictures


def sample_images() -> dict[str, Image.Image]:
    """Named RGB photos that ship inside installed packages (no download).

    chelsea (a tabby cat), coffee (an espresso cup), rocket (a rocket on its launch pad),
    motorcycle, astronaut, camera (a photographer with a tripod, grey scale) and
    grace_hopper (a portrait in uniform).
    """
    return {name: picture.copy() for name, picture in _sample_photos().items()}


# --------------------------------------------------------------------------- helpers


def _as_items(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, torch.Tensor) and not images.is_floating_point() and images.ndim == 4:
        return list(images)
    return [images]


def _check_pixels(width: int, height: int, what: str) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"{what} is empty ({width}×{height} pixels)")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{what} has {width}×{height} = {width * height / 1e6:.0f} million pixels, more than "
            f"the {MAX_PIXELS / 1e6:.0f} million this toolkit decodes safely; downscale it first"
        )


def _printable(name: str) -> str:
    """``name`` as valid Unicode: the lone surrogates by which Python keeps the non-UTF-8
    bytes of a file name become U+FFFD (so captions and records can be written)."""
    return re.sub("[\ud800-\udfff]", "\ufffd", name)


def _open_path(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageError(f"no file at {str(path)!r}; check the path (relative paths start "
                         f"from {str(Path.cwd())!r})")
    if path.is_dir():
        raise ImageError(f"{str(path)!r} is a folder, not an image file")
    with _reading(repr(str(path))):
        stream = path.open("rb")
    with stream:
        return _decode(stream, repr(str(path)))


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Any failure to read ``what`` becomes an :class:`ImageError` (Pillow's decoders and its
    EXIF parser raise OSError, ValueError, struct.error, ... on malformed files)."""
    try:
        yield
    except ImageError:
        raise
    except Exception as exc:  # re-raised as this image's error, with its cause
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ImageError(
            f"{what} cannot be decoded as an image ({type(exc).__name__}: {detail}); accepted: "
            "files that Pillow reads (PNG, JPEG, TIFF, BMP, GIF, WebP, ...); check that the "
            "file is complete and readable, or convert it to PNG") from exc


def _decode(stream: Any, what: str) -> Image.Image:
    """Open, check the size before decoding, decode and convert to RGB."""
    with _reading(what):
        picture = Image.open(stream)
        _check_pixels(picture.width, picture.height, what)
        picture.load()
        return _pil_to_rgb(picture)


def _pil_to_rgb(picture: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: 16-bit scaled to 8, transparency composited over white."""
    picture = ImageOps.exif_transpose(picture) or picture
    if picture.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_pil(np.asarray(picture), 0, channels_first=False)
    if picture.mode == "P" and "transparency" in picture.info:
        picture = picture.convert("RGBA")
    if picture.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = picture.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return picture.convert("RGB")


def _array_to_pil(array: np.ndarray, index: int, channels_first: bool | None) -> Image.Image:
    what = f"image {index}"
    if array.ndim == 3 and channels_first is None:
        channels_first = array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4)
    if array.ndim == 3 and channels_first:
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(
            f"{what} has shape {tuple(array.shape)}; accepted: (H, W) grey, (H, W, 3|4) or "
            "(3|4, H, W) colour (a float tensor (N, 3, H, W) is taken as a normalised model input)"
        )
    _check_pixels(array.shape[1], array.shape[0], what)
    array = _to_uint8(array, what)
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    if array.shape[-1] == 4:
        return _pil_to_rgb(Image.fromarray(array, "RGBA"))
    return Image.fromarray(array, "RGB")


def _to_uint8(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(f"{what} contains NaN or infinite values; replace them first "
                             "(e.g. numpy.nan_to_num)")
        low, high = float(array.min()), float(array.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise ImageError(
                f"{what} is a float array with values in [{low:.3g}, {high:.3g}]; float images "
                "must lie in [0, 1] (divide 0..255 data by 255, or pass uint8)"
            )
        return np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return np.round(array / 257.0).astype(np.uint8)
        raise ImageError(f"{what} holds integers in [{low}, {high}]; accepted: 0..255 (8-bit) "
                         "or 0..65535 (16-bit)")
    raise ImageError(f"{what} has dtype {array.dtype}; accepted: uint8, uint16, bool, or float "
                     "in [0, 1]")


def _check_tensor(tensor: torch.Tensor, index: int) -> None:
    """Refuse tensors that hold no ordinary values: meta, sparse, nested, quantized."""
    what = f"input {index}"
    if tensor.is_meta:
        raise ImageError(f"{what} is a meta tensor, which has a shape but no values; pass a "
                         "tensor with data (on 'cpu' or the model's device)")
    if tensor.layout != torch.strided or tensor.is_nested:
        kind = "nested" if tensor.is_nested else str(tensor.layout).removeprefix("torch.")
        raise ImageError(f"{what} is a {kind} tensor; accepted: dense tensors (convert it "
                         "with .to_dense(), or stack nested images into one batch)")
    if tensor.is_quantized:
        raise ImageError(f"{what} is a quantized tensor; accepted: float or integer tensors "
                         "(convert it with .dequantize())")


def _check_model_input(tensor: torch.Tensor, index: int) -> torch.Tensor:
    """A float tensor ``(N, 3, H, W)`` or ``(3, H, W)`` -> the float32 CPU batch
    ``(N, 3, H, W)``, checked."""
    _check_tensor(tensor, index)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ImageError(
            f"input {index} is a float tensor of shape {tuple(tensor.shape)}; a float tensor is "
            "taken as a normalised model input and must be (N, 3, H, W) or (3, H, W) "
            "(pass uint8 data, or a PIL image, to have it preprocessed)"
        )
    if tensor.shape[0] == 0:
        raise ImageError(f"input {index} is an empty batch {tuple(tensor.shape)}; give at "
                         "least one image (N ≥ 1)")
    if not torch.isfinite(tensor).all():
        raise ImageError(f"input {index} contains NaN or infinite values; replace them first "
                         "(e.g. torch.nan_to_num)")
    _check_pixels(tensor.shape[-1], tensor.shape[-2], f"input {index}")
    return tensor.detach().to(torch.float32).cpu()


def _model_input(picture: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    crop_h, crop_w = preprocessing.crop
    box = preprocessing.crop_box(picture.width, picture.height)
    resized = picture.resize((crop_w, crop_h), _PIL_FILTERS[preprocessing.interpolation],
                             box=box, reducing_gap=None)
    rgb01 = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return preprocessing.normalise(rgb01)


def _display_array(picture: Image.Image, preprocessing: Preprocessing,
                   display_scale: int) -> np.ndarray:
    crop_h, crop_w = preprocessing.crop
    left, top, right, bottom = preprocessing.crop_box(picture.width, picture.height)
    native = min((right - left) / crop_w, (bottom - top) / crop_h)
    scale = max(1, min(display_scale, math.floor(native)))
    shown = picture.resize((crop_w * scale, crop_h * scale), _PIL_FILTERS["bicubic"],
                           box=(left, top, right, bottom))
    return np.asarray(shown, dtype=np.uint8)


def _check_same_size(shapes: Sequence[tuple[int, ...]], what: str) -> None:
    if len(set(shapes)) > 1:
        raise ImageError(f"the images give {what}s of different sizes {sorted(set(shapes))}; "
                         "a batch needs one size (resize the tensors, or pass photos)")
