"""Settings of a zero-shot super-resolution run, with CPU-friendly defaults.

Every field can be changed; :meth:`ZSSRConfig.validate` checks them all and raises
:class:`~restorekit.errors.InvalidParameterError` naming the field and its allowed range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from .kernelgan import KernelGANConfig
from .resize import NAMED_KERNELS, load_kernel

MAX_SCALE = 16.0
"""The largest total upscaling factor accepted."""

AUTO_KERNEL = "auto"
"""``ZSSRConfig.kernel`` value that estimates the kernel from the image (consistency fit or KernelGAN)."""


BICUBIC_KERNEL = "bicubic"

KERNEL_CHOICES: tuple[str, ...] = (BICUBIC_KERNEL, AUTO_KERNEL, *NAMED_KERNELS)
"""The kernel choices the node and the app offer (the CLI also takes a kernel file)."""


def kernel_setting(choice: str | None) -> Any:
    """The :attr:`ZSSRConfig.kernel` for a user's kernel choice: None for ``bicubic`` (or
    nothing), ``"auto"`` to estimate it, else a named kernel (``area``, ``opencv-cubic``) or a kernel
    file, loaded and normalized (:func:`~restorekit.zssr.resize.load_kernel`)."""
    name = str(choice or BICUBIC_KERNEL).strip()
    if name.lower() == BICUBIC_KERNEL:
        return None
    if name.lower() == AUTO_KERNEL:
        return AUTO_KERNEL
    return load_kernel(name)


GUARD_CHOICES: dict[str, dict[str, bool]] = {
    "on": {"bicubic_fallback": True, "transfer_check": True},
    "no-transfer-check": {"bicubic_fallback": True, "transfer_check": False},
    "off": {"bicubic_fallback": False, "transfer_check": False},
}
"""The guard choices of the app, ``restorekit zssr --guards`` and ``restorekit upscale --zssr-guards``, as
:class:`ZSSRConfig` fields: every guard; every guard but the transfer check (the kernel
check and the held-out strip stay); none (the network's result, always)."""


def guard_setting(choice: str | None) -> dict[str, bool]:
    """The :class:`ZSSRConfig` fields for a user's guard choice (``on`` when none is given).

    Raises:
        InvalidParameterError: ``choice`` is not one of :data:`GUARD_CHOICES`.
    """
    name = str(choice or "on").strip().lower()
    if name not in GUARD_CHOICES:
        raise InvalidParameterError(f"Zero-shot guards must be one of {', '.join(GUARD_CHOICES)}, got {choice!r}.")
    return dict(GUARD_CHOICES[name])


@dataclass(frozen=True)
class ZSSRConfig:
    """How ZSSR learns from the input image and how it infers the result.

    Budget (training stops at whichever comes first, in every stage):
        iterations: training iterations per stage. This is the deterministic control: the
            same seed, image and settings give the same output on the same machine.
        time_budget_s: wall-clock budget in seconds for each image (training and
            inference of all its stages together), or None. A time budget is *not* deterministic: the
            iteration it stops at depends on the machine's speed and load. ZSSR always
            trains at least one iteration and always finishes inference, so a very small
            budget is exceeded.
        min_learning_rate: training also stops once the learning rate falls below this.

    Training pairs (all drawn from the image itself):
        crop_size: side of the square high-resolution crops ("HR fathers"), in pixels.
        batch_size: crops per iteration.
        pyramid_levels, pyramid_min_scale: the image is also downscaled to this many
            smaller versions of itself (scales from 1 down to ``pyramid_min_scale``);
            a version is drawn with probability proportional to its pixel count.
        augment: train on the 8 rotations/flips of each pair.
        noise_std: Gaussian noise added to the low-resolution crops (0 for clean images;
            about 0.01 for real, mildly noisy photos).
        kernel: a 2-D blur kernel (array) describing one downscaling step, None for
            bicubic, or ``"auto"`` to estimate it from each image (``kernel_estimation.method``)
            (:mod:`restorekit.zssr.kernelgan`; an x2 kernel, composed analytically for x4
            stages). With a kernel every stage must be an integer factor (2 or 4 for
            ``"auto"``).
        kernel_estimation: the estimation settings used by ``kernel="auto"`` (its seed is
            this config's ``seed``).

    Network (8 conv layers of 64 channels, 3x3, ReLU; residual on the bicubic input):
        depth, width.
        init_variance, output_init_variance: weights start as N(0, variance / fan_in),
            He's 2 for the hidden layers and nearly 0 for the last, so training starts
            from the bicubic result (see :meth:`ZSSRNet.reset_parameters`).

    Optimisation (L1 loss, Adam):
        learning_rate: the initial Adam learning rate.
        lr_decay_factor: the learning rate is divided by this when progress stalls.
        eval_every: iterations between reconstruction-error measurements (the input is
            downscaled by the stage factor and reconstructed by the network).
        lr_check_every: iterations between checks of the learning-rate policy.
        lr_window: iterations of reconstruction errors the line is fitted to.
        lr_patience: minimum iterations at one learning rate before it may drop again.
        lr_change_ratio: the rate drops when the standard error of the fitted slope is
            larger than this times the fall per iteration (progress is lost in the noise).
        eval_max_pixels: pixel cap of the image regions used for the reconstruction error.

    Stages:
        max_stage_scale: large factors are reached in equal steps no larger than this
            (x4 as x2 twice). Each stage also learns from the previous stages' outputs.

    Inference:
        self_ensemble: run the network on the 8 rotations/flips and take the median.
        back_projection: make the result consistent with the input (iterative back-
            projection through the same downscaling kernel; skipped with ``kernel="auto"``,
            where it would deconvolve with every error of the estimated kernel).
        back_projection_iterations: the number of back-projection steps.
        tile_size: output tile side for inference (bounds memory; results are exact).
        bicubic_fallback: the guard. A strip of the stage input (``holdout_fraction`` of
            its longer side) is held out of the full-size training crops; after training, the network must
            rebuild that strip from its own downscale better than bicubic interpolation
            does (by ``guard_margin_db``). When it does not (a budget too small to learn,
            an image with nothing to learn from, a kernel that does not fit), the stage
            says so and falls back to bicubic (plus back-projection) instead of the
            network.
        holdout_fraction: share of the longer side held out for the guard (0 keeps the
            whole image for training and checks on it instead; images too small to
            spare the strip are checked the same way).
        guard_margin_db: how much better than bicubic the network must be on the strip.
        transfer_check: the scale-transfer guard (only with ``bicubic_fallback``). Before
            training, a network of the same kind learns from the image's own downscale
            (one stage factor smaller) and rebuilds the image itself from it (with the
            run's ``self_ensemble``), the step
            ZSSR then takes one scale up. When it does not beat bicubic there by
            ``transfer_margin_db`` (the image is not self-similar across scales as ZSSR
            assumes, or the kernel does not fit), every stage falls back to bicubic with
            a notice. The held-out strip cannot see this: it checks the network at the
            scale it learned. Images under 96 px are not checked.
        transfer_margin_db: how much better than the fallback (bicubic, plus back-
            projection where the run uses it) the transferred network must be.
        transfer_iterations_share: the check trains this share of ``iterations`` (and
            takes this share, relative to the main run, of a time budget).

    Execution:
        seed, device (auto/cpu/cuda/cuda:N), precision (auto/fp32/fp16/bf16; auto is
        bf16 autocast on CPUs with native bf16, and on CUDA GPUs that support it).
    """

    iterations: int = 600
    time_budget_s: float | None = None
    min_learning_rate: float = 1e-6

    crop_size: int = 64
    batch_size: int = 4
    pyramid_levels: int = 6
    pyramid_min_scale: float = 0.5
    augment: bool = True
    noise_std: float = 0.0
    kernel: Any = field(default=None, compare=False, repr=False)
    kernel_estimation: KernelGANConfig = field(default_factory=KernelGANConfig)

    depth: int = 8
    width: int = 64
    init_variance: float = 2.0
    output_init_variance: float = 1e-3

    learning_rate: float = 1e-3
    lr_decay_factor: float = 10.0
    eval_every: int = 10
    lr_check_every: int = 20
    lr_window: int = 100
    lr_patience: int = 100
    lr_change_ratio: float = 1.5
    eval_max_pixels: int = 32768

    max_stage_scale: float = 2.0

    self_ensemble: bool = True
    back_projection: bool = True
    back_projection_iterations: int = 10
    tile_size: int = 256
    bicubic_fallback: bool = True
    holdout_fraction: float = 0.2
    guard_margin_db: float = 0.0
    transfer_check: bool = True
    transfer_margin_db: float = 0.1
    transfer_iterations_share: float = 0.5

    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def replace(self, **changes: Any) -> ZSSRConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> ZSSRConfig:
        """Check every field; raise :class:`InvalidParameterError` naming the bad one."""
        _int_at_least("iterations", self.iterations, 1)
        if self.time_budget_s is not None:
            _number_in("time_budget_s", self.time_budget_s, 0.0, math.inf, low_open=True)
        _number_in("min_learning_rate", self.min_learning_rate, 0.0, math.inf)
        _int_at_least("crop_size", self.crop_size, 8)
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("pyramid_levels", self.pyramid_levels, 1)
        _number_in("pyramid_min_scale", self.pyramid_min_scale, 0.0, 1.0, low_open=True)
        _number_in("noise_std", self.noise_std, 0.0, 1.0)
        _int_at_least("depth", self.depth, 2)
        _int_at_least("width", self.width, 1)
        _number_in("init_variance", self.init_variance, 0.0, math.inf)
        _number_in("output_init_variance", self.output_init_variance, 0.0, math.inf)
        _number_in("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        _number_in("lr_decay_factor", self.lr_decay_factor, 1.0, math.inf, low_open=True)
        _int_at_least("eval_every", self.eval_every, 1)
        _int_at_least("lr_check_every", self.lr_check_every, 1)
        _int_at_least("lr_window", self.lr_window, 1)
        _int_at_least("lr_patience", self.lr_patience, 0)
        _number_in("lr_change_ratio", self.lr_change_ratio, 0.0, math.inf, low_open=True)
        _int_at_least("eval_max_pixels", self.eval_max_pixels, 64)
        _number_in("max_stage_scale", self.max_stage_scale, 1.0, MAX_SCALE, low_open=True)
        _int_at_least("back_projection_iterations", self.back_projection_iterations, 0)
        _int_at_least("tile_size", self.tile_size, 16)
        _int_at_least("seed", self.seed, 0)
        if self.lr_window < 3 * self.eval_every:
            raise InvalidParameterError(
                f"lr_window ({self.lr_window}) must span at least 3 reconstruction-error "
                f"measurements (3 x eval_every = {3 * self.eval_every}); raise lr_window or "
                "lower eval_every."
            )
        _number_in("holdout_fraction", self.holdout_fraction, 0.0, 0.5)
        _number_in("guard_margin_db", self.guard_margin_db, -math.inf, math.inf)
        _number_in("transfer_margin_db", self.transfer_margin_db, -math.inf, math.inf)
        _number_in("transfer_iterations_share", self.transfer_iterations_share, 0.0, 1.0, low_open=True)
        if isinstance(self.kernel, str):
            if self.kernel.strip().lower() != AUTO_KERNEL:
                raise InvalidParameterError(
                    f"ZSSR kernel must be a 2-D array, None (bicubic) or {AUTO_KERNEL!r} "
                    f"(estimated with KernelGAN), got {self.kernel!r}."
                )
            if not isinstance(self.kernel_estimation, KernelGANConfig):
                raise InvalidParameterError(
                    "ZSSR kernel_estimation must be a KernelGANConfig, got "
                    f"{type(self.kernel_estimation).__name__}."
                )
            self.kernel_estimation.validate()
        elif self.kernel is not None:
            from .resize import normalize_kernel

            normalize_kernel(self.kernel)
        return self

    @property
    def estimates_kernel(self) -> bool:
        """True when the kernel is estimated from each image (``kernel="auto"``)."""
        return isinstance(self.kernel, str) and self.kernel.strip().lower() == AUTO_KERNEL


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise InvalidParameterError(f"ZSSR {name} must be an integer >= {minimum}, got {value!r}.")


def _number_in(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False
) -> None:
    ok = _is_number(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and v <= high
    if not ok:
        left = "(" if low_open else "["
        right = "]" if math.isfinite(high) else ")"
        raise InvalidParameterError(
            f"ZSSR {name} must be a number in {left}{low:g}, {high:g}{right}, got {value!r}."
        )
