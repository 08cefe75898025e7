"""Benchmark: Real-ESRGAN training-pair synthesis, RestoreKit vs basicsr's reference path.

Both sides turn batches of 400x400 GT crops from real photos into (HR, LR) x4 pairs with
the official x4plus settings, on the CPU, in one process, interleaved batch by batch:

- reference: the numpy kernel generation of ``RealESRGANDataset.__getitem__`` (crop/pad to
  400, blur kernels, sinc kernels) plus the torch ops of ``RealESRGANModel.feed_data``
  (USM sharpening of the GT, two degradation stages, DiffJPEG, final sinc, rounding);
  the training-only parts (paired random crop to gt_size, the pair queue and the second
  USM after it) are left out, which only flatters the reference;
- ours: ``restorekit.degrade.make_pairs(batch, "realesrgan", scale=4, crop=400)``.

basicsr's files are loaded as plain modules (tests/degrade_reference.py), since the
basicsr package does not import on current torchvision.

    PYTHONPATH=$PWD python bench/bench_degrade.py [--batches 6] [--batch-size 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from machine import best_peaks, conv_peaks, cpu_description, describe_cpu, describe_peaks  # noqa: E402

from restorekit.degrade import get_preset, jpeg_roundtrip, make_pairs, sample_plan, usm_sharpen  # noqa: E402
from restorekit.degrade.ops import filter2d  # noqa: E402

import degrade_reference as ref  # noqa: E402

# train_realesrgan_x4plus.yml
OPT = {
    "scale": 4,
    "blur_kernel_size": 21,
    "kernel_list": ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"],
    "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob": 0.1,
    "blur_sigma": [0.2, 3],
    "betag_range": [0.5, 4],
    "betap_range": [1, 2],
    "blur_kernel_size2": 21,
    "kernel_list2": ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"],
    "kernel_prob2": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob2": 0.1,
    "blur_sigma2": [0.2, 1.5],
    "betag_range2": [0.5, 4],
    "betap_range2": [1, 2],
    "final_sinc_prob": 0.8,
    "resize_prob": [0.2, 0.7, 0.1],
    "resize_range": [0.15, 1.5],
    "gaussian_noise_prob": 0.5,
    "noise_range": [1, 30],
    "poisson_scale_range": [0.05, 3],
    "gray_noise_prob": 0.4,
    "jpeg_range": [30, 95],
    "second_blur_prob": 0.8,
    "resize_prob2": [0.3, 0.4, 0.3],
    "resize_range2": [0.3, 1.2],
    "gaussian_noise_prob2": 0.5,
    "noise_range2": [1, 25],
    "poisson_scale_range2": [0.05, 2.5],
    "gray_noise_prob2": 0.4,
    "jpeg_range2": [30, 95],
}
CROP = 400


def load_photos() -> list[np.ndarray]:
    """Real RGB photos from scikit-image, float32 BGR in [0, 1] (as basicsr loads them)."""
    from skimage import data

    names = ["astronaut", "coffee", "rocket", "immunohistochemistry", "chelsea", "hubble_deep_field"]
    photos = []
    for name in names:
        array = np.ascontiguousarray(getattr(data, name)()[:, :, :3]).astype(np.float32) / 255.0
        photos.append(np.ascontiguousarray(array[:, :, ::-1]))
    return photos


# --------------------------------------------------------------------------- reference


class Reference:
    """basicsr's RealESRGANDataset kernel generation + RealESRGANModel.feed_data, on the CPU."""

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        self.deg = ref.degradations()
        ipu = ref.img_process_util()
        self.filter2d = ipu.filter2D
        self.usm = ipu.USMSharp()
        self.jpeger = ref.diffjpeg().DiffJPEG(differentiable=False)
        self.kernel_range = [2 * v + 1 for v in range(3, 11)]
        self.pulse = torch.zeros(21, 21)
        self.pulse[10, 10] = 1

    def _kernel(self, suffix: str) -> np.ndarray:
        kernel_size = random.choice(self.kernel_range)
        if np.random.uniform() < OPT[f"sinc_prob{suffix}"]:
            omega_c = np.random.uniform(np.pi / 3, np.pi) if kernel_size < 13 else np.random.uniform(np.pi / 5, np.pi)
            kernel = self.deg.circular_lowpass_kernel(omega_c, kernel_size, pad_to=False)
        else:
            kernel = self.deg.random_mixed_kernels(
                OPT[f"kernel_list{suffix}"],
                OPT[f"kernel_prob{suffix}"],
                kernel_size,
                OPT[f"blur_sigma{suffix}"],
                OPT[f"blur_sigma{suffix}"],
                [-math.pi, math.pi],
                OPT[f"betag_range{suffix}"],
                OPT[f"betap_range{suffix}"],
                noise_range=None,
            )
        pad_size = (21 - kernel_size) // 2
        return np.pad(kernel, ((pad_size, pad_size), (pad_size, pad_size)))

    def get_item(self, img_gt: np.ndarray) -> dict[str, torch.Tensor]:
        """``RealESRGANDataset.__getitem__`` after loading (no flips: they cost nothing)."""
        h, w = img_gt.shape[0:2]
        if h < CROP or w < CROP:
            img_gt = self.cv2.copyMakeBorder(img_gt, 0, max(0, CROP - h), 0, max(0, CROP - w), self.cv2.BORDER_REFLECT_101)
        if img_gt.shape[0] > CROP or img_gt.shape[1] > CROP:
            h, w = img_gt.shape[0:2]
            top, left = random.randint(0, h - CROP), random.randint(0, w - CROP)
            img_gt = img_gt[top : top + CROP, left : left + CROP, ...]
        kernel = self._kernel("")
        kernel2 = self._kernel("2")
        if np.random.uniform() < OPT["final_sinc_prob"]:
            kernel_size = random.choice(self.kernel_range)
            omega_c = np.random.uniform(np.pi / 3, np.pi)
            sinc_kernel = torch.FloatTensor(self.deg.circular_lowpass_kernel(omega_c, kernel_size, pad_to=21))
        else:
            sinc_kernel = self.pulse
        gt = torch.from_numpy(np.ascontiguousarray(img_gt[:, :, ::-1].transpose(2, 0, 1))).float()
        return {"gt": gt, "kernel1": torch.FloatTensor(kernel), "kernel2": torch.FloatTensor(kernel2), "sinc_kernel": sinc_kernel}

    @torch.no_grad()
    def feed_data(self, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The degradation part of ``RealESRGANModel.feed_data``."""
        d = self.deg

        def filter2d(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
            # basicsr's filter2D calls view() on F.pad's output, which keeps DiffJPEG's
            # channels-last-like strides on current torch and then fails; contiguous() is
            # the smallest fix and does not change the numbers.
            return self.filter2d(image.contiguous(), kernel)

        gt = data["gt"]
        gt_usm = self.usm(gt)
        ori_h, ori_w = gt.size()[2:4]
        out = filter2d(gt_usm, data["kernel1"])
        updown_type = random.choices(["up", "down", "keep"], OPT["resize_prob"])[0]
        scale = np.random.uniform(1, OPT["resize_range"][1]) if updown_type == "up" else np.random.uniform(OPT["resize_range"][0], 1) if updown_type == "down" else 1
        out = F.interpolate(out, scale_factor=scale, mode=random.choice(["area", "bilinear", "bicubic"]))
        if np.random.uniform() < OPT["gaussian_noise_prob"]:
            out = d.random_add_gaussian_noise_pt(out, sigma_range=OPT["noise_range"], clip=True, rounds=False, gray_prob=OPT["gray_noise_prob"])
        else:
            out = d.random_add_poisson_noise_pt(out, scale_range=OPT["poisson_scale_range"], gray_prob=OPT["gray_noise_prob"], clip=True, rounds=False)
        jpeg_p = out.new_zeros(out.size(0)).uniform_(*OPT["jpeg_range"])
        out = self.jpeger(torch.clamp(out, 0, 1), quality=jpeg_p)
        if np.random.uniform() < OPT["second_blur_prob"]:
            out = filter2d(out, data["kernel2"])
        updown_type = random.choices(["up", "down", "keep"], OPT["resize_prob2"])[0]
        scale = np.random.uniform(1, OPT["resize_range2"][1]) if updown_type == "up" else np.random.uniform(OPT["resize_range2"][0], 1) if updown_type == "down" else 1
        size = (int(ori_h / OPT["scale"] * scale), int(ori_w / OPT["scale"] * scale))
        out = F.interpolate(out, size=size, mode=random.choice(["area", "bilinear", "bicubic"]))
        if np.random.uniform() < OPT["gaussian_noise_prob2"]:
            out = d.random_add_gaussian_noise_pt(out, sigma_range=OPT["noise_range2"], clip=True, rounds=False, gray_prob=OPT["gray_noise_prob2"])
        else:
            out = d.random_add_poisson_noise_pt(out, scale_range=OPT["poisson_scale_range2"], gray_prob=OPT["gray_noise_prob2"], clip=True, rounds=False)
        target = (ori_h // OPT["scale"], ori_w // OPT["scale"])
        if np.random.uniform() < 0.5:
            out = F.interpolate(out, size=target, mode=random.choice(["area", "bilinear", "bicubic"]))
            out = filter2d(out, data["sinc_kernel"])
            jpeg_p = out.new_zeros(out.size(0)).uniform_(*OPT["jpeg_range2"])
            out = self.jpeger(torch.clamp(out, 0, 1), quality=jpeg_p)
        else:
            jpeg_p = out.new_zeros(out.size(0)).uniform_(*OPT["jpeg_range2"])
            out = self.jpeger(torch.clamp(out, 0, 1), quality=jpeg_p)
            out = F.interpolate(out, size=target, mode=random.choice(["area", "bilinear", "bicubic"]))
            out = filter2d(out, data["sinc_kernel"])
        lq = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
        return gt_usm, lq

    def pairs(self, photos: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.get_item(photo) for photo in photos]
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        return self.feed_data(batch)


# --------------------------------------------------------------------------- ours


def ours_pairs(photos: list[np.ndarray], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same job through RestoreKit: one (B, 3, H, W) batch per photo size, crop 400."""
    his, los = [], []
    for index, photo in enumerate(photos):
        tensor = torch.from_numpy(np.ascontiguousarray(photo[:, :, ::-1].transpose(2, 0, 1)))[None]
        pair = make_pairs(tensor, "realesrgan", scale=4, seed=seed, crop=CROP, first_index=index)
        his.append(pair.hr)
        los.append(pair.lr)
    return torch.cat(his), torch.cat(los)


def _cpu_ms(function, repeat: int = 3) -> float:
    function()
    start = time.process_time()
    for _ in range(repeat):
        function()
    return (time.process_time() - start) / repeat * 1000.0


def components(reference: Reference, batch: int) -> list[tuple[str, float, float]]:
    """CPU milliseconds of the main steps, reference vs ours, on a (batch, 3, 400, 400) input."""
    torch.manual_seed(0)
    images = torch.rand(batch, 3, CROP, CROP)
    kernels = torch.stack([torch.from_numpy(reference._kernel("")).float() for _ in range(batch)])
    quality = torch.full((batch,), 50.0)
    config = get_preset("realesrgan")

    def reference_kernels() -> None:
        for _ in range(batch):
            reference._kernel("")
            reference._kernel("2")

    def our_kernels() -> None:
        for seed in range(batch):
            plan = sample_plan(config, seed, 4)
            for blur in (plan.stage1.blur, plan.stage2.blur if plan.stage2 else None):
                if blur is not None:
                    blur.build()

    return [
        ("USM sharpening", _cpu_ms(lambda: reference.usm(images)), _cpu_ms(lambda: usm_sharpen(images))),
        ("blur, 21x21 kernels", _cpu_ms(lambda: reference.filter2d(images, kernels)), _cpu_ms(lambda: filter2d(images, kernels))),
        ("JPEG q50 (DiffJPEG vs exact libjpeg)", _cpu_ms(lambda: reference.jpeger(images, quality=quality.clone())), _cpu_ms(lambda: jpeg_roundtrip(images, 50))),
        ("kernel sampling (2 per image)", _cpu_ms(reference_kernels), _cpu_ms(our_kernels)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    parser.add_argument("--components", action="store_true", help="also time the main steps one by one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_cpu())
    start_peaks = conv_peaks()
    print(describe_peaks(start_peaks, "at start"), flush=True)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    photos = load_photos()
    reference = Reference()
    batches = [[photos[(b * args.batch_size + i) % len(photos)] for i in range(args.batch_size)] for b in range(args.batches)]

    # warm up both (first calls allocate, build caches, load kernels)
    reference.pairs(batches[0])
    ours_pairs(batches[0], seed=12345)

    wall: dict[str, float] = {"reference": 0.0, "ours": 0.0}
    cpu: dict[str, float] = {"reference": 0.0, "ours": 0.0}
    load_before = os.getloadavg()[0]
    for index, batch in enumerate(batches):
        start, start_cpu = time.perf_counter(), time.process_time()
        hr_ref, lr_ref = reference.pairs(batch)
        wall["reference"] += time.perf_counter() - start
        cpu["reference"] += time.process_time() - start_cpu
        start, start_cpu = time.perf_counter(), time.process_time()
        hr, lr = ours_pairs(batch, seed=index)
        wall["ours"] += time.perf_counter() - start
        cpu["ours"] += time.process_time() - start_cpu
        assert hr.shape == hr_ref.shape and lr.shape == lr_ref.shape, (hr.shape, hr_ref.shape, lr.shape, lr_ref.shape)
    load_after = os.getloadavg()[0]
    end_peaks = conv_peaks()
    print(describe_peaks(end_peaks, "at end"), flush=True)
    pairs = args.batches * args.batch_size
    rates = {name: pairs / seconds for name, seconds in wall.items()}
    cpu_rates = {name: pairs / seconds for name, seconds in cpu.items()}
    ratio = rates["ours"] / rates["reference"]
    cpu_ratio = cpu_rates["ours"] / cpu_rates["reference"]
    print(f"Real-ESRGAN x4plus pair synthesis, {CROP}x{CROP} GT crops -> {CROP // 4}x{CROP // 4} LR, "
          f"{args.batches} batches of {args.batch_size}, {torch.get_num_threads()} threads, CPU "
          f"(load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores)")
    print(f"  {'':18}  {'wall clock':>20}  {'CPU time':>20}")
    for name, label in (("reference", "basicsr reference"), ("ours", "restorekit")):
        print(f"  {label:18}  {rates[name]:8.2f} pairs/s ({wall[name]:5.1f} s)  {cpu_rates[name]:8.2f} pairs/s ({cpu[name]:5.1f} s)")
    print(f"  {'speed-up':18}  {ratio:19.2f}x  {cpu_ratio:19.2f}x")
    steps = components(reference, args.batch_size) if args.components else []
    if steps:
        print(f"  steps on {args.batch_size}x3x{CROP}x{CROP}, CPU ms:   reference      ours   ratio")
        for name, theirs, ours in steps:
            print(f"    {name:38} {theirs:9.1f} {ours:9.1f} {theirs / ours:6.1f}x")
    if args.json:
        record = {
            "benchmark": "degrade_pairs",
            "crop": CROP,
            "scale": 4,
            "batches": args.batches,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "cpu": cpu_description(),
            "conv_peak_gflops": best_peaks(start_peaks, end_peaks),
            "load_average": [load_before, load_after],
            "pairs_per_second_wall": rates,
            "pairs_per_second_cpu": cpu_rates,
            "speedup_wall": ratio,
            "speedup_cpu": cpu_ratio,
            "steps_cpu_ms": {name: {"reference": theirs, "ours": ours} for name, theirs, ours in steps},
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
