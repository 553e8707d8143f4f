"""Mutated image files, seeded: every one either decodes or raises the toolkit's ImageError.

A few hundred files (PNG, JPEG with EXIF, GIF, TIFF, BMP, WebP, PPM), each a small valid
image with bytes flipped, cut, repeated or inserted, go through :func:`prepare` as bytes.
"""

from __future__ import annotations

import io
import random
import warnings

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import xai_widgets as xw
from xai_widgets.images import Preprocessing, prepare

SMALL = Preprocessing(resize=None, crop=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))
FORMATS = ("PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP", "PPM")
MUTANTS_PER_FORMAT = 45


def original(kind: str) -> bytes:
    """A 12×10 picture with some metadata, saved as ``kind``."""
    pixels = np.random.default_rng(7).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if kind == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("title", "fuzz")
        info.add_text("comment", "x" * 200, zip=True)
        picture.save(buffer, kind, pnginfo=info)
    elif kind == "JPEG":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotated
        exif[0x010F] = "camera"
        exif[0x0131] = "software"
        picture.save(buffer, kind, exif=exif.tobytes(), quality=80)
    elif kind == "GIF":
        picture.convert("P").save(buffer, kind, transparency=0)
    elif kind == "TIFF":
        picture.save(buffer, kind, compression="tiff_deflate", description="fuzz")
    else:
        picture.save(buffer, kind)
    return buffer.getvalue()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits: flip bytes, cut the tail, repeat or insert a run."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        edit = rng.choice(("flip", "flip", "cut", "repeat", "insert", "extreme"))
        at = rng.randrange(len(out))
        if edit == "flip":
            out[at] ^= 1 << rng.randrange(8)
        elif edit == "cut":
            del out[at:]
            if not out:
                out = bytearray(data[:1])
        elif edit == "repeat":
            out[at:at] = out[at:at + rng.randint(1, 64)] * rng.randint(1, 4)
        elif edit == "insert":
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:  # a header field pushed to an extreme
            out[at:at + 4] = rng.choice((b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff"))
    return bytes(out)


def test_every_format_is_written_and_read_back() -> None:
    for kind in FORMATS:
        batch = prepare(original(kind), SMALL)
        assert batch.inputs.shape == (1, 3, 8, 8), kind


@pytest.mark.parametrize("kind", FORMATS)
def test_mutated_files_decode_or_raise_the_image_error(kind: str) -> None:
    rng = random.Random(f"fuzz-{kind}")
    data = original(kind)
    refusals: list[str] = []
    for _ in range(MUTANTS_PER_FORMAT):
        mutant = mutate(data, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about some damaged metadata
            try:
                batch = prepare(mutant, SMALL)
            except xw.ImageError as error:  # anything else fails the test
                refusals.append(str(error))
                continue
        assert batch.inputs.shape == (1, 3, 8, 8)
        assert batch.inputs.isfinite().all()
    assert refusals, "no mutation reached an error path"
    assert all(message.startswith("image 0") for message in refusals)
