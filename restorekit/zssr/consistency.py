"""Across-scale consistency: which x2 downscaling kernel explains an image, from the image alone.

The assumption behind KernelGAN and ZSSR is that a natural image looks alike across scales:
downscaling the low-resolution image ``I`` by the kernel ``k`` it was made with gives an
image ``(I * k)↓2`` whose small-scale structure matches ``I``'s own. KernelGAN asks a
discriminator to judge that match; here it is measured directly with a statistic that does
not depend on any kernel:

    sharpness_d(X) = mean |second difference of X along d| / mean |first difference along d|

for four directions ``d`` (rows, columns, both diagonals), on luma. The ratio ignores
contrast and brightness and rises with fine detail. A kernel too wide for the image makes
``(I * k)↓2`` blurrier than ``I`` (negative log ratio), one too narrow sharper (positive).

- :func:`consistency_mismatch` scores a kernel (or bicubic): the root mean square over the
  directions of ``log(sharpness_d((I * k)↓2) / sharpness_d(I))``, and its signed mean.
- :func:`fit_gaussian_kernel` finds the anisotropic Gaussian (two widths and an angle) with
  the smallest mismatch, by a coarse grid and a local refinement: a fraction of a second on
  a 128x128 image. On Gaussian-blurred photos it recovers the width within ~15%, and sharp
  downscales (area, OpenCV bicubic) come out at the narrow end of the family, where the
  kernel is the 2x2 average (bench/diag_kernelgan.py).
- :func:`choose_kernel` takes that Gaussian only where it is a plausible blur and clearly
  better than bicubic and than the common resizers; else the widest of bicubic and the
  resizers of :data:`RESAMPLERS` whose downscale is not blurrier than the image
  (:func:`choose_resampler`): a kernel a little too narrow costs ZSSR little, one too wide
  costs it several dB.

Kernels are on the image's own grid, like KernelGAN's (one x2 step: the kernel the image was
made with, in high-resolution pixels), centred by :func:`~restorekit.zssr.resize.kernel_downscaler`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .resize import NAMED_KERNELS, kernel_downscaler, resize_bicubic

DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))
"""(row, column) steps of the four directions the sharpness is measured along."""

MIN_SIGMA = 0.25
MAX_SIGMA = 3.2
"""The Gaussian widths searched (standard deviation in high-resolution pixels)."""

_LUMA = (0.299, 0.587, 0.114)


def _luma(image: torch.Tensor) -> torch.Tensor:
    image = image.double()
    if image.shape[1] == 3:
        weights = torch.tensor(_LUMA, dtype=torch.float64).view(1, 3, 1, 1)
        return (image * weights).sum(dim=1, keepdim=True)
    return image[:, :1]


def _shifted(plane: torch.Tensor, dy: int, dx: int, margin: int) -> torch.Tensor:
    height, width = plane.shape[-2:]
    return plane[..., margin + dy : height - margin + dy, margin + dx : width - margin + dx]


def directional_sharpness(image: torch.Tensor, margin: int = 3) -> np.ndarray:
    """Sharpness along each of :data:`DIRECTIONS`: (4,) float64, each
    ``mean|X(p+d) - 2X(p) + X(p-d)| / mean|X(p+d) - X(p)|`` over the luma of ``image``
    ((1, C, H, W) in [0, 1]), ``margin`` pixels from the border left out. Flat images give 0."""
    plane = _luma(image)
    values = []
    for dy, dx in DIRECTIONS:
        centre = _shifted(plane, 0, 0, margin)
        ahead = _shifted(plane, dy, dx, margin)
        behind = _shifted(plane, -dy, -dx, margin)
        first = (ahead - centre).abs().mean()
        second = (ahead - 2.0 * centre + behind).abs().mean()
        values.append(float(second / first) if first > 1e-12 else 0.0)
    return np.array(values)


def gaussian_kernel(sigma_major: float, sigma_minor: float, theta: float) -> np.ndarray:
    """An anisotropic Gaussian kernel (sum 1) with standard deviations ``sigma_major`` along
    the angle ``theta`` (radians, from the column axis) and ``sigma_minor`` across it. Its
    side is even and covers three standard deviations (at least 4, at most 22)."""
    widest = max(sigma_major, sigma_minor)
    side = int(min(22, max(4, 2 * math.ceil(3.0 * widest) + 2)))
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag([sigma_major**2, sigma_minor**2]) @ rotation.T
    inverse = np.linalg.inv(covariance)
    z = np.arange(side) - (side - 1) / 2.0
    xs, ys = np.meshgrid(z, z)
    points = np.stack([xs, ys], axis=-1)
    kernel = np.exp(-0.5 * np.einsum("...i,ij,...j->...", points, inverse, points))
    return kernel / kernel.sum()


def bicubic_x2_kernel() -> np.ndarray:
    """The antialiased bicubic x2 kernel (Keys a = -0.5 stretched by 2, 8x8, sum 1): what
    :func:`~restorekit.zssr.resize.resize_bicubic` does to an image away from its border."""
    taps = np.arange(8) - 3.5
    x = np.abs(taps) / 2.0
    a = -0.5
    weights = np.where(
        x <= 1, (a + 2) * x**3 - (a + 3) * x**2 + 1, np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0)
    )
    kernel = np.outer(weights, weights)
    return kernel / kernel.sum()


@dataclass(frozen=True)
class Mismatch:
    """How far a kernel is from explaining an image across scales: ``rms`` of the log
    sharpness ratios over the directions (0: a perfect match), and their mean ``signed``
    (negative: the kernel is too wide for the image, positive: too narrow)."""

    rms: float
    signed: float


class _Scorer:
    """Scores kernels against one image (its sharpness computed once)."""

    def __init__(self, image: torch.Tensor) -> None:
        height, width = image.shape[-2:]
        # Luma once: downscaling is linear, so the luma of a downscale is the downscale of the luma.
        self.image = _luma(image[..., : height - height % 2, : width - width % 2].detach().to("cpu"))
        self.size = (self.image.shape[-2] // 2, self.image.shape[-1] // 2)
        self.reference = np.log(np.maximum(directional_sharpness(self.image), 1e-9))

    def downscale(self, kernel: np.ndarray | None) -> torch.Tensor:
        if kernel is None:
            return resize_bicubic(self.image, self.size)
        return kernel_downscaler(kernel, 2)(self.image.float(), self.size).double()

    def __call__(self, kernel: np.ndarray | None) -> Mismatch:
        ratios = np.log(np.maximum(directional_sharpness(self.downscale(kernel)), 1e-9)) - self.reference
        return Mismatch(float(np.sqrt(np.mean(ratios**2))), float(np.mean(ratios)))


def consistency_mismatch(image: torch.Tensor, kernel: np.ndarray | None) -> Mismatch:
    """The across-scale mismatch of ``kernel`` (an x2 kernel, or None for bicubic) for
    ``image`` ((1, C, H, W) in [0, 1], at least 32x32)."""
    return _Scorer(image)(kernel)


@dataclass(frozen=True)
class GaussianFit:
    """The best-fitting Gaussian: its kernel, widths (high-resolution pixels), angle and
    mismatch, and the mismatch of bicubic for comparison."""

    kernel: np.ndarray
    sigma_major: float
    sigma_minor: float
    theta: float
    mismatch: Mismatch
    bicubic: Mismatch
    image_sharpness: float = 0.0


def fit_gaussian_kernel(image: torch.Tensor) -> GaussianFit:
    """The anisotropic Gaussian x2 kernel that best explains ``image`` across scales
    ((1, C, H, W) in [0, 1], at least 32x32): a grid over widths (8 log-spaced between
    :data:`MIN_SIGMA` and :data:`MAX_SIGMA`, axis ratios up to 4) and 6 angles, then a local
    refinement (about 200 downscales of the image's luma)."""
    score = _Scorer(image)
    cache: dict[tuple[float, float, float], float] = {}

    def objective(major: float, minor: float, theta: float) -> float:
        major = float(np.clip(major, MIN_SIGMA, MAX_SIGMA))
        minor = float(np.clip(minor, MIN_SIGMA, major))
        key = (round(major, 4), round(minor, 4), round(theta % math.pi, 4) if major - minor > 1e-6 else 0.0)
        if key not in cache:
            cache[key] = score(gaussian_kernel(*key)).rms
        return cache[key]

    widths = np.geomspace(MIN_SIGMA, MAX_SIGMA, 8)
    best = min((objective(s, s, 0.0), s, s, 0.0) for s in widths)
    for major in widths:
        for minor in widths[widths < major]:
            if major / minor > 4.0:
                continue
            for theta in np.arange(6) * math.pi / 6:
                best = min(best, (objective(major, minor, theta), major, minor, theta))
    _, major, minor, theta = best
    step_width, step_angle = 0.12, math.pi / 16  # log-width and angle steps, halved on no progress
    for _ in range(6):
        improved = True
        while improved:
            improved = False
            for d_major, d_minor, d_theta in (
                (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1), (1, 1, 0), (-1, -1, 0),
            ):
                candidate = (
                    major * math.exp(d_major * step_width), minor * math.exp(d_minor * step_width), theta + d_theta * step_angle,
                )
                value = objective(*candidate)
                if value < best[0] - 1e-9:
                    major = float(np.clip(candidate[0], MIN_SIGMA, MAX_SIGMA))
                    minor = float(np.clip(candidate[1], MIN_SIGMA, major))
                    theta = candidate[2] % math.pi
                    best = (value, major, minor, theta)
                    improved = True
        step_width, step_angle = step_width / 2, step_angle / 2
    _, major, minor, theta = best
    kernel = gaussian_kernel(major, minor, theta)
    return GaussianFit(kernel, major, minor, theta, score(kernel), score(None), float(np.mean(score.reference)))




CLEARLY_BETTER_RATIO = 2.0
CLEARLY_BETTER_MARGIN = 0.05
"""One kernel explains an image clearly better than another when its mismatch is less than
half the other's and smaller by more than 0.05 (about 5% in sharpness). Calibrated on the
six photos of ``bench/bench_zssr.py --blind`` (see bench/RESULTS_zssr.md)."""

TOO_WIDE_SIGNED = -0.04
"""A kernel whose downscale is blurrier than the image by more than this (mean log ratio)."""

MIN_DECISION_SIDE = 96
"""Images smaller than this (shorter side) are not judged: their x2 downscale is too small
for a steady statistic (a 64x64 antialiased-bicubic crop measured a mismatch of 0.25 for
bicubic). They keep bicubic, and the kernel guard does not run."""

RELIABLE_FIT = 0.06
"""The best Gaussian must explain the image this well (mismatch) for any decision to rest on
the fit: images that no kernel explains (a photo that is mostly flat sky, measured 0.09-0.17)
keep bicubic and are not judged."""

SHARP_IMAGE = 0.15
MAX_SIGMA_SHARP_IMAGE = 1.3
"""An image whose own sharpness (mean log directional sharpness) exceeds ``SHARP_IMAGE`` is
not taken to be blurred by a Gaussian wider than ``MAX_SIGMA_SHARP_IMAGE`` px. Photos blurred
that much measured -0.3 to +0.08; a periodic texture near its sampling limit (skimage's
brick) fits wide kernels across scales while being sharp (+0.22 to +0.31), and ZSSR through
such a kernel lost 13 dB there."""


def clearly_better(best: Mismatch, other: Mismatch) -> bool:
    """Whether ``best`` explains the image clearly better than ``other`` (see
    :data:`CLEARLY_BETTER_RATIO`)."""
    return other.rms > CLEARLY_BETTER_RATIO * best.rms and other.rms - best.rms > CLEARLY_BETTER_MARGIN


RESAMPLERS: tuple[tuple[str, Callable[[], np.ndarray]], ...] = tuple(
    (name, NAMED_KERNELS[name]) for name in ("area", "opencv-cubic")
)
"""The exact x2 kernels of the common resizers that make sharper images than antialiased
bicubic, widest first: the 2x2 average (``cv2.INTER_AREA``, and ``INTER_LINEAR`` at x2) and
OpenCV's cubic without antialiasing. Where no Gaussian explains an image clearly better,
``auto`` takes the widest of bicubic and these whose downscale is not blurrier than the image
(the narrowest when each is): a kernel a little too narrow costs ZSSR a fraction of a dB, one
too wide makes it sharpen a blur that is not there. Bicubic is left out for a sharp image that
fits an implausibly wide blur (:data:`SHARP_IMAGE`: skimage's brick), whose statistic
overstates the width: there ZSSR through bicubic lost 5.1 dB, through the 2x2 average 1.0 dB
(bench/RESULTS_zssr.md)."""


RESAMPLER_EXPLAINS = 0.12
"""A resizer's kernel chosen for an image is back-projected through (like a kernel the user
gives) only where it explains the image across scales this well (mismatch). The chosen resizer
measured 0.020-0.067 on the OpenCV-bicubic and area inputs of five photos. On skimage's brick,
whose finest octave is softer than the rest, every candidate's downscale is far sharper than
the image (0.20-0.27), the 2x2 average is chosen for any input, and back-projection through it
lost 0.68 dB on the OpenCV-bicubic input (bench/RESULTS_zssr.md, "Back-projection only through
a kernel that explains the image"). With the guard on, ZSSR does not train through such a
kernel at all (:func:`restorekit.zssr.engine.unexplained_notice`)."""


TOO_NARROW_SIGNED = RESAMPLER_EXPLAINS
"""A kernel whose downscale is sharper than the image by more than this (mean log ratio) does
not explain it: the image is blurrier across scales than that kernel makes images. ZSSR through
it learns to sharpen by more than the image's finest octave holds. The kernel guard does not
refuse such a kernel (a Gaussian-blurred input is the common case, and there ZSSR through
bicubic still gained 0.3-0.8 dB at 100 iterations), but the run says so, pointing to
``auto``. Measured with bicubic (8-bit inputs of ``bench/bench_zssr.py --blind``): +0.15 to
+0.23 on brick's three resizer inputs and +0.17 to +0.37 on four of the six Gaussian ones, at
most +0.05 on every other input; on brick's area input ZSSR through bicubic passed every
guard and lost 2.31 dB to bicubic. Of 13 skimage photos taken as they are (128 and 256 px
crops), only brick (+0.21) and a microscopy slide (immunohistochemistry, +0.12 to +0.13)
measure above +0.08."""


def explains_image(mismatch: float) -> bool:
    """Whether a resizer's kernel with this mismatch explains the image well enough to
    back-project through (:data:`RESAMPLER_EXPLAINS`; NaN: not measured, no)."""
    return mismatch <= RESAMPLER_EXPLAINS


FLOOR_TOLERANCE = 0.05
"""A fitted Gaussian whose narrow width is within 5% of :data:`MIN_SIGMA` (the floor of the
search) is not taken for a blur: the image is sharper along that axis than any Gaussian of the
family explains, which is what a resizer without antialiasing leaves (OpenCV-bicubic
downscales fit 0.50-0.68 x 0.25 px; through such a fit ZSSR lost 0.4-0.9 dB against bicubic,
through OpenCV's exact cubic kernel it gained 0.0-0.1 dB at 100 iterations)."""


@dataclass(frozen=True)
class KernelChoice:
    """The kernel chosen for an image (:func:`choose_kernel`): the fitted Gaussian
    (``source`` "gaussian fit"), a resizer of :data:`RESAMPLERS` (``source`` its name,
    ``resampler`` its mismatch), or bicubic (``kernel`` None)."""

    kernel: np.ndarray | None
    source: str
    fit: GaussianFit
    resampler: Mismatch | None = None

    @property
    def mismatch(self) -> Mismatch:
        if self.kernel is None:
            return self.fit.bicubic
        return self.resampler if self.resampler is not None else self.fit.mismatch

    @property
    def is_resampler(self) -> bool:
        """Whether the kernel is the exact kernel of a common resizer (:data:`RESAMPLERS`)."""
        return self.resampler is not None


def choose_resampler(image: torch.Tensor, *, with_bicubic: bool = True) -> tuple[str, np.ndarray | None, Mismatch]:
    """The widest of bicubic (``with_bicubic``; kernel None) and :data:`RESAMPLERS` whose x2
    downscale of ``image`` is not blurrier than ``image`` itself (mean log sharpness ratio
    >= 0), else the narrowest: its name, kernel and mismatch."""
    score = _Scorer(image)
    named: list[tuple[str, np.ndarray | None]] = [("bicubic", None)] if with_bicubic else []
    named += [(name, make()) for name, make in RESAMPLERS]
    scored = [(name, kernel, score(kernel)) for name, kernel in named]
    return next((choice for choice in scored if choice[2].signed >= 0.0), scored[-1])


def choose_kernel(image: torch.Tensor, fit: GaussianFit | None = None) -> KernelChoice:
    """The fitted Gaussian where it is a plausible blur (both widths above the search floor,
    see :data:`FLOOR_TOLERANCE`; not a sharp image fitting a wide blur) and explains ``image``
    clearly better across scales than both bicubic and the chosen resizer
    (:func:`choose_resampler`), else that resizer (bicubic among them unless the fit is
    implausible); bicubic for images under :data:`MIN_DECISION_SIDE` or when no Gaussian fits
    reliably."""
    fit = fit or fit_gaussian_kernel(image)
    if min(image.shape[-2:]) < MIN_DECISION_SIDE or fit.mismatch.rms > RELIABLE_FIT:
        return KernelChoice(None, "bicubic", fit)
    plausible = not (fit.image_sharpness > SHARP_IMAGE and fit.sigma_major > MAX_SIGMA_SHARP_IMAGE)
    name, kernel, mismatch = choose_resampler(image, with_bicubic=plausible)
    blur = fit.sigma_minor > MIN_SIGMA * (1.0 + FLOOR_TOLERANCE)
    if plausible and blur and clearly_better(fit.mismatch, fit.bicubic) and clearly_better(fit.mismatch, mismatch):
        return KernelChoice(fit.kernel, "gaussian fit", fit)
    if kernel is None:
        return KernelChoice(None, "bicubic", fit)
    return KernelChoice(kernel, name, fit, mismatch)


@dataclass(frozen=True)
class KernelCheck:
    """The guard's verdict on a kernel ZSSR is about to use: ``too_wide`` when the image is
    clearly sharper than the kernel says (ZSSR would learn to undo a blur that is not there
    and over-sharpen), with the numbers behind it; ``wider`` when the kernel's downscale is
    blurrier than the image at all (back-projection through it would sharpen too);
    :attr:`too_narrow` when the kernel's downscale is clearly sharper than the image (the run
    goes on, with a notice)."""

    too_wide: bool
    wider: bool
    mismatch: Mismatch
    fit: GaussianFit

    @property
    def too_narrow(self) -> bool:
        """Whether the kernel's downscale is clearly sharper than the image
        (:data:`TOO_NARROW_SIGNED`): ZSSR may over-sharpen it, and the run says so."""
        return self.mismatch.signed > TOO_NARROW_SIGNED

    def describe(self, name: str) -> str:
        return (
            f"the image is sharper across scales than {name} explains (mismatch {self.mismatch.rms:.3f}, "
            f"blurrier by {-self.mismatch.signed:.3f} in log sharpness, against {self.fit.mismatch.rms:.3f} "
            f"for a {self.fit.sigma_major:.2f}x{self.fit.sigma_minor:.2f} px Gaussian)"
        )


def check_kernel(image: torch.Tensor, kernel: np.ndarray | None) -> KernelCheck:
    """Whether the x2 ``kernel`` (None: bicubic) is clearly too wide for ``image``."""
    fit = fit_gaussian_kernel(image)
    mismatch = fit.bicubic if kernel is None else _Scorer(image)(kernel)
    wider = mismatch.signed < TOO_WIDE_SIGNED
    too_wide = wider and fit.mismatch.rms <= RELIABLE_FIT and clearly_better(fit.mismatch, mismatch)
    return KernelCheck(too_wide, wider, mismatch, fit)


__all__ = [
    "MIN_DECISION_SIDE",
    "RESAMPLERS",
    "RESAMPLER_EXPLAINS",
    "TOO_NARROW_SIGNED",
    "GaussianFit",
    "KernelCheck",
    "KernelChoice",
    "Mismatch",
    "bicubic_x2_kernel",
    "check_kernel",
    "choose_kernel",
    "choose_resampler",
    "clearly_better",
    "consistency_mismatch",
    "directional_sharpness",
    "explains_image",
    "fit_gaussian_kernel",
    "gaussian_kernel",
]
