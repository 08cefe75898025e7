"""What the app's events do, without Gradio: UI values in, engine calls, files out.

Every function here only converts: form values become
:class:`~restorekit.restore.RestoreSettings` (or degradation arguments), uploaded files are
read through :mod:`restorekit.imageio` with the pixel cap checked from the header before
decoding, the engine does the work, and results are encoded to files in a fresh temporary
folder that Gradio then serves. Engine errors (:class:`~restorekit.errors.RestoreKitError`)
pass through unchanged; :mod:`.ui` shows them as ``gr.Error``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorekit.errors import (
    ImageReadError,
    ImageTooLargeError,
    InsufficientMemoryError,
    InvalidParameterError,
    RestoreKitError,
)
from restorekit.imageio import DecodedImage, encode_image, read_image, read_image_size
from restorekit.progress import CancelCheck, ProgressCallback, Reporter
from restorekit.registry.schema import default_model_name
from restorekit.zssr.config import GUARD_CHOICES, KERNEL_CHOICES

logger = logging.getLogger(__name__)

ZSSR_CHOICE = "zssr"
ZSSR_KERNELS = KERNEL_CHOICES
"""Zero-shot kernel choices: bicubic, estimated per image (across-scale consistency fit), or named."""
ZSSR_GUARDS = tuple(GUARD_CHOICES)
"""Zero-shot guard choices: every guard, every guard but the transfer check, or none."""
RESIZE_CHOICE = "resize"
OUTPUT_FORMATS: dict[str, str] = {"PNG": "png", "JPEG": "jpeg", "WebP": "webp"}
"""Output format label -> :func:`restorekit.imageio.encode_image` format."""
SIZE_MODES = ("scale", "size")
FACE_SELECTIONS = ("all", "largest", "center")
COLOR_FIXES = ("none", "wavelet", "adain")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")
DEFAULT_MAX_VIDEO_FRAMES = 18_000
"""The app's cap on a clip's frames (10 minutes at 30 fps); ``--max-video-frames`` changes it."""
DEFAULT_MAX_PIXELS = 16_000_000
"""The app's pixel cap per input image (a 4000x4000 photo); ``--max-pixels`` changes it."""
DEFAULT_MAX_OUTPUT_PIXELS = 64_000_000
"""The app's cap on a result's pixels (8000x8000), checked before running;
``--max-output-pixels`` changes it."""


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model dropdown."""

    label: str
    value: str
    installed: bool
    pair_meaning: str | None = None
    pair_position: float | None = None  # where this model itself sits on its pair (0 or 1)


def _installed_registry_names(purpose: str) -> dict[str, bool]:
    from restorekit.registry import installed_path, load_registry

    return {entry.name: installed_path(entry) is not None for entry in load_registry() if entry.purpose == purpose}


def imported_models(purpose: str = "upscale") -> list[str]:
    """Names of model files in the model home's folder for ``purpose`` that are not registry
    models (imported with ``restorekit models import`` or the Models tab, or copied there)."""
    from restorekit.registry import get_home, load_registry
    from restorekit.registry.schema import PURPOSES

    registry = load_registry()
    names: list[str] = []
    for folder in get_home().search_dirs(PURPOSES[purpose]):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.safetensors")):
            if path.stem not in registry and path.stem not in names:
                names.append(path.stem)
    return names


def upscale_choices() -> list[ModelChoice]:
    """Registry upscalers (with their download status), imported models, zero-shot SR and a
    plain resize, in that order."""
    from restorekit.registry import load_registry

    registry = load_registry()
    choices: list[ModelChoice] = []
    for name, installed in _installed_registry_names("upscale").items():
        entry = registry.get(name)
        status = "downloaded" if installed else "downloads on first use"
        meaning = entry.pair.meaning if entry.pair else None
        position = None if entry.pair is None else (0.0 if entry.pair.role == "a" else 1.0)
        choices.append(ModelChoice(f"{name} (x{entry.scale}, {status})", name, installed, meaning, position))
    for name in imported_models("upscale"):
        choices.append(ModelChoice(f"{name} (imported)", name, True))
    choices.append(ModelChoice("Zero-shot SR (no weights)", ZSSR_CHOICE, True))
    choices.append(ModelChoice("Plain resize (Lanczos)", RESIZE_CHOICE, True))
    return choices


def pretrained_available(choices: Iterable[ModelChoice]) -> bool:
    """True when at least one pretrained upscaler is on disk (usable offline)."""
    return any(c.installed and c.value not in (ZSSR_CHOICE, RESIZE_CHOICE) for c in choices)


def default_upscale_choice(choices: Sequence[ModelChoice]) -> str:
    """The registry default if downloaded, else the first downloaded or imported model, else
    zero-shot SR (which needs no weights)."""
    from restorekit.registry import load_registry

    defaults = [e.name for e in load_registry() if e.purpose == "upscale" and e.default]
    default = defaults[0] if defaults else None
    installed = [c.value for c in choices if c.installed and c.value not in (ZSSR_CHOICE, RESIZE_CHOICE)]
    if default in installed:
        return default
    return installed[0] if installed else ZSSR_CHOICE


def face_choices() -> list[tuple[str, str]]:
    """(label, name) for every registry face restorer, with its download status."""
    return [
        (f"{name} ({'downloaded' if installed else 'downloads on first use'})", name)
        for name, installed in _installed_registry_names("face_restore").items()
    ] + [(f"{name} (imported)", name) for name in imported_models("face_restore")]


def detector_choices() -> list[str]:
    from restorekit.registry import load_registry

    return ["auto", *load_registry().names("face_detect")]


def strength_of(model: str) -> tuple[str | None, float | None]:
    """(meaning, the model's own position 0/1) of a registry model's pair, else (None, None)."""
    for choice in upscale_choices():
        if choice.value == model:
            return choice.pair_meaning, choice.pair_position
    return None, None


# --------------------------------------------------------------------------- restore


@dataclass(frozen=True)
class RestoreOptions:
    """The Restore tab's form, as values (the API's parameters have the same names)."""

    model: str = ZSSR_CHOICE
    strength: float | None = None
    size_mode: str = "scale"
    outscale: float = 0.0
    width: int = 0
    height: int = 0
    face_restore: bool = False
    face_model: str = field(default_factory=lambda: default_model_name("face_restore", required=False) or "")
    face_strength: float = 1.0
    face_select: str = "all"
    face_detector: str = "auto"
    tile: str = "auto"
    precision: str = "auto"
    zssr_iterations: int = 0
    out_format: str = "PNG"
    quality: int = 95
    face_fidelity: float = 0.5
    color_fix: str = "none"
    zssr_kernel: str = "bicubic"
    compile_mode: str = "auto"
    zssr_guards: str = "on"

    def output_format(self) -> str:
        """The encoder's format name for ``out_format`` (``PNG``/``png``, ``JPEG``/``jpg``, ``WebP``)."""
        wanted = str(self.out_format).strip().lower()
        fmt = {"jpg": "jpeg"}.get(wanted, wanted)
        if fmt not in OUTPUT_FORMATS.values():
            raise InvalidParameterError(f"Output format must be one of {', '.join(OUTPUT_FORMATS)}, got {self.out_format!r}.")
        return fmt


def _positive_or_none(value: Any, what: str) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    if number < 0:
        raise InvalidParameterError(f"{what} must be 0 (automatic) or more, got {value}.")
    return number or None


def restore_settings(options: RestoreOptions) -> Any:
    """:class:`~restorekit.restore.RestoreSettings` for the form (remote users: model names
    only, never paths; registry models download when missing)."""
    from restorekit.restore import RestoreSettings
    from restorekit.upscale import parse_tile

    model = str(options.model or "").strip() or ZSSR_CHOICE
    denoise = sharpness = None
    meaning, position = strength_of(model)
    if meaning is not None and options.strength is not None:
        strength = float(options.strength)
        if not 0.0 <= strength <= 1.0:
            raise InvalidParameterError(f"The {meaning} strength must be between 0 and 1, got {strength}.")
        if strength != position:  # the model's own end needs no blend (nor its partner)
            denoise, sharpness = (strength, None) if meaning == "denoise" else (None, strength)
    if options.size_mode not in SIZE_MODES:
        raise InvalidParameterError(f"Size mode must be 'scale' or 'size', got {options.size_mode!r}.")
    outscale = width = height = None
    if options.size_mode == "scale":
        outscale = _positive_or_none(options.outscale, "The output scale")
    else:
        width = int(_positive_or_none(options.width, "The width") or 0) or None
        height = int(_positive_or_none(options.height, "The height") or 0) or None
        if width is None and height is None:
            raise InvalidParameterError("Give a target width or height (or both), or switch to a scale factor.")
    face_model = face_options = None
    if options.face_restore:
        from restorekit.faces import FaceOptions

        face_model = options.face_model
        face_options = FaceOptions(
            strength=float(options.face_strength),
            select=options.face_select,
            detector=options.face_detector,
            fidelity=float(options.face_fidelity),
            color_fix=options.color_fix,
        )
    zssr = None
    if model.lower() == ZSSR_CHOICE:
        from restorekit.zssr import ZSSRConfig
        from restorekit.zssr.config import guard_setting, kernel_setting

        changes: dict[str, Any] = {"precision": options.precision}
        if options.zssr_iterations:
            changes["iterations"] = int(options.zssr_iterations)
        kernel = str(options.zssr_kernel or "bicubic").strip().lower()
        if kernel not in ZSSR_KERNELS:
            raise InvalidParameterError(f"Zero-shot kernel must be one of {', '.join(ZSSR_KERNELS)}, got {options.zssr_kernel!r}.")
        changes["kernel"] = kernel_setting(kernel)
        changes.update(guard_setting(options.zssr_guards))
        zssr = ZSSRConfig(**changes)
    return RestoreSettings(
        model=model,
        denoise=denoise,
        sharpness=sharpness,
        outscale=outscale,
        width=width,
        height=height,
        tile=parse_tile(options.tile),
        precision=options.precision,
        face_model=face_model,
        face_options=face_options,
        zssr=zssr,
        allow_paths=False,
        download=True,
        color_fix=options.color_fix,
        compile=options.compile_mode,
    )


def fetch_face_models(settings: Any, reporter: Reporter) -> None:
    """Download the registry face networks a job needs (restorer, detector, parser) with
    progress, before the engine loads them (it would fetch them without reporting)."""
    from restorekit.faces.pipeline import face_network_names
    from restorekit.registry import ensure_model, installed_path, load_registry

    if settings.face_model is None:
        return
    registry = load_registry()
    names = [settings.face_model, *face_network_names(settings.face_options)]
    for name in names:
        if isinstance(name, str) and name in registry and installed_path(registry.get(name)) is None:
            ensure_model(registry.get(name), progress=reporter, cancel=reporter.cancel)


def read_upload(path: str | Path, max_pixels: int) -> DecodedImage:
    """Read an uploaded image; the pixel count is checked from the header before decoding."""
    path = Path(path)
    try:
        width, height = read_image_size(path)  # the header only
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"{path.name} is {width}x{height} = {width * height:,} pixels, over this app's limit of "
                f"{max_pixels:,} pixels. Downscale it first, or start the app with a larger --max-pixels."
            )
        return read_image(path, max_pixels=max_pixels)
    except ImageReadError as exc:  # name the file as the user called it, not Gradio's cache path
        raise type(exc)(str(exc).replace(str(path), path.name)) from None
    except OSError as exc:
        raise ImageReadError(f"{path.name} cannot be read: {exc.strerror or exc}.") from None


def check_output_size(name: str, size: tuple[int, int], max_output_pixels: int) -> None:
    """Refuse a job whose result would be over the app's output cap, before it runs."""
    height, width = size
    if height * width > max_output_pixels:
        raise ImageTooLargeError(
            f"The result for {name} would be {width}x{height} = {width * height:,} pixels, over this app's "
            f"output limit of {max_output_pixels:,}. Choose a smaller scale or target size, or a smaller image."
        )


@dataclass
class RestoredFile:
    """One restored upload: the encoded output, a before picture at the output size, notices."""

    name: str
    output: Path
    before: Path
    width: int
    height: int
    notices: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    """Every restored file, every failure (file name, reason) and the zip of the outputs."""

    done: list[RestoredFile]
    failures: list[tuple[str, str]]
    archive: Path | None
    description: str


def _output_name(source: Path, fmt: str, taken: set[str]) -> str:
    from restorekit.imageio import FORMAT_EXTENSIONS

    stem = source.stem or "image"
    name = f"{stem}_restored{FORMAT_EXTENSIONS[fmt]}"
    counter = 1
    while name in taken:
        counter += 1
        name = f"{stem}_restored_{counter}{FORMAT_EXTENSIONS[fmt]}"
    taken.add(name)
    return name


def _before_picture(image: DecodedImage, out: DecodedImage, target: Path) -> Path:
    """The input resized to the output's size (PNG), so that the slider's halves line up."""
    from restorekit.upscale import resize

    pixels = image.pixels
    if pixels.shape[-2:] != out.pixels.shape[-2:]:
        pixels = resize(pixels, (out.height, out.width))
    alpha = None if image.alpha is None else resize(image.alpha, (out.height, out.width))
    target.write_bytes(encode_image(image.replace(pixels=pixels, alpha=alpha), "png", bit_depth=8))
    return target


def restore_files(
    paths: Sequence[str | Path],
    options: RestoreOptions,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    workdir: Path | None = None,
    archive: bool = True,
) -> BatchResult:
    """Restore uploaded files with one :class:`~restorekit.restore.Restorer` (models loaded,
    and downloaded if needed, once). A bad file is recorded with its reason and the rest go
    on; settings and model errors fail the whole job before any file is read."""
    from restorekit.restore import Restorer

    if not paths:
        raise InvalidParameterError("Upload at least one image first.")
    fmt = options.output_format()
    quality = int(options.quality)
    settings = restore_settings(options)
    reporter = Reporter.of(progress, cancel)
    count = len(paths)
    fetch_face_models(settings, reporter)
    restorer = Restorer(settings, progress=reporter, cancel=cancel)  # reports downloads, if any
    workdir = Path(workdir or tempfile.mkdtemp(prefix="restorekit-app-"))
    done: list[RestoredFile] = []
    failures: list[tuple[str, str]] = []
    taken: set[str] = set()
    for index, raw in enumerate(paths):
        source = Path(raw)
        step = reporter.stage(index, count)
        step.step(0, 1, f"{source.name} ({index + 1}/{count})")
        try:
            image = read_upload(source, max_pixels)
            check_output_size(source.name, restorer.output_size(image.height, image.width), max_output_pixels)
            out, result = restorer.run_image(image, progress=step, cancel=cancel)
            target = workdir / _output_name(source, fmt, taken)
            target.write_bytes(encode_image(out, fmt, quality=quality))
        except (ImageReadError, InvalidParameterError, InsufficientMemoryError) as exc:
            if count == 1:
                raise
            failures.append((source.name, str(exc)))
            continue
        before = _before_picture(image, out, workdir / f"{target.stem}_before.png")
        done.append(RestoredFile(source.name, target, before, out.width, out.height, list(result.notices)))
    bundle = None
    if archive and len(done) > 1:
        bundle = workdir / "restored.zip"
        with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_STORED) as zf:
            for item in done:
                zf.write(item.output, item.output.name)
    if not done:
        reasons = "\n".join(f"- {name}: {reason}" for name, reason in failures)
        raise ImageReadError(f"No image could be restored:\n{reasons}")
    return BatchResult(done, failures, bundle, restorer.description)


def summary(result: BatchResult) -> str:
    """A short Markdown report of a restore job (what ran, sizes, notices, failures)."""
    lines = [f"Restored with **{result.description}**."]
    for item in result.done:
        lines.append(f"- {item.name} → {item.output.name} ({item.width}×{item.height})")
        lines.extend(f"  - note: {n}" for n in item.notices)
    if result.failures:
        lines.append(f"\n**{len(result.failures)} file(s) failed:**")
        lines.extend(f"- {name}: {reason}" for name, reason in result.failures)
    return "\n".join(lines)


# --------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoJobOptions:
    """The Video tab's form: the Restore tab's options plus face tracks.

    Attributes:
        restore: upscaler, size, faces, colour fix (:class:`RestoreOptions`).
        face_track: link faces across frames and smooth them (on by default).
        smoothing: One Euro cutoff at rest in Hz (lower = smoother; 0 = no smoothing).
        face_blend: temporal blend of each restored face with its track's previous one.
        detect_every: run the face detector every k frames.
    """

    restore: RestoreOptions = field(default_factory=lambda: RestoreOptions(model=RESIZE_CHOICE))
    face_track: bool = True
    smoothing: float = 0.7
    face_blend: float = 0.0
    detect_every: int = 1


@dataclass
class VideoJobResult:
    """A restored clip: the file (with the input's audio) and a one-line report."""

    output: Path
    description: str
    report: str
    frames: int
    seconds: float


def video_settings(options: VideoJobOptions) -> Any:
    """:class:`~restorekit.restore.RestoreSettings` for the Video tab (the Restore tab's,
    plus face tracking when faces are restored)."""
    from dataclasses import replace

    from restorekit.faces.tracking import SmoothingSettings, TrackingSettings

    settings = restore_settings(options.restore)
    if settings.method == ZSSR_CHOICE:
        raise InvalidParameterError("Zero-shot SR trains a network per frame, far too slow for video; choose a model or the plain resize.")
    if settings.face_model is not None and options.face_track:
        smoothing = float(options.smoothing)
        if smoothing < 0:
            raise InvalidParameterError(f"Smoothing must be 0 (off) or a cutoff in Hz, got {smoothing}.")
        tracking = TrackingSettings(
            detect_every=int(options.detect_every),
            smoothing=SmoothingSettings(min_cutoff=smoothing) if smoothing > 0 else None,
            face_blend=float(options.face_blend),
        )
        settings = replace(settings, face_tracking=tracking)
    return settings


def restore_video(
    path: str | Path,
    options: VideoJobOptions,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
    max_frames: int = DEFAULT_MAX_VIDEO_FRAMES,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    workdir: Path | None = None,
) -> VideoJobResult:
    """Restore every frame of an uploaded clip with the same
    :class:`~restorekit.restore.Restorer` and video pipeline as ``restorekit video``; the
    result keeps the timing and the audio. Cancelling stops between batches."""
    from restorekit.video import VideoOptions, make_frame_processor, process_video
    from restorekit.video.source import open_source

    if not path:
        raise InvalidParameterError("Upload a video first.")
    source = Path(path)
    if source.suffix.lower() not in VIDEO_EXTENSIONS:
        raise InvalidParameterError(f"{source.name} is not a video this tab takes ({', '.join(VIDEO_EXTENSIONS)}).")
    with open_source(source, max_pixels=max_pixels) as frames:
        info = frames.info
    if info.estimated_frames and info.estimated_frames > max_frames:
        raise InvalidParameterError(
            f"{source.name} has about {info.estimated_frames:,} frames, over this app's limit of {max_frames:,}; "
            "trim it, or use 'restorekit video' on the command line."
        )
    settings = video_settings(options)
    reporter = Reporter.of(progress, cancel)
    fetch_face_models(settings, reporter)
    processor = make_frame_processor(settings=settings, progress=progress)
    check_output_size(source.name, processor.restorer.output_size(info.height, info.width), max_output_pixels)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="restorekit-video-"))
    suffix = source.suffix.lower() if source.suffix.lower() in (".mp4", ".mkv", ".mov", ".webm") else ".mp4"
    output = workdir / f"{source.stem or 'video'}_restored{suffix}"
    result = process_video(
        source,
        output,
        processor,
        VideoOptions(overwrite=True, work_dir=workdir / "work", max_pixels=max_pixels),
        progress=progress,
        cancel=cancel,
    )
    return VideoJobResult(output, processor.describe(), result.summary().replace(str(output), output.name), result.frames, result.seconds)


# --------------------------------------------------------------------------- degrade


@dataclass
class DegradeOutput:
    """The HR as PNG, the LR enlarged (nearest) to the HR's size for viewing side by side,
    the LR itself (the download), a picture of the blur kernels and the sampled parameters."""

    hr: Path
    lr_preview: Path
    lr: Path
    kernel: Path
    params: dict[str, Any]
    width: int
    height: int


def degrade_file(
    path: str | Path,
    preset: str,
    seed: int,
    overrides: str,
    scale: float,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    workdir: Path | None = None,
) -> DegradeOutput:
    """Degrade one uploaded image with a preset, a seed and ``field=value`` overrides
    (``"a=1, b=0.2,2"`` is split on ``;`` and new lines, as the CLI's ``--set`` values)."""
    import torch

    from restorekit.degrade import degrade, parse_overrides, split_overrides

    if not path:
        raise InvalidParameterError("Upload an image to degrade first.")
    parsed = parse_overrides(split_overrides(overrides or ""))
    image = read_upload(path, max_pixels)
    result = degrade(image.pixels, preset, scale=float(scale), seed=int(seed), overrides=parsed, progress=progress, cancel=cancel)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="restorekit-degrade-"))
    stem = Path(path).stem or "image"
    lr = DecodedImage(pixels=result.lr, bit_depth=8)
    lr_path = workdir / f"{stem}_lr_{preset}_seed{int(seed)}.png"
    lr_path.write_bytes(encode_image(lr, "png"))
    hr_path = workdir / f"{stem}_hr.png"
    hr_path.write_bytes(encode_image(image.replace(alpha=None), "png", bit_depth=8, keep_gray=False))
    preview = torch.nn.functional.interpolate(result.lr, size=tuple(image.pixels.shape[-2:]), mode="nearest-exact")
    preview_path = workdir / f"{stem}_lr_preview.png"
    preview_path.write_bytes(encode_image(DecodedImage(pixels=preview, bit_depth=8), "png"))
    kernel_path = workdir / "kernels.png"
    kernel_path.write_bytes(encode_image(DecodedImage(pixels=result.kernel_image(0).clamp(0, 1)), "png"))
    return DegradeOutput(hr_path, preview_path, lr_path, kernel_path, result.params[0], int(result.lr.shape[-1]), int(result.lr.shape[-2]))


class WorkFolders:
    """A fresh folder per job under one root; folders older than ``keep_seconds`` are
    deleted as new jobs start (Gradio has copied the files it serves into its own cache)."""

    def __init__(self, keep_seconds: float = 3600.0) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="restorekit-app-"))
        self.keep_seconds = keep_seconds

    def new(self) -> Path:
        import shutil
        import time

        cutoff = time.time() - self.keep_seconds
        for old in self.root.iterdir():
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.root))


# --------------------------------------------------------------------------- models tab

MODEL_COLUMNS = ["name", "purpose", "scale", "size", "licence", "downloaded", "verified"]


class VerifyCache:
    """The last verification status of each installed file, keyed by path and mtime, so the
    table can show it without re-hashing every model on every refresh."""

    def __init__(self) -> None:
        self._status: dict[tuple[str, int], str] = {}

    def get(self, path: Path | None) -> str:
        if path is None:
            return "-"
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except OSError:
            return "-"
        return self._status.get(key, "not checked")

    def put(self, path: Path | None, status: str) -> None:
        if path is not None and path.exists():
            self._status[(str(path), path.stat().st_mtime_ns)] = status


def _size_text(size: int | None) -> str:
    return f"{size / 1e6:.1f} MB" if size else "?"


def model_rows(verified: VerifyCache) -> list[list[Any]]:
    """One row per registry model (and per imported model): see :data:`MODEL_COLUMNS`."""
    from restorekit.registry import get_home, installed_path, load_registry
    from restorekit.registry.schema import PURPOSES

    rows: list[list[Any]] = []
    for entry in load_registry():
        path = installed_path(entry)
        rows.append([
            entry.name, entry.purpose, f"x{entry.scale}" if entry.purpose == "upscale" else "",
            _size_text(entry.size), entry.license, "yes" if path else "no", verified.get(path),
        ])
    for purpose in ("upscale", "face_restore"):
        for name in imported_models(purpose):
            path = get_home().folder(PURPOSES[purpose]) / f"{name}.safetensors"
            size = path.stat().st_size if path.exists() else None
            rows.append([name, purpose, "", _size_text(size), "your own (imported)", "yes", verified.get(path)])
    return rows


def download_model(name: str, *, progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> str:
    """Install a registry model (verified download); returns a message for the user."""
    from restorekit.registry import ensure_model, load_registry

    if not name:
        raise InvalidParameterError("Choose a model to download.")
    entry = load_registry().get(name)
    result = ensure_model(entry, progress=progress, cancel=cancel)
    if result.downloaded:
        return f"{entry.name}: downloaded and verified from {result.source} in {result.seconds:.1f} s."
    return f"{entry.name} is already installed ({result.source})."


def verify_models(name: str, verified: VerifyCache) -> str:
    """Re-hash one installed model (or, with an empty name, every installed registry model)
    against the manifest; returns one line per model."""
    from restorekit.registry import load_registry, verify_model

    registry = load_registry()
    entries = [registry.get(name)] if name else list(registry)
    lines = []
    for entry in entries:
        result = verify_model(entry)
        if result.status == "not installed" and not name:
            continue
        verified.put(result.path, result.status)
        lines.append(f"{entry.name}: {result.status}" + (f" ({result.detail})" if result.detail else ""))
    return "\n".join(lines) or "No models are installed yet."


def import_model_file(path: str | Path, name: str) -> str:
    """Import a user's model file (converted safely to safetensors) into the model home."""
    from restorekit.models import import_model

    if not path:
        raise InvalidParameterError("Upload a .pth, .pt, .ckpt or .safetensors model file first.")
    result = import_model(path, name=(name or "").strip() or Path(path).stem)
    return f"Imported {Path(path).name} as **{result.name}** ({result.path.name}); pick it in the Restore tab."


def params_json(params: dict[str, Any]) -> str:
    return json.dumps(params, indent=2)


def error_message(exc: BaseException) -> str:
    """The text to show for an exception: engine errors as they are (they name the fix)."""
    if isinstance(exc, RestoreKitError):
        return str(exc) or type(exc).__name__
    return f"Unexpected error ({type(exc).__name__}: {exc}). This is a bug; the server log has the details."
