"""``restorekit zssr``: zero-shot super-resolution of one image, with no downloaded weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError
from .common import TqdmProgress, cancel_on_interrupt, print_notices_once, progress_for

DEFAULT_TIME_CAP_ITERATIONS = 100_000
"""With --budget-seconds the iteration cap is this high, so the time budget decides."""


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..zssr import ZSSRConfig
    from ..zssr.config import GUARD_CHOICES

    defaults = ZSSRConfig()
    parser = subparsers.add_parser(
        "zssr",
        parents=[common],
        help="zero-shot super-resolution: learn to upscale from the image itself (no weights)",
        description="Upscale an image with ZSSR (Shocher et al., CVPR 2018): a small network "
        "is trained on the image alone, from downscaled copies of itself, then applied to it. "
        "Needs no downloaded weights. Deterministic for a given --seed and --iterations on "
        "the same machine; --budget-seconds stops by wall-clock time instead (not "
        "deterministic).",
    )
    parser.add_argument("input", metavar="INPUT", help="image to upscale")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="output file (its extension picks the format), or an existing folder",
    )
    parser.add_argument("-s", "--scale", type=float, required=True, metavar="S", help="upscaling factor, e.g. 2 or 4")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--iterations", type=int, metavar="N",
        help=f"training iterations per stage (default {defaults.iterations}; deterministic)",
    )
    budget.add_argument(
        "--budget-seconds", type=float, metavar="T",
        help="wall-clock budget of the whole job in seconds, training and inference "
        "(not deterministic)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--no-ensemble", action="store_true", help="skip the 8-transform self-ensemble (8x faster inference)")
    parser.add_argument("--no-back-projection", action="store_true", help="skip back-projection (for noisy inputs)")
    parser.add_argument(
        "--kernel", metavar="FILE|auto|area|opencv-cubic",
        help="blur kernel of one downscaling step (.npy, .txt/.csv or KernelGAN .mat), "
        "'auto' to estimate it from the image (a Gaussian blur where one clearly explains the "
        "image, else the widest common resizer not too wide for it: area, then opencv-cubic; "
        "see --kernel-method), 'area' for images halved by an area or bilinear resize "
        "(cv2.resize's default), or 'opencv-cubic' for images made by "
        "cv2.resize(..., INTER_CUBIC) without antialiasing; default bicubic",
    )
    parser.add_argument(
        "--kernel-method", choices=["consistency", "kernelgan"],
        help=f"how --kernel auto estimates the kernel (default {defaults.kernel_estimation.method})",
    )
    parser.add_argument(
        "--kernel-iterations", type=int, metavar="N",
        help=f"KernelGAN iterations for --kernel auto (default {defaults.kernel_estimation.iterations})",
    )
    parser.add_argument(
        "--save-kernel", metavar="NPY",
        help="with --kernel auto: also write the estimated x2 kernel here (.npy)",
    )
    guards = parser.add_mutually_exclusive_group()
    guards.add_argument(
        "--guards", choices=list(GUARD_CHOICES), default=None,
        help="on: fall back to bicubic where the network would likely not beat it: a held-out "
        "strip of the image, a network trained one scale down rebuilding the image itself (the "
        "transfer check), a kernel clearly too wide for the image (the kernel check); "
        "no-transfer-check: every guard but the transfer check, which is one seeded training near "
        "its margin and can refuse a network that would have gained (bench/RESULTS_zssr.md); "
        "off: always the network. The same choices as 'restorekit upscale --zssr-guards' (default on)",
    )
    guards.add_argument("--no-guard", action="store_true", help="the same as --guards off")
    guards.add_argument("--no-transfer-check", action="store_true", help="the same as --guards no-transfer-check")
    parser.add_argument("--noise", type=float, default=defaults.noise_std, metavar="STD", help="noise added to the training inputs, e.g. 0.01 for noisy photos (default %(default)s)")
    parser.add_argument("--crop-size", type=int, default=defaults.crop_size, help="training crop side (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="crops per iteration (default %(default)s)")
    parser.add_argument("--max-stage-scale", type=float, default=defaults.max_stage_scale, help="largest factor per stage; larger scales go in equal steps (default %(default)s)")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N (default %(default)s)")
    parser.add_argument("--precision", default=defaults.precision, choices=["auto", "fp32", "fp16", "bf16"], help="default %(default)s")
    parser.add_argument("--format", help="output format when OUT has no usable extension (png, jpg, webp, tif)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--progress", action="store_true", help="draw the progress bar even when stderr is not a terminal")
    parser.set_defaults(handler=cmd_zssr)
    return parser


class ZSSRProgress(TqdmProgress):
    """One percentage bar for the whole job, with the iteration, loss and lr as postfix."""

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.disable:
            return
        from tqdm.auto import tqdm

        label, _, detail = message.partition(": ")
        if self._bar is None:
            self._bar = tqdm(
                total=max(total, 1),
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
                dynamic_ncols=True,
                leave=False,
                file=sys.stderr,
            )
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.set_description_str(label, refresh=False)
        self._bar.set_postfix_str(detail, refresh=False)
        self._bar.n = done
        self._bar.refresh()


def _output_path(args: argparse.Namespace, source: Path) -> Path:
    output = Path(args.output)
    if output.is_dir():
        scale = f"{args.scale:g}".replace(".", "_")
        extension = f".{args.format.lower().lstrip('.')}" if args.format else source.suffix or ".png"
        output = output / f"{source.stem}_zssr_x{scale}{extension}"
    return output


def guard_choice(args: argparse.Namespace) -> str:
    """The ``--guards`` choice, with ``--no-guard`` and ``--no-transfer-check`` as its short forms."""
    if getattr(args, "no_guard", False):
        return "off"
    if getattr(args, "no_transfer_check", False):
        return "no-transfer-check"
    return getattr(args, "guards", None) or "on"


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~restorekit.zssr.ZSSRConfig` the command line asks for."""
    from ..zssr import KernelGANConfig, ZSSRConfig
    from ..zssr.config import guard_setting, kernel_setting

    changes: dict[str, Any] = {
        "seed": args.seed,
        "self_ensemble": not args.no_ensemble,
        "back_projection": not args.no_back_projection,
        "noise_std": args.noise,
        "crop_size": args.crop_size,
        "batch_size": args.batch_size,
        "max_stage_scale": args.max_stage_scale,
        "device": args.device,
        "precision": args.precision,
    }
    if args.iterations is not None:
        changes["iterations"] = args.iterations
    if args.budget_seconds is not None:
        changes["time_budget_s"] = args.budget_seconds
        changes["iterations"] = DEFAULT_TIME_CAP_ITERATIONS
    if args.kernel:
        changes["kernel"] = kernel_setting(args.kernel)
    estimation: dict[str, Any] = {}
    if getattr(args, "kernel_iterations", None) is not None:
        estimation["iterations"] = args.kernel_iterations
    if getattr(args, "kernel_method", None) is not None:
        estimation["method"] = args.kernel_method
    if estimation:
        changes["kernel_estimation"] = KernelGANConfig(**estimation)
    changes.update(guard_setting(guard_choice(args)))
    config = ZSSRConfig(**changes).validate()
    if getattr(args, "save_kernel", None) and not config.estimates_kernel:
        raise InvalidParameterError("--save-kernel needs --kernel auto (a given kernel is already a file).")
    return config


def stage_summary(stage: Any) -> str:
    """One stage of the CLI's summary line (``stage``: a
    :class:`~restorekit.zssr.engine.StageReport`): its iterations and stop reason, then what
    the guards measured, or which guard ruled the network out and what was returned instead
    (named as the stage's notice names it)."""
    from ..zssr.engine import KERNEL_CHECK, TRANSFER_CHECK, fallback_name

    fallback = fallback_name(stage.back_projected)
    # the guards that rule the network out before training, by stop reason
    reasons = {
        KERNEL_CHECK: f"the kernel does not suit the image, {fallback} used (see the notice)",
        TRANSFER_CHECK: f"what the network learns one scale down does not carry over, {fallback} used (see the notice)",
    }
    head = f"stage {stage.index + 1}: {stage.iterations} it ({stage.stop_reason})"
    if stage.stop_reason in reasons:
        return f"{head}: {reasons[stage.stop_reason]}"
    where = "held-out " if stage.held_out else ""
    verdict = "" if stage.network_used else f": network not better, {fallback} used"
    return f"{head}, {where}self-reconstruction {stage.guard_gain_db:+.2f} dB vs bicubic{verdict}"


def cmd_zssr(args: argparse.Namespace) -> int:
    from ..imageio import format_from_path, normalize_format, read_image, write_image
    from ..zssr import zssr_upscale_image_with_report

    print_notices_once()  # the guards' notices are printed below, after the summary
    source = Path(args.input)
    output = _output_path(args, source)
    fmt = normalize_format(args.format) if args.format else format_from_path(output)
    if output.exists():
        if source.exists() and output.resolve() == source.resolve():
            raise InvalidParameterError(
                f"Refusing to overwrite the input {source}; choose another output path."
            )
        if not args.overwrite:
            raise InvalidParameterError(f"{output} exists; pass --overwrite to replace it.")
    config = build_config(args)
    kernel_path = Path(args.save_kernel) if args.save_kernel else None
    if kernel_path is not None:
        if kernel_path.suffix.lower() != ".npy":
            raise InvalidParameterError(f"--save-kernel writes .npy; {kernel_path.name} has another extension.")
        if kernel_path.exists() and not args.overwrite:
            raise InvalidParameterError(f"{kernel_path} exists; pass --overwrite to replace it.")
    image = read_image(source)
    with cancel_on_interrupt() as cancel:
        bar = progress_for(args)
        progress = ZSSRProgress(disable=bar.disable)
        try:
            result_image, result = zssr_upscale_image_with_report(
                image, args.scale, config, progress=progress, cancel=cancel
            )
        finally:
            progress.close()
    written = write_image(result_image, output, fmt=fmt, quality=args.quality, overwrite=args.overwrite)
    if kernel_path is not None and result.kernels:
        import io

        import numpy as np

        from ..files import atomic_write_bytes

        buffer = io.BytesIO()
        np.save(buffer, result.kernels[0].kernel, allow_pickle=False)
        atomic_write_bytes(kernel_path, buffer.getvalue())
    last = result.stages[-1]
    gains = ", ".join(stage_summary(s) for s in result.stages)
    if result.transfer_checks:
        check = result.transfer_checks[0]
        gains += f"; transfer check {check.gain_db:+.2f} dB ({check.iterations} it, {check.seconds:.1f} s)"
    estimated = ""
    if result.kernels:
        estimate = result.kernels[0]
        estimated = (
            f", kernel estimated in {estimate.seconds:.1f} s ({estimate.source}"
            + (f", {estimate.iterations} iterations)" if estimate.iterations else ")")
            + (f" -> {kernel_path}" if kernel_path is not None else "")
        )
    print(
        f"{written}: {image.width}x{image.height} -> {last.output_size[1]}x{last.output_size[0]} "
        f"in {result.seconds:.1f} s on {result.execution} ({gains}{estimated})"
    )
    for notice in result.notices:
        print(f"notice: {notice}", file=sys.stderr)
    return 0
