"""``restorekit train``: train or fine-tune an upscaler on a folder of images."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import TqdmProgress, cancel_on_interrupt, progress_for


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..train.config import PRESET_DESCRIPTIONS

    presets = "; ".join(f"{name}: {text}" for name, text in PRESET_DESCRIPTIONS.items())
    parser = subparsers.add_parser(
        "train",
        parents=[common],
        help="train or fine-tune Real-ESRGAN / ESRGAN / compact upscalers on your own images",
        description="Train an upscaler on a folder of HR images: LR made on the fly by Real-ESRGAN's "
        "degradation (or real pairs, or bicubic). Presets follow the official option files. "
        "Runs data-parallel under `torchrun --nproc-per-node N -m restorekit train ...`. "
        f"Presets: {presets}.",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="folder of HR training images (searched recursively)")
    parser.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder: checkpoints, metrics, pictures, the model")
    parser.add_argument("--preset", default="realesrgan-x4plus", help="training recipe (default %(default)s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="change one setting, e.g. --set batch_size=4 --set iterations=2000 --set degrade.jpeg_range=60,95 (see --list-settings)",
    )
    parser.add_argument("--lr", metavar="DIR", help="LR folder for mode=paired (files matched to --data by name)")
    parser.add_argument("--val", metavar="DIR", help="held-out HR images for validation (PSNR/SSIM on Y)")
    parser.add_argument("--val-lr", metavar="DIR", help="real LR images of --val (else made with fixed seeds)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its newest checkpoint")
    parser.add_argument("--force", action="store_true", help="resume despite a changed config, or start over in a used RUN_DIR")
    parser.add_argument("--register", metavar="NAME", help="import the trained model into the model home as NAME")
    parser.add_argument("--list-settings", action="store_true", help="print every setting of --preset with its value and exit")
    parser.add_argument("--progress", action="store_true", help="draw the progress bar even when stderr is not a terminal")
    parser.set_defaults(handler=cmd_train)
    return parser


def _print_settings(config: Any) -> None:
    for key, value in config.to_dict().items():
        print(f"{key} = {value}")


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import Trainer, get_preset

    config = get_preset(args.preset, args.overrides)
    if args.list_settings:
        _print_settings(config)
        return 0
    if args.register:
        from ..files import check_safe_name

        check_safe_name(args.register, what="model name")
    with cancel_on_interrupt() as cancel:
        bar = progress_for(args)
        progress = TqdmProgress(disable=bar.disable)
        try:
            trainer = Trainer(
                config, args.data, args.output, lr_data=args.lr, val_data=args.val, val_lr_data=args.val_lr,
                resume=args.resume, force=args.force, progress=progress, cancel=cancel,
            )  # fmt: skip
            result = trainer.run()
        finally:
            progress.close()
    if not trainer.group.main:
        return 0
    for name, reason in result.skipped_images:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    quality = ""
    if result.last_validation is not None:
        quality = f", validation PSNR-Y {result.last_validation.psnr:.2f} dB, SSIM-Y {result.last_validation.ssim:.4f}"
    if result.stop_reason == "cancelled":
        print(f"stopped at iteration {result.iterations}; checkpoint {result.checkpoint}; continue with --resume")
    print(f"{result.output}: {config.generator} x{config.scale} after {result.iterations} iterations{quality}")
    if args.register and result.output is not None:
        from ..models import import_model

        registered = import_model(result.output, name=args.register, overwrite=args.force)
        print(f"registered as {registered.name} ({registered.path}); use: restorekit upscale -m {registered.name} ...")
    return 130 if result.stop_reason == "cancelled" else 0
