"""Diagnostic: does KernelGAN recover known kernels? A sweep over isotropic Gaussian blurs
(sigma in high-resolution pixels) and sharp downscales on skimage photos; prints the
estimated kernel's standard deviation per axis next to the truth.

    PYTHONPATH=$PWD python bench/diag_kernelgan.py [--sigmas 0.8 1.2 1.8 2.5] [--images astronaut coffee]
        [--lr-size 128] [--iterations 1000] [--set field=value ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe_cpu  # noqa: E402

from restorekit.progress import Reporter  # noqa: E402
from restorekit.zssr import kernelgan  # noqa: E402
from restorekit.zssr.kernelgan import KernelGANConfig  # noqa: E402

GAN_WEIGHT = 1.0
D_STATS: list[tuple[float, float]] = []


class _Probe(kernelgan._Estimation):
    """Scales G's GAN loss (0: constraints only) and records D's mean output on real and fake."""


    def _step(self, iteration: int) -> float:
        original = self._gan_loss
        calls = {"n": 0}

        def gan(prediction, real):
            calls["n"] += 1
            loss = original(prediction, real)
            if calls["n"] == 1:  # G's loss
                return loss * GAN_WEIGHT
            if calls["n"] == 2:
                D_STATS.append((float("nan"), float(prediction.detach().mean())))
            elif calls["n"] == 3:
                D_STATS[-1] = (float(prediction.detach().mean()), D_STATS[-1][1])
            return loss

        self._gan_loss = gan  # type: ignore[method-assign]
        try:
            return super()._step(iteration)
        finally:
            del self._gan_loss


def probe_estimate(low, config):
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _Probe(low.clone(), config.validate(), Reporter.of(None, None)).run()
from restorekit.zssr.resize import kernel_downscaler, resize_bicubic  # noqa: E402

CROPS = {"astronaut": (0, 0), "coffee": (0, 80), "chelsea": (0, 0), "camera": (0, 0), "brick": (0, 0), "rocket": (0, 0)}


def gaussian(sigma: float, side: int = 14) -> np.ndarray:
    z = np.arange(side) - (side - 1) / 2.0
    g = np.exp(-(z**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()


def moments(kernel: np.ndarray) -> tuple[float, float]:
    """Standard deviations along rows and columns (of the positive part)."""
    k = np.clip(kernel, 0, None)
    k = k / k.sum()
    ys, xs = np.indices(k.shape)
    cy, cx = (k * ys).sum(), (k * xs).sum()
    return float(np.sqrt((k * (ys - cy) ** 2).sum())), float(np.sqrt((k * (xs - cx) ** 2).sum()))


def high_image(name: str, side: int) -> torch.Tensor:
    from skimage import color, data

    array = getattr(data, name)()
    if array.ndim == 2:
        array = color.gray2rgb(array)
    top, left = CROPS.get(name, (0, 0))
    array = array[top : top + side, left : left + side, :3]
    return torch.from_numpy(np.ascontiguousarray(array).astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def degrade(high: torch.Tensor, how: str) -> torch.Tensor:
    size = (high.shape[-2] // 2, high.shape[-1] // 2)
    if how == "bicubic-aa":
        return resize_bicubic(high, size).clamp(0, 1)
    if how == "area":
        return torch.nn.functional.avg_pool2d(high, 2)
    if how == "cubic-noaa":
        import cv2

        array = high[0].permute(1, 2, 0).numpy()
        return torch.from_numpy(cv2.resize(array, size[::-1], interpolation=cv2.INTER_CUBIC)).permute(2, 0, 1)[None].clamp(0, 1)
    sigma = float(how)
    return kernel_downscaler(gaussian(sigma), 2)(high, size).clamp(0, 1)


def parse_set(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, value = item.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sigmas", nargs="*", default=["0.8", "1.2", "1.8", "2.5"])
    parser.add_argument("--images", nargs="*", default=["astronaut", "coffee"])
    parser.add_argument("--lr-size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--set", nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gan-weight", type=float, default=1.0)
    args = parser.parse_args()
    global GAN_WEIGHT
    GAN_WEIGHT = args.gan_weight
    torch.set_num_threads(args.threads)
    config = KernelGANConfig(iterations=args.iterations, seed=args.seed).replace(**parse_set(args.set))
    print(describe_cpu())
    print(f"config overrides: {args.set}; iterations {args.iterations}; LR {args.lr_size}")
    errors = []
    for name in args.images:
        high = high_image(name, 2 * args.lr_size)
        for how in args.sigmas:
            low = degrade(high, how)
            start = time.process_time()
            D_STATS.clear()
            estimate = probe_estimate(low, config)
            tail = np.array(D_STATS[-200:])
            sy, sx = moments(estimate.kernel)
            ry, rx = moments(estimate.raw_kernel)
            truth = float(how) if how[0].isdigit() else float("nan")
            est = (sy + sx) / 2
            if truth == truth:
                errors.append(abs(est - truth) / truth)
            print(
                f"{name:10s} {how:>10s} true sigma {truth:4.2f}  est {sy:4.2f} {sx:4.2f}  raw {ry:4.2f} {rx:4.2f}  "
                f"sum(raw) {estimate.raw_kernel.sum():5.2f} bic {estimate.bicubic_loss:.3f} "
                f"D real {tail[:, 0].mean():.3f} fake {tail[:, 1].mean():.3f} {estimate.iterations} it {time.process_time() - start:5.1f} cpu s",
                flush=True,
            )
    if errors:
        print(f"mean relative sigma error {np.mean(errors):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
