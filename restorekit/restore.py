"""Restoration jobs: an upscale method plus optional face restoration.

This is the path the CLI (``upscale``, ``faces``, ``video``), the ComfyUI nodes and the app
share, so that "upscale with model M at scale S, restore faces with F at strength s" means
the same thing everywhere:

1. the *base* step brings the image to the output size with one of the methods in
   :data:`BASE_METHODS`: a spandrel model through the tiled upscale engine (optionally a
   registry pair blended by denoise or sharpness strength), zero-shot SR (``zssr``, no
   weights), or a high-quality resize (``resize``: Lanczos; ``bicubic``: the face pipeline's
   antialiased bicubic background, which ``restorekit faces`` uses without ``--bg-model``);
2. if a face model is given, faces are detected in the input, restored, and pasted onto the
   base result (which serves as the face pipeline's background).

Tensors are float32 (B, C, H, W) in [0, 1] with C = 3 (RGB) or 1 (gray); alpha is a
separate (B, 1, H, W) tensor. Results are on the CPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .device import float_precision
from .errors import InvalidParameterError
from .imageio import DecodedImage, to_gray
from .layout import check_image
from .progress import CancelCheck, ProgressCallback, Reporter

if TYPE_CHECKING:
    from .zssr import ZSSRConfig

logger = logging.getLogger(__name__)

ZSSR = "zssr"
RESIZE = "resize"
BICUBIC = "bicubic"


@dataclass(frozen=True)
class RestoreSettings:
    """What a restoration job does. Every front end builds one of these.

    Attributes:
        model: the base method: a registry name, a model file, a spandrel descriptor,
            ``"zssr"`` (zero-shot SR, no weights), ``"resize"`` (Lanczos only), or None for
            the registry's default upscaler.
        denoise, sharpness: strength (0..1) along the model's registry pair (at most one).
        outscale: output size over input size (default: the model's scale; 1 for
            ``resize``); or ``width``/``height`` for an exact size (one alone keeps the
            aspect ratio).
        tile, overlap, precision, device, alpha_mode: see :class:`restorekit.upscale.Upscaler`.
        compile: ``auto``, ``on`` or ``off``: compiled execution of the upscale model for
            repeated window shapes, and of the face restorer for repeated batch shapes
            (:mod:`restorekit.compiled`).
        face_model: a face model (``GFPGANv1.4``...) to restore faces with, or None.
        face_options: :class:`restorekit.faces.FaceOptions` (strength, selection...).
        face_batch: faces per forward pass (None: the restorer's default).
        zssr: :class:`restorekit.zssr.ZSSRConfig` for the ``zssr`` method.
        color_fix: ``none``, ``wavelet`` or ``adain``: correct the base result's colours
            towards the input's (:mod:`restorekit.colorfix`); faces have their own
            ``face_options.color_fix``.
        face_tracking: :class:`restorekit.faces.tracking.TrackingSettings` to treat the
            images of a batch (and the frames of a video) as consecutive frames: faces
            linked into tracks, smoothed, selected by track, optionally blended over time.
            None restores every image on its own.
        allow_paths: accept file paths as model references (False where names come from
            remote users: the app, node inputs).
        download: fetch registry models that are not installed.
    """

    model: Any = None
    denoise: float | None = None
    sharpness: float | None = None
    outscale: float | None = None
    width: int | None = None
    height: int | None = None
    tile: int | str | None = "auto"
    overlap: int | None = None
    precision: str = "auto"
    device: str = "auto"
    alpha_mode: str = "model"
    face_model: Any = None
    face_options: Any = None
    face_batch: int | None = None
    zssr: Any = None
    allow_paths: bool = True
    download: bool = True
    color_fix: str = "none"
    face_tracking: Any = None
    compile: str = "auto"

    def __post_init__(self) -> None:
        from .colorfix import parse_color_fix
        from .compiled import parse_compile

        object.__setattr__(self, "color_fix", parse_color_fix(self.color_fix))
        object.__setattr__(self, "compile", parse_compile(self.compile))
        if self.outscale is not None and (self.width is not None or self.height is not None):
            raise InvalidParameterError("Give an output scale or an exact width/height, not both.")
        if self.outscale is not None and not (isinstance(self.outscale, int | float) and self.outscale > 0):
            raise InvalidParameterError(f"The output scale must be a number > 0, got {self.outscale!r}.")
        if self.denoise is not None and self.sharpness is not None:
            raise InvalidParameterError("Give a denoise or a sharpness strength, not both.")

    @property
    def method(self) -> str:
        """``model``, ``zssr``, ``resize`` or ``bicubic``."""
        if isinstance(self.model, str) and self.model.strip().lower() in (ZSSR, RESIZE, BICUBIC):
            return self.model.strip().lower()
        return "model"


@dataclass
class RestoreResult:
    """What :meth:`Restorer.run` returns.

    Attributes:
        pixels: (B, C, H', W') float32 in [0, 1] on the CPU (C as the input).
        alpha: (B, 1, H', W') or None.
        faces: the :class:`~restorekit.faces.FaceResult` when faces were restored (crops,
            face mask...), else None.
        notices: messages for the user that are not errors (no face found, licences).
        seconds: wall time.
    """

    pixels: torch.Tensor
    alpha: torch.Tensor | None
    faces: Any = None
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0


BaseStep = Callable[[torch.Tensor, "torch.Tensor | None", Reporter], tuple[torch.Tensor, "torch.Tensor | None"]]
"""``base(pixels, alpha, reporter) -> (pixels, alpha)`` at the output size."""


# --------------------------------------------------------------------------- base methods


def _model_base(settings: RestoreSettings, reporter: Reporter) -> tuple[BaseStep, str]:
    from .registry import load_registry
    from .strength import resolve_with_strength
    from .upscale import Upscaler

    model = settings.model
    if model is None:
        model = load_registry().default_model("upscale").name
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        descriptor = resolve_with_strength(
            model,
            denoise=settings.denoise,
            sharpness=settings.sharpness,
            allow_paths=settings.allow_paths,
            download=settings.download,
            progress=reporter.progress,
            cancel=reporter.cancel,
        )
        label = str(model)
    else:
        if settings.denoise is not None or settings.sharpness is not None:
            raise InvalidParameterError("Denoise and sharpness strengths need a registry model name, not a loaded model.")
        descriptor = model
        label = getattr(getattr(descriptor, "architecture", None), "name", "model")
    upscaler = Upscaler(
        descriptor,
        precision=settings.precision,
        device=settings.device,
        tile=settings.tile,
        overlap=settings.overlap,
        compile=settings.compile,
    )
    strength = (
        f", denoise {settings.denoise:g}" if settings.denoise is not None
        else f", sharpness {settings.sharpness:g}" if settings.sharpness is not None else ""
    )
    description = f"{label}{strength} (x{upscaler.scale}, {upscaler.plan.describe()})"

    def run(pixels: torch.Tensor, alpha: torch.Tensor | None, step: Reporter) -> tuple[torch.Tensor, torch.Tensor | None]:
        result = upscaler.upscale(
            pixels,
            outscale=settings.outscale,
            width=settings.width,
            height=settings.height,
            alpha=alpha,
            alpha_mode=settings.alpha_mode,
            progress=step.progress,
            cancel=step.cancel,
        )
        return result.pixels, result.alpha

    run.upscaler = upscaler  # type: ignore[attr-defined]
    return run, description


def _output_size(settings: RestoreSettings, height: int, width: int, default_scale: float) -> tuple[int, int]:
    from .upscale import target_size

    outscale = settings.outscale
    if outscale is None and settings.width is None and settings.height is None:
        outscale = default_scale
    return target_size(height, width, scale=1, outscale=outscale, out_width=settings.width, out_height=settings.height)


def _resize_base(settings: RestoreSettings, reporter: Reporter) -> tuple[BaseStep, str]:
    from .upscale import resize

    def run(pixels: torch.Tensor, alpha: torch.Tensor | None, step: Reporter) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = _output_size(settings, pixels.shape[-2], pixels.shape[-1], 1.0)
        step.check()
        out_alpha = None if alpha is None else resize(alpha.float(), size)
        return resize(pixels.float(), size), out_alpha

    return run, "Lanczos resize"


def _bicubic_base(settings: RestoreSettings, reporter: Reporter) -> tuple[BaseStep, str]:
    from .faces.background import resize, scaled_size

    def run(pixels: torch.Tensor, alpha: torch.Tensor | None, step: Reporter) -> tuple[torch.Tensor, torch.Tensor | None]:
        height, width = pixels.shape[-2:]
        if settings.width is None and settings.height is None:
            size = scaled_size(height, width, float(settings.outscale or 1.0))
        else:
            size = _output_size(settings, height, width, 1.0)
        step.check()
        out_alpha = None if alpha is None else resize(alpha.float(), size)
        return resize(pixels.float(), size), out_alpha

    return run, "bicubic resize"


def _zssr_base(settings: RestoreSettings, reporter: Reporter) -> tuple[BaseStep, str]:
    from .upscale import resize
    from .zssr import ZSSRConfig, zssr_upscale_with_report

    config = settings.zssr or ZSSRConfig(device=settings.device, precision=float_precision(settings.precision))
    notices: list[str] = []  # the guard's fallbacks of the last run, for RestoreResult.notices

    def run(pixels: torch.Tensor, alpha: torch.Tensor | None, step: Reporter) -> tuple[torch.Tensor, torch.Tensor | None]:
        height, width = pixels.shape[-2:]
        size = _output_size(settings, height, width, 2.0)
        scale = max(size[0] / height, size[1] / width)
        if scale <= 1.0:
            raise InvalidParameterError(
                f"Zero-shot SR only enlarges: the output {size[1]}x{size[0]} is not larger than the input {width}x{height}."
            )
        result = zssr_upscale_with_report(pixels.float(), scale, config, progress=step.progress, cancel=step.cancel)
        notices[:] = result.notices
        out = result.output
        if tuple(out.shape[-2:]) != size:
            out = resize(out, size)
        out_alpha = None if alpha is None else resize(alpha.float(), size)
        return out, out_alpha

    run.notices = notices  # type: ignore[attr-defined]
    return run, f"zero-shot SR ({config.iterations} iterations a stage{_zssr_choices(config)}, no weights)"


_ESTIMATION_NAMES = {"consistency": "consistency fit", "kernelgan": "KernelGAN"}
"""How a job's description names each kernel estimation method."""


def _zssr_choices(config: ZSSRConfig) -> str:
    """The kernel and guard choices of a ZSSR run that differ from the defaults, for the
    job's description (``", kernel estimated per image (consistency fit), guards off"``)."""
    parts = []
    if config.estimates_kernel:
        parts.append(f"kernel estimated per image ({_ESTIMATION_NAMES[config.kernel_estimation.method]})")
    elif config.kernel is not None:
        parts.append("a given kernel")
    if not config.bicubic_fallback:
        parts.append("guards off")
    elif not config.transfer_check:
        parts.append("without the transfer check")
    return "".join(f", {part}" for part in parts)


BASE_METHODS: dict[str, Callable[[RestoreSettings, Reporter], tuple[BaseStep, str]]] = {
    "model": _model_base,
    ZSSR: _zssr_base,
    RESIZE: _resize_base,
    BICUBIC: _bicubic_base,
}
"""Base method name -> builder of ``(base step, description)``."""


# --------------------------------------------------------------------------- restorer


def _dense(pixels: torch.Tensor) -> torch.Tensor:
    """``pixels`` itself when its memory is dense (NCHW or channels_last, as the upscale
    canvas is), else a contiguous copy: a 4096x4096 result is not copied for nothing."""
    if pixels.is_contiguous() or pixels.is_contiguous(memory_format=torch.channels_last):
        return pixels
    return pixels.contiguous()


class Restorer:
    """A restoration job with its networks loaded once; reuse it for many images or frames.

    Building it loads (and if needed downloads) every model, so wrong names fail before any
    image is read. ``progress``/``cancel`` cover those downloads.
    """

    def __init__(
        self,
        settings: RestoreSettings | None = None,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> None:
        self.settings = settings or RestoreSettings()
        reporter = Reporter.of(progress, cancel)
        self._base, base_description = BASE_METHODS[self.settings.method](self.settings, reporter)
        self.upscaler = getattr(self._base, "upscaler", None)
        """The :class:`~restorekit.upscale.Upscaler` of the ``model`` method, else None."""
        self.faces: Any = None
        self.notices: list[str] = []
        description = base_description
        if self.settings.face_model is not None:
            from .faces import FaceOptions, FacePipeline

            self.faces = FacePipeline(
                self.settings.face_model,
                options=self.settings.face_options or FaceOptions(),
                device=self.settings.device,
                precision=float_precision(self.settings.precision),
                batch_size=self.settings.face_batch,
                compile=self.settings.compile,
                allow_paths=self.settings.allow_paths,
                download=self.settings.download,
            ).load()
            self.notices.extend(self.faces.notices)
            description += f" + faces: {self.settings.face_model}"
            if self.settings.face_tracking is not None:
                description += " (tracked)"
        if self.settings.color_fix != "none":
            description += f", {self.settings.color_fix} colour fix"
        self.description = description

    def new_tracker(self) -> Any:
        """A fresh :class:`~restorekit.faces.tracking.FaceTracker` for a new clip (None when
        faces are not restored or not tracked)."""
        if self.faces is None or self.settings.face_tracking is None:
            return None
        from .faces.tracking import FaceTracker

        return FaceTracker(self.settings.face_tracking, select=self.faces.options.select)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of the result for an input of ``height`` x ``width``, known
        before running (front ends check it against their limits)."""
        default_scale = {"model": float(self.upscaler.scale) if self.upscaler is not None else 1.0, ZSSR: 2.0, RESIZE: 1.0, BICUBIC: 1.0}
        return _output_size(self.settings, height, width, default_scale[self.settings.method])

    def run(
        self,
        pixels: torch.Tensor,
        *,
        alpha: torch.Tensor | None = None,
        tracker: Any = None,
        progress: ProgressCallback | Reporter | None = None,
        cancel: CancelCheck | None = None,
    ) -> RestoreResult:
        """Restore (B, C, H, W) float pixels (C = 3 or 1, [0, 1]) with optional alpha.

        With ``face_tracking`` set, the batch is a run of consecutive frames; ``tracker``
        (from :meth:`new_tracker`) carries the tracks on from earlier batches of the same
        clip, else each call starts new tracks."""
        started = time.perf_counter()
        reporter = Reporter.of(progress, cancel)
        check_image(pixels, what="The image to restore")
        stages = 2 if self.faces is not None else 1
        base, base_alpha = self._base(pixels, alpha, reporter.stage(0, stages))
        if self.settings.color_fix != "none":
            from .colorfix import color_fix

            base = color_fix(base, pixels.float(), self.settings.color_fix)
        notices = list(self.notices)
        notices.extend(n for n in getattr(self._base, "notices", ()) if n not in notices)
        faces = None
        if self.faces is not None:
            gray = pixels.shape[1] == 1
            rgb_in = pixels.float().expand(-1, 3, -1, -1) if gray else pixels.float()
            rgb_bg = base.expand(-1, 3, -1, -1) if base.shape[1] == 1 else base
            scale = base.shape[-1] / pixels.shape[-1]
            if tracker is None:
                tracker = self.new_tracker()
            faces = self.faces.run(
                rgb_in,
                outscale=scale,
                background=rgb_bg,
                tracker=tracker,
                progress=reporter.stage(1, stages),
                cancel=reporter.cancel,
            )
            notices.extend(n for n in faces.notices if n not in notices)
            base = to_gray(faces.image) if gray else faces.image
        return RestoreResult(
            pixels=_dense(base), alpha=base_alpha, faces=faces, notices=notices, seconds=time.perf_counter() - started
        )

    def run_image(
        self,
        image: DecodedImage,
        *,
        tracker: Any = None,
        progress: ProgressCallback | Reporter | None = None,
        cancel: CancelCheck | None = None,
    ) -> tuple[DecodedImage, RestoreResult]:
        """Restore a :class:`~restorekit.imageio.DecodedImage`, keeping its bit depth, gray
        form, format and metadata; returns the new image and the full result. ``tracker``:
        as in :meth:`run` (the image is the next frame of a clip)."""
        pixels = image.pixels[:, :1] if image.was_gray else image.pixels
        result = self.run(pixels, alpha=image.alpha, tracker=tracker, progress=progress, cancel=cancel)
        out = result.pixels
        if out.shape[1] == 1:
            out = out.expand(-1, 3, -1, -1).contiguous()
        return image.replace(pixels=out, alpha=result.alpha), result


def restore(pixels: torch.Tensor, *, alpha: torch.Tensor | None = None, progress: ProgressCallback | None = None, cancel: CancelCheck | None = None, **settings: Any) -> RestoreResult:
    """One-shot :class:`Restorer` run: ``restore(pixels, model="RealESRGAN_x4plus", face_model="GFPGANv1.4")``."""
    return Restorer(RestoreSettings(**settings), progress=progress, cancel=cancel).run(
        pixels, alpha=alpha, progress=progress, cancel=cancel
    )
