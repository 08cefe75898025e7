"""Training pairs from the image itself, the reconstruction probe and the learning-rate policy.

ZSSR learns the relation between the input image (an "HR father") and its own downscaled
copy (the "LR son"), then applies that relation to the input to get the output:

- :class:`PairSampler` draws random crops from the input (and from the outputs of earlier
  stages), at several scales with probability proportional to their size, downscales each
  by the stage factor, interpolates it back and augments the pair with rotations/flips;
- :class:`ReconstructionProbe` measures how well the network rebuilds fixed regions of the
  stage input from their downscaled copies (the paper's reconstruction error);
- :class:`LearningRatePolicy` fits a line to the recent reconstruction errors and lowers
  the learning rate when the fitted slope is lost in the noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import ZSSRConfig
from .geometry import DIHEDRAL_COUNT, dihedral
from .network import ZSSRNet
from .resize import Downscale, Size, resize_bicubic


def round_half_up(value: float) -> int:
    """Round to the nearest integer, halves up (not Python's banker's rounding)."""
    return math.floor(value + 0.5)


def son_size(father: Size, factor: float) -> Size:
    """The size of a father of size ``father`` downscaled by ``factor`` (at least 1x1)."""
    return (max(1, round_half_up(father[0] / factor)), max(1, round_half_up(father[1] / factor)))


def is_integer_factor(factor: float) -> bool:
    return abs(factor - round(factor)) < 1e-6


def training_crop(input_size: Size, factor: float, crop_size: int) -> int:
    """The side of the training crops for a stage: ``crop_size`` or the input's shorter side
    if that is smaller, rounded down to a multiple of an integer ``factor``."""
    side = min(crop_size, input_size[0], input_size[1])
    if is_integer_factor(factor):
        step = round(factor)
        side -= side % step
    return side


@dataclass(frozen=True)
class Holdout:
    """A strip at the end of the longer side of the stage input, kept out of training so
    the guard can check the network on pixels it never learned from.

    ``fraction`` of the side is held out (0: nothing); ``axis`` is -1 (columns) or -2
    (rows). Only the full-size stage input loses the strip: the smaller pyramid levels keep
    it, so small images lose little training data. The strip's content is thus seen at
    other scales (a mild leak); the exact pairs the guard checks are never trained on.
    """

    fraction: float = 0.0
    axis: int = -1

    @staticmethod
    def for_size(size: Size, fraction: float) -> Holdout:
        return Holdout(fraction, -1 if size[1] >= size[0] else -2)

    def kept(self, size: Size) -> Size:
        """The (height, width) of the part of an image of ``size`` that is trained on."""
        height, width = size
        if self.axis == -1:
            return height, width - self.held(width)
        return height - self.held(height), width

    def held(self, side: int) -> int:
        return math.ceil(side * self.fraction) if self.fraction > 0 else 0

    def strip(self, image: torch.Tensor) -> torch.Tensor:
        """The held-out strip of (B, C, H, W) ``image`` (a view)."""
        side = image.shape[self.axis]
        start = side - self.held(side)
        return image[..., :, start:] if self.axis == -1 else image[..., start:, :]


class PairSampler:
    """Random (interpolated son, father) training batches drawn from an image pyramid.

    Args:
        sources: (1, C, H, W) float32 images to learn from (the input, then the outputs
            of earlier stages), on the training device.
        factor: the stage's upscaling factor.
        crop: side of the square father crops (at most the smallest source side).
        downscale: the stage's downscaling (bicubic or a blur kernel).
        config: pyramid, augmentation and noise settings.
        rng: NumPy generator for the crop, scale and transform draws.
        generator: torch CPU generator for the noise.
        holdout: the strip of the last source (at full size) crops are never drawn from.
    """

    def __init__(
        self,
        sources: list[torch.Tensor],
        factor: float,
        crop: int,
        downscale: Downscale,
        config: ZSSRConfig,
        rng: np.random.Generator,
        generator: torch.Generator,
        holdout: Holdout | None = None,
    ) -> None:
        holdout = holdout or Holdout()
        self.crop = crop
        self.son = son_size((crop, crop), factor)
        self.downscale = downscale
        self.augment = config.augment
        self.noise_std = config.noise_std
        self.rng = rng
        self.generator = generator
        self.levels: list[torch.Tensor] = []
        self.kept: list[Size] = []
        scales = np.linspace(1.0, config.pyramid_min_scale, config.pyramid_levels)
        with torch.no_grad():
            for number, source in enumerate(sources):
                height, width = source.shape[-2:]
                for scale in scales:
                    size = (round_half_up(height * scale), round_half_up(width * scale))
                    held = number == len(sources) - 1 and scale == 1.0
                    kept = holdout.kept(size) if held else size
                    if min(kept) < crop:
                        continue
                    self.levels.append(source if scale == 1.0 else resize_bicubic(source, size).clamp_(0, 1))
                    self.kept.append(kept)
        if not self.levels:
            raise ValueError(f"no source is at least {crop}x{crop}")  # guarded by the caller
        areas = np.array([h * w for h, w in self.kept], dtype=np.float64)
        self.probabilities = areas / areas.sum()

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``(inputs, targets)``, both (B, C, crop, crop) float32: the bicubic
        interpolation of the downscaled crops, and the crops themselves."""
        crop = self.crop
        picks = self.rng.choice(len(self.levels), size=batch_size, p=self.probabilities)
        fathers = []
        for index in picks:
            level = self.levels[int(index)]
            height, width = self.kept[int(index)]
            top = int(self.rng.integers(0, height - crop + 1))
            left = int(self.rng.integers(0, width - crop + 1))
            fathers.append(level[..., top : top + crop, left : left + crop])
        transforms = (
            self.rng.integers(0, DIHEDRAL_COUNT, size=batch_size)
            if self.augment
            else np.zeros(batch_size, dtype=np.int64)
        )
        with torch.no_grad():
            targets = torch.cat(fathers)
            sons = self.downscale(targets, self.son)
            if self.noise_std > 0:
                noise = torch.randn(sons.shape, generator=self.generator) * self.noise_std
                sons = sons + noise.to(sons.device)
            inputs = resize_bicubic(sons.clamp(0, 1), (crop, crop))
            if self.augment:
                # The pair is transformed together (after downscaling), so a non-symmetric
                # blur kernel stays consistent with the transformed inputs seen at test time.
                inputs = torch.cat([dihedral(inputs[i : i + 1], int(k)) for i, k in enumerate(transforms)])
                targets = torch.cat([dihedral(targets[i : i + 1], int(k)) for i, k in enumerate(transforms)])
        return inputs, targets


def probe_regions(size: Size, factor: float, max_pixels: int) -> list[tuple[int, int, int, int]]:
    """Fixed regions ``(top, left, height, width)`` of an image of ``size`` whose
    reconstruction error is tracked: the whole image if it has at most ``max_pixels``
    pixels, else a grid of equal squares spread over it. Sides are multiples of an
    integer ``factor``."""
    height, width = size
    step = round(factor) if is_integer_factor(factor) else 1

    def fit(side: int) -> int:
        return max(step, side - side % step)

    if height * width <= max_pixels:
        return [(0, 0, fit(height), fit(width))]
    side = fit(min(height, width, max(16, math.isqrt(max_pixels // 4))))
    count = max(1, max_pixels // (side * side))
    rows = max(1, min(math.isqrt(count), height // side))
    cols = max(1, min(count // rows, width // side))
    tops = np.linspace(0, height - side, rows).round().astype(int)
    lefts = np.linspace(0, width - side, cols).round().astype(int)
    return [(int(t), int(left), side, side) for t in tops for left in lefts]


class ReconstructionProbe:
    """Reconstruction error of fixed regions of the stage input from their own downscale.

    Also measures how fast the network runs forward (seconds per output pixel), which the
    time budget uses to reserve time for inference.
    """

    def __init__(
        self,
        image: torch.Tensor,
        factor: float,
        downscale: Downscale,
        max_pixels: int,
        memory_format: torch.memory_format,
    ) -> None:
        regions = probe_regions(tuple(image.shape[-2:]), factor, max_pixels)
        with torch.no_grad():
            fathers = torch.cat([image[..., t : t + h, x : x + w] for t, x, h, w in regions])
            sons = downscale(fathers, son_size(tuple(fathers.shape[-2:]), factor)).clamp(0, 1)
            self.inputs = resize_bicubic(sons, tuple(fathers.shape[-2:])).contiguous(memory_format=memory_format)
        self.targets = fathers
        self.pixels = int(fathers.shape[0] * fathers.shape[-2] * fathers.shape[-1])
        self.bicubic_mse = float(torch.mean((self.inputs.clamp(0, 1) - fathers) ** 2))
        self.seconds_per_pixel: float | None = None

    def measure(self, net: ZSSRNet, autocast: Callable[[], AbstractContextManager[object]]) -> float:
        """Mean squared reconstruction error of the network (outputs clamped to [0, 1]).

        The first call runs the network once more, untimed, so one-off costs (kernel
        selection and JIT compilation for these shapes) do not inflate the speed estimate.
        """
        was_training = net.training
        net.eval()
        with torch.no_grad(), autocast():
            if self.seconds_per_pixel is None:
                net(self.inputs)
            start = time.perf_counter()
            output = net(self.inputs)
            elapsed = time.perf_counter() - start
        error = float(torch.mean((output.float().clamp(0, 1) - self.targets) ** 2))
        per_pixel = elapsed / self.pixels
        if self.seconds_per_pixel is None or per_pixel < self.seconds_per_pixel:
            self.seconds_per_pixel = per_pixel
        net.train(was_training)
        return error


def fit_line(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of ``ys`` against ``xs`` and its standard error (>= 3 points)."""
    x = xs.astype(np.float64)
    y = ys.astype(np.float64)
    x_centred = x - x.mean()
    spread = float(np.sum(x_centred**2))
    if len(x) < 3 or spread == 0.0:
        return 0.0, math.inf
    slope = float(np.sum(x_centred * (y - y.mean())) / spread)
    residuals = y - (y.mean() + slope * x_centred)
    variance = float(np.sum(residuals**2)) / (len(x) - 2)
    return slope, math.sqrt(variance / spread)


@dataclass
class LearningRatePolicy:
    """The ZSSR learning-rate schedule.

    Every ``lr_check_every`` iterations (and at least ``lr_patience`` iterations after the
    last change) a line is fitted to the reconstruction errors of the last ``lr_window``
    iterations. When the standard error of its slope is larger than ``lr_change_ratio``
    times the fall per iteration (``-slope``), the error no longer falls clearly and the
    learning rate is divided by ``lr_decay_factor``.
    """

    config: ZSSRConfig
    learning_rate: float = 0.0
    decays: int = 0
    last_change: int = 0
    changes: list[int] = field(default_factory=list)
    history: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Back to the initial learning rate (a new stage)."""
        self.learning_rate = self.config.learning_rate
        self.decays = 0
        self.last_change = 0
        self.changes = []
        self.history = []

    def record(self, iteration: int, error: float) -> None:
        self.history.append((iteration, error))

    @property
    def exhausted(self) -> bool:
        """True once the learning rate fell below ``min_learning_rate`` (training ends)."""
        return self.learning_rate < self.config.min_learning_rate * (1.0 - 1e-9)

    def _decay(self, iteration: int) -> None:
        self.decays += 1
        self.learning_rate = self.config.learning_rate / self.config.lr_decay_factor**self.decays
        self.last_change = iteration
        self.changes.append(iteration)

    def update(self, iteration: int) -> bool:
        """Apply the policy after ``iteration`` (0-based); True when the rate changed."""
        config = self.config
        if (iteration + 1) % config.lr_check_every or iteration - self.last_change < config.lr_patience:
            return False
        start = iteration - config.lr_window
        points = [(i, e) for i, e in self.history if i > start and i >= self.last_change]
        if len(points) < 3:
            return False
        xs, ys = (np.array(column) for column in zip(*points, strict=True))
        slope, standard_error = fit_line(xs, ys)
        if -config.lr_change_ratio * slope < standard_error:
            self._decay(iteration)
            return True
        return False
