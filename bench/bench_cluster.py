"""Ray scale-out benchmark: ``restorekit upscale --cluster`` with 1 and 2 workers against the
plain CLI on the same files, and Ray's overhead per 256x256 x4 image.

Everything runs on this machine: a loopback Ray cluster on 127.0.0.1 (tests/ray_cluster.py,
own temp dir and HOME) is started per configuration and stopped after it:

- ``local``: ``restorekit upscale`` (all CPUs, one process);
- ``ray-1``: one node with all CPUs, one worker using them;
- ``ray-2``: two nodes splitting the CPUs, one worker each.

Each configuration runs the same command on N and then 2N images; the difference is the
marginal time of N images, free of start-up (Python, torch, Ray connection, model load).
Ray's overhead per image is the marginal time on one worker against the plain CLI's.

    python bench/bench_cluster.py --images 8 --weights ../shared/weights
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ray_cluster import loopback_env, start_loopback_cluster  # noqa: E402

DEFAULT_WEIGHTS = Path(os.environ.get("RESTOREKIT_SHARED", REPO.parent / "shared")) / "weights"


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")]
    return f"{model}; {' '.join(wanted)}"


def conv_peak(threads: int, repeats: int = 10) -> float:
    """fp32 GFLOP/s of one 64->64 3x3 conv, channels_last, 256x256 (best of ``repeats``)."""
    import torch

    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last).eval()
    x = torch.randn(1, 64, 256, 256).to(memory_format=torch.channels_last)
    best = math.inf
    with torch.no_grad():
        for _ in range(3):
            conv(x)
        for _ in range(repeats):
            start = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - start)
    return 2 * 64 * 64 * 9 * 256 * 256 / best / 1e9


def model_gflop(weights: Path, size: int) -> float:
    """GFLOP of one size x size input through the model's convolutions."""
    import spandrel
    import torch
    from safetensors.torch import load_file

    descriptor = spandrel.ModelLoader().load_from_state_dict(load_file(str(weights))).eval()
    total = 0

    def hook(module: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        total += output.numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1] * 2

    handles = [m.register_forward_hook(hook) for m in descriptor.model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        descriptor.model(torch.zeros(1, 3, 64, 64))
    for handle in handles:
        handle.remove()
    return total * (size / 64) ** 2 / 1e9


def make_inputs(folder: Path, count: int, size: int) -> None:
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea()]
    folder.mkdir(parents=True)
    for index in range(count):
        image = sources[index % 3]
        y = (index * 37) % (image.shape[0] - size)
        x = (index * 53) % (image.shape[1] - size)
        Image.fromarray(image[y : y + size, x : x + size]).save(folder / f"img{index:03d}.png")


def run_cli(env: dict[str, str], inputs: Path, output: Path, weights: Path, extra: list[str]) -> float:
    command = [sys.executable, "-m", "restorekit", "upscale", str(inputs), "-o", str(output), "--model", str(weights),
               "--precision", "fp32", "-q", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def measure(name: str, env: dict[str, str], root: Path, images: dict[int, Path], weights: Path, extra: list[str]) -> dict[str, Any]:
    times = {}
    for count, folder in images.items():
        out = root / f"out-{name}-{count}"
        times[count] = run_cli(env, folder, out, weights, extra)
    small, large = sorted(times)
    marginal = (times[large] - times[small]) / (large - small)
    row = {"config": name, "wall_s": times, "marginal_s_per_image": marginal}
    print(f"{name:6} N={small}: {times[small]:6.1f} s  N={large}: {times[large]:6.1f} s  marginal {marginal:.3f} s/image", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="N: runs use N and 2N images (default 8)")
    parser.add_argument("--size", type=int, default=256, help="input side in pixels (default 256)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    weights = args.weights / "realesr-animevideov3.safetensors"
    if not weights.is_file():
        sys.exit(f"{weights} not found (set RESTOREKIT_SHARED or --weights)")
    cpus = os.cpu_count() or 1
    print(f"CPU: {cpu_flags()}; {cpus} CPUs; host shared with other jobs: check the load average: {os.getloadavg()}")
    peak = conv_peak(cpus)
    gflop = model_gflop(weights, args.size)
    print(f"conv peak fp32 ({cpus} threads): {peak:.0f} GFLOP/s; realesr-animevideov3 {args.size}x{args.size} x4: {gflop:.1f} GFLOP/image")
    root = Path(tempfile.mkdtemp(prefix="rkbench"))
    rows = []
    try:
        images = {n: root / f"in-{n}" for n in (args.images, 2 * args.images)}
        for count, folder in images.items():
            make_inputs(folder, count, args.size)
        env = loopback_env(root / "local", REPO)
        rows.append(measure("local", env, root, images, weights, []))
        with start_loopback_cluster(REPO, nodes=1, cpus=cpus) as (address, cluster_env):
            rows.append(measure("ray-1", cluster_env, root, images, weights, ["--cluster", address, "--cluster-workers", "1"]))
        with start_loopback_cluster(REPO, nodes=2, cpus=max(1, cpus // 2)) as (address, cluster_env):
            rows.append(measure("ray-2", cluster_env, root, images, weights, ["--cluster", address]))
        for name in ("ray-1", "ray-2"):
            for count in images:
                same = all(
                    (root / f"out-{name}-{count}" / p.name).read_bytes() == p.read_bytes()
                    for p in (root / f"out-local-{count}").iterdir()
                )
                print(f"{name} N={count}: outputs identical to the plain CLI's: {same}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    local = rows[0]["marginal_s_per_image"]
    print("\n| config | marginal s/image | images/s | vs plain CLI | share of fp32 conv peak |")
    print("|---|---|---|---|---|")
    for row in rows:
        marginal = row["marginal_s_per_image"]
        print(f"| {row['config']} | {marginal:.3f} | {1 / marginal:.2f} | {local / marginal:.2f}x | {gflop / marginal / peak:.0%} |")
    overhead = rows[1]["marginal_s_per_image"] / local - 1
    print(f"\nRay overhead per {args.size}x{args.size} x4 image (1 worker vs plain CLI, marginal): {overhead:+.1%} of its compute")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "gflop": gflop, "peak": peak, "overhead": overhead}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
