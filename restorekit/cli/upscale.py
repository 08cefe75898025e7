"""``restorekit upscale``: upscale image files and folders with any upscale model.

The job for each image is a :class:`restorekit.restore.Restorer` built once from the parsed
arguments (:func:`settings_from_args`): a spandrel model through the tiled upscale engine
(optionally blended along its registry pair by ``--denoise``/``--sharpness``), zero-shot SR
(``--model zssr``) or a plain resize, then optional face restoration (``--face-restore``):
:class:`RestoreWork`, which ``faces`` shares. Reading, writing, skipping, failures, progress,
the summary and ``--cluster`` are the shared file runner's (:mod:`restorekit.cli.batch`).
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path
from typing import Any

from ..batch import BatchJob, JobOutcome, read_source
from ..compiled import COMPILE_MODES
from ..device import UPSCALE_PRECISIONS, float_precision, release_freed_memory
from ..errors import InvalidParameterError
from ..imageio import DecodedImage
from ..outputs import OutputWriter
from ..progress import CancelCheck, ProgressCallback
from ..upscale import parse_tile
from ..zssr.config import GUARD_CHOICES, guard_setting
from .batch import add_cluster_arguments, add_output_arguments, run_file_batch
from .common import (
    cancel_on_interrupt,
    engine_type,
    non_negative_int,
    positive_float,
    positive_int,
    print_notices_once,
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

    add_face_arguments(parser, model_flag="--face-restore", restore_by_default=False)
    add_zssr_arguments(parser)
    add_cluster_arguments(parser)
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
    run.add_argument("--precision", choices=UPSCALE_PRECISIONS, default="auto", help="auto picks bf16 on CPUs with AVX512-BF16/AMX and on GPUs, else fp32; int8 (CPU) only for models that pass its quality gate")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--alpha", choices=["model", "resize"], default="model", help="upscale transparency with the model (sharp) or by resizing (fast)")
    add_compile_argument(run)


def add_compile_argument(parser: Any) -> None:
    """``--compile auto|on|off`` (the upscale and face models' compiled execution)."""
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default="auto",
        help="compiled execution (torch.compile) of the upscale model for repeated tile/frame shapes, and of "
        "the face model for repeated face batches: auto "
        "compiles where the job's work pays for the compile (once per machine, then cached), on always, "
        "off never (default: auto; needs a C++ compiler such as g++)",
    )


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
    group.add_argument(
        "--zssr-kernel", "--kernel", dest="zssr_kernel", default=None, metavar="FILE|auto|area|opencv-cubic",
        help="downscaling kernel: a kernel file, 'auto' to estimate it per image, 'area' for images "
        "halved by an area or bilinear resize (cv2's default), or 'opencv-cubic' for images made by "
        "cv2.resize's cubic without antialiasing (default bicubic)",
    )
    group.add_argument(
        "--zssr-guards", choices=list(GUARD_CHOICES), default="on",
        help="on: fall back to bicubic where the network would likely not beat it (kernel check, transfer "
        "check one scale down, held-out strip); no-transfer-check: every guard but the transfer check; "
        "off: always the network (default on)",
    )


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

        changes: dict[str, Any] = {"device": args.device, "precision": float_precision(args.precision), "seed": getattr(args, "seed", 0)}
        changes.update(guard_setting(getattr(args, "zssr_guards", None)))
        if getattr(args, "zssr_iterations", None):
            changes["iterations"] = args.zssr_iterations
        if getattr(args, "zssr_seconds", None):
            changes["time_budget_s"] = args.zssr_seconds
        kernel = getattr(args, "zssr_kernel", None)
        if kernel:
            from ..zssr.config import kernel_setting

            changes["kernel"] = kernel_setting(kernel)
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
        "compile": getattr(args, "compile", "auto"),
    }
    if face_model is not None:
        from .faces import tracking_from_args

        values["face_tracking"] = tracking_from_args(args)
    values.update(overrides)
    return RestoreSettings(**values)


class RestoreWork:
    """The :class:`~restorekit.batch.FileWork` of ``upscale`` and ``faces``: one
    :class:`~restorekit.restore.Restorer` (loaded once per process) applied to every image,
    written with the batch's format options; ``save_faces`` also writes the aligned face
    crops and the face mask to ``<output folder>/faces/``."""

    def __init__(self, settings: Any, *, fmt: str | None = None, quality: int = 95, save_faces: bool = False) -> None:
        self.settings = settings
        self.fmt = fmt
        self.quality = quality
        self.save_faces = save_faces
        self.notices: list[str] = []
        self.description = ""
        self._restorer: Any = None
        self._tracker: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_restorer"] = None  # workers load their own
        state["_tracker"] = None
        return state

    def prepare(self, progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> None:
        from ..restore import Restorer

        if self._restorer is None:
            self._restorer = Restorer(self.settings, progress=progress, cancel=cancel)
            self.notices = list(self._restorer.notices)
            self.description = self._restorer.description
            # with face tracking the files are one clip's frames, run in order: one tracker
            # carries the tracks from file to file (None without tracking)
            self._tracker = self._restorer.new_tracker()

    def process(self, job: BatchJob, writer: OutputWriter, progress: ProgressCallback, cancel: CancelCheck) -> JobOutcome:
        self.prepare()
        image = read_source(job)
        out, result = self._restorer.run_image(image, tracker=self._tracker, progress=progress, cancel=cancel)
        del image
        release_freed_memory()
        writer.image(out.replace(source=None), job.target, fmt=self.fmt, quality=self.quality)
        note = ""
        if result.faces is not None:
            count = result.faces.face_count
            note = "no face" if count == 0 else f"{count} face{'s' if count > 1 else ''}"
            if self._tracker is not None and count:
                note += ", track " + ", ".join(str(info.track_id) for info in result.faces.faces)
            if self.save_faces:
                _save_faces(result.faces, job.source, job.target.parent / "faces", writer)
        return JobOutcome(notices=list(result.notices), note=note)

    def remote(self) -> tuple[dict[str, Path], RestoreWork]:
        from ..cluster.models import ship_settings

        files, settings = ship_settings(self.settings)
        clone = copy.copy(self)
        clone.settings = settings
        clone._restorer = None
        clone._tracker = None
        return files, clone


def _save_faces(faces: Any, source: Path, folder: Path, writer: OutputWriter) -> None:
    """Aligned crops (restored and original) and the face mask of one image."""
    import torch

    for index in range(faces.face_count):
        for kind, crops in (("restored", faces.restored_faces), ("original", faces.original_faces)):
            writer.image(DecodedImage(pixels=crops[index : index + 1]), folder / f"{source.stem}_{index:02d}_{kind}.png")
    mask = faces.face_mask[:1].expand(-1, 3, -1, -1)
    writer.image(DecodedImage(pixels=torch.clamp(mask, 0, 1), was_gray=True), folder / f"{source.stem}_mask.png")


def prepare_work(work: RestoreWork, args: argparse.Namespace) -> None:
    """Load the work's models here (downloads with a progress bar; bad names fail before any
    file is read) and print its run-wide notices."""
    with cancel_on_interrupt() as cancel:
        bar = progress_for(args)
        try:
            work.prepare(progress=bar, cancel=cancel)
        finally:
            bar.close()
    for notice in work.notices:
        print(f"restorekit: note: {notice}", file=sys.stderr)


def cmd_upscale(args: argparse.Namespace) -> int:
    _check_size_arguments(args)
    print_notices_once()  # each job's notices are printed with its name (restorekit: note: ...)
    work = RestoreWork(settings_from_args(args), fmt=args.format, quality=args.quality)
    prepare_work(work, args)
    if work.description and not args.quiet:
        print(f"upscaling with {work.description}")
    with cancel_on_interrupt() as cancel:
        report = run_file_batch(args, work, cancel=cancel, describe="upscaled")
    return 1 if report.failed else 0
