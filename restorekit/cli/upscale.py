"""``restorekit upscale``: upscale image files and folders with any upscale model.

The job for each image is a :class:`restorekit.restore.Restorer` built once from the parsed
arguments (:func:`settings_from_args`): a spandrel model through the tiled upscale engine
(optionally blended along its registry pair by ``--denoise``/``--sharpness``), zero-shot SR
(``--model zssr``) or a plain resize, then optional face restoration (``--face-restore``). Reading, writing, skipping, failures,
progress and the summary are the shared batch runner's (:mod:`restorekit.cli.batch`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..device import PRECISIONS
from ..errors import InvalidParameterError
from ..imageio import DecodedImage
from ..progress import CancelCheck, ProgressCallback
from ..upscale import parse_tile
from .batch import ImageJob, add_output_arguments, run_image_batch
from .common import (
    cancel_on_interrupt,
    engine_type,
    non_negative_int,
    positive_float,
    positive_int,
    progress_for,
    strength,
)

logger = logging.getLogger(__name__)


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "upscale",
        parents=[common],
        help="upscale images or folders (Real-ESRGAN or any spandrel model)",
        description="Upscale image files and folders. Folders are searched recursively and "
        "their structure is kept under OUT. Existing outputs are skipped unless --overwrite; "
        "inputs are never overwritten; bad files are reported and the rest go on.",
    )
    add_output_arguments(parser)
    add_upscale_arguments(parser)
    add_strength_arguments(parser)
    from .faces import add_face_arguments

    add_face_arguments(parser, model_flag="--face-restore", model_default=None)
    add_zssr_arguments(parser)
    parser.set_defaults(handler=cmd_upscale)
    return parser


def add_upscale_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, scale and execution options (reusable by commands that upscale)."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "-m",
        "--model",
        default=None,
        metavar="NAME|PATH",
        help="registry model name, imported model name or model file; 'zssr' for zero-shot SR "
        "(no weights) or 'resize' for a plain Lanczos resize (default: the registry's default "
        "upscaler, RealESRGAN_x4plus)",
    )
    size = parser.add_argument_group("output size (default: the model's scale)")
    size.add_argument("-s", "--outscale", type=positive_float, metavar="S", help="any scale factor > 0, e.g. 2 or 3.5")
    size.add_argument("--width", type=positive_int, metavar="W", help="exact output width (alone: keeps the aspect ratio)")
    size.add_argument("--height", type=positive_int, metavar="H", help="exact output height (alone: keeps the aspect ratio)")
    parser.add_argument(
        "--color-fix",
        choices=["none", "wavelet", "adain"],
        default="none",
        help="correct the result's colours towards the input's: wavelet (low frequencies, the usual "
        "choice) or adain (channel mean and spread) (default: none)",
    )
    run = parser.add_argument_group("execution")
    run.add_argument("--tile", type=engine_type(parse_tile), default="auto", metavar="auto|N", help="tile size in input pixels, 0 for none (default: auto from free memory)")
    run.add_argument("--overlap", type=non_negative_int, default=None, metavar="N", help="context pixels per tile side (default: exact for compact models, 16 for deep ones)")
    run.add_argument("--precision", choices=PRECISIONS, default="auto", help="auto picks bf16 on CPUs with AVX512-BF16/AMX and on GPUs, else fp32")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--alpha", choices=["model", "resize"], default="model", help="upscale transparency with the model (sharp) or by resizing (fast)")


def _check_size_arguments(args: argparse.Namespace) -> None:
    if args.outscale is not None and (args.width is not None or args.height is not None):
        raise InvalidParameterError("Give --outscale or --width/--height, not both.")


def add_strength_arguments(parser: argparse.ArgumentParser) -> None:
    """``--denoise`` / ``--sharpness``: move along the model's registry pair."""
    group = parser.add_argument_group("model pair strength (registry pairs only)").add_mutually_exclusive_group()
    group.add_argument(
        "--denoise",
        type=strength,
        metavar="D",
        help="realesr-general-x4v3: 0 keeps noise and detail .. 1 denoises most (the official -dn)",
    )
    group.add_argument(
        "--sharpness",
        type=strength,
        metavar="S",
        help="RealESRGAN_x4plus: 0 = smooth RealESRNet .. 1 = sharp RealESRGAN",
    )


def add_zssr_arguments(parser: argparse.ArgumentParser) -> None:
    """Budget options for ``--model zssr``."""
    group = parser.add_argument_group("zero-shot SR (--model zssr)")
    group.add_argument("--zssr-iterations", type=positive_int, default=None, metavar="N", help="training iterations per stage")
    group.add_argument("--zssr-seconds", type=positive_float, default=None, metavar="T", help="time budget per image in seconds")
    group.add_argument("--seed", type=int, default=0, help="random seed of zero-shot training (default: 0)")


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Any:
    """:class:`~restorekit.restore.RestoreSettings` from the upscale, strength, face and
    zero-shot options (whichever the command has)."""
    from ..restore import RestoreSettings

    face_model = getattr(args, "face_model", None)
    face_options = None
    if face_model is not None:
        from .faces import face_options_from_args

        face_options = face_options_from_args(args)
    zssr = None
    if (args.model or "").strip().lower() == "zssr":
        from ..zssr import ZSSRConfig

        changes: dict[str, Any] = {"device": args.device, "precision": args.precision, "seed": getattr(args, "seed", 0)}
        if getattr(args, "zssr_iterations", None):
            changes["iterations"] = args.zssr_iterations
        if getattr(args, "zssr_seconds", None):
            changes["time_budget_s"] = args.zssr_seconds
        zssr = ZSSRConfig(**changes)
    values: dict[str, Any] = {
        "model": args.model,
        "denoise": getattr(args, "denoise", None),
        "sharpness": getattr(args, "sharpness", None),
        "outscale": args.outscale,
        "width": args.width,
        "height": args.height,
        "tile": args.tile,
        "overlap": args.overlap,
        "precision": args.precision,
        "device": args.device,
        "alpha_mode": args.alpha,
        "face_model": face_model,
        "face_options": face_options,
        "face_batch": getattr(args, "face_batch", None),
        "zssr": zssr,
        "color_fix": getattr(args, "color_fix", "none"),
    }
    if face_model is not None:
        from .faces import tracking_from_args

        values["face_tracking"] = tracking_from_args(args)
    values.update(overrides)
    return RestoreSettings(**values)


def build_job(args: argparse.Namespace) -> ImageJob:
    """The per-image job for these arguments: one :class:`~restorekit.restore.Restorer`
    (loaded once, before any file is read) applied to every image."""
    from ..restore import Restorer

    _check_size_arguments(args)
    settings = settings_from_args(args)
    with cancel_on_interrupt() as cancel:
        bar = progress_for(args)
        try:
            restorer = Restorer(settings, progress=bar, cancel=cancel)
        finally:
            bar.close()
    for notice in restorer.notices:
        print(f"restorekit: note: {notice}", file=sys.stderr)

    def job(image: DecodedImage, progress: ProgressCallback, cancel: CancelCheck) -> DecodedImage:
        out, result = restorer.run_image(image, progress=progress, cancel=cancel)
        for notice in result.notices:
            if notice not in restorer.notices:
                logger.warning("%s: %s", image.source or "image", notice)
        return out

    job.description = restorer.description  # type: ignore[attr-defined]
    return job


def cmd_upscale(args: argparse.Namespace) -> int:
    job = build_job(args)
    description = getattr(job, "description", None)
    if description and not args.quiet:
        print(f"upscaling with {description}")
    with cancel_on_interrupt() as cancel:
        report = run_image_batch(args, job, cancel=cancel, describe="upscaled")
    return 1 if report.failed else 0
