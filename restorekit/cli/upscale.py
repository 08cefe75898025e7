"""``restorekit upscale``: upscale image files and folders with any upscale model.

The job for each image is built by :func:`build_job` from the parsed arguments: a spandrel
model (registry name or file, through :class:`restorekit.upscale.Upscaler`) or one of the
built-in pseudo-models in :data:`BUILTIN_MODELS`. Reading, writing, skipping, failures,
progress and the summary are the shared batch runner's (:mod:`restorekit.cli.batch`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..device import PRECISIONS
from ..errors import InvalidParameterError
from ..imageio import DecodedImage
from ..progress import CancelCheck, ProgressCallback
from .batch import ImageJob, add_output_arguments, run_image_batch
from .common import cancel_on_interrupt, progress_for

BUILTIN_MODELS: dict[str, Callable[[argparse.Namespace], ImageJob]] = {}
"""Pseudo-models that are not spandrel networks, by ``--model`` name: each maps the parsed
arguments to an :data:`~restorekit.cli.batch.ImageJob`. Wiring one in is one line, e.g.
``BUILTIN_MODELS["zssr"] = zssr_job``."""


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
    parser.set_defaults(handler=cmd_upscale)
    return parser


def _tile(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 0 or a size in pixels, got {text!r}") from None
    if value != 0 and value < 16:
        raise argparse.ArgumentTypeError("tiles must be at least 16 px (0 = no tiling)")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_upscale_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, scale and execution options (reusable by commands that upscale)."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "-m",
        "--model",
        default=None,
        metavar="NAME|PATH",
        help="registry model name, imported model name or model file (default: the registry's "
        "default upscaler, RealESRGAN_x4plus)",
    )
    size = parser.add_argument_group("output size (default: the model's scale)")
    size.add_argument("-s", "--outscale", type=_positive_float, metavar="S", help="any scale factor > 0, e.g. 2 or 3.5")
    size.add_argument("--width", type=_positive_int, metavar="W", help="exact output width (alone: keeps the aspect ratio)")
    size.add_argument("--height", type=_positive_int, metavar="H", help="exact output height (alone: keeps the aspect ratio)")
    run = parser.add_argument_group("execution")
    run.add_argument("--tile", type=_tile, default="auto", metavar="auto|N", help="tile size in input pixels, 0 for none (default: auto from free memory)")
    run.add_argument("--overlap", type=_non_negative_int, default=None, metavar="N", help="context pixels per tile side (default: exact for compact models, 16 for deep ones)")
    run.add_argument("--precision", choices=PRECISIONS, default="auto", help="auto picks bf16 on CPUs with AVX512-BF16/AMX and on GPUs, else fp32")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--alpha", choices=["model", "resize"], default="model", help="upscale transparency with the model (sharp) or by resizing (fast)")


def _check_size_arguments(args: argparse.Namespace) -> None:
    if args.outscale is not None and (args.width is not None or args.height is not None):
        raise InvalidParameterError("Give --outscale or --width/--height, not both.")


def _model_job(args: argparse.Namespace) -> ImageJob:
    from ..models import load_model
    from ..registry import load_registry
    from ..upscale import Upscaler

    reference = args.model or load_registry().default_model("upscale").name
    with cancel_on_interrupt() as cancel:
        bar = progress_for(args)
        try:
            descriptor = load_model(reference, purpose="upscale", progress=bar, cancel=cancel)
        finally:
            bar.close()
    upscaler = Upscaler(descriptor, precision=args.precision, device=args.device, tile=args.tile, overlap=args.overlap)
    options = {"outscale": args.outscale, "width": args.width, "height": args.height, "alpha_mode": args.alpha}

    def job(image: DecodedImage, progress: ProgressCallback, cancel: CancelCheck) -> DecodedImage:
        return upscaler.upscale_image(image, progress=progress, cancel=cancel, **options)

    job.description = (  # type: ignore[attr-defined]
        f"{reference} (x{upscaler.scale}, {upscaler.plan.describe()})"
    )
    return job


def build_job(args: argparse.Namespace) -> ImageJob:
    """The per-image job for these arguments: a built-in pseudo-model or a spandrel model."""
    _check_size_arguments(args)
    name = (args.model or "").strip().lower()
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name](args)
    return _model_job(args)


def cmd_upscale(args: argparse.Namespace) -> int:
    job = build_job(args)
    description = getattr(job, "description", None)
    if description and not args.quiet:
        print(f"upscaling with {description}")
    with cancel_on_interrupt() as cancel:
        report = run_image_batch(args, job, cancel=cancel, describe="upscaled")
    return 1 if report.failed else 0
