"""Blind kernel estimation with KernelGAN (Bell-Kligler, Shocher and Irani, NeurIPS 2019).

An image-specific GAN learns the image's own downscaling kernel from the image alone: a deep
*linear* generator G downscales crops of the image by 2, and a fully convolutional patch
discriminator D tries to tell G's patches from patches of the image itself. The kernel that
makes the downscaled image's patch distribution match the image's own (across-scale
recurrence) is the kernel the image was made with. G is linear, so it *is* one blur kernel
followed by subsampling; the kernel is read out by passing a delta through it.

Details follow the paper and its official code:

- G: six bias-free convolutions (7x7, 5x5, 3x3, 1x1, 1x1, 1x1; 64 channels; no
  non-linearity), stride 2 at the end: a 13x13 kernel. Each colour channel goes through it
  as its own image. Since G is linear, its output is computed as one 13x13 strided
  convolution with the kernel its layers compose to: the same function of the same
  weights, so the same gradients and the same over-parameterised optimisation as running
  the layers, at a small fraction of the cost.
- D: a 7x7 spectral-normalised convolution and five 1x1 spectral-normalised
  convolutions with batch norm and ReLU, a sigmoid map: each output judges one 7x7 patch.
- Losses: the GAN loss (L1 to the real/fake label maps) plus the kernel constraints:
  sum to one (L1), centred (centre of mass, MSE), boundaries (a mask penalising the outer
  ring), sparsity (``|k|**0.2``), and, at the start, closeness of G's output to a bicubic
  downscale. The constraint weights follow the official schedule (:class:`KernelGANConfig`).
- Crops are drawn with probability following the image's gradient magnitude; D's real
  crops and G's outputs get Gaussian noise of one grey level.
- Adam (lr 2e-4, beta1 0.5) for both, divided by 10 every 750 iterations; 3000 iterations.
- The final kernel keeps its significant values (those above 0.75 x the 41st largest) and
  is normalised to sum 1. The x4 kernel is the analytic composition of the x2 kernel with
  itself (the paper's appendix).

Everything runs in float32 on the CPU by default, seeded, with progress, cancellation and
a wall-clock budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..progress import CancelCheck, ProgressCallback, Reporter
from .consistency import RESAMPLERS, explains_image
from .resize import normalize_kernel, resize_bicubic

logger = logging.getLogger(__name__)

GENERATOR_LAYERS = (7, 5, 3, 1, 1, 1)
"""Kernel sides of G's layers (they compose to a 13x13 kernel)."""

ESTIMATED_FACTOR = 2
"""KernelGAN estimates the kernel of one x2 downscaling step."""


@dataclass(frozen=True)
class KernelGANConfig:
    """Settings of one KernelGAN kernel estimation (defaults: the paper's).

    Budget: ``iterations`` (deterministic for a seed on one machine) and an optional
    wall-clock ``time_budget_s`` (training stops at whichever comes first, checked every
    iteration; ``min_iterations`` can force a minimum even past the budget). The learning
    rate is 2e-6 from iteration 1500 on, so the kernel changes little after that.

    Sizes: ``crop_size`` is the side of G's input crops (smaller images use their shorter
    side, rounded down to even; at least :data:`MIN_IMAGE_SIDE`).

    Networks: ``generator_width`` channels in G, ``discriminator_width`` channels and
    ``discriminator_layers`` layers in D (its first layer ``discriminator_kernel`` wide).

    Optimisation: ``learning_rate`` and ``beta1`` of Adam for both networks; the rate is
    divided by ``lr_decay_factor`` every ``lr_decay_every`` iterations.

    Constraint schedule (the official ``Learner``): the bicubic weight starts at
    ``lambda_bicubic``; once G's output is close to a bicubic downscale (MSE below
    ``bicubic_close`` three times running, in the [-1, 1] range), it is divided by 100
    every ``lambda_update_every`` iterations (down to 5e-6), and once it is below 5e-3 the
    centring (``lambda_centralized_end``) and sparsity (``lambda_sparse_end``) weights are
    switched on. Sum-to-one and boundary weights are fixed.

    Post-processing: ``keep_values`` largest kernel values define the significance level.
    """

    iterations: int = 3000
    time_budget_s: float | None = None
    min_iterations: int = 0
    crop_size: int = 64
    kernel_size: int = 13
    generator_width: int = 64
    discriminator_width: int = 64
    discriminator_layers: int = 7
    discriminator_kernel: int = 7
    learning_rate: float = 2e-4
    beta1: float = 0.5
    lr_decay_every: int = 750
    lr_decay_factor: float = 10.0
    lambda_bicubic: float = 5.0
    lambda_sum_to_one: float = 0.5
    lambda_boundaries: float = 0.5
    lambda_centralized_end: float = 1.0
    lambda_sparse_end: float = 5.0
    lambda_update_every: int = 200
    bicubic_close: float = 0.4
    keep_values: int = 40
    batch_size: int = 1
    discriminator_norm: str = "batch"
    normalized_kernel: bool = True
    method: str = "consistency"
    seed: int = 0

    def replace(self, **changes: object) -> KernelGANConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> KernelGANConfig:
        """Check the fields; raise :class:`InvalidParameterError` naming a bad one."""
        for name, minimum in (
            ("iterations", 1), ("min_iterations", 0), ("crop_size", MIN_IMAGE_SIDE),
            ("generator_width", 1), ("discriminator_width", 1), ("discriminator_layers", 2),
            ("discriminator_kernel", 1), ("lr_decay_every", 1), ("lambda_update_every", 1),
            ("keep_values", 1), ("seed", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
                raise InvalidParameterError(f"KernelGAN {name} must be an integer >= {minimum}, got {value!r}.")
        if self.kernel_size != sum(GENERATOR_LAYERS) - len(GENERATOR_LAYERS) + 1:
            raise InvalidParameterError(
                f"KernelGAN kernel_size is fixed by the generator's layers at 13, got {self.kernel_size!r}."
            )
        if self.time_budget_s is not None and not (
            isinstance(self.time_budget_s, (int, float)) and self.time_budget_s > 0 and math.isfinite(self.time_budget_s)
        ):
            raise InvalidParameterError(
                f"KernelGAN time_budget_s must be a positive number of seconds or None, got {self.time_budget_s!r}."
            )
        for name in ("learning_rate", "lr_decay_factor", "bicubic_close"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise InvalidParameterError(f"KernelGAN {name} must be a positive number, got {value!r}.")
        if self.method not in METHODS:
            raise InvalidParameterError(f"Kernel estimation method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if self.discriminator_norm not in ("batch", "none"):
            raise InvalidParameterError(f"KernelGAN discriminator_norm must be 'batch' or 'none', got {self.discriminator_norm!r}.")
        if not 0.0 <= self.beta1 < 1.0:
            raise InvalidParameterError(f"KernelGAN beta1 must be in [0, 1), got {self.beta1!r}.")
        return self


METHODS = ("consistency", "kernelgan")
"""Kernel estimation methods: the across-scale consistency fit (default) or KernelGAN."""

MIN_IMAGE_SIDE = 32
"""The smallest image side KernelGAN can learn from (G's crop; D needs 7x7 patches of its output)."""


@dataclass
class KernelEstimate:
    """The estimated x2 kernel (float64, 13x13 or smaller after trimming, sums to 1) and
    how the estimation went."""

    kernel: np.ndarray
    raw_kernel: np.ndarray
    iterations: int
    stop_reason: str
    seconds: float
    bicubic_loss: float
    source: str = "kernelgan"
    mismatch: float = math.nan

    @property
    def is_bicubic(self) -> bool:
        """Whether the estimate is "bicubic" (the image is too small or no kernel fits it reliably)."""
        return self.source == "bicubic"

    @property
    def is_resampler(self) -> bool:
        """Whether the estimate is the exact kernel of a common resizer (``area``,
        ``opencv-cubic``: :data:`~restorekit.zssr.consistency.RESAMPLERS`), through which
        back-projection is as safe as through a kernel the user gives where it explains the
        image (:attr:`back_projectable`)."""
        return any(self.source == name for name, _ in RESAMPLERS)

    @property
    def back_projectable(self) -> bool:
        """Whether ZSSR may back-project through the estimate at the image's own scale: a
        resizer's exact kernel that explains the image across scales (``mismatch`` at most
        :data:`~restorekit.zssr.consistency.RESAMPLER_EXPLAINS`). One scale down, where the
        transfer check makes the downscale with the kernel itself, every resizer estimate is
        exact."""
        return self.is_resampler and explains_image(self.mismatch)

    def kernel_for_factor(self, factor: int) -> np.ndarray:
        """The kernel of one downscaling step by ``factor`` (2 or 4; see :func:`kernel_for_factor`)."""
        return kernel_for_factor(self.kernel, factor)


# --------------------------------------------------------------------------- networks


class LinearGenerator(nn.Module):
    """KernelGAN's deep linear generator: (B, C, H, W) in [-1, 1] -> (B, C, h, w).

    ``h = (H - 13) // 2 + 1``. Every channel is downscaled by the same kernel (channels are
    folded into the batch).
    """

    def __init__(self, width: int = 64, layers: tuple[int, ...] = GENERATOR_LAYERS) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        in_channels = 1
        for index, side in enumerate(layers):
            out_channels = 1 if index == len(layers) - 1 else width
            convs.append(nn.Conv2d(in_channels, out_channels, side, bias=False))
            in_channels = out_channels
        self.layers = nn.ModuleList(convs)
        self.kernel_size = sum(layers) - len(layers) + 1

    def reset_parameters(self, generator: torch.Generator, gain: float = 0.1) -> None:
        """Xavier-normal weights with ``gain`` (the official initialisation), seeded."""
        with torch.no_grad():
            for conv in self.layers:
                fan_out, fan_in = conv.weight.shape[0], conv.weight.shape[1]
                receptive = conv.weight.shape[2] * conv.weight.shape[3]
                std = gain * math.sqrt(2.0 / ((fan_in + fan_out) * receptive))
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)

    def kernel(self) -> torch.Tensor:
        """The (kernel_size, kernel_size) correlation kernel the layers compose to
        (differentiable in the weights): ``G(x) == conv2d(x, kernel, stride=2)``.

        Composed from the last layer back: correlating with ``b`` then with ``a`` is
        correlating with ``conv_transpose2d(a, b)``, a few thousand multiply-adds per
        layer instead of running the layers on an image.
        """
        composed = self.layers[-1].weight
        for conv in reversed(self.layers[:-1]):
            composed = F.conv_transpose2d(composed, conv.weight)
        return composed[0, 0]

    def forward(self, images: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, height, width = images.shape
        kernel = self.kernel() if kernel is None else kernel
        folded = images.reshape(batch * channels, 1, height, width)
        out = F.conv2d(folded, kernel[None, None], stride=ESTIMATED_FACTOR)
        return out.reshape(batch, channels, out.shape[-2], out.shape[-1])


class PatchDiscriminator(nn.Module):
    """KernelGAN's discriminator: (B, 3, H, W) -> (B, 1, H - k + 1, W - k + 1) in (0, 1),
    each value judging one ``k`` x ``k`` patch (k = ``kernel``)."""

    def __init__(self, channels: int = 3, width: int = 64, layers: int = 7, kernel: int = 7, norm: str = "batch") -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        blocks: list[nn.Module] = [sn(nn.Conv2d(channels, width, kernel))]
        for _ in range(layers - 2):
            blocks += [sn(nn.Conv2d(width, width, 1))]
            if norm == "batch":
                blocks.append(nn.BatchNorm2d(width))
            blocks.append(nn.ReLU(inplace=True) if norm != "leaky" else nn.LeakyReLU(0.2, inplace=True))
        blocks += [sn(nn.Conv2d(width, 1, 1)), nn.Sigmoid()]
        self.body = nn.Sequential(*blocks)
        self.shave = kernel - 1

    def reset_parameters(self, generator: torch.Generator, gain: float = 0.1) -> None:
        """Xavier-normal convolutions (``gain``), zero biases, batch-norm scales N(1, 0.02)."""
        with torch.no_grad():
            for module in self.body.modules():
                if isinstance(module, nn.Conv2d):
                    weight = module.parametrizations.weight.original
                    fan_out, fan_in = weight.shape[0], weight.shape[1]
                    receptive = weight.shape[2] * weight.shape[3]
                    std = gain * math.sqrt(2.0 / ((fan_in + fan_out) * receptive))
                    weight.copy_(torch.randn(weight.shape, generator=generator) * std)
                    module.bias.zero_()
                elif isinstance(module, nn.BatchNorm2d):
                    module.weight.copy_(1.0 + 0.02 * torch.randn(module.weight.shape, generator=generator))
                    module.bias.zero_()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.body(patches)


# --------------------------------------------------------------------------- kernel constraints


def boundary_mask(side: int, penalty: float = 30.0) -> torch.Tensor:
    """(side, side) weights penalising kernel values near the border (the official mask:
    one minus a wide Gaussian, zero inside the central ``side // 2 + 1`` square + margin)."""
    centre = side // 2 + side % 2
    z = np.arange(-side // 2 + 1, side // 2 + 1, dtype=np.float64)
    gauss = np.exp(-(z**2) / (2.0 * side**2))
    mask = 1.0 - np.outer(gauss, gauss) / np.outer(gauss, gauss).max()
    margin = (side - centre) // 2 - 1
    if margin > 0:
        mask[margin:-margin, margin:-margin] = 0.0
    return torch.from_numpy(penalty * mask).float()


def centre_of_mass(kernel: torch.Tensor) -> torch.Tensor:
    """(row, column) centre of mass of a 2-D kernel."""
    total = kernel.sum()
    rows = torch.arange(kernel.shape[0], dtype=kernel.dtype, device=kernel.device)
    cols = torch.arange(kernel.shape[1], dtype=kernel.dtype, device=kernel.device)
    return torch.stack(((kernel.sum(dim=1) * rows).sum() / total, (kernel.sum(dim=0) * cols).sum() / total))


@dataclass
class ConstraintWeights:
    """The loss weights, changed over training by :meth:`update` (the official schedule)."""

    config: KernelGANConfig
    bicubic: float = 0.0
    centralized: float = 0.0
    sparse: float = 0.0
    close_count: int = 0
    close_to_bicubic: bool = False
    constraints_on: bool = False

    def __post_init__(self) -> None:
        self.bicubic = self.config.lambda_bicubic

    def update(self, iteration: int, bicubic_loss: float) -> None:
        if iteration == 0:
            return
        if not self.close_to_bicubic:
            if bicubic_loss < self.config.bicubic_close:
                if self.close_count >= 2:
                    self.close_to_bicubic = True
                else:
                    self.close_count += 1
            else:
                self.close_count = 0
        elif iteration % self.config.lambda_update_every == 0 and self.bicubic > 5e-6:
            self.bicubic = max(self.bicubic / 100.0, 5e-6)
            if not self.constraints_on and self.bicubic < 5e-3:
                self.centralized = self.config.lambda_centralized_end
                self.sparse = self.config.lambda_sparse_end
                self.constraints_on = True


# --------------------------------------------------------------------------- crops


def _box_blur(array: torch.Tensor, side: int) -> torch.Tensor:
    """Mean over a ``side`` x ``side`` window, same size, zero outside (H, W) float64."""
    if side <= 1:
        return array
    weight = torch.full((1, 1, side, side), 1.0 / side**2, dtype=array.dtype)
    pad_before = (side - 1) // 2
    pad_after = side - 1 - pad_before
    padded = F.pad(array[None, None], (pad_before, pad_after, pad_before, pad_after))
    return F.conv2d(padded, weight)[0, 0]


def _zero_edges(array: torch.Tensor, edge: int) -> torch.Tensor:
    out = torch.zeros_like(array)
    if edge > 0 and 2 * edge < min(array.shape):
        out[edge:-edge, edge:-edge] = array[edge:-edge, edge:-edge]
        return out
    return array


def gradient_map(image: torch.Tensor, window: int = 5, percent: float = 0.97) -> torch.Tensor:
    """Where the image has structure: (H, W) float64 with mean 1, from the clipped gradient
    magnitudes of its luma (the official crop-probability map). ``image`` is (1, 3, H, W)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, -1, 1, 1)
    luma = (image.double() * weights[:, : image.shape[1]]).sum(dim=1)[0] if image.shape[1] == 3 else image.double()[0, 0]
    gy, gx = torch.gradient(luma)
    magnitude, gx, gy = torch.sqrt(gx**2 + gy**2), gx.abs(), gy.abs()

    def clip(values: torch.Tensor) -> torch.Tensor:
        values = _zero_edges(values, window)
        ordered = values.flatten().sort().values
        pivot = min(int(percent * len(ordered)), len(ordered) - 2)
        low = ordered[pivot]
        high = ordered[pivot + 1] if ordered[pivot + 1] > low else low + 1e-5
        clipped = values.clamp(low, high) - low
        return clipped / clipped.sum() if clipped.sum() > 0 else torch.ones_like(values) / values.numel()

    combined = clip(gx) + clip(gy) + clip(magnitude)
    blurred = _box_blur(combined, window)
    return blurred / blurred.mean()


def crop_probabilities(loss_map: torch.Tensor, crop: int) -> np.ndarray:
    """Probabilities of crop centres (flattened (H, W)): the structure in the crop, zero
    where a crop centred there would leave the image."""
    blurred = _box_blur(loss_map, max(1, crop // 2))
    probabilities = _zero_edges(blurred, crop // 2).flatten().numpy()
    total = probabilities.sum()
    if not total > 0:
        return np.full(probabilities.shape, 1.0 / probabilities.size)
    return probabilities / total


def _top_left(centre: int, size: int, rows: int, cols: int) -> tuple[int, int]:
    row, col = divmod(int(centre), cols)
    top = min(max(0, row - size // 2), rows - size)
    left = min(max(0, col - size // 2), cols - size)
    return top - top % 2, left - left % 2


# --------------------------------------------------------------------------- post-processing


def significant_kernel(kernel: np.ndarray, keep_values: int = 40) -> np.ndarray:
    """Zero the negligible values: subtract 0.75 x the ``keep_values + 1``-th largest value,
    clip at zero and normalise to sum 1 (the official post-processing)."""
    flat = np.sort(kernel.flatten())
    index = min(keep_values + 1, flat.size)
    threshold = 0.75 * flat[-index]
    filtered = np.clip(kernel - threshold, 0.0, None)
    if not filtered.sum() > 0:
        filtered = np.clip(kernel, 0.0, None)
    if not filtered.sum() > 0:
        raise InvalidParameterError("KernelGAN produced an empty kernel; run it with more iterations.")
    return filtered / filtered.sum()


NEGLIGIBLE_TAIL = 1e-3
"""The x4 composition drops a border only while what it drops is at most this share of the
kernel's absolute mass."""


def analytic_x4_kernel(kernel: np.ndarray) -> np.ndarray:
    """The x4 kernel equal to two x2 steps through ``kernel`` (blur, subsample, blur,
    subsample), its negligible border cropped (at most half the kernel side, and only what
    holds under :data:`NEGLIGIBLE_TAIL` of the mass: a compact kernel such as the 2x2 average
    keeps its whole 4x4 composition), normalised to sum 1."""
    side = kernel.shape[0]
    big = np.zeros((3 * side - 2, 3 * side - 2))
    for r in range(side):
        for c in range(side):
            big[2 * r : 2 * r + side, 2 * c : 2 * c + side] += kernel[r, c] * kernel
    total = np.abs(big).sum()
    crop = side // 2
    while crop and total - np.abs(big[crop:-crop, crop:-crop]).sum() > NEGLIGIBLE_TAIL * total:
        crop -= 1
    cropped = big[crop:-crop, crop:-crop] if crop else big
    return cropped / cropped.sum()


def kernel_for_factor(kernel: object, factor: int) -> np.ndarray:
    """The kernel of one downscaling step by ``factor`` from an x2 kernel: the kernel itself
    for x2, its analytic x4 composition for x4."""
    array = normalize_kernel(kernel)
    if factor == 2:
        return array
    if factor == 4:
        if array.shape[0] != array.shape[1]:
            pad = max(array.shape) - min(array.shape)
            array = np.pad(array, ((0, pad if array.shape[0] < array.shape[1] else 0), (0, pad if array.shape[1] < array.shape[0] else 0)))
        return analytic_x4_kernel(array)
    raise InvalidParameterError(
        f"An estimated (x2) kernel serves x2 and x4 steps, not x{factor:g}; use a scale of 2, 4, 8 or 16."
    )


def trim_kernel(kernel: np.ndarray) -> np.ndarray:
    """Crop all-zero border rows and columns (symmetrically, so the kernel stays centred)."""
    rows = np.nonzero(kernel.sum(axis=1) > 0)[0]
    cols = np.nonzero(kernel.sum(axis=0) > 0)[0]
    if rows.size == 0 or cols.size == 0:
        return kernel
    margin = min(rows[0], kernel.shape[0] - 1 - rows[-1], cols[0], kernel.shape[1] - 1 - cols[-1])
    return kernel[margin : kernel.shape[0] - margin, margin : kernel.shape[1] - margin] if margin > 0 else kernel


def kernel_picture(kernel: object, size: int = 256) -> torch.Tensor:
    """A picture of a kernel: (1, 3, size, size) float32 in [0, 1], nearest-neighbour
    enlarged, 0 black and the largest value white."""
    array = normalize_kernel(kernel)
    top = float(array.max())
    scaled = torch.from_numpy(array / top if top > 0 else array).float()[None, None]
    picture = F.interpolate(scaled, size=(size, size), mode="nearest").clamp(0, 1)
    return picture.expand(-1, 3, -1, -1).contiguous()


# --------------------------------------------------------------------------- estimation


def _check_image(pixels: object) -> torch.Tensor:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[0] != 1 or pixels.shape[1] not in (1, 3):
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise InvalidParameterError(f"KernelGAN expects one image of shape (1, 1 or 3, H, W) in [0, 1], got {shape}.")
    if not pixels.is_floating_point() or not bool(torch.isfinite(pixels).all()):
        raise InvalidParameterError("KernelGAN expects finite float pixels in [0, 1].")
    if min(pixels.shape[-2:]) < MIN_IMAGE_SIDE:
        height, width = pixels.shape[-2:]
        raise InvalidParameterError(
            f"The image is {width}x{height}; kernel estimation needs at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels. Give a kernel file or use the bicubic kernel."
        )
    return pixels


def estimate_kernel(
    pixels: torch.Tensor,
    config: KernelGANConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> KernelEstimate:
    """Estimate the x2 downscaling kernel an image was made with, from the image alone.

    Args:
        pixels: (1, C, H, W) float in [0, 1], C = 1 or 3, at least 32x32.
        config: :class:`KernelGANConfig` (defaults: the paper's 3000 iterations).
        progress: ``progress(done, total, message)`` every 10 iterations.
        cancel: ``cancel()`` -> True raises :class:`~restorekit.errors.CancelledError`.

    Returns:
        A :class:`KernelEstimate`: the kernel (float64, sums to 1; its centre of mass marks
        the low-resolution pixel centre, as :func:`~restorekit.zssr.resize.kernel_downscaler`
        expects), the unprocessed kernel, iterations run and why training stopped.

    Runs on the CPU in float32 and is deterministic for a seed and an iteration budget on
    one machine (the global torch RNG is left as it was).
    """
    config = (config or KernelGANConfig()).validate()
    pixels = _check_image(pixels)
    reporter = Reporter.of(progress, cancel)
    reporter.check()
    if config.method == "consistency":
        return _consistency_estimate(pixels, reporter)
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _Estimation(pixels.detach().to("cpu", torch.float32).clone(), config, reporter).run()


def _consistency_estimate(pixels: torch.Tensor, reporter: Reporter) -> KernelEstimate:
    """The across-scale consistency estimate (:mod:`restorekit.zssr.consistency`)."""
    from .consistency import bicubic_x2_kernel, choose_kernel

    start = time.perf_counter()
    reporter.step(0, 1, "Kernel: fitting the across-scale consistency")
    with torch.no_grad():
        choice = choose_kernel(pixels.detach().to("cpu", torch.float32).clamp(0, 1))
    reporter.step(1, 1, f"Kernel: {choice.source}")
    kernel = bicubic_x2_kernel() if choice.kernel is None else choice.kernel
    seconds = time.perf_counter() - start
    fit = choice.fit
    logger.info(
        "Kernel estimate: %s (Gaussian fit %.2f x %.2f px at %.0f deg, mismatch %.3f; bicubic %.3f) in %.2f s",
        choice.source, fit.sigma_major, fit.sigma_minor, math.degrees(fit.theta), fit.mismatch.rms,
        fit.bicubic.rms, seconds,
    )
    return KernelEstimate(kernel, fit.kernel, 0, "consistency fit", seconds, math.nan, choice.source, choice.mismatch.rms)


class _Estimation:
    def __init__(self, pixels: torch.Tensor, config: KernelGANConfig, reporter: Reporter) -> None:
        self.config = config
        self.reporter = reporter
        image = pixels.clamp(0, 1)
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        height, width = image.shape[-2:]
        image = image[..., : height - height % 2, : width - width % 2]
        self.image = image * 2.0 - 1.0  # the official networks work in [-1, 1]
        self.rows, self.cols = self.image.shape[-2:]
        crop = min(config.crop_size, self.rows, self.cols)
        self.crop = crop - crop % 2
        generator = torch.Generator().manual_seed(config.seed)
        self.G = LinearGenerator(config.generator_width)
        self.G.reset_parameters(generator)
        self.output_size = (self.crop - self.G.kernel_size) // ESTIMATED_FACTOR + 1
        if self.output_size < config.discriminator_kernel:
            raise InvalidParameterError(
                f"KernelGAN crop_size {config.crop_size} is too small for the discriminator; use at least 32."
            )
        self.D = PatchDiscriminator(
            3, config.discriminator_width, config.discriminator_layers, config.discriminator_kernel, config.discriminator_norm
        )
        self.D.reset_parameters(generator)
        betas = (config.beta1, 0.999)
        self.optimizer_G = torch.optim.Adam(self.G.parameters(), lr=config.learning_rate, betas=betas)
        self.optimizer_D = torch.optim.Adam(self.D.parameters(), lr=config.learning_rate, betas=betas)
        self.weights = ConstraintWeights(config)
        self.mask = boundary_mask(self.G.kernel_size)
        side = self.G.kernel_size
        wanted = side // 2 + 0.5 * (ESTIMATED_FACTOR - side % 2)
        self.wanted_centre = torch.tensor([wanted, wanted])
        self.rng = np.random.default_rng(config.seed)
        self._plan_crops()

    def _plan_crops(self) -> None:
        """Crop centres for every iteration, drawn where the image has structure: G's from a
        map made at the downscaled scale (nearest-enlarged), D's at the image's own scale."""
        small = resize_bicubic((self.image + 1) / 2, (self.rows // 2, self.cols // 2)).clamp(0, 1)
        small_map = gradient_map(small)
        small_map = small_map.repeat_interleave(2, 0).repeat_interleave(2, 1)[: self.rows, : self.cols]
        big_map = gradient_map((self.image + 1) / 2)
        count = self.config.iterations * self.config.batch_size
        self.g_centres = self.rng.choice(self.rows * self.cols, size=count, p=crop_probabilities(small_map, self.crop))
        self.d_centres = self.rng.choice(self.rows * self.cols, size=count, p=crop_probabilities(big_map, self.output_size))

    def _crop(self, centre: int, size: int) -> torch.Tensor:
        top, left = _top_left(centre, size, self.rows, self.cols)
        return self.image[..., top : top + size, left : left + size]

    def _crops(self, centres: np.ndarray, iteration: int, size: int) -> torch.Tensor:
        batch = self.config.batch_size
        return torch.cat([self._crop(int(c), size) for c in centres[iteration * batch : (iteration + 1) * batch]])

    def _kernel(self) -> torch.Tensor:
        kernel = self.G.kernel()
        return kernel / kernel.sum() if self.config.normalized_kernel else kernel

    def _gan_loss(self, prediction: torch.Tensor, real: bool) -> torch.Tensor:
        return torch.mean(torch.abs(prediction - (1.0 if real else 0.0)))

    def _bicubic_loss(self, g_input: torch.Tensor, g_output: torch.Tensor) -> torch.Tensor:
        """MSE between G's output and the bicubic x2 downscale of its input, aligned on the
        low-resolution pixel centres (G's kernel centre sits at 6.5, like bicubic's)."""
        downscaled = resize_bicubic(g_input, (self.crop // 2, self.crop // 2))
        size = g_output.shape[-1]
        offset = (downscaled.shape[-1] - size) // 2
        return F.mse_loss(g_output, downscaled[..., offset : offset + size, offset : offset + size])

    def _constraints(self, kernel: torch.Tensor) -> torch.Tensor:
        weights, config = self.weights, self.config
        total = config.lambda_sum_to_one * torch.abs(1.0 - kernel.sum())
        total = total + config.lambda_boundaries * torch.mean(torch.abs(kernel * self.mask))
        if weights.centralized:
            total = total + weights.centralized * F.mse_loss(centre_of_mass(kernel), self.wanted_centre)
        if weights.sparse:
            total = total + weights.sparse * torch.mean(torch.abs(kernel) ** 0.2)
        return total

    def _step(self, iteration: int) -> float:
        g_input = self._crops(self.g_centres, iteration, self.crop)
        d_real = self._crops(self.d_centres, iteration, self.output_size)
        d_real = d_real + torch.randn(d_real.shape) / 255.0

        # Generator: fool D, and keep the kernel a kernel.
        self.optimizer_G.zero_grad(set_to_none=True)
        kernel = self._kernel()
        g_output = self.G(g_input, kernel)
        loss_g = self._gan_loss(self.D(g_output), real=True)
        bicubic = self._bicubic_loss(g_input, g_output)
        total = loss_g + self.weights.bicubic * bicubic + self._constraints(kernel)
        total.backward()
        self.optimizer_G.step()

        # Discriminator: real patches of the image against G's (noisy, detached) patches.
        self.optimizer_D.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = self.G(g_input, self._kernel())
            fake = fake + torch.randn(fake.shape) / 255.0
        loss_d = 0.5 * (self._gan_loss(self.D(fake), real=False) + self._gan_loss(self.D(d_real), real=True))
        loss_d.backward()
        self.optimizer_D.step()
        return float(bicubic.detach())

    def _decay_learning_rates(self) -> None:
        for optimizer in (self.optimizer_G, self.optimizer_D):
            for group in optimizer.param_groups:
                group["lr"] /= self.config.lr_decay_factor

    def run(self) -> KernelEstimate:
        config = self.config
        start = time.perf_counter()
        stop_reason = "iterations"
        bicubic = math.nan
        iteration = 0
        self.G.train()
        self.D.train()
        for iteration in range(config.iterations):
            if iteration and iteration % config.lr_decay_every == 0:
                self._decay_learning_rates()
            bicubic = self._step(iteration)
            self.weights.update(iteration, bicubic)
            done = iteration + 1
            elapsed = time.perf_counter() - start
            if done % 10 == 0 or done == config.iterations:
                self.reporter.step(done, config.iterations, f"KernelGAN: iteration {done}/{config.iterations}")
            if (
                config.time_budget_s is not None
                and elapsed >= config.time_budget_s
                and done >= min(config.min_iterations, config.iterations)
                and done < config.iterations
            ):
                stop_reason = "time budget"
                break
        with torch.no_grad():
            raw = self._kernel().double().numpy()
        kernel = trim_kernel(significant_kernel(raw, config.keep_values))
        seconds = time.perf_counter() - start
        logger.info(
            "KernelGAN: %d iterations (%s) in %.1f s; kernel %dx%d", iteration + 1, stop_reason, seconds,
            kernel.shape[1], kernel.shape[0],
        )
        return KernelEstimate(kernel, raw, iteration + 1, stop_reason, seconds, bicubic)


__all__ = [
    "KernelEstimate",
    "KernelGANConfig",
    "LinearGenerator",
    "PatchDiscriminator",
    "analytic_x4_kernel",
    "estimate_kernel",
    "kernel_for_factor",
    "kernel_picture",
    "significant_kernel",
]
