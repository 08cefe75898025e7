"""Fused RRDB trunk against spandrel's eager RRDBNet, interleaved in one process.

Times ``conv_first`` + the 23-block trunk of RealESRGAN_x4plus (98% of its FLOPs) for one
window, alternating eager and fused runs so that a shared host's load hits both alike, and
reports wall and process CPU time (best and median), their ratio, and each as a share of the
conv peak measured in the same run (bench/machine.py).

    python bench/bench_fused_rrdb.py --sizes 148,276 --threads 2 --precision bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from machine import conv_peaks, describe_cpu, describe_peaks  # noqa: E402


def trunk_flops(features: int, growth: int, blocks: int, pixels: int) -> float:
    dense = sum((features + i * growth) * growth for i in range(4)) + (features + 4 * growth) * features
    per_pixel = 3 * features + 3 * blocks * dense + features * features
    return 2.0 * 9 * per_pixel * pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="148", help="window sides (128 px + the 10 px pre-pad = 148)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", type=Path, default=REPO.parent / "shared" / "weights")
    args = parser.parse_args()

    import spandrel
    import torch
    from safetensors.torch import load_file

    from restorekit.device import plan_execution
    from restorekit.models import prepared_network
    from restorekit.upscale.rrdb import FusedRRDBTrunk

    torch.set_num_threads(args.threads)
    print(describe_cpu())
    peaks = conv_peaks()
    descriptor = spandrel.ModelLoader().load_from_state_dict(
        load_file(str(args.weights / "RealESRGAN_x4plus.safetensors"))
    ).eval()
    plan = plan_execution("cpu", args.precision)
    network = prepared_network(descriptor.model, plan)
    fused = FusedRRDBTrunk.of(network)
    assert fused is not None

    def eager(x: torch.Tensor) -> torch.Tensor:
        return network.model[1](network.model[0](x))

    for size in (int(s) for s in args.sizes.split(",")):
        x = plan.prepare_input(torch.rand(1, 3, size, size))
        times: dict[str, list[tuple[float, float]]] = {"eager": [], "fused": []}
        with torch.no_grad():
            eager(x), fused(x)
            for _ in range(args.repeats):
                for name, run in (("eager", eager), ("fused", fused)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    run(x)
                    times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        flops = trunk_flops(64, 32, 23, size * size)
        peak = peaks[args.precision] * 1e9
        summary = {}
        for name, samples in times.items():
            walls = [w for w, _ in samples]
            cpus = [c for _, c in samples]
            summary[name] = (min(walls), statistics.median(walls), min(cpus) / args.threads)
            print(
                f"{size}² {args.precision} {name}: wall best {min(walls):.3f} s, median {statistics.median(walls):.3f} s, "
                f"CPU {min(cpus):.3f} s; efficiency (best wall) {100 * flops / min(walls) / peak:.0f}% of peak"
            )
        e, f = summary["eager"], summary["fused"]
        print(f"{size}² fused vs eager: {e[0] / f[0]:.2f}x (best wall), {e[1] / f[1]:.2f}x (median wall), {e[2] / f[2]:.2f}x (CPU)")
    end = conv_peaks()
    print(describe_peaks(peaks, "at start"))
    print(describe_peaks(end, "at end"))


if __name__ == "__main__":
    main()
