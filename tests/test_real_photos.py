"""The embedded real ImageNet model on real photos: maps point at the object.

Boxes are ours, annotated by looking at each photo's centre crop (the region the model sees),
as fractions (left, top, right, bottom) of that crop.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import xai_widgets as xw

BOXES = {
    ("coffee", "espresso"): (0.05, 0.0, 0.95, 0.85),       # cup and saucer
    ("motorcycle", "moped"): (0.0, 0.25, 1.0, 1.0),        # the motorcycle
    ("camera", "tripod"): (0.35, 0.3, 0.75, 1.0),          # tripod head and legs
    ("grace_hopper", "military uniform"): (0.0, 0.55, 1.0, 1.0),  # the uniform
    ("chelsea", "tabby"): (0.0, 0.0, 1.0, 1.0),            # the cat fills the crop
}


def peak(e: xw.Explanation, index: int = 0) -> tuple[float, float]:
    """Centre of the map's highest cell, as fractions (x, y) of the crop."""
    m = e.map[index]
    if m.ndim == 3:
        m = m.abs().sum(dim=0)
    h, w = m.shape
    y, x = divmod(int(m.argmax()), w)
    return (x + 0.5) / w, (y + 0.5) / h


def inside(point: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


@pytest.mark.parametrize(("photo", "target"), list(BOXES))
def test_grad_cam_peak_lies_on_the_object(embedded, photos, photo: str, target: str) -> None:
    e = xw.explain(embedded, photos[photo], "grad_cam", target=target)
    assert inside(peak(e), BOXES[(photo, target)]), peak(e)


@pytest.fixture(scope="module")
def cat_and_coffee() -> Image.Image:
    """A 512² canvas: the cat in the top-left quadrant, the espresso in the bottom-right."""
    photos = xw.sample_images()
    canvas = Image.new("RGB", (512, 512), (128, 128, 128))
    for name, corner in (("chelsea", (0, 0)), ("coffee", (256, 256))):
        w, h = photos[name].size
        side = min(w, h)
        square = photos[name].crop(((w - side) // 2, (h - side) // 2,
                                    (w + side) // 2, (h + side) // 2))
        canvas.paste(square.resize((256, 256)), corner)
    return canvas


# after resize to 256 and centre crop 224 the quadrants are (0, 0)-(0.5, 0.5), (0.5, 0.5)-(1, 1)
CAT, CUP = (0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)


@pytest.mark.parametrize("method", ["cam", "grad_cam", "grad_cam_pp", "layer_cam",
                                    "guided_grad_cam"])
def test_maps_are_class_discriminative(embedded, cat_and_coffee, method: str) -> None:
    e = xw.explain(embedded, [cat_and_coffee, cat_and_coffee], method,
                   target=["tabby", "espresso"])
    assert inside(peak(e, 0), CAT), peak(e, 0)
    assert inside(peak(e, 1), CUP), peak(e, 1)


@pytest.mark.parametrize("method", ["saliency", "guided_backprop"])
def test_gradient_energy_is_on_the_explained_object(embedded, cat_and_coffee,
                                                    method: str) -> None:
    e = xw.explain(embedded, [cat_and_coffee, cat_and_coffee], method,
                   target=["tabby", "espresso"])
    energy = e.map.abs().sum(dim=1)  # (2, 224, 224)
    half = energy.shape[-1] // 2
    cat_energy = energy[:, :half, :half].sum(dim=(1, 2))
    cup_energy = energy[:, half:, half:].sum(dim=(1, 2))
    assert float(cat_energy[0]) > float(cup_energy[0])
    assert float(cup_energy[1]) > float(cat_energy[1])


def test_guided_backprop_is_sharper_than_the_plain_gradient(embedded, photos) -> None:
    """Guided backprop concentrates its energy: fewer pixels hold half of it."""
    def pixels_for_half(m: torch.Tensor) -> int:
        values = m.abs().sum(dim=1).flatten().sort(descending=True).values
        return int((values.cumsum(0) < values.sum() / 2).sum())

    guided = xw.explain(embedded, photos["coffee"], "guided_backprop", target="espresso")
    plain = xw.explain(embedded, photos["coffee"], "saliency", target="espresso")
    assert pixels_for_half(guided.map) < pixels_for_half(plain.map)
