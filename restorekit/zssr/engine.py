"""Running ZSSR: stages, the training loop, the time budget, progress and the public API."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch

from ..device import ExecutionPlan, plan_execution
from ..errors import InvalidParameterError
from ..imageio import DecodedImage, check_pixel_count
from ..layout import check_image
from ..progress import NOTICE_RECORD, CancelCheck, ProgressCallback, Reporter
from .config import MAX_SCALE, ZSSRConfig
from .consistency import (
    MIN_DECISION_SIDE,
    RESAMPLER_EXPLAINS,
    TOO_NARROW_SIGNED,
    KernelCheck,
    check_kernel,
)
from .geometry import DIHEDRAL_COUNT
from .inference import back_project, ensemble_forward
from .kernelgan import MIN_IMAGE_SIDE, KernelEstimate, estimate_kernel, kernel_for_factor
from .network import ZSSRNet
from .resize import Downscale, Size, make_downscaler, resize_bicubic
from .training import (
    Holdout,
    LearningRatePolicy,
    PairSampler,
    ReconstructionProbe,
    is_integer_factor,
    round_half_up,
    son_size,
    training_crop,
)

logger = logging.getLogger(__name__)

MIN_SON_SIDE = 4
"""The downscaled copy of the input must keep at least this many pixels per side."""

KERNEL_CHECK = "kernel check"
TRANSFER_CHECK = "transfer check"
"""``StageReport.stop_reason`` of the guards that rule the network out before training."""


@dataclass(frozen=True)
class StagePlan:
    """One upscaling step: ``input_size`` -> ``output_size`` (both ``(height, width)``)."""

    index: int
    count: int
    factor: float
    input_size: Size
    output_size: Size


@dataclass
class StageReport:
    """What one stage did (for logs, benchmarks and the CLI summary).

    ``reconstruction_psnr`` is how well the trained network rebuilds the stage input from
    its own downscaled copy; ``bicubic_reconstruction_psnr`` is the same for plain bicubic
    interpolation. Both are measured on a strip of the input held out of training
    (``held_out`` True) unless the image is too small to spare it. Their difference is a
    ground-truth-free sign of what was learned. When the network does not beat bicubic
    there by ``guard_margin_db`` (the guard), the stage falls back to bicubic
    interpolation, ``network_used`` is False and ``notice`` says why. ``back_projected``:
    whether the stage's output (network or fallback) was made consistent with its input.
    """

    index: int
    factor: float
    input_size: Size
    output_size: Size
    iterations: int = 0
    stop_reason: str = ""
    learning_rate: float = 0.0
    lr_changes: list[int] = field(default_factory=list)
    loss: float = math.nan
    reconstruction_psnr: float = math.nan
    bicubic_reconstruction_psnr: float = math.nan
    network_used: bool = True
    held_out: bool = False
    notice: str = ""
    back_projected: bool = False
    train_seconds: float = 0.0
    inference_seconds: float = 0.0

    @property
    def guard_gain_db(self) -> float:
        """How much better than bicubic the network rebuilt the held-out strip (dB)."""
        return self.reconstruction_psnr - self.bicubic_reconstruction_psnr


@dataclass(frozen=True)
class TransferCheck:
    """The scale-transfer guard on one image (:func:`transfer_check`).

    A network trained only on the image's downscale (one stage factor smaller) rebuilt the
    image itself: ``network_psnr`` dB against the image, where the fallback (bicubic, plus
    back-projection where the run uses it) reached ``fallback_psnr`` dB. ZSSR's upscale is
    the same step one scale up, so a network that does not gain here is unlikely to gain there.
    """

    network_psnr: float
    fallback_psnr: float
    margin_db: float
    iterations: int
    seconds: float

    @property
    def gain_db(self) -> float:
        return self.network_psnr - self.fallback_psnr

    @property
    def passed(self) -> bool:
        return self.gain_db > self.margin_db


@dataclass
class ZSSRResult:
    """The output (1, C, H*s, W*s) float32 in [0, 1] and a report per image and stage;
    with ``kernel="auto"`` also the estimated kernel of each image, and the scale-transfer
    check of each image it ran on."""

    output: torch.Tensor
    stages: list[StageReport]
    execution: str
    seconds: float
    kernels: list[KernelEstimate] = field(default_factory=list)
    transfer_checks: list[TransferCheck] = field(default_factory=list)

    @property
    def notices(self) -> list[str]:
        """What the user should be told (guard fallbacks), one line each."""
        return [stage.notice for stage in self.stages if stage.notice]

    @property
    def iterations(self) -> int:
        return sum(stage.iterations for stage in self.stages)


def _psnr(mse: float) -> float:
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


def plan_stages(size: Size, scale: float, max_stage_scale: float) -> list[StagePlan]:
    """Split ``scale`` into the fewest equal steps of at most ``max_stage_scale``.

    Intermediate sizes are ``round(size * step**k)``; the last is ``round(size * scale)``
    (halves rounded up).
    """
    count = max(1, math.ceil(math.log(scale) / math.log(max_stage_scale) - 1e-9))
    step = scale ** (1.0 / count)
    if is_integer_factor(step):
        step = float(round(step))
    height, width = size
    sizes = [(height, width)]
    for k in range(1, count):
        sizes.append((round_half_up(height * step**k), round_half_up(width * step**k)))
    sizes.append((round_half_up(height * scale), round_half_up(width * scale)))
    return [
        StagePlan(index=k, count=count, factor=step, input_size=sizes[k], output_size=sizes[k + 1])
        for k in range(count)
    ]


def check_scale(scale: object) -> float:
    """Validate the total upscaling factor (a number in (1, 16])."""
    ok = isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool)
    value = float(scale) if ok else math.nan  # type: ignore[arg-type]
    if not (math.isfinite(value) and 1.0 < value <= MAX_SCALE):
        raise InvalidParameterError(
            f"ZSSR scale must be a number greater than 1 and at most {MAX_SCALE:g}, got {scale!r}."
        )
    return value


def _check_pixels(pixels: object) -> torch.Tensor:
    if not isinstance(pixels, torch.Tensor):
        raise InvalidParameterError(
            f"ZSSR expects a torch tensor of shape (B, C, H, W), got {type(pixels).__name__}."
        )
    check_image(pixels, what="ZSSR's input")
    if not pixels.is_floating_point():
        raise InvalidParameterError(
            f"ZSSR expects float pixels in [0, 1], got {pixels.dtype}; divide by 255 or 65535."
        )
    if not bool(torch.isfinite(pixels).all()):
        raise InvalidParameterError("The image contains NaN or infinite values.")
    return pixels


def _check_size(size: Size, stages: list[StagePlan]) -> None:
    height, width = size
    needed = max(8, math.ceil(MIN_SON_SIDE * stages[0].factor - 1e-9))
    if min(height, width) < needed:
        raise InvalidParameterError(
            f"The image is {width}x{height}; ZSSR x{stages[0].factor:g} steps need at least "
            f"{needed} pixels per side, because it learns from a downscaled copy of the image. "
            "Use plain interpolation for images this small."
        )
    out_height, out_width = stages[-1].output_size
    check_pixel_count(out_width, out_height, None, "The ZSSR output")


class TimeBudget:
    """Splits a wall-clock budget between the stages' training, keeping time for inference.

    The forward speed measured by the reconstruction probe (seconds per pixel) predicts the
    inference time of this and every later stage; what is left is shared equally by the
    stages' training.
    """

    def __init__(self, seconds: float | None, stages: list[StagePlan], passes: int) -> None:
        self.seconds = seconds
        self.stages = stages
        self.passes = passes
        self.start = time.perf_counter()
        self.seconds_per_pixel: float | None = None

    def inference_estimate(self, from_stage: int) -> float:
        if self.seconds_per_pixel is None:
            return 0.0
        pixels = sum(s.output_size[0] * s.output_size[1] for s in self.stages[from_stage:])
        # +15%: tile margins, the median and back-projection.
        return 1.15 * self.passes * pixels * self.seconds_per_pixel

    def training_allowance(self, stage: int, stage_start: float) -> float:
        """Seconds stage ``stage`` (started at ``stage_start``, absolute) may train."""
        if self.seconds is None:
            return math.inf
        remaining = self.seconds - (stage_start - self.start)
        stages_left = len(self.stages) - stage
        return max(0.0, (remaining - self.inference_estimate(stage)) / stages_left)


class _Progress:
    """Maps training iterations and inference tiles onto one ``(done, total)`` count.

    The unit is one training iteration. A stage's inference counts as the iterations it
    costs about as much as (a training iteration is about three network passes over the
    batch's pixels; inference is one pass per transform over the output). When a time
    budget is set, each stage's iteration count is re-estimated from the time used so far,
    so the total may change while the job runs.
    """

    def __init__(self, reporter: Reporter, stages: list[StagePlan], config: ZSSRConfig, passes: int) -> None:
        self.reporter = reporter
        self.iterations = [config.iterations] * len(stages)
        self.done_iterations = [0] * len(stages)
        self.done_inference = [0] * len(stages)
        crop_pixels = config.batch_size * config.crop_size**2
        self.inference = [
            max(1, round(passes * s.output_size[0] * s.output_size[1] / (3 * crop_pixels))) for s in stages
        ]

    def _emit(self, message: str) -> None:
        done = sum(self.done_iterations) + sum(self.done_inference)
        total = sum(self.iterations) + sum(self.inference)
        self.reporter.step(done, total, message)

    def training(self, stage: int, iteration: int, estimate: int, message: str) -> None:
        self.done_iterations[stage] = iteration
        for k in range(stage, len(self.iterations)):
            self.iterations[k] = max(estimate, iteration) if k == stage else max(estimate, 1)
        self._emit(message)

    def finish_training(self, stage: int, iteration: int) -> None:
        self.done_iterations[stage] = iteration
        self.iterations[stage] = iteration

    def inference_tile(self, stage: int, tile: int, tiles: int, message: str) -> None:
        self.done_inference[stage] = round(self.inference[stage] * tile / tiles)
        self._emit(message)


def stage_downscaler(config: ZSSRConfig, factor: float, estimated: np.ndarray | None = None) -> Downscale:
    """The downscaling of one stage: bicubic, the user's kernel, or the kernel estimated
    for this image (an x2 kernel: itself for x2 steps, composed analytically for x4)."""
    if not config.estimates_kernel:
        return make_downscaler(config.kernel, factor)
    step = round(factor)
    if abs(factor - step) > 1e-6 or step not in (2, 4):
        raise InvalidParameterError(
            f"An estimated kernel (kernel 'auto') serves x2 and x4 stages, but this stage is "
            f"x{factor:.4g}. Use a scale of 2, 4, 8 or 16, or give a kernel file."
        )
    if estimated is None:  # validation only: any x2 kernel shows the factor works
        return make_downscaler(kernel_for_factor(np.ones((2, 2)), step), step)
    return make_downscaler(kernel_for_factor(estimated, step), step)


def guard_holdout(stage: StagePlan, config: ZSSRConfig) -> Holdout:
    """The strip of the stage input held out of training for the guard, or no strip when
    the guard is off or the image cannot spare one (the check then uses the whole image)."""
    if not config.bicubic_fallback or config.holdout_fraction <= 0:
        return Holdout()
    holdout = Holdout.for_size(stage.input_size, config.holdout_fraction)
    strip = holdout.held(max(stage.input_size))
    kept = holdout.kept(stage.input_size)
    if strip < max(8, 4 * math.ceil(stage.factor)) or min(kept) < 16:
        return Holdout()
    return holdout


def _trusts_kernel(config: ZSSRConfig, exact_kernel: bool) -> bool:
    """Whether back-projection may run through the run's kernel: bicubic or a kernel the user
    gave, or an estimate that is a resizer's exact kernel (``exact_kernel``: at the image's
    own scale only where it explains the image, see
    :attr:`~restorekit.zssr.kernelgan.KernelEstimate.back_projectable`); not through a fitted
    or KernelGAN kernel, whose every error it would deconvolve."""
    return not config.estimates_kernel or exact_kernel


def back_projects(config: ZSSRConfig, exact_kernel: bool, check: KernelCheck | None) -> bool:
    """Whether a run back-projects what it returns, the network's output or the fallback.

    Only through a kernel it trusts (:func:`_trusts_kernel`), and not through one whose
    downscale is blurrier than the image (``check.wider``): back-projection through a kernel
    wider than the image is sharpening too (measured: -1.8 dB on an OpenCV-bicubic photo when
    the guard fell back to bicubic + back-projection)."""
    if not (config.back_projection and config.back_projection_iterations):
        return False
    return _trusts_kernel(config, exact_kernel) and not (check is not None and check.wider)


def fallback_name(back_projected: bool) -> str:
    """What a stage returns without its network, as the notices name it (``back_projected``:
    the run's :func:`back_projects`)."""
    return "bicubic with back-projection" if back_projected else "bicubic"


def _log_notice(notice: str) -> None:
    """Log a stage's notice as a warning, marked as repeating what the result carries
    (:data:`~restorekit.progress.NOTICE_RECORD`: the CLI prints the result's notices itself)."""
    logger.warning("%s", notice, extra={NOTICE_RECORD: True})


class _Run:
    """One image through every stage (training state carries over between stages)."""

    def __init__(
        self,
        image: torch.Tensor,
        scale: float,
        config: ZSSRConfig,
        reporter: Reporter,
        kernel: np.ndarray | None = None,
        check: KernelCheck | None = None,
        skip: tuple[str, str] | None = None,
        trusted_estimate: bool = False,
        advice: str = "",
    ) -> None:
        self.config = config
        # (stop reason, notice) of a guard that ruled the network out before training.
        self.skip = skip
        # What the user is told when the first stage's network is used (narrow_kernel_advice).
        self.advice = advice
        # trusted_estimate: the run may back-project through an estimated kernel (_trusts_kernel).
        # One decision for every stage's output, network or fallback: never after the kernel
        # check refused the kernel.
        self.back_project = back_projects(config, trusted_estimate, check) and not (skip is not None and skip[0] == KERNEL_CHECK)
        self.plan: ExecutionPlan = plan_execution(config.device, config.precision)
        self.image = image.to(self.plan.device, torch.float32).clamp(0, 1)
        self.stages = plan_stages(tuple(self.image.shape[-2:]), scale, config.max_stage_scale)
        _check_size(tuple(self.image.shape[-2:]), self.stages)
        self.downscalers = [stage_downscaler(config, s.factor, kernel) for s in self.stages]
        self.transforms = list(range(DIHEDRAL_COUNT)) if config.self_ensemble else [0]
        self.budget = TimeBudget(config.time_budget_s, self.stages, len(self.transforms))
        self.progress = _Progress(reporter, self.stages, config, len(self.transforms))
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.net = ZSSRNet(self.image.shape[1], config.width, config.depth)
        self.net.reset_parameters(self.generator, config.init_variance, config.output_init_variance)
        self.net.to(self.plan.device, memory_format=self.plan.memory_format)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)
        self.scaler = torch.amp.GradScaler(self.plan.device.type, enabled=self.plan.dtype == torch.float16)
        self.policy = LearningRatePolicy(config)

    def autocast(self) -> AbstractContextManager[object]:
        if self.plan.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.plan.device.type, dtype=self.plan.dtype)

    def run(self) -> list[StageReport]:
        sources = [self.image]
        reports: list[StageReport] = []
        current = self.image
        for stage in self.stages:
            report = StageReport(stage.index, stage.factor, stage.input_size, stage.output_size)
            self._train(stage, sources, report)
            current = self._infer(stage, current, report)
            sources.append(current)
            reports.append(report)
            logger.info(
                "ZSSR stage %d/%d x%.3g: %d iterations (%s), reconstruction %.2f dB vs "
                "bicubic %.2f dB, %.1f s training, %.1f s inference",
                stage.index + 1, stage.count, stage.factor, report.iterations,
                report.stop_reason, report.reconstruction_psnr,
                report.bicubic_reconstruction_psnr, report.train_seconds,
                report.inference_seconds,
            )
        self.output = current
        return reports

    # ------------------------------------------------------------------ training

    def _train(self, stage: StagePlan, sources: list[torch.Tensor], report: StageReport) -> None:
        config = self.config
        if self.skip:  # a guard ruled the network out: no training, bicubic for every stage
            self.progress.finish_training(stage.index, 0)
            report.stop_reason, notice = self.skip
            report.network_used = False
            report.notice = f"ZSSR stage {stage.index + 1}/{stage.count}: {notice}"
            if stage.index == 0:
                _log_notice(report.notice)
            return
        downscale = self.downscalers[stage.index]
        holdout = guard_holdout(stage, config)
        report.held_out = holdout.fraction > 0
        crop = training_crop(holdout.kept(stage.input_size), stage.factor, config.crop_size)
        sampler = PairSampler(sources, stage.factor, crop, downscale, config, self.rng, self.generator, holdout)
        probe = ReconstructionProbe(
            holdout.strip(sources[-1]) if report.held_out else sources[-1],
            stage.factor, downscale, config.eval_max_pixels, self.plan.memory_format,
        )
        report.bicubic_reconstruction_psnr = _psnr(probe.bicubic_mse)
        policy = self.policy
        policy.restart()
        self._set_learning_rate(policy.learning_rate)
        stage_start = time.perf_counter()
        allowance = self.budget.training_allowance(stage.index, stage_start)
        smoothed = math.nan
        error = math.nan
        iteration = 0
        stop_reason = "iterations"
        self.net.train()
        memory_format = self.plan.memory_format
        for iteration in range(config.iterations):
            inputs, targets = sampler.sample(config.batch_size)
            inputs = inputs.contiguous(memory_format=memory_format)
            targets = targets.contiguous(memory_format=memory_format)
            with self.autocast():
                predicted = self.net(inputs)
            loss = torch.mean(torch.abs(predicted.float() - targets))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            value = float(loss.detach())
            smoothed = value if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * value

            if iteration % config.eval_every == 0:
                error = probe.measure(self.net, self.autocast)
                policy.record(iteration, error)
                self.budget.seconds_per_pixel = probe.seconds_per_pixel
                allowance = self.budget.training_allowance(stage.index, stage_start)
            elapsed = time.perf_counter() - stage_start
            if policy.update(iteration):
                self._set_learning_rate(policy.learning_rate)
                logger.debug("ZSSR iteration %d: learning rate -> %.1e", iteration, policy.learning_rate)

            estimate = config.iterations
            if math.isfinite(allowance) and elapsed > 0:
                estimate = min(config.iterations, max(iteration + 1, round((iteration + 1) * allowance / elapsed)))
            self.progress.training(
                stage.index,
                iteration + 1,
                estimate,
                f"ZSSR stage {stage.index + 1}/{stage.count} x{stage.factor:.3g} training: "
                f"iteration {iteration + 1}, loss {smoothed:.4f}, lr {policy.learning_rate:.0e}",
            )
            if policy.exhausted:
                stop_reason = "learning rate"
                break
            if elapsed >= allowance:
                stop_reason = "time budget"
                break
        trained = iteration + 1
        if (trained - 1) % config.eval_every:
            error = probe.measure(self.net, self.autocast)
        self.progress.finish_training(stage.index, trained)
        report.iterations = trained
        report.stop_reason = stop_reason
        report.learning_rate = policy.learning_rate
        report.lr_changes = list(policy.changes)
        report.loss = smoothed
        report.reconstruction_psnr = _psnr(error)
        passed = report.guard_gain_db > config.guard_margin_db
        report.network_used = passed or not config.bicubic_fallback
        if report.network_used and self.advice and stage.index == 0:
            report.notice = f"ZSSR stage {stage.index + 1}/{stage.count}: {self.advice}"
            _log_notice(report.notice)
        if not report.network_used:
            where = "a held-out strip of the image" if report.held_out else "the image"
            report.notice = (
                f"ZSSR stage {stage.index + 1}/{stage.count}: after {trained} iterations the network "
                f"rebuilds {where} from its own downscale no better than bicubic does "
                f"({report.reconstruction_psnr:.2f} vs {report.bicubic_reconstruction_psnr:.2f} dB), "
                f"so {fallback_name(self.back_project)} is used for this stage. Give it more iterations or time, or another kernel."
            )
            _log_notice(report.notice)
        report.train_seconds = time.perf_counter() - stage_start

    def _set_learning_rate(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    # ------------------------------------------------------------------ inference

    def _infer(self, stage: StagePlan, current: torch.Tensor, report: StageReport) -> torch.Tensor:
        config = self.config
        start = time.perf_counter()
        interpolated = resize_bicubic(current, stage.output_size)
        label = f"ZSSR stage {stage.index + 1}/{stage.count} x{stage.factor:.3g} inference"

        def on_tile(done: int, total: int) -> None:
            self.progress.inference_tile(stage.index, done, total, f"{label}: tile {done}/{total}")

        if report.network_used:
            output = ensemble_forward(
                self.net,
                interpolated,
                transforms=self.transforms,
                tile=config.tile_size,
                memory_format=self.plan.memory_format,
                autocast=self.autocast,
                on_tile=on_tile,
            )
        else:
            output = interpolated.clamp(0, 1)
            on_tile(1, 1)
        output = self._back_project(stage, output, current)
        report.back_projected = self.back_project
        report.inference_seconds = time.perf_counter() - start
        return output

    def _back_project(self, stage: StagePlan, output: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """``output`` made consistent with ``current`` where the run back-projects.

        Back-projection through an estimated kernel deconvolves with every error of the
        estimate (measured: -10 dB with a kernel too wide for the image), so it only runs
        through bicubic, a kernel the user gave or a resizer's kernel that explains the image."""
        if not self.back_project:
            return output
        return back_project(output, current, self.downscalers[stage.index], self.config.back_projection_iterations)

    def fallback_output(self, stage: StagePlan, current: torch.Tensor) -> torch.Tensor:
        """What a stage returns without its network: bicubic, back-projected where the run does."""
        return self._back_project(stage, resize_bicubic(current, stage.output_size).clamp(0, 1), current)


def zssr_upscale_with_report(
    pixels: torch.Tensor,
    scale: float,
    config: ZSSRConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> ZSSRResult:
    """:func:`zssr_upscale`, also returning what each stage did (:class:`ZSSRResult`)."""
    config = (config or ZSSRConfig()).validate()
    scale = check_scale(scale)
    pixels = _check_pixels(pixels)
    # Every check that can fail comes before any work (and before the first cancel check).
    stages = plan_stages(tuple(pixels.shape[-2:]), scale, config.max_stage_scale)
    _check_size(tuple(pixels.shape[-2:]), stages)
    for stage in stages:
        stage_downscaler(config, stage.factor)
    if config.estimates_kernel and min(pixels.shape[-2:]) < MIN_IMAGE_SIDE:
        height, width = pixels.shape[-2:]
        raise InvalidParameterError(
            f"The image is {width}x{height}; estimating its kernel (kernel 'auto') needs at "
            f"least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels. Use the bicubic kernel or a kernel file."
        )
    plan_execution(config.device, config.precision)
    reporter = Reporter.of(progress, cancel)
    reporter.check()
    start = time.perf_counter()
    outputs: list[torch.Tensor] = []
    reports: list[StageReport] = []
    kernels: list[KernelEstimate] = []
    transfers: list[TransferCheck] = []
    execution = ""
    count = pixels.shape[0]
    # Callers may run under torch.inference_mode (ComfyUI runs every node so): training needs
    # autograd, and tensors made in inference mode cannot be saved for backward, so copy.
    with torch.inference_mode(False), torch.enable_grad():
        pixels = pixels.clone()
        for index in range(count):
            image_reporter = reporter.stage(index, count) if count > 1 else reporter
            image = pixels[index : index + 1]
            # exact_kernel: back-projection may run through the estimate one scale down (the
            # transfer check makes that downscale with it); back_projects: at the image's scale too.
            run_config, kernel, exact_kernel, back_projects = config, None, False, False
            if config.estimates_kernel:
                estimate, run_config = _estimate(image, config, _part(image_reporter, 0.0, 0.25))
                kernels.append(estimate)
                kernel, exact_kernel, back_projects = estimate.kernel, estimate.is_resampler, estimate.back_projectable
                if estimate.is_bicubic:  # exactly the bicubic-kernel run (back-projection included)
                    run_config, kernel = run_config.replace(kernel=None), None
                image_reporter = _part(image_reporter, 0.25, 1.0)
            check, notice = kernel_check(image, run_config, stages, kernels[-1] if config.estimates_kernel else None)
            skip = (KERNEL_CHECK, notice) if notice else None
            advice = narrow_kernel_advice(check, config, run_config.kernel is None and kernel is None)
            if exact_kernel and not back_projects and not notice:  # the guard is off: say it here
                logger.info(
                    "ZSSR: the %s kernel explains this image poorly across scales (mismatch %.3f), so the "
                    "result is not back-projected through it", kernels[-1].source, kernels[-1].mismatch,
                )
            if skip is None and transfer_applies(image, run_config, stages[0]):
                share = run_config.transfer_iterations_share / (1.0 + run_config.transfer_iterations_share)
                transfer = transfer_check(
                    image, run_config, stages[0], kernel, check, _part(image_reporter, 0.0, share), exact_kernel
                )
                transfers.append(transfer)
                image_reporter = _part(image_reporter, share, 1.0)
                if run_config.time_budget_s is not None:
                    run_config = run_config.replace(time_budget_s=max(run_config.time_budget_s - transfer.seconds, 1e-3))
                if not transfer.passed:
                    skip = (TRANSFER_CHECK, transfer_notice(transfer, run_config, exact_kernel, check))
            run = _Run(image, scale, run_config, image_reporter, kernel, check, skip, back_projects, advice)
            reports.extend(run.run())
            execution = run.plan.describe()
            outputs.append(run.output.to(pixels.device, torch.float32).detach())
    return ZSSRResult(torch.cat(outputs), reports, execution, time.perf_counter() - start, kernels, transfers)


def transfer_applies(image: torch.Tensor, config: ZSSRConfig, stage: StagePlan) -> bool:
    """Whether the scale-transfer check runs on (1, C, H, W) ``image``: the guard is on and
    the image's downscale is large enough to learn from (sides of at least 96 px in)."""
    if not (config.bicubic_fallback and config.transfer_check):
        return False
    return min(image.shape[-2:]) >= MIN_DECISION_SIDE and min(son_size(stage.input_size, stage.factor)) >= 32


def transfer_check(
    image: torch.Tensor,
    config: ZSSRConfig,
    stage: StagePlan,
    kernel: np.ndarray | None,
    check: KernelCheck | None,
    reporter: Reporter,
    exact_kernel: bool = False,
) -> TransferCheck:
    """The scale-transfer guard: ZSSR one scale down, on the image's own downscale.

    ``image`` (1, C, H, W) in [0, 1] is downscaled by the first stage's factor and kernel;
    a network trained (``transfer_iterations_share`` of the iterations, no guard) on that
    downscale alone upscales it back, with the run's own self-ensemble setting, and its PSNR
    against ``image`` is compared with the fallback's on the same pixels (for an integer factor the image is first
    cropped to whole multiples of it; otherwise the common top-left region when rounding makes
    the sizes differ).

    ``exact_kernel``: the estimate is a resizer's exact kernel. One scale down it made the
    downscale, so the fallback there is back-projected through it even where the run, at the
    image's own scale, does not back-project (the kernel explains the image poorly): the bar
    the network must clear is never lowered by an estimate that fits the image badly."""
    start = time.perf_counter()
    factor = stage.factor
    if is_integer_factor(factor):  # kernel downscales need whole multiples of the factor
        step = round(factor)
        image = image[..., : image.shape[-2] // step * step, : image.shape[-1] // step * step]
    size = (image.shape[-2], image.shape[-1])
    small = stage_downscaler(config, factor, kernel)(image, son_size(size, factor)).clamp(0, 1)
    probe_config = config.replace(
        iterations=max(1, round(config.iterations * config.transfer_iterations_share)),
        # The check measures what the run will return: the self-ensemble is worth 0.3-0.8 dB
        # to the network (measured on OpenCV-bicubic photos), and without it the check
        # refused networks that then gained over 1 dB (bench/RESULTS_zssr.md).
        bicubic_fallback=False,
        time_budget_s=None if config.time_budget_s is None else config.time_budget_s * config.transfer_iterations_share
        / (1.0 + config.transfer_iterations_share),
    )
    run = _Run(small, factor, probe_config, reporter, kernel, check, trusted_estimate=exact_kernel)
    reports = run.run()
    fallback = run.fallback_output(run.stages[0], run.image)
    height = min(fallback.shape[-2], image.shape[-2])
    width = min(fallback.shape[-1], image.shape[-1])
    target = image[..., :height, :width].to(fallback.device, torch.float32)

    def psnr(output: torch.Tensor) -> float:
        return _psnr(float(torch.mean((output[..., :height, :width].float() - target) ** 2)))

    result = TransferCheck(
        network_psnr=psnr(run.output),
        fallback_psnr=psnr(fallback),
        margin_db=config.transfer_margin_db,
        iterations=reports[0].iterations,
        seconds=time.perf_counter() - start,
    )
    logger.info(
        "ZSSR transfer check: trained on the x%.3g downscale (%d iterations, %.1f s), the network rebuilds "
        "the image at %.2f dB vs %.2f dB for the fallback (%+.2f dB, needs > %+.2f)",
        factor, result.iterations, result.seconds, result.network_psnr, result.fallback_psnr,
        result.gain_db, result.margin_db,
    )
    return result


def transfer_notice(
    transfer: TransferCheck, config: ZSSRConfig, exact_kernel: bool = False, check: KernelCheck | None = None
) -> str:
    """The user's notice when the scale-transfer check fails (``exact_kernel``: the estimate
    is a resizer's exact kernel, back-projected through like a given one, in the check and
    in the fallback the run returns).

    The check never runs on a resizer estimate that does not explain the image: the kernel
    guard refuses that first (:func:`unexplained_notice`), so the check's fallback and the
    run's are the same one."""
    used = fallback_name(back_projects(config, exact_kernel, check))
    return (
        f"a network trained on this image's own downscale rebuilds the image {transfer.gain_db:+.2f} dB "
        f"against {used} (it must gain more than {transfer.margin_db:+.2f} dB): what ZSSR learns "
        f"one scale down does not carry over to this image, so its result would likely be no better than plain "
        f"interpolation. {used[0].upper() + used[1:]} is used instead; turn the guard off to force the network, or "
        f"skip this check alone to keep the other guards (zssr --guards no-transfer-check, upscale --zssr-guards "
        f"no-transfer-check, the node's transfer_check switch, the app's zero-shot guards; transfer_check=False in Python)."
    )


def kernel_check(
    image: torch.Tensor, config: ZSSRConfig, stages: list[StagePlan], estimate: KernelEstimate | None
) -> tuple[KernelCheck | None, str]:
    """The kernel guard: whether the kernel ZSSR is about to use is clearly too wide for the
    image by the across-scale consistency check (:func:`~restorekit.zssr.consistency.check_kernel`,
    which needs no kernel of its own). Such a kernel makes ZSSR undo a blur that is not there
    (measured: -1.5 to -2.3 dB against bicubic on OpenCV-bicubic downscales).

    A resizer kernel that ``auto`` picked but that does not explain the image
    (:func:`unexplained_notice`) is refused without a check.

    Returns the check (None when not run: the guard is off, the image is under 96 px, the
    kernel is the consistency estimate itself, or a given kernel is not an x2 kernel) and the
    notice for the user ("" when the kernel passes). Bicubic is checked as an x2 step."""
    if not config.bicubic_fallback or min(image.shape[-2:]) < MIN_DECISION_SIDE:
        return None, ""
    if estimate is not None and estimate.is_resampler and not estimate.back_projectable:
        return None, unexplained_notice(estimate)
    if estimate is not None and (estimate.source == "gaussian fit" or estimate.is_resampler):
        return None, ""  # chosen by this very criterion
    if estimate is not None and not estimate.is_bicubic:
        kernel, name = estimate.kernel, "the KernelGAN kernel"
    elif config.kernel is None or estimate is not None:
        kernel, name = None, "the bicubic kernel"
    elif isinstance(config.kernel, str) or abs(stages[0].factor - 2.0) > 1e-6:
        return None, ""
    else:
        kernel, name = config.kernel, "the given kernel"
    with torch.no_grad():
        check = check_kernel(image.detach().to("cpu", torch.float32), kernel)
    if not check.too_wide:
        return check, ""
    hint = "use --kernel auto (kernel 'auto')" if not config.estimates_kernel else "use the consistency estimate"
    return check, (
        f"{check.describe(name)}, so ZSSR would sharpen a blur that is not there; bicubic interpolation is "
        f"used instead. For a better result {hint}, or turn the guard off to force it."
    )


def narrow_kernel_advice(check: KernelCheck | None, config: ZSSRConfig, bicubic: bool) -> str:
    """What the user is told when the kernel guard passed a kernel whose downscale is clearly
    sharper than the image (:attr:`~restorekit.zssr.consistency.KernelCheck.too_narrow`), and
    the network is then used: "" otherwise. ``bicubic``: the run's kernel is bicubic;
    ``config`` is the run's as the caller gave it (``auto`` or not).

    The result is returned as it is: such an image is often blurred (there ZSSR through bicubic
    still gains), but it may be softer at its finest scale than at its coarser ones, where the
    guards cannot see the loss (skimage's brick: -2.31 dB, bench/RESULTS_zssr.md)."""
    if check is None or not check.too_narrow:
        return ""
    name = "the bicubic kernel" if bicubic else "the kernel"
    hint = (
        "compare it with plain bicubic"
        if config.estimates_kernel
        else "compare it with plain bicubic, or try --kernel auto (kernel 'auto' in the node and the app)"
    )
    return (
        f"this image is blurrier across scales than {name} explains (its downscale is sharper by "
        f"{check.mismatch.signed:.3f} in log sharpness; above {TOO_NARROW_SIGNED:g} the kernel does not explain "
        f"the image), so ZSSR may over-sharpen it: on a photo whose finest detail is softer than its coarser "
        f"detail it lost 2.3 dB to bicubic with no other guard seeing it. The network's result is returned; "
        f"{hint}."
    )


def unexplained_notice(estimate: KernelEstimate) -> str:
    """The kernel guard's notice when ``auto``'s best resizer kernel does not explain the
    image (:attr:`~restorekit.zssr.kernelgan.KernelEstimate.back_projectable` is False).

    ZSSR learns the step from the image's own downscale through that kernel, and the guards
    cannot judge it: on skimage's brick (the 2x2 average, mismatch 0.20) the transfer check
    measured +0.03 dB on a float input and +1.68 dB on the same input saved as 8-bit, where
    the network then lost 6.2 dB to bicubic (bench/RESULTS_zssr.md)."""
    return (
        f"no kernel explains this image across scales (the closest, {estimate.source}, leaves a mismatch of "
        f"{estimate.mismatch:.3f}; up to {RESAMPLER_EXPLAINS:g} explains an image), so what ZSSR would learn from "
        f"its own downscale cannot be trusted; bicubic interpolation is used instead. Give the kernel if you know "
        f"it (--kernel; kernel in the node and the app), or turn the guard off to force it."
    )


def _part(reporter: Reporter, low: float, high: float, resolution: int = 1000) -> Reporter:
    """A reporter mapping a sub-job's ``(done, total)`` onto ``low .. high`` of this job."""
    if reporter.progress is None:
        return reporter
    outer = reporter.progress

    def mapped(done: int, total: int, message: str) -> None:
        fraction = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
        outer(int((low + fraction * (high - low)) * resolution), resolution, message)

    return Reporter(mapped, reporter.cancel)


def _estimate(image: torch.Tensor, config: ZSSRConfig, reporter: Reporter) -> tuple[KernelEstimate, ZSSRConfig]:
    """KernelGAN on one image; the config for the ZSSR run that follows (its time budget is
    what the estimation left: the estimation gets at most a third of a ZSSR time budget)."""
    kernel_config = config.kernel_estimation.replace(seed=config.seed)
    if config.time_budget_s is not None:
        share = config.time_budget_s / 3.0
        own = kernel_config.time_budget_s
        kernel_config = kernel_config.replace(time_budget_s=share if own is None else min(own, share), min_iterations=0)
    estimate = estimate_kernel(image, kernel_config, progress=reporter)
    run_config = config
    if config.time_budget_s is not None:
        run_config = config.replace(time_budget_s=max(config.time_budget_s - estimate.seconds, 1e-3))
    logger.info(
        "ZSSR: kernel estimated with KernelGAN in %.1f s (%d iterations, %s)",
        estimate.seconds, estimate.iterations, estimate.stop_reason,
    )
    return estimate, run_config


def zssr_upscale(
    pixels: torch.Tensor,
    scale: float,
    config: ZSSRConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> torch.Tensor:
    """Upscale images by ``scale`` with zero-shot super-resolution (no pretrained weights).

    A small network is trained on each image alone, from pairs made by downscaling the
    image itself, then applied to the image (Shocher, Cohen and Irani, CVPR 2018).

    Args:
        pixels: (B, C, H, W) float in [0, 1], C = 3 (RGB) or 1 (gray). Each image of the
            batch gets its own network.
        scale: the total factor, in (1, 16]. Output sides are ``round(H * scale)``.
        config: settings (:class:`ZSSRConfig`); the defaults suit a CPU.
        progress: ``progress(done, total, message)``; messages carry the iteration, the
            training loss and the learning rate.
        cancel: ``cancel()`` -> True stops the job with
            :class:`~restorekit.errors.CancelledError` after the current step.

    Returns:
        (B, C, round(H * scale), round(W * scale)) float32 in [0, 1] on ``pixels``' device.

    The result is deterministic for a given seed, image, config and machine (the
    iteration budget is the control); a ``time_budget_s`` makes the stopping point depend
    on the machine's speed.
    """
    return zssr_upscale_with_report(pixels, scale, config, progress, cancel).output


def zssr_upscale_image(
    image: DecodedImage,
    scale: float,
    config: ZSSRConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> DecodedImage:
    """Upscale a :class:`~restorekit.imageio.DecodedImage` with ZSSR.

    Gray images are learned and upscaled as one channel; alpha is resized with
    antialiased bicubic; the bit depth, gray form, format, metadata and source are kept,
    so writing the result restores the input's form (and refuses to overwrite the input).
    """
    return zssr_upscale_image_with_report(image, scale, config, progress, cancel)[0]


def zssr_upscale_image_with_report(
    image: DecodedImage,
    scale: float,
    config: ZSSRConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> tuple[DecodedImage, ZSSRResult]:
    """:func:`zssr_upscale_image`, also returning the :class:`ZSSRResult`."""
    if not isinstance(image, DecodedImage):
        raise InvalidParameterError(
            f"zssr_upscale_image expects a DecodedImage, got {type(image).__name__}; use "
            "zssr_upscale for tensors."
        )
    pixels = image.pixels
    check_image(pixels, what="A DecodedImage's pixels", channels=(3,), batch=1)
    color = pixels[:, :1] if image.was_gray else pixels
    result = zssr_upscale_with_report(color, scale, config, progress, cancel)
    upscaled = result.output
    if upscaled.shape[1] == 1:
        upscaled = upscaled.expand(-1, 3, -1, -1).contiguous()
    alpha = None
    if image.alpha is not None:
        alpha = resize_bicubic(image.alpha.float(), tuple(upscaled.shape[-2:])).clamp(0, 1)
    return image.replace(pixels=upscaled, alpha=alpha), result


__all__ = [
    "KERNEL_CHECK",
    "TRANSFER_CHECK",
    "StagePlan",
    "StageReport",
    "TransferCheck",
    "ZSSRResult",
    "check_scale",
    "plan_stages",
    "zssr_upscale",
    "zssr_upscale_image",
    "zssr_upscale_image_with_report",
    "zssr_upscale_with_report",
]

