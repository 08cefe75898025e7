"""``restorekit interpolate``: blend compatible models into a new safetensors file (DNI)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from ..errors import InvalidParameterError
from .common import cancel_on_interrupt, progress_for


def _weights(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers (e.g. 0.2,0.3,0.5)"
        ) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} needs finite numbers, e.g. 0.2,0.3,0.5")
    return values


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "interpolate",
        parents=[common],
        help="blend compatible models (network interpolation) into a new model file",
        description=(
            "Blend the weights of two or more models of one architecture and size, parameter by "
            "parameter: (1 - alpha) * A + alpha * B, or w1 * A + w2 * B + ... (ESRGAN's network "
            "interpolation). Models are registry names, names in the model home, or paths. "
            "The result is a safetensors file usable anywhere a model is, recording its parents' "
            "SHA-256 and weights. For the registry's pairs, `restorekit upscale --denoise/--sharpness` "
            "blends on the fly."
        ),
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="two or more models to blend (A B [C ...])")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--alpha", type=float, help="for two models: (1 - alpha) * A + alpha * B, alpha in [0, 1]")
    how.add_argument("--weights", type=_weights, metavar="W1,W2,...", help="one weight per model, each in [0, 1], summing to 1")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.safetensors", help="where to write the blend")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--no-check", action="store_true", help="skip the broken-merge check")
    parser.add_argument("--strict", action="store_true", help="refuse to write a blend the check finds broken")
    parser.set_defaults(handler=cmd_interpolate)
    return parser


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ..interpolate import interpolate

    if len(args.models) < 2:
        raise InvalidParameterError(
            f"interpolate needs at least two models, got {len(args.models)}; name the models to blend."
        )
    if args.no_check and args.strict:
        raise InvalidParameterError("--strict needs the broken-merge check; drop --no-check.")
    bar = progress_for(args)
    try:
        with cancel_on_interrupt() as cancel:
            result = interpolate(
                args.models,
                args.weights,
                alpha=args.alpha,
                check=not args.no_check,
                progress=bar,
                cancel=cancel,
            )
    finally:
        bar.close()
    verdict = result.check
    if verdict is not None and verdict.status == "broken":
        if args.strict:
            print(f"restorekit: error: the blend looks broken ({verdict.detail}); nothing was written.", file=sys.stderr)
            return 1
        print(f"restorekit: warning: the blend looks broken: {verdict.detail}.", file=sys.stderr)
    digest = result.save(args.output, overwrite=args.overwrite)
    descriptor = result.descriptor
    print(f"wrote {args.output}: {result.formula} ({descriptor.architecture.name}, x{descriptor.scale}); sha256 {digest}")
    if verdict is not None and verdict.status != "broken":
        print(f"merge check: {verdict.status}: {verdict.detail}")
    return 0
