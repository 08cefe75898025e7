"""Real-ESRGAN's high-order degradation as a seeded, batched engine.

Two phases:

1. :func:`sample_plan` draws every random choice for one image from its own seed into a
   :class:`DegradationPlan` (plain dataclasses, JSON-able with :meth:`DegradationPlan.to_dict`).
   Draws use a CPU ``torch.Generator`` in float64, so plans are identical on every device.
2. :func:`apply_plans` executes plans on a batch, on the batch's device. Images of equal
   size that reach the same step are processed together; resizes give images their own
   sizes, so those run per image. Noise fields come from per-image seeds recorded in the plan.

:func:`degrade` does both; :func:`make_pairs` adds cropping and returns HR/LR pairs;
:func:`replay` re-applies recorded parameters (for example to another image).

Seeds: image ``i`` of a call with seed ``s`` and ``first_index=f`` uses
``image_seed(s, f + i)``, so an image's degradation depends only on the seed and its
position, not on the batch size; the same seed and input give bitwise the same output on
the same device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import secrets
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError
from ..layout import check_image
from ..progress import CancelCheck, ProgressCallback, Reporter
from .config import SINC_SMALL_KERNEL, DegradeConfig, resolve_config
from .jpeg import jpeg_roundtrip
from .kernels import KERNEL_FAMILIES, SINC, blur_kernel, sinc_kernel
from .ops import NOISE_KINDS, NoiseDraw, filter2d, quantize, resize, usm_sharpen

SEED_LIMIT = 2**63 - 1
"""Seeds are integers in [0, 2**63 - 1)."""


# --------------------------------------------------------------------------- plans


@dataclass
class BlurPlan:
    """A sampled blur kernel: a family of :data:`~restorekit.degrade.kernels.KERNEL_FAMILIES`
    with its sigmas (pixels), rotation (radians) and shape ``beta``, or ``sinc`` with its
    cutoff (radians)."""

    kernel: str
    size: int
    sigma_x: float | None = None
    sigma_y: float | None = None
    rotation: float | None = None
    beta: float | None = None
    cutoff: float | None = None

    def build(self, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """The (size, size) kernel, normalised to sum 1."""
        if self.kernel == SINC:
            if self.cutoff is None:
                raise InvalidParameterError("A sinc kernel needs its cutoff.")
            return sinc_kernel(self.cutoff, self.size, dtype=dtype, device=device)
        if self.sigma_x is None:
            raise InvalidParameterError(f"A {self.kernel} kernel needs sigma_x.")
        return blur_kernel(
            self.kernel,
            self.size,
            self.sigma_x,
            self.sigma_y,
            self.rotation or 0.0,
            1.0 if self.beta is None else self.beta,
            dtype=dtype,
            device=device,
        )


@dataclass
class ResizePlan:
    """A sampled resize: ``direction`` up/down/keep by ``factor``, relative to ``reference``
    (``current`` size or the ``target`` LR size), with ``mode``."""

    direction: str
    factor: float
    mode: str
    reference: str


@dataclass
class NoisePlan:
    """Sampled noise: Gaussian with ``sigma`` (0-255 scale) or Poisson with ``scale``;
    ``gray`` for one field on all channels; ``seed`` of the noise field."""

    kind: str
    gray: bool
    seed: int
    sigma: float | None = None
    scale: float | None = None

    @property
    def strength(self) -> float:
        value = self.sigma if self.kind == "gaussian" else self.scale
        if value is None:
            raise InvalidParameterError(f"{self.kind} noise needs its {'sigma' if self.kind == 'gaussian' else 'scale'}.")
        return float(value)


@dataclass
class StagePlan:
    """One degradation stage; a None step is skipped."""

    blur: BlurPlan | None = None
    resize: ResizePlan | None = None
    noise: NoisePlan | None = None
    jpeg_quality: int | None = None


@dataclass
class FinalPlan:
    """The last step: resize to the target size with ``resize_mode`` plus an optional sinc
    filter, and an optional JPEG, before (``jpeg_first``) or after them."""

    resize_mode: str
    jpeg_first: bool = False
    sinc: BlurPlan | None = None
    jpeg_quality: int | None = None


@dataclass
class SharpenPlan:
    """USM sharpening of the input (Real-ESRGAN's GT sharpening)."""

    sigma: float
    kernel_size: int
    weight: float
    threshold: float


@dataclass
class DegradationPlan:
    """Everything needed to degrade one image, fully determined (no randomness left)."""

    seed: int
    scale: float
    sharpen: SharpenPlan | None
    stage1: StagePlan
    stage2: StagePlan | None
    final: FinalPlan
    quantize: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (steps that are skipped are None)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegradationPlan:
        """Rebuild a plan from :meth:`to_dict` output (as read back from JSON)."""
        try:
            return _plan_from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParameterError(
                f"Not a valid degradation record ({exc}); pass the 'params' written by "
                "degrade() or the CLI's JSON sidecar."
            ) from exc


def _maybe(cls: type, data: Any) -> Any:
    return None if data is None else cls(**data)


def _stage_from_dict(data: Mapping[str, Any] | None) -> StagePlan | None:
    if data is None:
        return None
    return StagePlan(
        blur=_maybe(BlurPlan, data.get("blur")),
        resize=_maybe(ResizePlan, data.get("resize")),
        noise=_maybe(NoisePlan, data.get("noise")),
        jpeg_quality=data.get("jpeg_quality"),
    )


def _plan_from_dict(data: Mapping[str, Any]) -> DegradationPlan:
    final = dict(data["final"])
    final["sinc"] = _maybe(BlurPlan, final.get("sinc"))
    stage1 = _stage_from_dict(data["stage1"])
    assert stage1 is not None
    return DegradationPlan(
        seed=int(data["seed"]),
        scale=float(data["scale"]),
        stage1=stage1,
        final=FinalPlan(**final),
        stage2=_stage_from_dict(data.get("stage2")),
        sharpen=_maybe(SharpenPlan, data.get("sharpen")),
        quantize=bool(data.get("quantize", True)),
    )


# --------------------------------------------------------------------------- seeds


def derive_seed(seed: int, *labels: object) -> int:
    """A seed in [0, 2**63 - 1) from ``seed`` and labels, stable across runs and platforms."""
    text = ":".join(str(part) for part in (int(seed), *labels))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_LIMIT


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` in a run with ``seed``."""
    return derive_seed(seed, "image", index)


def resolve_seed(seed: int | None = None, generator: torch.Generator | None = None) -> int:
    """``seed`` itself; else a draw from ``generator``; else a fresh random seed."""
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
            raise InvalidParameterError(f"Seed must be a whole number from 0 to 2**63 - 2, got {seed!r}.")
        return seed
    if generator is not None:
        return int(torch.randint(0, SEED_LIMIT, (1,), generator=generator, device=generator.device).item())
    return secrets.randbelow(SEED_LIMIT)


class _Draws:
    """Random draws for one image from a CPU generator, in float64 (device-independent)."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def unit(self) -> float:
        return float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.unit()

    def chance(self, probability: float) -> bool:
        return self.unit() < probability

    def choice(self, options: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
        u = self.unit()
        if weights is None:
            return options[min(int(u * len(options)), len(options) - 1)]
        total = float(sum(weights))
        cumulative = 0.0
        last = max(i for i, w in enumerate(weights) if w > 0)
        for index, weight in enumerate(weights):
            cumulative += weight / total
            if u < cumulative and weight > 0:
                return options[index]
        return options[last]

    def integer(self, low: int, high: int) -> int:
        """Uniform in [low, high], both included."""
        return int(torch.randint(low, high + 1, (), generator=self.generator))

    def seed(self) -> int:
        return int(torch.randint(0, SEED_LIMIT, (), generator=self.generator))

    def shape_beta(self, low: float, high: float) -> float:
        """Real-ESRGAN's shape draw: half in [low, 1], half in [1, high] when the range holds 1."""
        if low <= 1.0 <= high:
            return self.uniform(low, 1.0) if self.chance(0.5) else self.uniform(1.0, high)
        return self.uniform(low, high)


# --------------------------------------------------------------------------- sampling


def _odd_sizes(bounds: tuple[int, int]) -> list[int]:
    return list(range(bounds[0], bounds[1] + 1, 2))


def _sample_blur(draws: _Draws, config: DegradeConfig, suffix: str) -> BlurPlan:
    c = config
    size = draws.choice(_odd_sizes(getattr(c, f"kernel_range{suffix}")))
    if draws.chance(getattr(c, f"sinc_prob{suffix}")):
        cutoffs = c.sinc_cutoff_range_small if size < SINC_SMALL_KERNEL else c.sinc_cutoff_range
        return BlurPlan(kernel=SINC, size=size, cutoff=draws.uniform(*cutoffs))
    kind = draws.choice(getattr(c, f"kernel_list{suffix}"), getattr(c, f"kernel_prob{suffix}"))
    family = KERNEL_FAMILIES[kind]
    sigma_range = getattr(c, f"blur_sigma{suffix}")
    plan = BlurPlan(kernel=kind, size=size, sigma_x=draws.uniform(*sigma_range))
    if not family.isotropic:
        plan.sigma_y = draws.uniform(*sigma_range)
        plan.rotation = draws.uniform(*getattr(c, f"rotation_range{suffix}"))
    if family.beta is not None:
        plan.beta = draws.shape_beta(*getattr(c, f"{family.beta}_range{suffix}"))
    return plan


def _sample_resize(draws: _Draws, config: DegradeConfig, suffix: str) -> ResizePlan:
    direction = draws.choice(("up", "down", "keep"), getattr(config, f"resize_prob{suffix}"))
    low, high = getattr(config, f"resize_range{suffix}")
    factor = {"up": lambda: draws.uniform(1.0, high), "down": lambda: draws.uniform(low, 1.0), "keep": lambda: 1.0}[direction]()
    mode = draws.choice(getattr(config, f"resize_modes{suffix}"))
    return ResizePlan(direction=direction, factor=factor, mode=mode, reference=getattr(config, f"resize_reference{suffix}"))


def _sample_noise(draws: _Draws, config: DegradeConfig, suffix: str) -> NoisePlan:
    gaussian = draws.chance(getattr(config, f"gaussian_noise_prob{suffix}"))
    if gaussian:
        strength = draws.uniform(*getattr(config, f"noise_range{suffix}"))
    else:
        strength = draws.uniform(*getattr(config, f"poisson_scale_range{suffix}"))
    gray = draws.chance(getattr(config, f"gray_noise_prob{suffix}"))
    seed = draws.seed()
    if gaussian:
        return NoisePlan(kind="gaussian", gray=gray, seed=seed, sigma=strength)
    return NoisePlan(kind="poisson", gray=gray, seed=seed, scale=strength)


def sample_plan(config: DegradeConfig, seed: int, scale: float = 4) -> DegradationPlan:
    """Draw every random choice of the pipeline for one image from ``seed``."""
    check_scale(scale)
    c = config
    draws = _Draws(seed)
    sharpen = (
        SharpenPlan(c.usm_sigma, c.usm_kernel_size, c.usm_weight, c.usm_threshold) if c.sharpen_gt else None
    )
    stage1 = StagePlan(
        blur=_sample_blur(draws, c, "") if draws.chance(c.blur_prob) else None,
        resize=_sample_resize(draws, c, ""),
        noise=_sample_noise(draws, c, "") if draws.chance(c.noise_prob) else None,
        jpeg_quality=draws.integer(*c.jpeg_range) if draws.chance(c.jpeg_prob) else None,
    )
    stage2 = None
    if draws.chance(c.second_order_prob):
        stage2 = StagePlan(
            blur=_sample_blur(draws, c, "2") if draws.chance(c.second_blur_prob) else None,
            resize=_sample_resize(draws, c, "2"),
            noise=_sample_noise(draws, c, "2") if draws.chance(c.noise_prob2) else None,
        )
    jpeg_first = draws.chance(c.final_jpeg_first_prob)
    final_mode = draws.choice(c.final_resize_modes)
    sinc = None
    if draws.chance(c.final_sinc_prob):
        size = draws.choice(_odd_sizes(c.final_kernel_range))
        sinc = BlurPlan(kernel=SINC, size=size, cutoff=draws.uniform(*c.final_sinc_cutoff_range))
    final_quality = draws.integer(*c.jpeg_range2) if draws.chance(c.final_jpeg_prob) else None
    return DegradationPlan(
        seed=seed,
        scale=float(scale),
        sharpen=sharpen,
        stage1=stage1,
        stage2=stage2,
        final=FinalPlan(resize_mode=final_mode, jpeg_first=jpeg_first, sinc=sinc, jpeg_quality=final_quality),
        quantize=c.quantize,
    )


# --------------------------------------------------------------------------- execution


def check_scale(scale: float) -> float:
    """``scale`` as a float >= 1, or :class:`InvalidParameterError`."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise InvalidParameterError(f"Scale must be a number, got {scale!r}.")
    if scale <= 0:
        raise InvalidParameterError(
            f"Scale must be positive, got {scale}: the LR size is the input size divided by the scale (e.g. 4)."
        )
    if scale < 1:
        raise InvalidParameterError(
            f"Scale {scale} would make the LR larger than the input; use a scale >= 1 (1 keeps the size)."
        )
    return float(scale)


def target_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The LR size for an input of ``height`` x ``width``: ``floor(size / scale)``."""
    size = (int(height // scale), int(width // scale))
    if size[0] < 1 or size[1] < 1:
        raise InvalidParameterError(
            f"A {width}x{height} image is too small for scale {scale:g}: the LR would be empty."
        )
    return size


def _check_images(images: torch.Tensor) -> torch.Tensor:
    check_image(images, what="The images to degrade", channels=(3,), hint="Convert gray or RGBA images to RGB first.")
    if not images.is_floating_point():
        raise InvalidParameterError(f"Expected float images in [0, 1], got dtype {images.dtype}.")
    if images.dtype not in (torch.float32, torch.float64):
        images = images.float()
    return torch.clamp(images, 0.0, 1.0)


def _run_grouped(
    images: list[torch.Tensor],
    indices: Iterable[int],
    key: Callable[[int], Hashable],
    operation: Callable[[torch.Tensor, list[int]], torch.Tensor],
) -> None:
    """Apply ``operation`` to the images at ``indices``, batching images that share a key
    (their shape is always part of it), and store the results back in place."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index in indices:
        groups[(tuple(images[index].shape), key(index))].append(index)
    for members in groups.values():
        batch = images[members[0]] if len(members) == 1 else torch.cat([images[i] for i in members])
        out = operation(batch, members)
        for position, index in enumerate(members):
            images[index] = out[position : position + 1]


def _no_key(_: int) -> None:
    return None


def _blur_step(images: list[torch.Tensor], blurs: Mapping[int, BlurPlan], store: list[dict[str, torch.Tensor]], name: str) -> None:
    built = {i: plan.build() for i, plan in blurs.items()}
    for index, kernel in built.items():
        store[index][name] = kernel.float().cpu()

    def apply(batch: torch.Tensor, members: list[int]) -> torch.Tensor:
        size = max(built[i].shape[-1] for i in members)
        kernels = torch.stack([_centre_pad(built[i], size) for i in members]).to(batch.device)
        return filter2d(batch, kernels)

    _run_grouped(images, blurs, _no_key, apply)


def _centre_pad(kernel: torch.Tensor, size: int) -> torch.Tensor:
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad)) if pad else kernel


def _stage_resize_request(image: torch.Tensor, plan: ResizePlan, input_size: tuple[int, int], scale: float) -> _ResizeRequest | None:
    """Size, mode and scale factor of a stage's resize, or None when it keeps the size.

    ``current``: ``floor(size * factor)`` through torch's ``scale_factor`` sampling grid, as
    Real-ESRGAN's first stage; ``target``: ``int(input size / scale * factor)``, as its
    second stage.
    """
    height, width = image.shape[-2:]
    if plan.reference == "current":
        if plan.factor == 1.0:
            return None
        size = (math.floor(height * plan.factor), math.floor(width * plan.factor))
        scale_factor: float | None = plan.factor
    elif plan.reference == "target":
        size = (int(input_size[0] / scale * plan.factor), int(input_size[1] / scale * plan.factor))
        scale_factor = None
    else:
        raise InvalidParameterError(f"Unknown resize reference {plan.reference!r}; use current or target.")
    if size[0] < 1 or size[1] < 1:
        size, scale_factor = (max(size[0], 1), max(size[1], 1)), None
    return _ResizeRequest(size, plan.mode, scale_factor)


@dataclass(frozen=True)
class _ResizeRequest:
    size: tuple[int, int]
    mode: str
    scale_factor: float | None = None


def _resize_step(images: list[torch.Tensor], requests: Mapping[int, _ResizeRequest | None]) -> None:
    """Resize images; requests for the size an image already has are skipped (every mode
    is the identity there)."""
    todo = {
        i: r
        for i, r in requests.items()
        if r is not None and (r.size != tuple(images[i].shape[-2:]) or r.scale_factor is not None)
    }

    def apply(batch: torch.Tensor, members: list[int]) -> torch.Tensor:
        request = todo[members[0]]
        return resize(batch, request.size, request.mode, request.scale_factor)

    _run_grouped(images, todo, lambda i: todo[i], apply)


def _noise_step(images: list[torch.Tensor], noises: Mapping[int, NoisePlan]) -> None:
    def apply(batch: torch.Tensor, members: list[int]) -> torch.Tensor:
        kind = noises[members[0]].kind
        try:
            function = NOISE_KINDS[kind]
        except KeyError:
            raise InvalidParameterError(f"Unknown noise kind {kind!r}; use {', '.join(NOISE_KINDS)}.") from None
        draws = [NoiseDraw(noises[i].strength, noises[i].gray, noises[i].seed) for i in members]
        return function(batch, draws)

    _run_grouped(images, noises, lambda i: noises[i].kind, apply)


def _jpeg_step(images: list[torch.Tensor], qualities: Mapping[int, int]) -> None:
    def apply(batch: torch.Tensor, members: list[int]) -> torch.Tensor:
        return jpeg_roundtrip(batch, [qualities[i] for i in members])

    _run_grouped(images, qualities, _no_key, apply)


def _stage_step(images: list[torch.Tensor], plans: Sequence[DegradationPlan], stage: str, input_size: tuple[int, int], kernels: list[dict[str, torch.Tensor]]) -> None:
    stages = {i: getattr(p, stage) for i, p in enumerate(plans) if getattr(p, stage) is not None}
    number = "1" if stage == "stage1" else "2"
    _blur_step(images, {i: s.blur for i, s in stages.items() if s.blur is not None}, kernels, f"blur{number}")
    _resize_step(images, {i: _stage_resize_request(images[i], s.resize, input_size, plans[i].scale) for i, s in stages.items() if s.resize is not None})
    _noise_step(images, {i: s.noise for i, s in stages.items() if s.noise is not None})
    _jpeg_step(images, {i: s.jpeg_quality for i, s in stages.items() if s.jpeg_quality is not None})


def _final_step(images: list[torch.Tensor], plans: Sequence[DegradationPlan], target: tuple[int, int], kernels: list[dict[str, torch.Tensor]]) -> None:
    finals = [plan.final for plan in plans]
    _jpeg_step(images, {i: f.jpeg_quality for i, f in enumerate(finals) if f.jpeg_first and f.jpeg_quality is not None})
    _resize_step(images, {i: _ResizeRequest(target, f.resize_mode) for i, f in enumerate(finals)})
    _blur_step(images, {i: f.sinc for i, f in enumerate(finals) if f.sinc is not None}, kernels, "final_sinc")
    _jpeg_step(images, {i: f.jpeg_quality for i, f in enumerate(finals) if not f.jpeg_first and f.jpeg_quality is not None})


def _sharpen_step(images: list[torch.Tensor], plans: Sequence[DegradationPlan]) -> None:
    sharpen = {i: p.sharpen for i, p in enumerate(plans) if p.sharpen is not None}

    def apply(batch: torch.Tensor, members: list[int]) -> torch.Tensor:
        s = sharpen[members[0]]
        assert s is not None
        return usm_sharpen(batch, sigma=s.sigma, kernel_size=s.kernel_size, weight=s.weight, threshold=s.threshold)

    _run_grouped(images, sharpen, lambda i: dataclasses.astuple(sharpen[i]), apply)


_STAGES = ("sharpening", "first stage", "second stage", "final step")


@torch.no_grad()
def apply_plans(
    images: torch.Tensor,
    plans: Sequence[DegradationPlan],
    *,
    progress: ProgressCallback | Reporter | None = None,
    cancel: CancelCheck | None = None,
) -> DegradeResult:
    """Degrade ``images`` (B, 3, H, W) in [0, 1] following one fully sampled plan per image.

    Runs on the images' device. All plans must share the scale (the LR batch has one size).
    """
    images = _check_images(images)
    if len(plans) != images.shape[0]:
        raise InvalidParameterError(f"Got {len(plans)} degradation plans for {images.shape[0]} images.")
    scales = {plan.scale for plan in plans}
    if len(scales) != 1:
        raise InvalidParameterError(f"All images of a batch need the same scale, got {sorted(scales)}.")
    scale = check_scale(scales.pop())
    target = target_size(images.shape[-2], images.shape[-1], scale)
    reporter = Reporter.of(progress, cancel)
    kernels: list[dict[str, torch.Tensor]] = [{} for _ in plans]
    work = list(images.split(1))

    reporter.step(0, len(_STAGES), f"degrade: {_STAGES[0]}")
    _sharpen_step(work, plans)
    sharpened = torch.cat(work) if any(plan.sharpen is not None for plan in plans) else None
    reporter.step(1, len(_STAGES), f"degrade: {_STAGES[1]}")
    _stage_step(work, plans, "stage1", tuple(images.shape[-2:]), kernels)
    reporter.step(2, len(_STAGES), f"degrade: {_STAGES[2]}")
    _stage_step(work, plans, "stage2", tuple(images.shape[-2:]), kernels)
    reporter.step(3, len(_STAGES), f"degrade: {_STAGES[3]}")
    _final_step(work, plans, target, kernels)
    lr = torch.cat([quantize(img) if plan.quantize else torch.clamp(img, 0.0, 1.0) for img, plan in zip(work, plans, strict=True)])
    reporter.step(4, len(_STAGES), "degrade: done")
    return DegradeResult(lr=lr, params=[plan.to_dict() for plan in plans], plans=list(plans), kernels=kernels, sharpened=sharpened)


# --------------------------------------------------------------------------- public API


@dataclass
class DegradeResult:
    """What :func:`degrade` returns.

    Attributes:
        lr: (B, 3, h, w) float32 in [0, 1], ``h = floor(H / scale)``; on 8-bit levels when the
            config quantizes (the default).
        params: one JSON-able dict per image with every sampled parameter (kernel types,
            sigmas, sizes, noise, JPEG qualities, order, seeds); :func:`replay` takes them back.
        plans: the same as :class:`DegradationPlan` objects.
        kernels: per image, the kernels applied, by step (``blur1``, ``blur2``,
            ``final_sinc``), each (k, k) float32 on the CPU.
        sharpened: the USM-sharpened input (B, 3, H, W) when the config sharpens, else None.
    """

    lr: torch.Tensor
    params: list[dict[str, Any]]
    plans: list[DegradationPlan]
    kernels: list[dict[str, torch.Tensor]] = field(default_factory=list)
    sharpened: torch.Tensor | None = None

    def kernel_image(self, index: int = 0, *, cell: int = 8) -> torch.Tensor:
        """A (1, 3, h, w) picture of image ``index``'s kernels (see :mod:`.visualize`)."""
        from .visualize import kernels_image

        return kernels_image(self.kernels[index], cell=cell)

    def params_json(self, *, indent: int | None = 2) -> str:
        """The parameters of every image as one JSON text (a list, one record per image)."""
        return json.dumps(self.params, indent=indent)


@dataclass
class PairResult:
    """What :func:`make_pairs` returns: aligned HR (B, 3, s*h, s*w) and LR (B, 3, h, w) in
    [0, 1], the parameters per image (with the crop) and the kernels."""

    hr: torch.Tensor
    lr: torch.Tensor
    params: list[dict[str, Any]]
    kernels: list[dict[str, torch.Tensor]]


def sample_plans(
    config: DegradeConfig | str | Mapping[str, Any] | None,
    count: int,
    *,
    scale: float = 4,
    seed: int | None = None,
    first_index: int = 0,
    generator: torch.Generator | None = None,
    overrides: str | Iterable[str] | Mapping[str, Any] | None = None,
) -> list[DegradationPlan]:
    """Plans for ``count`` images: image ``i`` uses ``image_seed(seed, first_index + i)``."""
    cfg = resolve_config(config, overrides)
    base = resolve_seed(seed, generator)
    return [sample_plan(cfg, image_seed(base, first_index + i), scale) for i in range(count)]


def degrade(
    images: torch.Tensor,
    config: DegradeConfig | str | Mapping[str, Any] | None = "realesrgan",
    *,
    scale: float = 4,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    overrides: str | Iterable[str] | Mapping[str, Any] | None = None,
    first_index: int = 0,
    progress: ProgressCallback | Reporter | None = None,
    cancel: CancelCheck | None = None,
) -> DegradeResult:
    """Synthesise low-quality, low-resolution versions of a batch of images.

    Args:
        images: (B, 3, H, W) float RGB in [0, 1] (values outside are clamped) on any device;
            the work runs there.
        config: a preset name (``realesrgan``, ``classic``, ``bicubic``, ``light``), a
            :class:`DegradeConfig`, or a dict of fields.
        scale: LR size = floor(input size / scale); >= 1.
        seed: makes the result reproducible; None draws one (from ``generator`` if given).
            The seed used is in each image's params.
        overrides: ``field=value`` strings or a dict applied on top of ``config``.
        first_index: position of the first image in a larger job, so that images processed
            one at a time get the same draws as in one batch.
        progress, cancel: progress callback and cancel check.

    Returns:
        a :class:`DegradeResult` with the LR batch, the sampled parameters and the kernels.
    """
    images = _check_images(images)
    plans = sample_plans(config, images.shape[0], scale=scale, seed=seed, first_index=first_index, generator=generator, overrides=overrides)
    return apply_plans(images, plans, progress=progress, cancel=cancel)


def replay(
    images: torch.Tensor,
    params: Sequence[Mapping[str, Any] | DegradationPlan] | Mapping[str, Any] | DegradationPlan,
    *,
    progress: ProgressCallback | Reporter | None = None,
    cancel: CancelCheck | None = None,
) -> DegradeResult:
    """Apply recorded parameters (``DegradeResult.params`` or a JSON sidecar's) again.

    One record applies to the whole batch; otherwise give one per image. The same record on
    the same image and device gives the same LR, bit for bit.
    """
    images = _check_images(images)
    records = [params] if isinstance(params, (Mapping, DegradationPlan)) else list(params)
    plans = [r if isinstance(r, DegradationPlan) else DegradationPlan.from_dict(r) for r in records]
    if len(plans) == 1 and images.shape[0] > 1:
        plans = plans * images.shape[0]
    return apply_plans(images, plans, progress=progress, cancel=cancel)


def _integer_scale(scale: float) -> int:
    check_scale(scale)
    if not float(scale).is_integer():
        raise InvalidParameterError(
            f"Training pairs need a whole-number scale so that HR = scale x LR exactly, got {scale}."
        )
    return int(scale)


def _crop_window(draws: _Draws, height: int, width: int, crop: int) -> tuple[int, int]:
    top = draws.integer(0, height - crop) if height > crop else 0
    left = draws.integer(0, width - crop) if width > crop else 0
    return top, left


def _pad_reflect101(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad bottom/right to at least (height, width) by reflection (OpenCV's BORDER_REFLECT_101)."""
    from .ops import reflect_indices

    h, w = image.shape[-2:]
    if h >= height and w >= width:
        return image
    rows = reflect_indices(h, 0, max(0, height - h), image.device)
    cols = reflect_indices(w, 0, max(0, width - w), image.device)
    return image.index_select(-2, rows).index_select(-1, cols)


def make_pairs(
    images: torch.Tensor,
    config: DegradeConfig | str | Mapping[str, Any] | None = "realesrgan",
    *,
    scale: int = 4,
    seed: int | None = None,
    crop: int | None = None,
    generator: torch.Generator | None = None,
    overrides: str | Iterable[str] | Mapping[str, Any] | None = None,
    first_index: int = 0,
    progress: ProgressCallback | Reporter | None = None,
    cancel: CancelCheck | None = None,
) -> PairResult:
    """Aligned HR/LR training pairs, as Real-ESRGAN's data pipeline makes them.

    Each image is first cut to a random ``crop`` x ``crop`` window (padded by reflection when
    smaller, as Real-ESRGAN's dataset does), or else trimmed to a multiple of ``scale``; the
    HR is then the USM-sharpened crop when the config sharpens, and the LR its degradation.
    """
    images = _check_images(images)
    factor = _integer_scale(scale)
    base = resolve_seed(seed, generator)
    count, _, height, width = images.shape
    crops: list[dict[str, Any]] = []
    if crop is not None:
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < factor:
            raise InvalidParameterError(
                f"Crop size {crop!r} is smaller than the scale {factor}: the LR would be empty; use e.g. {100 * factor}."
            )
        if crop % factor:
            raise InvalidParameterError(
                f"Crop size {crop} is not a multiple of the scale {factor}; use {crop - crop % factor} or {crop - crop % factor + factor}."
            )
        padded = _pad_reflect101(images, crop, crop)
        windows = []
        for i in range(count):
            draws = _Draws(derive_seed(image_seed(base, first_index + i), "crop"))
            top, left = _crop_window(draws, padded.shape[-2], padded.shape[-1], crop)
            windows.append(padded[i : i + 1, :, top : top + crop, left : left + crop])
            crops.append({"top": top, "left": left, "size": crop, "padded": height < crop or width < crop})
        images = torch.cat(windows)
    else:
        trimmed_h, trimmed_w = height - height % factor, width - width % factor
        target_size(height, width, factor)
        images = images[..., :trimmed_h, :trimmed_w]
        crops = [{"top": 0, "left": 0, "height": trimmed_h, "width": trimmed_w, "padded": False}] * count
    result = degrade(images, config, scale=factor, seed=base, overrides=overrides, first_index=first_index, progress=progress, cancel=cancel)
    hr = result.sharpened if result.sharpened is not None else images
    params = [{**p, "crop": c} for p, c in zip(result.params, crops, strict=True)]
    return PairResult(hr=hr, lr=result.lr, params=params, kernels=result.kernels)
