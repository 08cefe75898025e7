"""The ``restorekit`` command line.

Each command lives in its own module with ``register(subparsers, common)``, where ``common``
is a parent parser holding the shared options (``-v``, ``-q``, ``--models-dir``) that every
leaf parser takes through ``parents=[common]``. Adding a command means adding one module and
one line to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from .common import add_common_options, run_guarded, setup_logging, tune_process_memory

COMMANDS: tuple[str, ...] = ("demo", "upscale", "faces", "video", "degrade", "interpolate", "zssr", "kernel", "models", "run", "app")
"""Command modules under ``restorekit.cli``, in help order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restorekit",
        description="Real-world image restoration: upscaling, face restoration, degradation, "
        "network interpolation and zero-shot SR.",
    )
    parser.add_argument("--version", action="version", version=f"restorekit {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    add_common_options(common)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tune_process_memory()  # before the command modules import torch
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging(args.verbose, args.quiet)
    if getattr(args, "models_dir", None):
        from ..registry.home import configure_home

        configure_home(args.models_dir)
    return run_guarded(lambda: int(args.handler(args) or 0))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
