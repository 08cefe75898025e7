"""Batched JPEG round trip in torch that reproduces libjpeg-turbo bit for bit.

:func:`jpeg_roundtrip` encodes and decodes a batch in one pass, each image at its own
quality, doing to the pixels exactly what a baseline libjpeg-turbo encoder followed by its
decoder does (what Pillow and OpenCV run; the tests check equality with Pillow):

- the image is rounded to 8 bits first, as a codec receives it;
- JFIF RGB -> YCbCr with libjpeg's 16-bit fixed-point arithmetic;
- 4:2:0 chroma subsampling: 2x2 sums with libjpeg's alternating 1, 2 rounding bias, after
  completing the image by edge replication as its pre-processor does;
- blocks completed to 8x8 by edge replication;
- libjpeg's default "islow" integer DCT, quantisation with the IJG tables (ITU T.81
  Annex K) scaled by the quality exactly as ``jpeg_set_quality``: ``scale = 5000 / q``
  below 50, else ``200 - 2 q``; entries ``(base * scale + 50) // 100`` clamped to 1..255;
  rounding half away from zero;
- dequantisation, the islow inverse DCT, level shift and range limiting;
- "fancy" (triangular) h2v2 chroma upsampling with libjpeg's +8 / +7 rounding;
- YCbCr -> RGB with libjpeg's fixed-point tables.

The integer arithmetic runs in float64 (exact: every value is an integer far below 2**53),
so it works on any device. It rounds, so it is not differentiable, which the degradation
pipeline does not need.

basicsr's DiffJPEG, which Real-ESRGAN's training uses, is only an approximation of a
codec: it takes a continuous quality with unrounded, unclamped tables, uses a float DCT,
pads with black instead of edge replication and upsamples chroma by pixel repetition
(31-42 dB from libjpeg on real photos).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError
from ..layout import check_image

LUMA_QUANT_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
"""ITU T.81 Table K.1 (luminance), rows = vertical frequency."""

CHROMA_QUANT_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)
"""ITU T.81 Table K.2 (chrominance), rows = vertical frequency."""


SCALEBITS = 16
"""Fixed-point precision of libjpeg's colour conversion."""


def _fix16(value: float) -> int:
    """libjpeg's ``FIX(x)`` for colour conversion: ``x`` in 16-bit fixed point."""
    return int(value * (1 << SCALEBITS) + 0.5)


def check_quality(quality: int | float) -> int:
    """``quality`` as an int in 1..100, or :class:`InvalidParameterError`."""
    if isinstance(quality, bool) or not float(quality).is_integer() or not 1 <= quality <= 100:
        raise InvalidParameterError(
            f"JPEG quality must be a whole number from 1 to 100, got {quality!r}."
        )
    return int(quality)


def quantization_tables(quality: torch.Tensor, base: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """IJG quality scaling of a base table: (B,) integer qualities -> (B, 8, 8) float tables."""
    q = quality.to(torch.float64).view(-1, 1, 1)
    scale = torch.where(q < 50, torch.floor(5000.0 / q), 200.0 - 2.0 * q)
    table = torch.tensor(base, dtype=torch.float64, device=quality.device)
    return torch.clamp(torch.floor((table * scale + 50.0) / 100.0), 1.0, 255.0)


# --------------------------------------------------------------------------- integer DCT
#
# libjpeg's default "islow" DCT (Loeffler, Ligtenberg and Moschytz) works in 13-bit fixed
# point, with rounding right shifts ("descaling") after each 1D pass. Within a pass the
# flow graph is linear, so each pass is an integer 8x8 matrix followed by one descale; the
# matrices are built below by running the flow graph on unit vectors. In float64 every sum
# stays an exact integer (all magnitudes are far below 2**53), so the result is the codec's.

CONST_BITS = 13
PASS1_BITS = 2


def _fix13(value: float) -> int:
    return round(value * (1 << CONST_BITS))


def _islow_constants() -> dict[str, int]:
    c = [math.cos(k * math.pi / 16) for k in range(8)]
    r2 = math.sqrt(2.0)
    return {
        "0.298631336": _fix13(r2 * (-c[1] + c[3] + c[5] - c[7])),
        "0.390180644": _fix13(r2 * (c[3] - c[5])),
        "0.541196100": _fix13(r2 * c[6]),
        "0.765366865": _fix13(r2 * (c[2] - c[6])),
        "0.899976223": _fix13(r2 * (c[3] - c[7])),
        "1.175875602": _fix13(r2 * c[3]),
        "1.501321110": _fix13(r2 * (c[1] + c[3] - c[5] - c[7])),
        "1.847759065": _fix13(r2 * (c[2] + c[6])),
        "1.961570560": _fix13(r2 * (c[3] + c[5])),
        "2.053119869": _fix13(r2 * (c[1] + c[3] - c[5] + c[7])),
        "2.562915447": _fix13(r2 * (c[1] + c[3])),
        "3.072711026": _fix13(r2 * (c[1] + c[3] + c[5] - c[7])),
    }


ISLOW = _islow_constants()
"""The 12 fixed-point constants of libjpeg's islow DCT (``FIX_0_298631336`` ...)."""


def _odd_part(t4: int, t5: int, t6: int, t7: int) -> tuple[int, int, int, int]:
    """The shared odd-part rotation of the islow flow graph (figure 8 of LL&M)."""
    k = ISLOW
    z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
    z5 = (z3 + z4) * k["1.175875602"]
    t4, t5, t6, t7 = t4 * k["0.298631336"], t5 * k["2.053119869"], t6 * k["3.072711026"], t7 * k["1.501321110"]
    z1, z2 = z1 * -k["0.899976223"], z2 * -k["2.562915447"]
    z3, z4 = z3 * -k["1.961570560"] + z5, z4 * -k["0.390180644"] + z5
    return t4 + z1 + z3, t5 + z2 + z4, t6 + z2 + z3, t7 + z1 + z4


def _fdct_1d(d: list[int]) -> list[int]:
    """One 1D forward pass, before descaling; the DC and mid outputs carry ``<< CONST_BITS``."""
    k = ISLOW
    t0, t7 = d[0] + d[7], d[0] - d[7]
    t1, t6 = d[1] + d[6], d[1] - d[6]
    t2, t5 = d[2] + d[5], d[2] - d[5]
    t3, t4 = d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    z1 = (t12 + t13) * k["0.541196100"]
    o7, o5, o3, o1 = _odd_part(t4, t5, t6, t7)
    return [
        (t10 + t11) << CONST_BITS, o1, z1 + t13 * k["0.765366865"], o3,
        (t10 - t11) << CONST_BITS, o5, z1 - t12 * k["1.847759065"], o7,
    ]


def _idct_1d(x: list[int]) -> list[int]:
    """One 1D inverse pass, before descaling."""
    k = ISLOW
    z1 = (x[2] + x[6]) * k["0.541196100"]
    t2, t3 = z1 - x[6] * k["1.847759065"], z1 + x[2] * k["0.765366865"]
    t0, t1 = (x[0] + x[4]) << CONST_BITS, (x[0] - x[4]) << CONST_BITS
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(x[7], x[5], x[3], x[1])
    return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]


def _matrix_of(flow: object) -> torch.Tensor:
    """The (8, 8) integer matrix (rows = outputs) of a linear 1D flow graph."""
    columns = [flow([1 if j == i else 0 for j in range(8)]) for i in range(8)]  # type: ignore[operator]
    return torch.tensor(columns, dtype=torch.float64).T


FDCT_MATRIX = _matrix_of(_fdct_1d)
IDCT_MATRIX = _matrix_of(_idct_1d)


def _rows_pass(plane: torch.Tensor, matrix: torch.Tensor, bits: int, offset: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``DESCALE(M @ x + offset, bits)`` for every 8-sample row group of (N, H, W).

    libjpeg's ``DESCALE`` is a right shift with rounding: ``floor((v + 2**(bits-1)) / 2**bits)``.
    The power-of-two scale is folded into the matrix and the offset, which keeps every
    product and sum exact in float64, so a pass is one matrix product and one floor.
    """
    n, h, w = plane.shape
    scale = 1.0 / (1 << bits)
    bias = (offset + float(1 << (bits - 1))) * scale
    bias = bias if isinstance(bias, torch.Tensor) else torch.full((8,), bias, dtype=plane.dtype, device=plane.device)
    out = torch.addmm(bias, plane.reshape(-1, 8), (matrix * scale).T)
    return out.floor_().view(n, h, w)


def _columns_pass(plane: torch.Tensor, matrix: torch.Tensor, bits: int) -> torch.Tensor:
    """``DESCALE(M @ x, bits)`` down every 8-row group of (N, H, W) (see :func:`_rows_pass`)."""
    n, h, w = plane.shape
    scale = 1.0 / (1 << bits)
    out = torch.matmul(matrix * scale, plane.view(n * h // 8, 8, w))
    return out.add_(float(1 << (bits - 1)) * scale).floor_().view(n, h, w)


def _code_plane(plane: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Encode and decode 8-bit sample planes (N, h, w) in float64, h and w multiples of 8,
    each with its (N, 8, 8) quantisation table, exactly as libjpeg's islow DCT path does."""
    n, h, w = plane.shape
    fdct = FDCT_MATRIX.to(plane.device)
    idct = IDCT_MATRIX.to(plane.device)
    # forward: rows (pass 1, with the -128 level shift folded in) then columns (pass 2);
    # the result is 8x the true DCT
    level_shift = -128.0 * fdct.sum(dim=1)
    coefficients = _rows_pass(plane, fdct, CONST_BITS - PASS1_BITS, level_shift)
    coefficients = _columns_pass(coefficients, fdct, CONST_BITS + PASS1_BITS)
    # quantise, (|c| + 4q) // 8q with the sign restored, and dequantise
    blocks = coefficients.view(n, h // 8, 8, w // 8, 8)
    step = tables.to(plane.device).view(n, 1, 8, 1, 8)
    levels = blocks.abs().add_(4.0 * step).div_(8.0 * step).floor_()
    blocks = torch.copysign(levels, blocks).mul_(step).view(n, h, w)
    # inverse: columns (pass 1) then rows (pass 2); +128 level shift, range limit
    samples = _columns_pass(blocks, idct, CONST_BITS - PASS1_BITS)
    samples = _rows_pass(samples, idct, CONST_BITS + PASS1_BITS + 3, 128.0 * (1 << (CONST_BITS + PASS1_BITS + 3)))
    return samples.clamp_(0.0, 255.0)


# --------------------------------------------------------------------------- colour, sampling
#
# Colour conversion and chroma resampling are exact in float32: every product and partial
# sum is an integer below 2**24 (libjpeg picks its rounding offsets to stay below it).

_HALF = float(1 << (SCALEBITS - 1))
_UNIT = 1.0 / (1 << SCALEBITS)


def _rgb_to_ycbcr_matrix() -> torch.Tensor:
    return torch.tensor(
        [
            [_fix16(0.29900), _fix16(0.58700), _fix16(0.11400)],
            [-_fix16(0.16874), -_fix16(0.33126), _fix16(0.5)],
            [_fix16(0.5), -_fix16(0.41869), -_fix16(0.08131)],
        ],
        dtype=torch.float32,
    )


def _rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """8-bit RGB (B, 3, H, W) -> 8-bit YCbCr (B, H, W, 3) with libjpeg's fixed-point rounding."""
    matrix = _rgb_to_ycbcr_matrix().to(rgb.device)
    offset = torch.tensor(
        [_HALF, (128 << SCALEBITS) + _HALF - 1, (128 << SCALEBITS) + _HALF - 1], device=rgb.device
    )
    return torch.matmul(rgb.permute(0, 2, 3, 1), matrix.T).add_(offset).mul_(_UNIT).floor_()


def _ycbcr_to_rgb(luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """8-bit Y (B, H, W) and CbCr (B, 2, H, W) -> 8-bit RGB (B, 3, H, W), libjpeg's tables."""
    matrix = torch.tensor(
        [[0.0, -_fix16(0.34414), _fix16(1.77200)], [_fix16(1.40200), -_fix16(0.71414), 0.0]],
        dtype=torch.float32,
        device=chroma.device,
    )
    offset = _HALF - 128.0 * matrix.sum(dim=0)  # centre Cb, Cr on 0 and round
    delta = torch.matmul(chroma.permute(0, 2, 3, 1), matrix).add_(offset).mul_(_UNIT).floor_()
    rgb = delta.add_(luma.unsqueeze(-1)).clamp_(0.0, 255.0)
    return rgb.permute(0, 3, 1, 2)


def _pad_to(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Replicate the last row/column of (..., h, w) up to (height, width)."""
    h, w = plane.shape[-2:]
    if h == height and w == width:
        return plane
    if plane.ndim == 3:
        return F.pad(plane.unsqueeze(1), (0, width - w, 0, height - h), mode="replicate").squeeze(1)
    return F.pad(plane, (0, width - w, 0, height - h), mode="replicate")


def _downsample_h2v2(chroma: torch.Tensor, out_width: int) -> torch.Tensor:
    """libjpeg's 2x2 chroma downsampling of (B, 2, H, W) to ``out_width`` columns.

    As libjpeg: the rows are completed to an even count and the columns to ``2 * out_width``
    by edge replication, then each output is ``(sum of 4 + bias) >> 2`` with the bias
    alternating 1, 2, 1, 2... along the row.
    """
    h = chroma.shape[-2]
    chroma = _pad_to(chroma, h + h % 2, 2 * out_width)
    bias = 1.0 + (torch.arange(out_width, device=chroma.device) % 2).to(chroma.dtype)
    return F.avg_pool2d(chroma, 2, stride=2).add_(bias * 0.25).floor_()


def _upsample_kernel(device: torch.device) -> torch.Tensor:
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device)
    return torch.outer(taps, taps).view(1, 1, 4, 4)


def _upsample_h2v2_fancy(plane: torch.Tensor) -> torch.Tensor:
    """libjpeg's triangular ("fancy") 2x chroma upsampling, (N, C, h, w) -> (N, C, 2h, 2w).

    Each output is ``(9 a + 3 b + 3 c + d + bias) >> 4`` over its nearest 2x2 inputs (edges
    replicated) with bias 8 on even and 7 on odd output columns: one transposed convolution
    with the [1 3 3 1] x [1 3 3 1] kernel, then the rounding.
    """
    n, c, h, w = plane.shape
    padded = F.pad(plane.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    full = F.conv_transpose2d(padded, _upsample_kernel(plane.device), stride=2)
    sums = full[:, :, 3 : 3 + 2 * h, 3 : 3 + 2 * w]
    bias = torch.tensor([8.0, 7.0], device=plane.device).repeat(w)
    return sums.add(bias).mul_(0.0625).floor_().view(n, c, 2 * h, 2 * w)


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def jpeg_roundtrip(image: torch.Tensor, quality: torch.Tensor | int | list[int]) -> torch.Tensor:
    """Compress and decompress a batch as baseline 4:2:0 JPEG, each image at its own quality.

    Args:
        image: (B, 3, H, W) RGB float in [0, 1] (values outside are clamped).
        quality: an int in 1..100 for the whole batch, or one per image ((B,) tensor or list).

    Returns:
        (B, 3, H, W) float in [0, 1] on 8-bit levels (multiples of 1/255), same dtype/device;
        equal to what libjpeg-turbo (Pillow, OpenCV) decodes from its own encoding.
    """
    check_image(image, what="JPEG's input", channels=(3,))
    batch, _, height, width = image.shape
    if isinstance(quality, torch.Tensor):
        qualities = [check_quality(float(q)) for q in quality.flatten().tolist()]
    elif isinstance(quality, (list, tuple)):
        qualities = [check_quality(q) for q in quality]
    else:
        qualities = [check_quality(quality)] * batch
    if len(qualities) != batch:
        raise InvalidParameterError(f"Got {len(qualities)} JPEG qualities for {batch} images.")
    if image.device.type == "mps":  # no float64 there; the exact integer arithmetic needs it
        return jpeg_roundtrip(image.cpu(), qualities).to(image.device)
    q = torch.tensor(qualities, dtype=torch.float64)
    luma_tables = quantization_tables(q, LUMA_QUANT_TABLE)
    chroma_tables = quantization_tables(q, CHROMA_QUANT_TABLE)

    samples = image.to(torch.float32).clamp(0.0, 1.0).mul_(255.0).add_(0.5).floor_()
    ycc = _rgb_to_ycbcr(samples)  # (B, H, W, 3)
    # luma: blocks completed by edge replication (columns and rows)
    luma = _pad_to(ycc[..., 0], _ceil_to(height, 8), _ceil_to(width, 8)).to(torch.float64)
    luma = _code_plane(luma, luma_tables)[:, :height, :width].to(torch.float32)
    # chroma: 4:2:0, each plane completed to whole blocks as libjpeg does
    chroma_h, chroma_w = -(-height // 2), -(-width // 2)
    chroma = _downsample_h2v2(ycc[..., 1:].permute(0, 3, 1, 2), _ceil_to(chroma_w, 8))
    chroma = _pad_to(chroma, _ceil_to(chroma_h, 8), chroma.shape[-1]).to(torch.float64)
    planes = chroma.reshape(batch * 2, *chroma.shape[-2:])
    coded = _code_plane(planes, chroma_tables.repeat_interleave(2, dim=0)).to(torch.float32)
    coded = coded.view(batch, 2, *chroma.shape[-2:])[:, :, :chroma_h, :chroma_w]
    chroma = _upsample_h2v2_fancy(coded)[:, :, :height, :width]
    rgb = _ycbcr_to_rgb(luma, chroma)
    return rgb.div(255.0).to(image.dtype).contiguous()
