"""``restorekit kernel``: estimate an image's own downscaling kernel (across-scale
consistency fit, or KernelGAN).

Writes the kernel as ``.npy`` (float64, sums to 1; ``restorekit zssr --kernel FILE`` reads
it) and a picture of it (PNG), so a kernel can be estimated once and reused, inspected, or
fed to other tools.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError
from .common import cancel_on_interrupt, progress_for
from .zssr import ZSSRProgress


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..zssr import KernelGANConfig

    defaults = KernelGANConfig()
    parser = subparsers.add_parser(
        "kernel",
        parents=[common],
        help="estimate an image's blur kernel (for zssr --kernel)",
        description="Estimate the kernel an image was downscaled with, from the image alone. "
        "The default method fits the Gaussian that makes the image's own downscale as sharp "
        "as the image (across-scale consistency): the Gaussian where it clearly explains the "
        "image, else the widest common resizer not too wide for it (area, then opencv-cubic; "
        "about a second); --method kernelgan trains KernelGAN (Bell-Kligler et al., "
        "NeurIPS 2019), which on small CPU-sized inputs does not recover kernels (see "
        "bench/RESULTS_zssr.md). Writes the kernel of one x2 (or x4) step as .npy and a PNG "
        "picture of it. Deterministic for a given --seed and --iterations on the same machine.",
    )
    parser.add_argument("input", metavar="INPUT", help="the low-resolution image")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="kernel file (.npy), or an existing folder (then INPUT_kernel_x2.npy)",
    )
    parser.add_argument(
        "--picture", metavar="PNG",
        help="where to write the kernel's picture (default: OUT with .png); 'none' to skip",
    )
    parser.add_argument("-s", "--scale", type=int, default=2, choices=[2, 4], help="kernel of an x2 step, or its x4 composition (default %(default)s)")
    parser.add_argument("--method", default=defaults.method, choices=["consistency", "kernelgan"], help="estimation method (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=defaults.iterations, metavar="N", help="KernelGAN training iterations (default %(default)s, the paper's)")
    parser.add_argument("--budget-seconds", type=float, metavar="T", help="stop after T seconds (not deterministic)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--progress", action="store_true", help="draw the progress bar even when stderr is not a terminal")
    parser.set_defaults(handler=cmd_kernel)
    return parser


def _paths(args: argparse.Namespace, source: Path) -> tuple[Path, Path | None]:
    output = Path(args.output)
    if output.is_dir():
        output = output / f"{source.stem}_kernel_x{args.scale}.npy"
    if output.suffix.lower() != ".npy":
        raise InvalidParameterError(f"The kernel is written as .npy; {output.name} has another extension.")
    picture: Path | None = output.with_suffix(".png")
    if args.picture:
        picture = None if args.picture.strip().lower() == "none" else Path(args.picture)
    for path in (output, picture):
        if path is None:
            continue
        if path.exists() and source.exists() and path.resolve() == source.resolve():
            raise InvalidParameterError(f"Refusing to overwrite the input {source}; choose another output path.")
        if path.exists() and not args.overwrite:
            raise InvalidParameterError(f"{path} exists; pass --overwrite to replace it.")
    return output, picture


def cmd_kernel(args: argparse.Namespace) -> int:
    import io

    import numpy as np

    from ..files import atomic_write_bytes
    from ..imageio import image_from_array, read_image, write_image
    from ..zssr import KernelGANConfig, estimate_kernel, kernel_for_factor, kernel_picture

    source = Path(args.input)
    output, picture = _paths(args, source)
    changes: dict[str, Any] = {"iterations": args.iterations, "seed": args.seed, "method": args.method}
    if args.budget_seconds is not None:
        changes["time_budget_s"] = args.budget_seconds
    config = KernelGANConfig(**changes).validate()
    image = read_image(source)
    pixels = image.pixels[:, :1] if image.was_gray else image.pixels
    with cancel_on_interrupt() as cancel:
        bar = progress_for(args)
        progress = ZSSRProgress(disable=bar.disable)
        try:
            estimate = estimate_kernel(pixels, config, progress=progress, cancel=cancel)
        finally:
            progress.close()
    kernel = kernel_for_factor(estimate.kernel, args.scale)
    buffer = io.BytesIO()
    np.save(buffer, kernel, allow_pickle=False)
    atomic_write_bytes(output, buffer.getvalue())
    written = [str(output)]
    if picture is not None:
        array = (kernel_picture(kernel)[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        write_image(image_from_array(array), picture, overwrite=args.overwrite)
        written.append(str(picture))
    print(
        f"{', '.join(written)}: x{args.scale} kernel {kernel.shape[1]}x{kernel.shape[0]} of "
        f"{image.width}x{image.height} ({estimate.source}"
        + (f", {estimate.iterations} iterations, {estimate.stop_reason}" if estimate.iterations else "")
        + f") in {estimate.seconds:.1f} s"
    )
    return 0
