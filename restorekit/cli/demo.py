"""``restorekit demo``: the main job on an embedded default, with no manual steps."""

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
        help="download the default model (through whichever source works) and run it on the bundled sample",
    )
    parser.add_argument("-o", "--output", default="outputs", help="output folder (default: ./outputs)")
    parser.set_defaults(handler=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    entry = load_registry().default_model("upscale")
    with cancel_on_interrupt() as cancel:
        bar = progress_for(args)
        result = ensure_model(entry, progress=bar, cancel=cancel)
        bar.close()
    how = f"downloaded from {result.source}" if result.downloaded else "already installed"
    print(f"{entry.name}: {how} -> {result.path}")
    return 0
