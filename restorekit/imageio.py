"""Image files in and out, keeping bit depth, gray/alpha form and useful metadata.

Decoding yields a :class:`DecodedImage`: float32 RGB pixels (1, 3, H, W) in [0, 1], an
optional alpha (1, 1, H, W), the source bit depth (8, 16 or 32 for float), whether the source
was gray, and metadata worth keeping (ICC profile, EXIF with the orientation reset, DPI).

- EXIF orientation is applied on decode.
- The pixel count is read from the header and checked against a cap *before* decoding
  (decompression bombs).
- Encoding restores the source's bit depth and gray/alpha form unless asked otherwise.
- Writes are atomic (temp file in the same folder, then rename).

Supported: PNG (8/16-bit), TIFF (8/16-bit, float), JPEG, WebP, BMP, and whatever else Pillow
opens (GIF, palette images, CMYK JPEG).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import environment
from .errors import ImageReadError, ImageTooLargeError, ImageWriteError, InvalidParameterError
from .files import atomic_write_bytes
from .layout import check_image

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 150_000_000
"""Default cap on decoded pixels (about 12k x 12k); override with RESTOREKIT_MAX_PIXELS."""

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights, used to turn RGB results back into gray."""

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif"}
)

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_FORMAT_BY_EXTENSION = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jfif": "jpeg",
    ".webp": "webp",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
}
FORMAT_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}
_MAX_DEPTH = {"png": 16, "tiff": 32, "jpeg": 8, "webp": 8, "bmp": 8}


@dataclass
class DecodedImage:
    """An image at the edge of the engine.

    Attributes:
        pixels: float32 RGB, shape (1, 3, H, W), range [0, 1]. Gray sources are expanded to
            three equal channels.
        alpha: float32 (1, 1, H, W) in [0, 1], or None when the source has no alpha.
        bit_depth: 8, 16, or 32 (floating point) as stored in the source.
        was_gray: True when the source was single-channel (with or without alpha).
        format: the source format name in lower case (``png``, ``jpeg``...), if known.
        metadata: ``icc_profile`` (bytes), ``exif`` (bytes, orientation reset to 1), ``dpi``.
        source: the file it came from, if any.
    """

    pixels: torch.Tensor
    alpha: torch.Tensor | None = None
    bit_depth: int = 8
    was_gray: bool = False
    format: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[-2])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[-1])

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None

    def replace(self, **changes: Any) -> DecodedImage:
        """A copy with some fields replaced (pixels, alpha...), keeping the rest."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- limits


def max_pixels_from_env() -> int:
    """The pixel cap: ``RESTOREKIT_MAX_PIXELS`` if set, else :data:`DEFAULT_MAX_PIXELS`."""
    configured = environment.max_pixels()
    return DEFAULT_MAX_PIXELS if configured is None else configured


def check_pixel_count(width: int, height: int, max_pixels: int | None, name: str = "image") -> None:
    """Raise :class:`ImageTooLargeError` when ``width * height`` exceeds the cap."""
    cap = max_pixels_from_env() if max_pixels is None else max_pixels
    if width * height > cap:
        raise ImageTooLargeError(
            f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{cap:,}. Downscale it first, or raise the limit with RESTOREKIT_MAX_PIXELS "
            "if you trust the file and have the memory."
        )


# --------------------------------------------------------------------------- decoding

_PIL_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _own_pixel_cap() -> Iterator[None]:
    """Let Pillow open images of any size: our own cap (checked from the header, and
    configurable) replaces Pillow's fixed one, which would refuse images the user allowed.
    Pillow's limit is a module global, so it is lifted only under a lock and restored after."""
    from PIL import Image

    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous



def _orientation_transform(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W[, C]) array, as Pillow's exif_transpose."""
    transforms: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    transform = transforms.get(orientation)
    return np.ascontiguousarray(transform(array)) if transform else array


def _png_exif(data: bytes) -> bytes | None:
    """The payload of a PNG's eXIf chunk, found by walking chunk headers (no decompression).

    Pillow's ``getexif()`` on a PNG decodes the whole image to look for an eXIf chunk after
    the pixel data, which would defeat the pixel cap.
    """
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind == b"eXIf":
            return data[position + 8 : position + 8 + length]
        if kind == b"IEND":
            break
        position += 12 + length
    return None


def _exif_of(im: Any, data: bytes) -> Any:
    from PIL import Image

    if im.format == "PNG":
        exif = Image.Exif()
        raw = _png_exif(data)
        if raw:
            exif.load(raw)
        return exif
    return im.getexif()


def _probe_header(data: bytes, name: str, max_pixels: int | None = None) -> dict[str, Any]:
    """Read format, size, mode and metadata from the header only (no pixel decoding), and
    refuse images over the pixel cap before anything else is read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _own_pixel_cap(), Image.open(io.BytesIO(data)) as im:
            check_pixel_count(im.width, im.height, max_pixels, name)
            exif = _exif_of(im, data)
            orientation = int(exif.get(0x0112, 1) or 1)
            exif_bytes = None
            if len(exif):
                if 0x0112 in exif:
                    exif[0x0112] = 1
                exif_bytes = exif.tobytes()
            return {
                "format": (im.format or "").lower() or None,
                "width": im.width,
                "height": im.height,
                "mode": im.mode,
                "orientation": orientation if 1 <= orientation <= 8 else 1,
                "icc_profile": im.info.get("icc_profile"),
                "exif": exif_bytes,
                "dpi": im.info.get("dpi"),
                "has_transparency": "transparency" in im.info,
                "animated": bool(getattr(im, "is_animated", False)),
            }
    except Image.DecompressionBombError as exc:  # pragma: no cover - the cap is lifted above
        raise ImageTooLargeError(f"{name}: {exc} Raise RESTOREKIT_MAX_PIXELS if you trust it.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _probe_tiff_header(data, name)
        reason = "unknown or damaged format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ImageReadError(
            f"{name} is not a readable image ({reason}). Check that the file is complete and is "
            "a PNG, JPEG, WebP, BMP or TIFF."
        ) from exc


def _probe_tiff_header(data: bytes, name: str) -> dict[str, Any]:
    """Header of a TIFF that Pillow cannot open (float or unusual sample formats)."""
    try:
        import tifffile
    except ImportError as exc:  # pragma: no cover - tifffile is optional
        raise ImageReadError(
            f"{name} is a TIFF that Pillow cannot read; install tifffile to read it."
        ) from exc
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            shape = page.shape
            height, width = (shape[0], shape[1]) if page.planarconfig != 1 or len(shape) < 3 or shape[-1] <= 4 else (shape[1], shape[2])
            photometric = getattr(page.photometric, "name", str(page.photometric))
            samples = page.samplesperpixel
            mode = "L" if photometric in ("MINISBLACK", "MINISWHITE") and samples <= 2 else "RGB"
            return {
                "format": "tiff",
                "width": int(width),
                "height": int(height),
                "mode": mode if samples != 2 else "LA",
                "orientation": 1,
                "icc_profile": None,
                "exif": None,
                "dpi": None,
                "has_transparency": False,
                "animated": False,
            }
    except Exception as exc:
        raise ImageReadError(f"{name} is not a readable TIFF ({exc}).") from exc


def _decode_cv2(data: bytes, name: str) -> np.ndarray:
    """Decode PNG/TIFF at full depth; returns (H, W) or (H, W, C) in RGB(A) order."""
    import cv2

    buffer = np.frombuffer(data, dtype=np.uint8)
    array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageReadError(f"{name} could not be decoded: the file is corrupt or truncated.")
    if array.ndim == 3:
        channels = array.shape[2]
        if channels == 3:
            array = array[:, :, ::-1]
        elif channels == 4:
            array = array[:, :, [2, 1, 0, 3]]
        elif channels == 2:
            pass
        else:
            raise ImageReadError(
                f"{name} has {channels} channels; only gray, gray+alpha, RGB and RGBA are supported."
            )
    return np.ascontiguousarray(array)


def _decode_pil(data: bytes, header: dict[str, Any], name: str) -> np.ndarray:
    """Decode 8-bit formats with Pillow; returns (H, W) or (H, W, C) in L/LA/RGB/RGBA order."""
    from PIL import Image

    with _own_pixel_cap():
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                mode = im.mode
                if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                    array = np.asarray(im).astype(np.uint16 if mode != "I" else np.int32)
                    if mode == "I":
                        array = np.clip(array, 0, 65535).astype(np.uint16)
                    return array
                if mode == "F":
                    return np.asarray(im, dtype=np.float32)
                if mode in ("1", "L"):
                    target = "L"
                elif mode in ("LA", "La"):
                    target = "LA"
                elif mode == "P":
                    target = "RGBA" if header["has_transparency"] else "RGB"
                elif mode in ("RGBA", "RGBa", "PA") or header["has_transparency"]:
                    target = "RGBA"
                else:
                    target = "RGB"
                return np.asarray(im.convert(target))
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(
                f"{name} could not be decoded ({exc}): the file is corrupt or truncated."
            ) from exc


def _bit_depth_of(array: np.ndarray) -> int:
    if array.dtype == np.uint8:
        return 8
    if array.dtype == np.uint16:
        return 16
    return 32


def _to_unit_float(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype in (np.float32, np.float64, np.float16):
        result = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if result.size and (result.min() < 0.0 or result.max() > 1.0):
            logger.warning("%s: float pixel values outside [0, 1] were clipped", name)
        return np.clip(result, 0.0, 1.0)
    raise ImageReadError(f"{name} has unsupported sample type {array.dtype}.")


def decode_image(
    data: bytes,
    *,
    name: str = "image",
    max_pixels: int | None = None,
) -> DecodedImage:
    """Decode image bytes into a :class:`DecodedImage` (header checked against the cap first)."""
    if not data:
        raise ImageReadError(f"{name} is empty (0 bytes).")
    header = _probe_header(data, name, max_pixels)
    check_pixel_count(header["width"], header["height"], max_pixels, name)
    fmt = header["format"]
    array = _decode_cv2(data, name) if fmt in ("png", "tiff") else _decode_pil(data, header, name)
    if header["animated"]:
        logger.info("%s is animated; using the first frame", name)

    was_gray = header["mode"] in _GRAY_MODES
    bit_depth = _bit_depth_of(array)
    array = _orientation_transform(array, header["orientation"])
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    color: np.ndarray
    alpha: np.ndarray | None
    if channels == 1:
        color, alpha = array, None
    elif channels == 2:
        color, alpha = array[:, :, :1], array[:, :, 1:]
    elif channels == 3:
        color, alpha = array, None
    elif channels == 4:
        color, alpha = array[:, :, :3], array[:, :, 3:]
    else:  # pragma: no cover - filtered by the decoders
        raise ImageReadError(f"{name} has {channels} channels.")
    if was_gray and color.shape[2] == 3:
        color = color[:, :, :1]
    color_f = _to_unit_float(color, name)
    if color_f.shape[2] == 1:
        color_f = np.repeat(color_f, 3, axis=2)
    pixels = torch.from_numpy(np.ascontiguousarray(color_f.transpose(2, 0, 1)))[None]
    alpha_t = None
    if alpha is not None:
        alpha_f = _to_unit_float(alpha, name)
        alpha_t = torch.from_numpy(np.ascontiguousarray(alpha_f.transpose(2, 0, 1)))[None]
    metadata = {k: header[k] for k in ("icc_profile", "exif", "dpi") if header.get(k)}
    return DecodedImage(
        pixels=pixels,
        alpha=alpha_t,
        bit_depth=bit_depth,
        was_gray=was_gray,
        format=fmt,
        metadata=metadata,
    )


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> DecodedImage:
    """Read an image file into a :class:`DecodedImage`.

    Raises :class:`ImageReadError` for missing, unreadable or corrupt files and
    :class:`ImageTooLargeError` (before decoding) for images over the pixel cap.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path} does not exist.") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(f"{path} is a folder, not an image file.") from exc
    except OSError as exc:
        raise ImageReadError(f"{path} cannot be read: {exc.strerror or exc}.") from exc
    image = decode_image(data, name=str(path), max_pixels=max_pixels)
    image.source = str(path)
    return image


_HEADER_BYTES = 1 << 18


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding pixels."""
    path = Path(path)
    with open(path, "rb") as handle:
        data = handle.read(_HEADER_BYTES)
        try:  # headers (and EXIF) sit at the start of nearly every file
            header = _probe_header(data, str(path), max_pixels=2**62)
        except ImageReadError:  # e.g. a TIFF whose directory is at the end
            data += handle.read()
            header = _probe_header(data, str(path), max_pixels=2**62)
    width, height = header["width"], header["height"]
    if header["orientation"] in (5, 6, 7, 8):
        width, height = height, width
    return width, height


# --------------------------------------------------------------------------- encoding


def format_from_path(path: str | os.PathLike[str]) -> str:
    """The output format implied by a file extension (``png``, ``jpeg``, ``webp``...)."""
    ext = Path(path).suffix.lower()
    if ext not in _FORMAT_BY_EXTENSION:
        raise ImageWriteError(
            f"Cannot tell the image format from {Path(path).name!r}: use a .png, .jpg, "
            ".webp, .bmp or .tif extension."
        )
    return _FORMAT_BY_EXTENSION[ext]


def normalize_format(fmt: str) -> str:
    """Canonical format name for user input (``jpg`` -> ``jpeg``, ``tif`` -> ``tiff``)."""
    name = fmt.strip().lower().lstrip(".")
    name = {"jpg": "jpeg", "tif": "tiff"}.get(name, name)
    if name not in _MAX_DEPTH:
        raise InvalidParameterError(
            f"Unknown image format {fmt!r}. Use png, jpg, webp, bmp or tiff."
        )
    return name


QUANTIZE_BLOCK_BYTES = 8 << 20
"""Float rows converted at a time when writing integer images: a 4096x4096 RGB result is
quantised through an 8 MB float block instead of a second 201 MB float copy."""


def _quantize(array: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float (H, W, C) in [0, 1] to uint8/uint16 with round-half-up, or float32 for 32.

    Integer depths are converted block by block of rows, so the only full-size allocation is
    the integer result.
    """
    if bit_depth == 32:
        return np.clip(array, 0.0, 1.0, dtype=np.float32)
    out = np.empty(array.shape, dtype=np.uint8 if bit_depth == 8 else np.uint16)
    peak = 255.0 if bit_depth == 8 else 65535.0
    rows = max(1, QUANTIZE_BLOCK_BYTES // max(1, array[:1].size * 4))
    for top in range(0, array.shape[0], rows):
        block = np.clip(array[top : top + rows], 0.0, 1.0, dtype=np.float32)
        block *= peak
        block += 0.5
        out[top : top + rows] = block  # truncates, as astype does: round half up
    return out


def to_gray(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB to (B, 1, H, W) gray with BT.601 luma weights."""
    weights = torch.tensor(GRAY_WEIGHTS, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels * weights).sum(dim=1, keepdim=True)


def _flatten_alpha(color: np.ndarray, alpha: np.ndarray, background: float = 1.0) -> np.ndarray:
    return color * alpha + background * (1.0 - alpha)


def encode_image(
    image: DecodedImage,
    fmt: str = "png",
    *,
    quality: int = 95,
    bit_depth: int | None = None,
    keep_gray: bool = True,
    keep_alpha: bool = True,
) -> bytes:
    """Encode a :class:`DecodedImage` to bytes in ``fmt``.

    The bit depth defaults to the source's, capped at what the format holds (JPEG, WebP and
    BMP are 8-bit; PNG up to 16; TIFF up to float). A gray source is written gray unless
    ``keep_gray`` is False. Formats without alpha (JPEG, BMP) get the image flattened on white.
    """
    fmt = normalize_format(fmt)
    if not 1 <= int(quality) <= 100:
        raise InvalidParameterError(f"Quality must be 1..100, got {quality}.")
    depth = image.bit_depth if bit_depth is None else int(bit_depth)
    if depth not in (8, 16, 32):
        raise InvalidParameterError(f"Bit depth must be 8, 16 or 32 (float), got {depth}.")
    depth = min(depth, _MAX_DEPTH[fmt])
    pixels = image.pixels
    check_image(pixels, what="The pixels to encode", batch=1, error=ImageWriteError)
    pixels = pixels.detach().to("cpu", torch.float32)
    gray = keep_gray and (image.was_gray or pixels.shape[1] == 1)
    if gray and pixels.shape[1] == 3:
        pixels = to_gray(pixels)
    color = pixels[0].permute(1, 2, 0).numpy()
    alpha = None
    if image.alpha is not None:
        alpha = image.alpha.detach().to("cpu", torch.float32)[0].permute(1, 2, 0).numpy()
        if alpha.shape[:2] != color.shape[:2]:
            raise ImageWriteError(
                f"Alpha is {alpha.shape[1]}x{alpha.shape[0]} but the image is "
                f"{color.shape[1]}x{color.shape[0]}."
            )
    if alpha is not None and (not keep_alpha or fmt in ("jpeg", "bmp")):
        if keep_alpha:
            logger.warning("%s has no alpha channel; transparency is flattened on white", fmt.upper())
        color = _flatten_alpha(color, alpha)
        alpha = None
    array = color if alpha is None else np.concatenate([color, alpha], axis=2)
    array = _quantize(array, depth)
    if fmt in ("png", "tiff") and (depth > 8 or fmt == "tiff"):
        return _encode_cv2(array, fmt)
    return _encode_pil(array, fmt, quality, image.metadata)


def _encode_cv2(array: np.ndarray, fmt: str) -> bytes:
    import cv2

    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim == 3 and array.shape[2] == 2:
        gray, alpha = array[:, :, 0], array[:, :, 1]
        array = np.dstack([gray, gray, gray, alpha])
    elif array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1]
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, [2, 1, 0, 3]]
    ext = ".png" if fmt == "png" else ".tif"
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if fmt == "png" else []
    ok, buffer = cv2.imencode(ext, np.ascontiguousarray(array), params)
    if not ok:  # pragma: no cover - cv2 refuses only exotic layouts
        raise ImageWriteError(f"OpenCV could not encode a {array.dtype} image as {fmt}.")
    return buffer.tobytes()


def _encode_pil(array: np.ndarray, fmt: str, quality: int, metadata: dict[str, Any]) -> bytes:
    from PIL import Image

    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    im = Image.fromarray(np.ascontiguousarray(array))  # L, LA, RGB or RGBA from the shape
    options: dict[str, Any] = {}
    if metadata.get("icc_profile"):
        options["icc_profile"] = metadata["icc_profile"]
    if metadata.get("exif") and fmt in ("jpeg", "png", "webp"):
        options["exif"] = metadata["exif"]
    if metadata.get("dpi") and fmt in ("jpeg", "png", "bmp"):
        options["dpi"] = metadata["dpi"]
    if fmt == "jpeg":
        options.update(quality=int(quality), subsampling=0 if quality >= 90 else 2, optimize=True)
    elif fmt == "webp":
        options.update(quality=int(quality), method=4, lossless=int(quality) >= 100)
    elif fmt == "png":
        options.update(compress_level=3)
    buffer = io.BytesIO()
    im.save(buffer, format={"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}[fmt], **options)
    return buffer.getvalue()


def write_image(
    image: DecodedImage,
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    quality: int = 95,
    bit_depth: int | None = None,
    keep_gray: bool = True,
    overwrite: bool = True,
) -> Path:
    """Encode ``image`` and write it to ``path`` atomically; returns the path written.

    The format comes from ``fmt`` or else the extension. With ``overwrite=False`` an
    existing file raises :class:`ImageWriteError`.
    """
    path = Path(path)
    fmt = normalize_format(fmt) if fmt else format_from_path(path)
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path} exists; pass --overwrite to replace it.")
    if image.source and path.exists() and os.path.samefile(path, image.source):
        raise ImageWriteError(
            f"Refusing to overwrite the input {path}; choose another output path."
        )
    data = encode_image(image, fmt, quality=quality, bit_depth=bit_depth, keep_gray=keep_gray)
    try:
        return atomic_write_bytes(path, data)
    except OSError as exc:
        raise ImageWriteError(f"Cannot write {path}: {exc.strerror or exc}.") from exc


def image_from_array(array: np.ndarray, *, was_gray: bool | None = None) -> DecodedImage:
    """A :class:`DecodedImage` from an (H, W[, C]) uint8/uint16/float array (C = 1..4)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InvalidParameterError(
            f"Expected an (H, W, C) array with 1-4 channels, got shape {array.shape}."
        )
    depth = _bit_depth_of(array)
    channels = array.shape[2]
    unit = _to_unit_float(array, "array")
    color = unit[:, :, : 1 if channels <= 2 else 3]
    alpha = unit[:, :, -1:] if channels in (2, 4) else None
    gray = channels <= 2 if was_gray is None else was_gray
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    pixels = torch.from_numpy(np.ascontiguousarray(color.transpose(2, 0, 1)))[None]
    alpha_t = None if alpha is None else torch.from_numpy(np.ascontiguousarray(alpha.transpose(2, 0, 1)))[None]
    return DecodedImage(pixels=pixels, alpha=alpha_t, bit_depth=depth, was_gray=gray)
