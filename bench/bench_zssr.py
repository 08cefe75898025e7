"""Benchmark: ZSSR's PSNR gain over bicubic against the time budget, on real photos.

Each high-resolution crop of a skimage photo is downscaled x2 with antialiased bicubic
(the ideal case the paper's Set5 figure is for), then brought back x2 by:

- bicubic interpolation (the baseline the paper reports against);
- bicubic followed by back-projection (BP alone, no learning: shows how much of the
  gain the network itself adds);
- ZSSR with the default, iteration-controlled (deterministic) config;
- ZSSR with wall-clock budgets (30, 60 and 120 s by default).

All in one process, one after the other, on the CPU. PSNR is on RGB in [0, 1] over the
whole image, and on the luma channel (BT.601, 16-235) with ``scale`` pixels shaved off each
border, as SR papers report it. Wall-clock results depend on the machine's load (shared
hosts vary by 2-5x); the load average is recorded with each run, and the process CPU time
too.

    PYTHONPATH=$PWD python bench/bench_zssr.py [--quick] [--budgets 30 60 120]
        [--images 0 1] [--precisions auto fp32] [--threads N]
        [--json bench/results_zssr.json] [--markdown table.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from restorekit.zssr import ZSSRConfig, zssr_upscale_with_report  # noqa: E402
from restorekit.zssr.inference import back_project  # noqa: E402
from restorekit.zssr.resize import resize_bicubic  # noqa: E402

# (photo, top, left, height, width) of the high-resolution crops.
FULL_IMAGES = [
    ("coffee", 50, 150, 256, 256),
    ("chelsea", 30, 100, 256, 256),
    ("astronaut", 0, 128, 256, 256),
    ("astronaut", 0, 0, 512, 512),
]
QUICK_IMAGES = [("coffee", 190, 300, 128, 128)]
QUICK_ITERATIONS = 150


def photo(name: str, top: int, left: int, height: int, width: int) -> torch.Tensor:
    from skimage import data

    array = getattr(data, name)()[top : top + height, left : left + width]
    return torch.from_numpy(np.ascontiguousarray(array).astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def psnr_rgb(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def psnr_y(a: torch.Tensor, b: torch.Tensor, shave: int) -> float:
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64).view(1, 3, 1, 1) / 255.0

    def luma(x: torch.Tensor) -> torch.Tensor:
        y = (x.double().clamp(0, 1) * weights).sum(dim=1) + 16.0 / 255.0
        return y[..., shave:-shave, shave:-shave] if shave else y

    mse = torch.mean((luma(a) - luma(b)) ** 2).item()
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


@dataclass
class Row:
    image: str
    lr_size: str
    method: str
    budget: str
    psnr: float
    psnr_y: float
    gain: float
    gain_y: float
    iterations: int
    stop: str
    wall_s: float
    cpu_s: float
    load: float


def measure(
    name: str,
    high: torch.Tensor,
    configs: list[tuple[str, str, ZSSRConfig]],
) -> list[Row]:
    height, width = high.shape[-2:]
    low = resize_bicubic(high, (height // 2, width // 2)).clamp(0, 1)
    lr_size = f"{width // 2}x{height // 2}"
    bicubic = resize_bicubic(low, (height, width)).clamp(0, 1)
    base, base_y = psnr_rgb(bicubic, high), psnr_y(bicubic, high, 2)
    rows = [Row(name, lr_size, "bicubic", "-", base, base_y, 0.0, 0.0, 0, "-", 0.0, 0.0, os.getloadavg()[0])]
    projected = back_project(bicubic.clone(), low, resize_bicubic, 10)
    p, py = psnr_rgb(projected, high), psnr_y(projected, high, 2)
    rows.append(Row(name, lr_size, "bicubic + back-projection", "-", p, py, p - base, py - base_y, 0, "-", 0.0, 0.0, os.getloadavg()[0]))
    print(_format(rows[0]), flush=True)
    print(_format(rows[1]), flush=True)
    for method, budget, config in configs:
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        result = zssr_upscale_with_report(low, 2, config)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        p, py = psnr_rgb(result.output, high), psnr_y(result.output, high, 2)
        stage = result.stages[0]
        row = Row(name, lr_size, method, budget, p, py, p - base, py - base_y, stage.iterations, stage.stop_reason, wall, cpu, load)
        rows.append(row)
        print(_format(row), flush=True)
    return rows


def _format(row: Row) -> str:
    return (
        f"{row.image:10} {row.lr_size:8} {row.method:28} {row.budget:>7} "
        f"PSNR {row.psnr:6.2f} dB ({row.gain:+.2f})  Y {row.psnr_y:6.2f} dB ({row.gain_y:+.2f})  "
        f"it {row.iterations:5} {row.stop:12} wall {row.wall_s:6.1f} s  cpu {row.cpu_s:6.1f} s  load {row.load:.1f}"
    )


def markdown(rows: list[Row]) -> str:
    lines = [
        "| image (LR size) | method | budget | PSNR RGB (gain) | PSNR Y (gain) | iterations | stop | wall s | CPU s | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.image} ({r.lr_size}) | {r.method} | {r.budget} | {r.psnr:.2f} ({r.gain:+.2f}) | "
            f"{r.psnr_y:.2f} ({r.gain_y:+.2f}) | {r.iterations or '-'} | {r.stop} | "
            f"{r.wall_s:.1f} | {r.cpu_s:.1f} | {r.load:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"one 64x64 crop, {QUICK_ITERATIONS} iterations and 10 and 20 s budgets (about a minute)")
    parser.add_argument("--budgets", type=float, nargs="*", help="time budgets in seconds (default 30 60 120)")
    parser.add_argument("--no-default", action="store_true", help="skip the default iteration-controlled run")
    parser.add_argument(
        "--precisions", nargs="*", default=["auto"],
        help="precisions of the default run (e.g. auto fp32 to compare bf16 autocast with fp32)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--images", type=int, nargs="*", help="indices into the image list (default all)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--markdown", type=Path, help="write a markdown table here")
    args = parser.parse_args()

    images = QUICK_IMAGES if args.quick else FULL_IMAGES
    if args.images:
        images = [images[i] for i in args.images]
    budgets = args.budgets if args.budgets is not None else ([10.0, 20.0] if args.quick else [30.0, 60.0, 120.0])
    default = ZSSRConfig(iterations=QUICK_ITERATIONS) if args.quick else ZSSRConfig()
    configs: list[tuple[str, str, ZSSRConfig]] = []
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_default:
        for precision in args.precisions:
            label = "ZSSR (default config)" if precision == "auto" else f"ZSSR (default, {precision})"
            configs.append((label, f"{default.iterations} it", default.replace(precision=precision)))
    for seconds in budgets:
        configs.append(("ZSSR (time budget)", f"{seconds:g} s", default.replace(time_budget_s=seconds, iterations=100_000)))

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"defaults: {default.iterations} it, crop {default.crop_size}x{default.batch_size}, precision {default.precision}",
        flush=True,
    )
    rows: list[Row] = []
    for name, top, left, height, width in images:
        rows.extend(measure(name, photo(name, top, left, height, width), configs))
    table = markdown(rows)
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
