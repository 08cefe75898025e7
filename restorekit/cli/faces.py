"""``restorekit faces``: restore the faces in photos (detect, align, restore, paste back).

::

    restorekit faces photo.jpg old_photos/ -o restored/ --outscale 2 --face-strength 0.8

Inputs are files and folders (the images directly inside). Each result is written
atomically to the output folder as ``<name><suffix>.<ext>`` (the input's format unless
``--format``), keeping bit depth, gray and alpha. Inputs are never overwritten; existing
outputs only with ``--overwrite``. Bad files are reported and skipped, and every failure is
listed at the end (exit code 1).

:func:`add_face_arguments` and :func:`face_options_from_args` are shared with other
commands that restore faces (``restorekit upscale --face-restore``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import CancelledError, ImageWriteError, InvalidParameterError, RestoreKitError
from ..imageio import (
    FORMAT_EXTENSIONS,
    IMAGE_EXTENSIONS,
    DecodedImage,
    normalize_format,
    read_image,
    write_image,
)
from .common import (
    cancel_on_interrupt,
    number_type,
    positive_float,
    positive_int,
    progress_for,
    strength,
)


def add_face_arguments(parser: argparse.ArgumentParser, *, model_flag: str = "--face-model", model_default: str | None = "GFPGANv1.4") -> None:
    """The face options every face-restoring command takes (``--face-strength``...).

    ``model_flag`` names the face model option (``--face-model`` here, ``--face-restore``
    in ``restorekit upscale``, where ``model_default=None`` leaves faces alone)."""
    from ..faces.pipeline import DEFAULT_DETECTOR, DEFAULT_PARSER

    group = parser.add_argument_group("face restoration")
    group.add_argument(
        model_flag,
        dest="face_model",
        default=model_default,
        metavar="MODEL",
        help="face model: GFPGANv1.4, GFPGANv1.3, GFPGANv1.2, RestoreFormer, or a model file"
        + (f" (default: {model_default})" if model_default else ""),
    )
    group.add_argument("--face-strength", type=strength, default=1.0, metavar="S", help="0..1: 0 keeps the original faces, 1 fully restored (default: 1)")
    group.add_argument(
        "--face-detector",
        default=DEFAULT_DETECTOR,
        metavar="NAME",
        help="auto, detection_Resnet50_Final, detection_mobilenet0.25_Final, blazeface_full_range or blazeface_short_range "
        f"(default: {DEFAULT_DETECTOR}: RetinaFace-ResNet50 when installed, else BlazeFace full range with Face Mesh)",
    )
    group.add_argument("--face-select", default="all", metavar="WHICH", help="all, largest, center, or a face index counted from the left from 0; with tracks: the largest or most central track, or a track id (default: all)")
    group.add_argument("--face-min-size", type=float, default=0.0, metavar="PX", help="skip faces smaller than this many pixels (default: 0)")
    group.add_argument("--face-confidence", type=float, default=None, metavar="C", help="detection confidence threshold (default: the detector's: 0.97 RetinaFace, 0.5 BlazeFace)")
    group.add_argument("--face-detect-size", type=int, default=1600, metavar="PX", help="detect on a copy at most this large, 0 for full size (default: 1600)")
    group.add_argument(
        "--face-parser",
        default=DEFAULT_PARSER,
        metavar="NAME",
        help=f"paste-back mask: parsing_parsenet, parsing_bisenet (MIT licence), face_oval (Face Mesh oval, Apache-2.0) or ellipse (default: {DEFAULT_PARSER}, non-commercial weights)",
    )
    group.add_argument("--fidelity", type=strength, default=0.5, metavar="W", help="CodeFormer only: its fidelity weight w, 0 = best quality, 1 = most faithful (default: 0.5)")
    group.add_argument(
        "--face-color-fix",
        choices=["none", "wavelet", "adain"],
        default="none",
        help="correct restored faces' colours towards the original faces (default: none)",
    )
    group.add_argument("--face-batch", type=int, default=None, metavar="N", help="faces per forward pass (default: 4)")


def face_options_from_args(args: argparse.Namespace, *, aligned: bool = False) -> Any:
    """A :class:`~restorekit.faces.FaceOptions` from :func:`add_face_arguments`' options."""
    from ..faces import FaceOptions

    return FaceOptions(
        strength=args.face_strength,
        select=args.face_select,
        detector=args.face_detector,
        parser=args.face_parser,
        confidence=args.face_confidence,
        min_size=args.face_min_size,
        detect_max_side=args.face_detect_size,
        aligned=aligned,
        fidelity=args.fidelity,
        color_fix=getattr(args, "face_color_fix", "none"),
    )


_blend = number_type(float, minimum=0, maximum=0.99)


def add_tracking_arguments(parser: argparse.ArgumentParser, *, default_on: bool) -> None:
    """Face track options: ``--track``/``--no-face-track``, detection every k frames,
    One Euro smoothing and temporal blending (see :mod:`restorekit.faces.tracking`).

    ``default_on``: tracking is on unless ``--no-face-track`` (videos), else only with
    ``--track`` (a folder of frames given to ``restorekit faces``)."""
    from ..faces.tracking import SmoothingSettings

    defaults = SmoothingSettings()
    group = parser.add_argument_group("face tracks (consecutive frames)")
    if default_on:
        group.add_argument("--no-face-track", dest="face_track", action="store_false", help="restore every frame's faces on their own: no tracks, no smoothing")
    else:
        group.add_argument("--track", dest="face_track", action="store_true", help="the inputs are consecutive frames (in name order): link faces into tracks, smooth them, select by track id")
    group.set_defaults(face_track=default_on)
    group.add_argument("--face-detect-every", type=positive_int, default=1, metavar="K", help="run the face detector every K frames; in between faces are refined or predicted (default: 1)")
    group.add_argument("--no-face-smoothing", dest="face_smoothing", action="store_false", help="use each frame's landmarks as detected")
    group.add_argument("--face-min-cutoff", type=positive_float, default=defaults.min_cutoff, metavar="HZ", help=f"One Euro filter cutoff at rest: lower is smoother (default: {defaults.min_cutoff})")
    group.add_argument("--face-beta", type=float, default=defaults.beta, metavar="B", help=f"One Euro filter speed coefficient: higher follows fast moves sooner (default: {defaults.beta})")
    group.add_argument("--face-blend", type=_blend, default=0.0, metavar="B", help="blend each restored face with its track's previous one by B, against flicker (default: 0, off)")


def tracking_from_args(args: argparse.Namespace) -> Any:
    """:class:`~restorekit.faces.tracking.TrackingSettings` from :func:`add_tracking_arguments`'
    options, or None when tracking is off (or the command has no tracking options)."""
    if not getattr(args, "face_track", False):
        return None
    from ..faces.tracking import SmoothingSettings, TrackingSettings

    smoothing = SmoothingSettings(min_cutoff=args.face_min_cutoff, beta=args.face_beta) if args.face_smoothing else None
    return TrackingSettings(detect_every=args.face_detect_every, smoothing=smoothing, face_blend=args.face_blend)


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "faces",
        parents=[common],
        help="restore faces in photos (GFPGAN/RestoreFormer), with an optional background upscaler",
        description="Restore the faces in photos: detect, align, restore in batches, paste back onto the "
        "background (a resize, or an upscale model with --bg-model).",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (or a file name for one input)")
    add_face_arguments(parser)
    add_tracking_arguments(parser, default_on=False)
    parser.add_argument("--aligned", action="store_true", help="inputs are already aligned 512x512 faces (no detection, no paste-back)")
    parser.add_argument("--outscale", type=positive_float, default=None, metavar="S", help="output size over input size, any factor (default: the background model's scale, else 1)")
    parser.add_argument("--bg-model", default=None, metavar="MODEL", help="upscale model for everything but the faces (default: a high-quality resize)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="default: auto (bf16 where it is fast)")
    parser.add_argument("--format", default=None, help="output format: png, jpg, webp, tiff (default: the input's)")
    parser.add_argument("--suffix", default="", help="added to output names, e.g. _restored (default: none)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (never the inputs)")
    parser.add_argument("--save-faces", action="store_true", help="also write the aligned crops (restored and original) and the face mask to OUT/faces/")
    parser.set_defaults(handler=cmd_faces)
    return parser


# --------------------------------------------------------------------------- inputs and outputs


def collect_inputs(inputs: Iterable[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files from files and folders (sorted, each once) and the inputs that are not."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append((text, "folder has no images"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append((text, "no such file or folder"))
    unique: list[Path] = []
    seen: set[Path] = set()
    for file in files:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(file)
    return unique, problems


def output_path(source: Path, output: Path, *, single: bool, fmt: str | None, suffix: str) -> Path:
    """Where the result for ``source`` goes."""
    if single and output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir():
        return output
    extension = FORMAT_EXTENSIONS[normalize_format(fmt)] if fmt else source.suffix.lower()
    if extension not in IMAGE_EXTENSIONS or extension in (".gif",):
        extension = ".png"
    return output / f"{source.stem}{suffix}{extension}"


def _check_target(source: Path, target: Path, overwrite: bool, inputs: set[Path]) -> None:
    if target.resolve() in inputs:
        raise ImageWriteError(
            f"{target} is an input; refusing to overwrite it. Choose another output folder or a --suffix."
        )
    if target.exists() and not overwrite:
        raise ImageWriteError(f"{target} exists; pass --overwrite to replace it.")


def _save_faces(result: Any, source: Path, folder: Path, overwrite: bool) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(result.face_count):
        for kind, crops in (("restored", result.restored_faces), ("original", result.original_faces)):
            write_image(DecodedImage(pixels=crops[index : index + 1]), folder / f"{source.stem}_{index:02d}_{kind}.png", overwrite=overwrite)
    mask = result.face_mask[:1].expand(-1, 3, -1, -1)
    write_image(DecodedImage(pixels=torch.clamp(mask, 0, 1), was_gray=True), folder / f"{source.stem}_mask.png", overwrite=overwrite)


# --------------------------------------------------------------------------- command


def _background(args: argparse.Namespace) -> tuple[Any, float]:
    """The background function (the tiled upscale engine with ``--bg-model``, else a
    high-quality resize) and the output scale."""
    if not args.bg_model:
        return None, float(args.outscale or 1.0)
    from ..upscale import Upscaler

    upscaler = Upscaler(args.bg_model, device=args.device, precision=args.precision)

    def background(images: Any, scale: float) -> Any:
        return upscaler.upscale(images, outscale=scale).pixels

    return background, float(args.outscale or upscaler.scale)


def cmd_faces(args: argparse.Namespace) -> int:
    from ..faces import FacePipeline

    files, failures = collect_inputs(args.inputs)
    for text, reason in failures:
        print(f"restorekit: {text}: {reason}", file=sys.stderr)
    if not files:
        raise InvalidParameterError("No input images were found.")
    output = Path(args.output)
    single = len(files) == 1 and output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir()
    if args.format:
        normalize_format(args.format)
    if args.face_batch is not None and args.face_batch < 1:
        raise InvalidParameterError("--face-batch must be at least 1.")
    options = face_options_from_args(args, aligned=args.aligned)
    background, outscale = _background(args)
    pipeline = FacePipeline(args.face_model, options=options, device=args.device, precision=args.precision, batch_size=args.face_batch)
    pipeline.load()
    for notice in pipeline.notices:
        print(f"restorekit: note: {notice}", file=sys.stderr)
    if not options.uses_ellipse and "parsenet" in str(options.parser).lower():
        print(
            "restorekit: note: parsing_parsenet's weights are CC BY-NC-SA 4.0 (non-commercial); "
            "use --face-parser parsing_bisenet or ellipse for commercial work.",
            file=sys.stderr,
        )
    tracker = None
    tracking = tracking_from_args(args)
    if tracking is not None:
        from ..faces.tracking import FaceTracker

        if args.aligned:
            raise InvalidParameterError("--track needs whole frames, not --aligned faces.")
        tracker = FaceTracker(tracking, select=options.select)
    inputs = {f.resolve() for f in files}
    if not single:
        output.mkdir(parents=True, exist_ok=True)
    done = 0
    with cancel_on_interrupt() as cancel:
        for number, source in enumerate(files, 1):
            target = output_path(source, output, single=single, fmt=args.format, suffix=args.suffix)
            bar = progress_for(args, unit="face")
            try:
                _check_target(source, target, args.overwrite, inputs)
                image = read_image(source)
                result = pipeline.run(
                    image.pixels,
                    alpha=image.alpha,
                    outscale=outscale,
                    background=background,
                    tracker=tracker,
                    progress=bar,
                    cancel=cancel,
                )
                write_image(
                    image.replace(pixels=result.image, alpha=result.alpha, source=None),
                    target,
                    fmt=args.format,
                    overwrite=args.overwrite,
                )
                if args.save_faces:
                    _save_faces(result, source, target.parent / "faces", args.overwrite)
            except CancelledError:
                raise
            except RestoreKitError as exc:
                failures.append((str(source), str(exc)))
                print(f"restorekit: {source}: {exc}", file=sys.stderr)
                continue
            finally:
                bar.close()
            done += 1
            faces = "no face" if result.face_count == 0 else f"{result.face_count} face{'s' if result.face_count > 1 else ''}"
            if tracker is not None and result.face_count:
                faces += ", track " + ", ".join(str(info.track_id) for info in result.faces)
            if not args.quiet:
                print(f"[{number}/{len(files)}] {source} -> {target} ({faces})")
            for notice in result.notices:
                if notice not in pipeline.notices:
                    print(f"restorekit: note: {source.name}: {notice}", file=sys.stderr)
    if failures:
        print(f"restorekit: {len(failures)} input(s) failed, {done} written:", file=sys.stderr)
        for text, reason in failures:
            print(f"  {text}: {reason}", file=sys.stderr)
        return 1
    return 0
