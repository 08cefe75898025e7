"""Image files in and out: formats, depths, gray/alpha/palette, EXIF orientation, the pixel cap
checked before decoding, and atomic writes."""

from __future__ import annotations

import io
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from restorekit import imageio
from restorekit.errors import (
    ImageReadError,
    ImageTooLargeError,
    ImageWriteError,
    InvalidParameterError,
)
from restorekit.imageio import (
    decode_image,
    encode_image,
    image_from_array,
    read_image,
    read_image_size,
    write_image,
)


def _hwc(image) -> np.ndarray:
    return image.pixels[0].permute(1, 2, 0).numpy()


def _pil_bytes(array_or_image, fmt: str, **options) -> bytes:
    im = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def rgb(astronaut) -> np.ndarray:
    return astronaut[150:190, 200:252].copy()  # 40x52, a face


# ----------------------------------------------------------------------------- formats and depths


@pytest.mark.parametrize("fmt", ["png", "bmp", "webp-lossless", "tiff"])
def test_lossless_8bit_rgb_round_trips_exactly(rgb, fmt):
    name = fmt.split("-")[0]
    options = {"lossless": True} if fmt == "webp-lossless" else {}
    data = _pil_bytes(rgb, name.upper(), **options)
    image = decode_image(data)
    assert image.bit_depth == 8 and not image.was_gray and image.alpha is None
    assert image.pixels.shape == (1, 3, 40, 52) and image.pixels.dtype == torch.float32
    assert np.array_equal(np.round(_hwc(image) * 255).astype(np.uint8), rgb)
    again = decode_image(encode_image(image, name, quality=100))
    assert torch.equal(again.pixels, image.pixels)


def test_jpeg_decodes_like_pillow_and_encodes_with_quality(rgb):
    data = _pil_bytes(rgb, "JPEG", quality=90)
    image = decode_image(data)
    assert image.format == "jpeg" and image.bit_depth == 8
    assert np.array_equal(np.round(_hwc(image) * 255).astype(np.uint8), np.asarray(Image.open(io.BytesIO(data))))
    small, large = encode_image(image, "jpeg", quality=30), encode_image(image, "jpeg", quality=98)
    assert len(small) < len(large)
    with pytest.raises(InvalidParameterError, match="Quality"):
        encode_image(image, "jpeg", quality=0)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_sixteen_bit_depth_comes_from_the_dtype_not_the_values(ext, tmp_path):
    dark = (np.arange(24 * 30 * 3, dtype=np.uint16).reshape(24, 30, 3) % 200) + 3  # max 202 < 256
    cv2.imwrite(str(tmp_path / f"dark{ext}"), dark[:, :, ::-1])
    image = read_image(tmp_path / f"dark{ext}")
    assert image.bit_depth == 16
    assert np.allclose(_hwc(image) * 65535, dark, atol=1e-2)
    write_image(image, tmp_path / f"copy{ext}")
    copy = cv2.imread(str(tmp_path / f"copy{ext}"), cv2.IMREAD_UNCHANGED)
    assert copy.dtype == np.uint16 and np.array_equal(copy[:, :, ::-1], dark)


def test_sixteen_bit_gray_and_rgba(tmp_path):
    gray = (np.arange(20 * 10, dtype=np.uint16).reshape(20, 10) * 300).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray)
    image = read_image(tmp_path / "g16.png")
    assert image.was_gray and image.bit_depth == 16 and image.pixels.shape == (1, 3, 20, 10)
    write_image(image, tmp_path / "g16_copy.png")
    assert np.array_equal(cv2.imread(str(tmp_path / "g16_copy.png"), cv2.IMREAD_UNCHANGED), gray)

    rgba = np.random.default_rng(0).integers(0, 65536, (9, 7, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "rgba16.png"), rgba[:, :, [2, 1, 0, 3]])
    image = read_image(tmp_path / "rgba16.png")
    assert image.bit_depth == 16 and image.alpha is not None
    write_image(image, tmp_path / "rgba16_copy.png")
    copy = cv2.imread(str(tmp_path / "rgba16_copy.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(copy[:, :, [2, 1, 0, 3]], rgba)


def test_float_tiff_round_trips(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    values = np.random.default_rng(1).random((11, 13, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", values, photometric="rgb")
    image = read_image(tmp_path / "f.tif")
    assert image.bit_depth == 32 and np.array_equal(_hwc(image), values)
    write_image(image, tmp_path / "f_copy.tif")
    assert np.array_equal(tifffile.imread(tmp_path / "f_copy.tif"), values)
    gray = values[:, :, 0]
    tifffile.imwrite(tmp_path / "fg.tif", gray)
    image = read_image(tmp_path / "fg.tif")
    assert image.was_gray and image.bit_depth == 32


# ----------------------------------------------------------------------------- gray, alpha, palette


def test_gray_and_gray_alpha(camera):
    gray = camera[:16, :24]
    image = decode_image(_pil_bytes(gray, "PNG"))
    assert image.was_gray and image.alpha is None
    assert torch.equal(image.pixels[0, 0], image.pixels[0, 2])
    written = Image.open(io.BytesIO(encode_image(image, "png")))
    assert written.mode == "L" and np.array_equal(np.asarray(written), gray)

    la = np.dstack([gray, np.tile(np.arange(24, dtype=np.uint8) * 10, (16, 1))])
    image = decode_image(_pil_bytes(Image.fromarray(la, "LA"), "PNG"))
    assert image.was_gray and image.alpha is not None
    assert np.array_equal(np.round(image.alpha[0, 0].numpy() * 255).astype(np.uint8), la[:, :, 1])
    written = Image.open(io.BytesIO(encode_image(image, "png")))
    assert written.mode == "LA" and np.array_equal(np.asarray(written), la)


def test_rgba_png_and_webp(rgb):
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    rgba = np.dstack([rgb, alpha])
    for fmt, options in (("PNG", {}), ("WEBP", {"lossless": True})):
        image = decode_image(_pil_bytes(rgba, fmt, **options))
        assert image.alpha is not None and image.alpha.shape == (1, 1, 40, 52)
        assert np.array_equal(np.round(image.alpha[0, 0].numpy() * 255).astype(np.uint8), alpha)


def test_alpha_is_flattened_on_white_for_formats_without_it():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255
    image = image_from_array(rgba)
    jpeg = np.asarray(Image.open(io.BytesIO(encode_image(image, "bmp"))))
    assert jpeg.shape == (4, 4, 3)
    assert tuple(jpeg[0, 0]) == (255, 0, 0) and tuple(jpeg[3, 3]) == (255, 255, 255)


def test_palette_images_with_and_without_transparency():
    palette = Image.new("P", (6, 5))
    palette.putpalette([255, 0, 0, 0, 128, 255] + [0] * 762)
    palette.putpixel((1, 1), 1)
    image = decode_image(_pil_bytes(palette, "PNG"))
    assert image.alpha is None and not image.was_gray
    assert torch.allclose(image.pixels[0, :, 1, 1], torch.tensor([0.0, 128 / 255, 1.0]))
    assert torch.allclose(image.pixels[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    image = decode_image(_pil_bytes(palette, "PNG", transparency=0))
    assert image.alpha is not None
    assert image.alpha[0, 0, 1, 1] == 1.0 and image.alpha[0, 0, 0, 0] == 0.0
    gif = decode_image(_pil_bytes(palette, "GIF", transparency=0))
    assert gif.alpha is not None and gif.alpha[0, 0, 0, 0] == 0.0


# ----------------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_matches_pillow_exif_transpose(rgb, orientation, fmt):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _pil_bytes(rgb, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    image = decode_image(data)
    assert np.array_equal(np.round(_hwc(image) * 255).astype(np.uint8), expected)
    assert read_image_size_from_bytes(data) == (expected.shape[1], expected.shape[0])
    # the orientation is reset in the kept EXIF, so the written image is not rotated twice
    if "exif" in image.metadata:
        reread = Image.open(io.BytesIO(encode_image(image, "jpeg")))
        assert reread.getexif().get(0x0112, 1) == 1


def read_image_size_from_bytes(data: bytes) -> tuple[int, int]:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".img") as handle:
        handle.write(data)
        handle.flush()
        return read_image_size(handle.name)


# ----------------------------------------------------------------------------- the pixel cap


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but that holds almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_pixel_cap_is_checked_from_the_header_before_decoding(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(imageio, "_decode_cv2", no_decoding)
    monkeypatch.setattr(imageio, "_decode_pil", no_decoding)
    bomb = _png_header_only(100_000, 100_000)  # 10 gigapixels in 80 bytes
    with pytest.raises(ImageTooLargeError, match="RESTOREKIT_MAX_PIXELS"):
        decode_image(bomb)
    with pytest.raises(ImageTooLargeError):
        decode_image(_pil_bytes(np.zeros((20, 30, 3), np.uint8), "PNG"), max_pixels=599)
    monkeypatch.setenv("RESTOREKIT_MAX_PIXELS", "100")
    with pytest.raises(ImageTooLargeError, match="over the limit of 100"):
        decode_image(_pil_bytes(np.zeros((20, 30, 3), np.uint8), "JPEG"))


def test_unreadable_inputs_are_read_errors(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageReadError, match="not a readable image") as raised:
        read_image(tmp_path / "text.png")
    assert " object at 0x" not in str(raised.value)  # no Python object reprs for users
    data = _pil_bytes(np.zeros((64, 64, 3), np.uint8) + 90, "PNG")
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "cut.png")


# ----------------------------------------------------------------------------- writing


def test_writes_are_atomic_and_never_replace_the_source(tmp_path, rgb, monkeypatch):
    source = tmp_path / "in.png"
    Image.fromarray(rgb).save(source)
    image = read_image(source)
    with pytest.raises(ImageWriteError, match="input"):
        write_image(image, source)
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")
    with pytest.raises(ImageWriteError, match="exists"):
        write_image(image, target, overwrite=False)

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(ImageWriteError, match="No space left"):
        write_image(image, target)
    assert target.read_bytes() == b"previous", "a failed write leaves the old file untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"], "no temp file left"
    monkeypatch.undo()
    write_image(image, target)
    assert np.array_equal(np.asarray(Image.open(target)), rgb)


def test_output_format_from_extension_or_argument(tmp_path, rgb):
    image = image_from_array(rgb)
    for name, expected in (("a.jpg", "JPEG"), ("b.webp", "WEBP"), ("c.bmp", "BMP"), ("d.tiff", "TIFF")):
        write_image(image, tmp_path / name)
        with Image.open(tmp_path / name) as im:
            assert im.format == expected
    with pytest.raises(ImageWriteError, match="extension"):
        write_image(image, tmp_path / "e.xyz")
    write_image(image, tmp_path / "f.out", fmt="png")
    assert Image.open(tmp_path / "f.out").format == "PNG"
