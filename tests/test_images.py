"""Every accepted image form, every refused one, and the shared geometry of model input and
display."""

from __future__ import annotations

import io
import os
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

import xai_widgets as xw
from xai_widgets import images
from xai_widgets.images import Preprocessing, prepare

IMAGENET = Preprocessing()  # resize 256, crop 224, ImageNet mean/std


def square_photo(width: int = 400, height: int = 300) -> np.ndarray:
    """Grey photo with a red square whose centre is at (x=250, y=150)."""
    array = np.full((height, width, 3), 128, dtype=np.uint8)
    array[130:170, 230:270] = (255, 0, 0)
    return array


def red_centre(rgb: np.ndarray) -> tuple[float, float]:
    """(x, y) of the red square's centre, as fractions of the picture's size."""
    mask = (rgb[..., 0] > 200) & (rgb[..., 1] < 60)
    ys, xs = np.nonzero(mask)
    return xs.mean() / rgb.shape[1], ys.mean() / rgb.shape[0]


def test_model_input_and_display_share_the_field_of_view() -> None:
    batch = prepare(square_photo(), IMAGENET)
    shown = IMAGENET.denormalise(batch.inputs[0]).permute(1, 2, 0).numpy()
    model_view = red_centre((shown * 255).astype(np.uint8))
    display_view = red_centre(batch.display[0])
    # crop of a 400×300 photo resized to 341×256: x from 58.5 to 282.5 (of 341)
    expected_x = (250 * 256 / 300 - (400 * 256 / 300 - 224) / 2) / 224
    assert model_view == pytest.approx((expected_x, 0.5), abs=0.01)
    assert display_view == pytest.approx(model_view, abs=0.01)


def test_display_keeps_up_to_twice_the_input_resolution() -> None:
    big = prepare(square_photo(1200, 900), IMAGENET)
    small = prepare(square_photo(300, 260), IMAGENET)
    assert big.display.shape == (1, 448, 448, 3)
    assert small.display.shape == (1, 224, 224, 3)
    assert big.inputs.shape == small.inputs.shape == (1, 3, 224, 224)


def test_normalisation_round_trip() -> None:
    batch = prepare(np.full((50, 60, 3), (255, 0, 128), dtype=np.uint8), IMAGENET)
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(IMAGENET.mean)) / \
        torch.tensor(IMAGENET.std)
    torch.testing.assert_close(batch.inputs[0, :, 100, 100], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("form", ["path", "bytes", "pil", "hwc", "chw", "gray", "gray1", "rgba",
                                  "uint16", "float", "bool", "palette", "uint8_tensor"])
def test_accepted_forms_agree(form: str, tmp_path) -> None:
    base = square_photo()
    if form == "path":
        path = tmp_path / "photo.png"
        Image.fromarray(base).save(path)
        item: object = str(path)
    elif form == "bytes":
        buffer = io.BytesIO()
        Image.fromarray(base).save(buffer, format="PNG")
        item = buffer.getvalue()
    elif form == "pil":
        item = Image.fromarray(base)
    elif form == "hwc":
        item = base
    elif form == "chw":
        item = base.transpose(2, 0, 1)
    elif form in ("gray", "gray1", "bool"):
        base = np.repeat(base[..., :1], 3, axis=-1)
        if form == "bool":
            base = np.where(base > 128, 255, 0).astype(np.uint8)
            item = base[..., 0] > 128
        else:
            item = base[..., 0] if form == "gray" else base[..., :1]
    elif form == "rgba":
        item = np.concatenate([base, np.full((*base.shape[:2], 1), 255, np.uint8)], axis=-1)
    elif form == "uint16":
        item = base.astype(np.uint16) * 257
    elif form == "float":
        item = base.astype(np.float32) / 255
    elif form == "palette":
        item = Image.fromarray(base).convert("P")
        base = np.asarray(item.convert("RGB"))
    else:
        item = torch.from_numpy(base.transpose(2, 0, 1).copy())
    batch = prepare(item, IMAGENET)
    reference = prepare(base, IMAGENET)
    torch.testing.assert_close(batch.inputs, reference.inputs, atol=1e-5, rtol=0)


def test_transparent_pixels_become_white() -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # fully transparent black
    batch = prepare(rgba, Preprocessing(resize=None, crop=(40, 40), mean=(0, 0, 0),
                                        std=(1, 1, 1)))
    assert float(batch.inputs.min()) == pytest.approx(1.0)


def test_float_tensor_is_the_model_input_as_is() -> None:
    x = torch.randn(2, 3, 32, 32)
    batch = prepare(x, IMAGENET)
    assert torch.equal(batch.inputs, x)
    assert batch.inputs.data_ptr() == x.data_ptr()  # not copied: memory is the user's
    assert batch.display.shape == (2, 32, 32, 3)
    stacked = prepare([x[0], x[1]], IMAGENET).inputs  # a list is stacked into a new batch
    assert torch.equal(stacked, x) and stacked.data_ptr() != x.data_ptr()


class ScalesItsInputInPlace(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mul_(2) if not x.requires_grad else x * 2
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["grad_cam", "saliency", "cam"])
def test_a_model_that_writes_to_its_input_never_changes_the_users(method) -> None:
    from tiny_models import bundle

    x = torch.randn(2, 3, 16, 16)
    before = x.clone()
    xw.explain(bundle(ScalesItsInputInPlace()), x, method)
    assert torch.equal(x, before)


def test_a_list_is_a_batch() -> None:
    batch = prepare([square_photo(), square_photo(500, 300)], IMAGENET)
    assert batch.inputs.shape == (2, 3, 224, 224)
    assert len(batch) == 2


@pytest.mark.parametrize(("item", "message"), [
    ("no/such/file.jpg", "no file at"),
    (b"definitely not an image", "cannot be decoded"),
    (np.zeros((4, 5, 6, 7, 8)), "shape"),
    (np.zeros((10, 10, 2)), "shape"),
    (np.full((10, 10, 3), np.nan, dtype=np.float32), "NaN"),
    (np.full((10, 10, 3), 2.0, dtype=np.float32), "must lie in \\[0, 1\\]"),
    (np.full((10, 10, 3), -3, dtype=np.int32), "integers"),
    (np.zeros((10, 10, 3), dtype=np.complex64), "dtype"),
    (torch.full((1, 3, 8, 8), float("inf")), "NaN or infinite"),
    (torch.zeros(1, 4, 8, 8), "must be \\(N, 3, H, W\\)"),
    (42, "not an image"),
    ([], "no image"),
])
def test_refused_with_a_clear_message(item: object, message: str) -> None:
    with pytest.raises(xw.ImageError, match=message):
        prepare(item, IMAGENET)


def test_a_folder_is_not_an_image(tmp_path) -> None:
    with pytest.raises(xw.ImageError, match="is a folder"):
        prepare(tmp_path, IMAGENET)


def test_huge_images_are_refused_before_decoding(tmp_path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)
    with pytest.raises(xw.ImageError, match="million pixels"):
        prepare(path, IMAGENET)
    with pytest.raises(xw.ImageError, match="million pixels"):
        prepare(np.zeros((400, 300, 3), np.uint8), IMAGENET)


def test_user_array_is_not_modified() -> None:
    array = square_photo()
    before = array.copy()
    prepare(array, IMAGENET)
    assert np.array_equal(array, before)


def test_sample_images_ship_offline() -> None:
    photos = xw.sample_images()
    assert {"chelsea", "coffee", "rocket", "motorcycle", "astronaut", "camera",
            "grace_hopper"} <= set(photos)
    assert all(p.mode == "RGB" and min(p.size) >= 256 for p in photos.values())
    photos["chelsea"].paste((0, 0, 0), (0, 0, 10, 10))  # a copy: the cache is untouched
    assert xw.sample_images()["chelsea"].getpixel((0, 0)) != (0, 0, 0)


# ------------------------------------------------------------------ malformed files and tensors


def jpeg_with_exif(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """An 8×4 JPEG whose EXIF (big-endian TIFF) holds ``(tag, type, count, 4 value bytes)``."""
    ifd = b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack(">HHI", tag, kind, count) + value
    exif = b"Exif\0\0" + ifd + struct.pack(">I", 0)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 4), (200, 10, 10)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:]


#: orientation 6 (so exif_transpose rewrites the EXIF) and ImageWidth given as SSHORT -5
BAD_EXIF = jpeg_with_exif([(0x0112, 3, 1, struct.pack(">HH", 6, 0)),
                           (0x0100, 8, 1, struct.pack(">hh", -5, 0))])


def png_bytes(size: tuple[int, int] = (6, 5), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (0, 90, 200)).save(buffer, "PNG", **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG signature and header that declare ``width × height`` pixels, and no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def huge_text_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * 3_000_000, zip=True)  # 3 MB of text, a few kB compressed
    return png_bytes(pnginfo=info)


@pytest.mark.parametrize(("data", "cause"), [
    (BAD_EXIF, "error"),  # struct.error from ImageOps.exif_transpose
    (b"P6\n4 4\n70000\n" + bytes(48), "maxval"),  # Pillow's ValueError
    (b"P6\n4 x\n255\n" + bytes(48), "ValueError"),
    (huge_text_png(), "too large"),
    (png_bytes()[:-30], "truncated|broken|EOF"),
    (png_bytes()[:40], "truncated|broken|EOF|cannot identify"),
], ids=["exif-tag", "ppm-maxval", "ppm-size", "png-text-bomb", "truncated", "header-only"])
def test_malformed_files_raise_the_image_error(data: bytes, cause: str, tmp_path) -> None:
    path = tmp_path / "photo.bin"
    path.write_bytes(data)
    for item in (data, path):
        with pytest.raises(xw.ImageError, match="cannot be decoded") as error:
            prepare(item, IMAGENET)
        assert re.search(cause, str(error.value)), str(error.value)


def test_a_pil_image_with_a_malformed_exif_tag_raises_the_image_error() -> None:
    picture = Image.open(io.BytesIO(BAD_EXIF))
    with pytest.raises(xw.ImageError, match="PIL image"):
        prepare(picture, IMAGENET)


def test_a_readable_exif_orientation_is_applied() -> None:
    turned = jpeg_with_exif([(0x0112, 3, 1, struct.pack(">HH", 6, 0))])  # rotate 90° cw
    picture, _ = images.to_pil(turned)
    assert picture.size == (4, 8)


@pytest.mark.parametrize(("width", "height"), [(20_000, 20_000), (9_000, 9_000)])
def test_decompression_bombs_are_refused_before_decoding(width: int, height: int) -> None:
    with pytest.raises(xw.ImageError, match="pixels"):
        prepare(png_declaring(width, height), IMAGENET)


def test_a_file_name_that_is_not_utf8(tmp_path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1 é: not UTF-8
    with open(raw, "wb") as stream:
        stream.write(png_bytes())
    path = os.fsdecode(raw)
    batch = prepare(path, IMAGENET)
    assert batch.names == ["caf\ufffd.png"]
    batch.names[0].encode("utf-8")  # a caption or a record can be written
    with open(raw, "wb") as stream:
        stream.write(b"not an image")
    with pytest.raises(xw.ImageError, match="cannot be decoded") as error:
        prepare(path, IMAGENET)
    str(error.value).encode("utf-8")


def test_an_unreadable_file_raises_the_image_error(tmp_path) -> None:
    path = tmp_path / "locked.png"
    path.write_bytes(png_bytes())
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything
        pytest.skip("this user can read a file without read permission")
    with pytest.raises(xw.ImageError, match="PermissionError"):
        prepare(path, IMAGENET)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: torch.zeros(0, 3, 8, 8), "empty batch"),
    (lambda: [torch.zeros(1, 3, 8, 8), torch.zeros(0, 3, 8, 8)], "empty batch"),
    (lambda: torch.zeros(1, 3, 8, 8, device="meta"), "meta tensor"),
    (lambda: torch.zeros(3, 8, 8, dtype=torch.uint8, device="meta"), "meta tensor"),
    (lambda: torch.ones(1, 3, 8, 8).to_sparse(), "sparse_coo tensor.*to_dense"),
    (lambda: torch.ones(8, 8).to_sparse_csr(), "sparse_csr tensor"),
    (lambda: torch.quantize_per_tensor(torch.ones(3, 8, 8), 0.1, 0, torch.quint8),
     "dequantize"),
    (lambda: torch.nested.nested_tensor([torch.ones(3, 8, 8), torch.ones(3, 4, 4)]),
     "nested tensor"),
], ids=["empty", "empty-in-list", "meta-float", "meta-uint8", "sparse", "sparse-csr",
        "quantized", "nested"])
# CSR and nested tensors are beta, quantized ones deprecated: torch warns on making them
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tensors_without_ordinary_values_are_refused(make, message: str) -> None:
    with pytest.raises(xw.ImageError, match=message):
        prepare(make(), IMAGENET)
