"""``restorekit demo``: the main job on an embedded default, with no manual steps.

Fetches the default upscaler through the registry (whichever source works here) and
upscales the bundled sample image into ./outputs/.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..registry import ensure_model, load_registry
from .common import cancel_on_interrupt, progress_for

SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "sample.png"


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="download the default model (through whichever source works) and upscale the bundled sample",
    )
    parser.add_argument("-o", "--output", default="outputs", help="output folder (default: ./outputs)")
    parser.add_argument("--precision", default="auto", help="auto, fp32, fp16 or bf16 (default: auto)")
    parser.set_defaults(handler=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from ..imageio import read_image, write_image
    from ..models import load_model
    from ..upscale import Upscaler

    entry = load_registry().default_model("upscale")
    with cancel_on_interrupt() as cancel:
        bar = progress_for(args)
        try:
            result = ensure_model(entry, progress=bar, cancel=cancel)
        finally:
            bar.close()
        how = f"downloaded from {result.source}" if result.downloaded else "already installed"
        print(f"{entry.name}: {how} -> {result.path}")
        upscaler = Upscaler(load_model(entry.name, purpose="upscale"), precision=args.precision)
        image = read_image(SAMPLE)
        bar = progress_for(args)
        try:
            upscaled = upscaler.upscale_image(image, progress=bar, cancel=cancel)
        finally:
            bar.close()
    target = Path(args.output) / f"{SAMPLE.stem}_{entry.name}_x{upscaler.scale}.png"
    write_image(upscaled, target, overwrite=True)
    print(
        f"upscaled {SAMPLE.name} {image.width}x{image.height} -> {upscaled.width}x{upscaled.height} "
        f"({upscaler.plan.describe()}): {target.resolve()}"
    )
    return 0
