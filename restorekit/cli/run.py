"""``restorekit run``: execute an API-format ComfyUI workflow of RestoreKit nodes headless."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..frontends import load_front_end
from .common import cancel_on_interrupt, progress_for


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run",
        parents=[common],
        help="run an API-format ComfyUI workflow of RestoreKit nodes without ComfyUI",
        description="Run an API-format workflow (ComfyUI's 'Export (API)', or example_workflows/api/*.json) "
        "made of RestoreKit nodes plus LoadImage, SaveImage, PreviewImage and ImageScaleBy. The whole graph is "
        "checked before anything runs; ComfyUI stays the real engine.",
    )
    parser.add_argument("workflow", type=Path, metavar="WORKFLOW_API.json", help="API-format workflow file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="NODE_ID.input=value",
        help="change an input before running (repeatable; values are JSON where they parse), e.g. --set 1.image=cat.png",
    )  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, default=Path("output"), metavar="OUTDIR", help="where SaveImage writes (default: ./output)")
    parser.add_argument("--input-dir", type=Path, default=None, metavar="DIR", help="where LoadImage reads (default: the workflow's folder)")
    parser.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    parser.set_defaults(handler=cmd_run)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    runner = load_front_end("nodes", "runner")
    comfy = load_front_end("nodes", "comfy")
    progress = progress_for(args)
    comfy.set_progress_sink(progress)
    input_dir = args.input_dir if args.input_dir is not None else args.workflow.resolve().parent
    try:
        with cancel_on_interrupt() as flag:
            flag.on_set = comfy.request_interrupt
            result = runner.run_workflow(args.workflow, overrides=args.overrides, input_dir=input_dir, output_dir=args.output)
    finally:
        progress.close()
        comfy.set_progress_sink(None)
    for path in result.saved:
        print(path)
    print(f"{len(result.saved)} image(s) saved under {args.output}", flush=True)
    return 0
