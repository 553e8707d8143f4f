"""An offline data set for x-features: labelled crops of photos that ship inside packages.

Nothing can be downloaded at run time, and an XNN needs many images of one class and of
others. We build them from the photos that scikit-image and matplotlib install with
themselves: the positives are random crops (scale, position, mirror, brightness) of
scikit-image's ``coffee`` photo, an espresso cup on its saucer, which the embedded
EfficientNet-Lite0 recognises as ImageNet's ``espresso``; the negatives are random crops of
the other bundled photos (a cat, an astronaut, a rocket, a motorcycle, a portrait, a
photographer, a clock, coins, a colour wheel, Hubble's deep field, bricks, grass, gravel, a
stained tissue). Why this set: it ships in packages the toolkit already depends on (no new
dependency, no download, same bytes everywhere), and crops of one real photo keep the
concepts real (cup rim, crema, saucer, spoon) while giving the many varied views a one-vs-all
training needs. Its limit: every positive comes from one photo, so the x-features describe
that cup, not espressos in general; use your own folder for real conclusions.

The set is written once as an ``ImageFolder`` tree (``espresso/`` and ``other/``, JPEG) in the
cache folder and reused; the crops are drawn from a seeded local generator, so the files are
the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .features import default_cache_dir

CLASS = "espresso"
NEGATIVE = "other"


def _photos() -> tuple[Image.Image, dict[str, Image.Image]]:
    import skimage.data

    from ..images import sample_images

    photos = sample_images()
    positive = photos.pop("coffee")
    for name in ("clock", "coins", "colorwheel", "hubble_deep_field", "brick", "grass",
                 "gravel", "immunohistochemistry"):
        array = getattr(skimage.data, name)()
        picture = Image.fromarray(array)
        photos[name] = picture.convert("RGB")
    return positive, photos


def _crop(picture: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    width, height = picture.size
    scale = rng.uniform(0.35, 1.0)
    side = int(min(width, height) * np.sqrt(scale) * rng.uniform(0.9, 1.0))
    side = max(side, 16)
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    crop = picture.crop((left, top, left + side, top + side)).resize(
        (size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    factor = rng.uniform(0.8, 1.2)
    array = np.clip(np.asarray(crop, dtype=np.float32) * factor, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def espresso_folder(root: str | Path | None = None, positives: int = 60,
                    per_negative_photo: int = 8, size: int = 256, seed: int = 0) -> Path:
    """The demo ``ImageFolder`` tree (built on first use): ``positives`` crops of the coffee
    photo in ``espresso/`` and ``per_negative_photo`` crops of each other photo in ``other/``.
    """
    base = Path(root) if root is not None else default_cache_dir().parent / "demo"
    folder = base / f"espresso-{positives}-{per_negative_photo}-{size}-{seed}"
    done = folder / ".complete"
    if done.exists():
        return folder
    positive, negatives = _photos()
    rng = np.random.default_rng(seed)
    (folder / CLASS).mkdir(parents=True, exist_ok=True)
    (folder / NEGATIVE).mkdir(parents=True, exist_ok=True)
    for i in range(positives):
        _crop(positive, rng, size).save(folder / CLASS / f"coffee_{i:03d}.jpg", quality=92)
    for name, picture in sorted(negatives.items()):
        for i in range(per_negative_photo):
            _crop(picture, rng, size).save(folder / NEGATIVE / f"{name}_{i:03d}.jpg", quality=92)
    done.write_text("ok\n")
    return folder
