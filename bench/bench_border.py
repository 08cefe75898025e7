"""Quality benchmark: how much mirrored pre-pad the image border needs.

A crop of a real photo is upscaled alone with a mirrored pre-pad of 0 to 24 px, and compared
with the same crop cut out of a run over the crop *and* 48 px of its real surroundings (the
best the border can be without knowing the pixels beyond it). Reported as PSNR over the outer
8 input pixels of the crop ("border") and over the rest ("interior"), per photo.

The engine's ``feather`` layout pre-pads nothing (``DEFAULT_PRE_PAD``) because of this
measurement: the network's own zero padding lands closer to the true continuation than a
mirror does. Quality only, no timing; fp32, one thread.

    PYTHONPATH=$PWD python bench/bench_border.py [--models RealESRGAN_x4plus,realesr-animevideov3]
        [--pads 0,2,4,8,10,16,24] [--crop 96] [--context 48]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe_cpu  # noqa: E402

DEFAULT_WEIGHTS = Path(os.environ.get("RESTOREKIT_SHARED", REPO.parent / "shared")) / "weights"
PHOTOS = ("astronaut", "coffee", "chelsea")
ORIGIN = (120, 150)  # (row, column) of the crop in each photo: textured, away from edges


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean().clamp_min(1e-12)))


def photo(name: str) -> torch.Tensor:
    from skimage import data

    return torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255


def border_mask(shape: torch.Size, band: int) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[..., :band, :] = mask[..., -band:, :] = True
    mask[..., :, :band] = mask[..., :, -band:] = True
    return mask


def measure(model_name: str, pads: list[int], crop: int, context: int, weights: Path) -> dict[int, list[tuple[float, float]]]:
    from restorekit.models import load_model
    from restorekit.upscale import Upscaler

    descriptor = load_model(weights / f"{model_name}.safetensors", purpose="upscale")
    results: dict[int, list[tuple[float, float]]] = {p: [] for p in pads}
    for name in PHOTOS:
        image = photo(name)
        y0, x0 = ORIGIN
        around = image[:, :, y0 - context : y0 + crop + context, x0 - context : x0 + crop + context]
        runner = Upscaler(descriptor, precision="fp32", tile=0, pre_pad=0)
        s = runner.scale
        truth = runner.upscale(around).pixels[:, :, context * s : (context + crop) * s, context * s : (context + crop) * s]
        mask = border_mask(truth.shape, 8 * s)
        alone = image[:, :, y0 : y0 + crop, x0 : x0 + crop]
        for pad in pads:
            out = Upscaler(descriptor, precision="fp32", tile=0, pre_pad=pad).upscale(alone).pixels
            results[pad].append((psnr(out[mask], truth[mask]), psnr(out[~mask], truth[~mask])))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="RealESRGAN_x4plus,realesr-animevideov3")
    parser.add_argument("--pads", default="0,2,4,8,10,16,24")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--context", type=int, default=48)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe_cpu() + " (quality only: no timing, so no conv peak)")
    pads = [int(p) for p in args.pads.split(",")]
    print(f"| model | pre-pad | border PSNR vs real context ({', '.join(PHOTOS)}) | interior PSNR |")
    print("|---|---|---|---|")
    for model_name in args.models.split(","):
        for pad, values in measure(model_name, pads, args.crop, args.context, args.weights).items():
            border = " / ".join(f"{b:.2f}" for b, _ in values)
            interior = " / ".join(f"{i:.2f}" for _, i in values)
            print(f"| {model_name} | {pad} | {border} | {interior} |", flush=True)


if __name__ == "__main__":
    main()
