"""Face alignment geometry: the FFHQ 5-point template, similarity transforms and warps.

Coordinates are pixel coordinates with pixel *centres* at integers (OpenCV's and facexlib's
convention): pixel ``(row i, column j)`` covers ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``.
Landmarks are ``(x, y)`` in that convention, ordered left eye, right eye, nose tip, left
mouth corner, right mouth corner (as seen in the image).

An affine matrix is a float64 ``(2, 3)`` tensor ``M`` mapping source points ``p`` to
destination points ``M[:, :2] @ p + M[:, 2]``; :func:`warp_affine` produces the destination
image, like ``cv2.warpAffine``. Warps run in torch (``grid_sample``) on whole batches and
any dtype, without OpenCV's 1/32-pixel coordinate quantisation, and low-pass filter the
source first when they shrink it (OpenCV's bilinear warp aliases there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidParameterError
from ..layout import check_image

FACE_SIZE = 512
"""Side of an aligned face (the face models' input), in pixels."""

FFHQ_TEMPLATE_512 = torch.tensor(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=torch.float64,
)
"""Where the five landmarks of an FFHQ-aligned 512x512 face lie (facexlib's template)."""

BORDER_RGB = (132.0 / 255.0, 133.0 / 255.0, 135.0 / 255.0)
"""The gray that fills aligned crops outside the image (facexlib's ``borderValue``, in RGB)."""


def face_template(size: int = FACE_SIZE) -> Tensor:
    """The FFHQ template for a ``size`` x ``size`` aligned face, float64 (5, 2)."""
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def estimate_similarity(source: Tensor, target: Tensor) -> Tensor:
    """The least-squares similarity (rotation, uniform scale, translation; no reflection)
    taking ``source`` points to ``target`` points.

    Args:
        source: (N, 2) points, N >= 2.
        target: (N, 2) points.

    Returns:
        float64 (2, 3) matrix. This is the closed-form optimum (Umeyama's estimate), the
        transform skimage's ``SimilarityTransform`` gives and that facexlib's
        ``cv2.estimateAffinePartial2D(..., method=LMEDS)`` approximates.
    """
    p = torch.as_tensor(source, dtype=torch.float64).reshape(-1, 2)
    q = torch.as_tensor(target, dtype=torch.float64).reshape(-1, 2)
    if p.shape != q.shape or p.shape[0] < 2:
        raise InvalidParameterError(f"Need matching (N, 2) point sets with N >= 2, got {tuple(p.shape)} and {tuple(q.shape)}.")
    if not bool(torch.isfinite(p).all()):
        raise InvalidParameterError("Face landmarks contain NaN or infinite values.")
    p_mean, q_mean = p.mean(0), q.mean(0)
    pc, qc = p - p_mean, q - q_mean
    norm = float((pc * pc).sum())
    if norm < 1e-12:
        raise InvalidParameterError("The face landmarks all lie on one point; they cannot define an alignment.")
    a = float((pc[:, 0] * qc[:, 0] + pc[:, 1] * qc[:, 1]).sum()) / norm
    b = float((pc[:, 0] * qc[:, 1] - pc[:, 1] * qc[:, 0]).sum()) / norm
    linear = torch.tensor([[a, -b], [b, a]], dtype=torch.float64)
    shift = q_mean - linear @ p_mean
    return torch.cat([linear, shift[:, None]], dim=1)


def alignment_matrix(landmarks: Tensor, size: int = FACE_SIZE) -> Tensor:
    """The (2, 3) similarity taking an image's 5 face landmarks to the FFHQ template."""
    return estimate_similarity(landmarks, face_template(size))


def invert_affine(matrix: Tensor) -> Tensor:
    """The inverse of a (2, 3) affine matrix (float64)."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    full = torch.eye(3, dtype=torch.float64)
    full[:2] = m
    return torch.linalg.inv(full)[:2]


def compose(after: Tensor, before: Tensor) -> Tensor:
    """The affine map ``after(before(p))`` as a (2, 3) matrix."""
    a = torch.as_tensor(after, dtype=torch.float64)
    b = torch.as_tensor(before, dtype=torch.float64)
    return torch.cat([a[:, :2] @ b[:, :2], (a[:, :2] @ b[:, 2:] + a[:, 2:])], dim=1)


def resize_matrix(scale_x: float, scale_y: float) -> Tensor:
    """The map from pixel coordinates of an image to those of the same image resized by
    ``(scale_x, scale_y)``: ``x' = (x + 0.5) * scale_x - 0.5`` (pixel edges line up)."""
    return torch.tensor(
        [[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5]], dtype=torch.float64
    )


def transform_points(matrix: Tensor, points: Tensor) -> Tensor:
    """Apply a (2, 3) affine matrix to (N, 2) points (float64)."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    p = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    return p @ m[:, :2].T + m[:, 2]


def linear_scale(matrix: Tensor) -> float:
    """How much an affine map enlarges lengths (the geometric mean of its singular values)."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    return math.sqrt(abs(float(torch.linalg.det(m[:, :2]))))


Window = tuple[int, int, int, int]
"""A destination window ``(x0, y0, width, height)`` in destination pixels."""


def _prefilter(source: Tensor, inverse: Tensor, window: Window, scale: float) -> tuple[Tensor, Tensor]:
    """Crop the part of ``source`` a shrinking warp reads and low-pass it by resizing.

    Returns the smaller source and the updated destination-to-source matrix.
    """
    _, _, height, width = source.shape
    x0, y0, w, h = window
    corners = torch.tensor(
        [[x0 - 0.5, y0 - 0.5], [x0 + w - 0.5, y0 - 0.5], [x0 - 0.5, y0 + h - 0.5], [x0 + w - 0.5, y0 + h - 0.5]],
        dtype=torch.float64,
    )
    src = transform_points(inverse, corners)
    margin = 2.0 / scale + 2.0
    left = max(0, math.floor(float(src[:, 0].min()) - margin))
    top = max(0, math.floor(float(src[:, 1].min()) - margin))
    right = min(width, math.ceil(float(src[:, 0].max()) + margin) + 1)
    bottom = min(height, math.ceil(float(src[:, 1].max()) + margin) + 1)
    if right <= left or bottom <= top:  # the window sees nothing of the source
        return source[:, :, :1, :1] * 0, inverse
    crop = source[:, :, top:bottom, left:right]
    new_h = max(1, round((bottom - top) * scale))
    new_w = max(1, round((right - left) * scale))
    small = F.interpolate(crop, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    to_small = compose(
        resize_matrix(new_w / (right - left), new_h / (bottom - top)),
        torch.tensor([[1.0, 0.0, -left], [0.0, 1.0, -top]], dtype=torch.float64),
    )
    return small, compose(to_small, inverse)


def warp_affine(
    source: Tensor,
    matrix: Tensor,
    window: Window,
    *,
    mode: str = "bilinear",
    border: Sequence[float] | None = None,
    antialias: bool = True,
) -> Tensor:
    """Warp ``source`` by ``matrix`` and return the destination pixels inside ``window``.

    Args:
        source: (1, C, H, W) float tensor.
        matrix: (2, 3) affine map from source to destination pixel coordinates.
        window: ``(x0, y0, width, height)`` of the destination to produce.
        mode: ``bilinear`` or ``bicubic`` interpolation.
        border: per-channel value outside the source (like ``cv2.BORDER_CONSTANT``);
            None means zero.
        antialias: when the warp shrinks (scale < 1), low-pass the source first.

    Returns:
        (1, C, height, width) tensor in ``source``'s dtype.
    """
    check_image(source, what="warp_affine's image", channels=None, batch=1)
    x0, y0, w, h = (int(v) for v in window)
    inverse = invert_affine(matrix)
    scale = linear_scale(matrix)
    image = source
    if border is not None:
        fill = torch.as_tensor(border, dtype=source.dtype, device=source.device).view(1, -1, 1, 1)
        image = source - fill
    if antialias and scale < 0.999:
        image, inverse = _prefilter(image, inverse, (x0, y0, w, h), scale)
    _, _, src_h, src_w = image.shape
    xs = torch.arange(x0, x0 + w, dtype=torch.float64)
    ys = torch.arange(y0, y0 + h, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    u = inverse[0, 0] * grid_x + inverse[0, 1] * grid_y + inverse[0, 2]
    v = inverse[1, 0] * grid_x + inverse[1, 1] * grid_y + inverse[1, 2]
    grid = torch.stack([(2.0 * u + 1.0) / src_w - 1.0, (2.0 * v + 1.0) / src_h - 1.0], dim=-1)
    grid = grid.to(device=source.device, dtype=image.dtype)[None]
    out = F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if border is not None:
        out = out + fill
    return out


def crop_face(image: Tensor, matrix: Tensor, size: int = FACE_SIZE, *, border: Sequence[float] | None = BORDER_RGB) -> Tensor:
    """The aligned ``size`` x ``size`` face of ``image`` (1, 3, H, W) in [0, 1] under
    ``matrix`` (image -> aligned); outside the image is filled with ``border``.

    Bilinear like facexlib's crop (faces smaller than ``size`` in the image, the usual
    case, match it to its uint8 rounding); larger faces are low-passed first. Returns
    (1, 3, size, size) in [0, 1]."""
    return warp_affine(image, matrix, (0, 0, size, size), mode="bilinear", border=border).clamp_(0.0, 1.0)


def paste_window(matrix: Tensor, size: int, out_height: int, out_width: int) -> Window | None:
    """The smallest window of an ``out_height`` x ``out_width`` image that the aligned
    ``size`` square covers under ``matrix`` (aligned -> output), or None if it misses."""
    corners = torch.tensor(
        [[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]], dtype=torch.float64
    )
    points = transform_points(matrix, corners)
    left = max(0, math.floor(float(points[:, 0].min())))
    top = max(0, math.floor(float(points[:, 1].min())))
    right = min(out_width, math.ceil(float(points[:, 0].max())) + 1)
    bottom = min(out_height, math.ceil(float(points[:, 1].max())) + 1)
    if right <= left or bottom <= top:
        return None
    return (left, top, right - left, bottom - top)
