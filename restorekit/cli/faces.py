"""``restorekit faces``: restore the faces in photos (detect, align, restore, paste back).

::

    restorekit faces photo.jpg old_photos/ -o restored/ --outscale 2 --face-strength 0.8

Inputs are files and folders (searched recursively, the structure kept under OUT). The job
is a :class:`~restorekit.restore.RestoreSettings` (background: ``--bg-model`` or a bicubic
resize; faces: the options below) run by the shared :class:`~restorekit.cli.upscale.RestoreWork`
through the CLI's one file runner (:mod:`restorekit.cli.batch`): each result is written
atomically as ``<name><suffix>.<ext>`` (the input's format unless ``--format``), keeping bit
depth, gray and alpha; inputs are never overwritten; existing outputs are skipped unless
``--overwrite``; bad files are reported and the rest go on (exit code 1); ``--cluster`` runs
the files on Ray.

``--track`` treats all the input images as the consecutive frames of one clip: they run in
natural name order (``frame2`` before ``frame10``), one after another on this machine,
through the same :class:`~restorekit.restore.Restorer` call and
:class:`~restorekit.faces.tracking.FaceTracker` that ``restorekit video`` uses, so faces
are linked into tracks, smoothed, and selected by track (``--face-select largest``,
``center`` or a track id). Tracking is stateful, so ``--track`` refuses ``--cluster``.

:func:`add_face_arguments` and :func:`face_options_from_args` are shared with other
commands that restore faces (``restorekit upscale --face-restore``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import InvalidParameterError
from ..imageio import normalize_format
from .batch import add_cluster_arguments, add_output_arguments, run_file_batch
from .common import cancel_on_interrupt, number_type, positive_float, positive_int, strength


def add_face_arguments(parser: argparse.ArgumentParser, *, model_flag: str = "--face-model", restore_by_default: bool = True) -> None:
    """The face options every face-restoring command takes (``--face-strength``...).

    ``model_flag`` names the face model option (``--face-model`` here, ``--face-restore``
    in ``restorekit upscale``, where ``restore_by_default=False`` leaves faces alone; the default is the registry's)."""
    from ..faces.pipeline import DEFAULT_DETECTOR, DEFAULT_PARSER
    from ..registry.schema import default_model_name

    model_default = default_model_name("face_restore", required=False) if restore_by_default else None

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
        help="paste-back mask: auto, parsing_parsenet (non-commercial weights), parsing_bisenet (MIT licence), face_oval "
        f"(Face Mesh oval, Apache-2.0) or ellipse (default: {DEFAULT_PARSER}: parsing_parsenet when installed, else face_oval)",
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
    from ..faces.tracking import DEFAULT_FPS, SmoothingSettings

    defaults = SmoothingSettings()
    group = parser.add_argument_group("face tracks (consecutive frames)")
    if default_on:
        group.add_argument("--no-face-track", dest="face_track", action="store_false", help="restore every frame's faces on their own: no tracks, no smoothing")
    else:
        group.add_argument(
            "--track", dest="face_track", action="store_true",
            help="the inputs are the consecutive frames of one clip, run in natural name order (frame2 before frame10) "
            "one after another on this machine, as restorekit video runs them: faces are linked into tracks, smoothed, "
            "and --face-select picks a track (largest, center or a track id); not with --cluster or --aligned",
        )
    group.set_defaults(face_track=default_on)
    group.add_argument("--face-detect-every", type=positive_int, default=1, metavar="K", help="run the face detector every K frames; in between faces are refined or predicted (default: 1)")
    group.add_argument("--no-face-smoothing", dest="face_smoothing", action="store_false", help="use each frame's landmarks as detected")
    group.add_argument("--face-min-cutoff", type=positive_float, default=defaults.min_cutoff, metavar="HZ", help=f"One Euro filter cutoff at rest: lower is smoother (default: {defaults.min_cutoff})")
    group.add_argument("--face-beta", type=float, default=defaults.beta, metavar="B", help=f"One Euro filter speed coefficient: higher follows fast moves sooner (default: {defaults.beta})")
    group.add_argument("--face-blend", type=_blend, default=0.0, metavar="B", help="blend each restored face with its track's previous one by B, against flicker (default: 0, off)")
    if not default_on:  # a video brings its own frame rate (and ``video`` has --fps for folders)
        group.add_argument(
            "--fps", dest="track_fps", type=positive_float, default=DEFAULT_FPS, metavar="FPS",
            help=f"with --track: the frames' rate, the smoothing's time scale (default: {DEFAULT_FPS:g})",
        )


def tracking_from_args(args: argparse.Namespace) -> Any:
    """:class:`~restorekit.faces.tracking.TrackingSettings` from :func:`add_tracking_arguments`'
    options, or None when tracking is off (or the command has no tracking options)."""
    if not getattr(args, "face_track", False):
        return None
    from ..faces.tracking import SmoothingSettings, TrackingSettings

    smoothing = SmoothingSettings(min_cutoff=args.face_min_cutoff, beta=args.face_beta) if args.face_smoothing else None
    values: dict[str, Any] = {}
    if getattr(args, "track_fps", None) is not None:  # faces --track; video takes the video's own rate
        values["fps"] = args.track_fps
    return TrackingSettings(detect_every=args.face_detect_every, smoothing=smoothing, face_blend=args.face_blend, **values)


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "faces",
        parents=[common],
        help="restore faces in photos (GFPGAN/RestoreFormer), with an optional background upscaler",
        description="Restore the faces in photos: detect, align, restore in batches, paste back onto the "
        "background (a resize, or an upscale model with --bg-model). Folders are searched recursively "
        "and their structure is kept under OUT. Existing outputs are skipped unless --overwrite; "
        "inputs are never overwritten; bad files are reported and the rest go on.",
    )
    add_output_arguments(parser)
    add_face_arguments(parser)
    parser.add_argument("--aligned", action="store_true", help="inputs are already aligned 512x512 faces (no detection, no paste-back)")
    parser.add_argument("--outscale", type=positive_float, default=None, metavar="S", help="output size over input size, any factor (default: the background model's scale, else 1)")
    parser.add_argument("--bg-model", default=None, metavar="MODEL", help="upscale model for everything but the faces (default: a high-quality resize)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="default: auto (bf16 where it is fast)")
    parser.add_argument("--save-faces", action="store_true", help="also write the aligned crops (restored and original) and the face mask to OUT/faces/")
    from .upscale import add_compile_argument

    add_compile_argument(parser)
    add_tracking_arguments(parser, default_on=False)
    add_cluster_arguments(parser)
    parser.set_defaults(handler=cmd_faces)
    return parser


def settings_from_face_args(args: argparse.Namespace) -> Any:
    """The :class:`~restorekit.restore.RestoreSettings` of ``restorekit faces``: the
    background (``--bg-model``, else the face pipeline's bicubic resize) plus the faces."""
    from ..restore import BICUBIC, RestoreSettings

    if args.face_batch is not None and args.face_batch < 1:
        raise InvalidParameterError("--face-batch must be at least 1.")
    tracking = tracking_from_args(args)
    if tracking is not None and args.aligned:
        raise InvalidParameterError("--track needs whole frames to find faces in; drop --aligned (aligned faces have no tracks).")
    if tracking is not None and getattr(args, "cluster", None):
        raise InvalidParameterError(
            "--track runs the frames in order on this machine (face tracks carry from frame to frame), so it cannot "
            "spread them over a cluster; drop --cluster, or restore the frames without --track."
        )
    return RestoreSettings(
        model=args.bg_model or BICUBIC,
        outscale=args.outscale,
        precision=args.precision,
        device=args.device,
        face_model=args.face_model,
        face_options=face_options_from_args(args, aligned=args.aligned),
        face_batch=args.face_batch,
        compile=getattr(args, "compile", "auto"),
        face_tracking=tracking,
    )


def clip_jobs(jobs: list[Any]) -> list[Any]:
    """``jobs`` as the frames of one clip: naturally sorted by input path (``frame2`` before
    ``frame10``, folders in path order), re-numbered in that order."""
    from dataclasses import replace
    from pathlib import PurePath

    from ..video.source import natural_key

    def key(job: Any) -> list[list[Any]]:
        return [natural_key(piece) for piece in PurePath(job.source).parts]

    return [replace(job, index=number) for number, job in enumerate(sorted(jobs, key=key))]


def cmd_faces(args: argparse.Namespace) -> int:
    from .upscale import RestoreWork, prepare_work

    if args.format:
        normalize_format(args.format)
    settings = settings_from_face_args(args)
    work = RestoreWork(settings, fmt=args.format, quality=args.quality, save_faces=args.save_faces)
    prepare_work(work, args)
    options = settings.face_options
    if not options.uses_ellipse and "parsenet" in str(options.resolved_parser).lower():
        print(
            "restorekit: note: parsing_parsenet's weights are CC BY-NC-SA 4.0 (non-commercial); "
            "use --face-parser parsing_bisenet or ellipse for commercial work.",
            file=sys.stderr,
        )
    jobs = None
    if settings.face_tracking is not None:
        from .batch import collect_jobs

        found, problems = collect_jobs(args.inputs, args.output, fmt=args.format, suffix=getattr(args, "suffix", ""))
        jobs = (clip_jobs(found), problems)
    with cancel_on_interrupt() as cancel:
        report = run_file_batch(args, work, cancel=cancel, describe="restored", jobs=jobs)
    return 1 if report.failed else 0
