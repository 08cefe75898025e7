"""GroupNorm + swish on channels_last maps: eager, inductor's own loops, and ATen's kernel as
the opaque op ``restorekit::group_norm`` (what the face restorers' compiled CPU graphs run,
:func:`restorekit.compiled.with_aten_group_norms`).

    PYTHONPATH=$PWD python bench/bench_group_norm.py [--shapes 64x512,128x256,256x128,512x64]

Each shape is four C x S x S fp32 maps, ``GroupNorm(32, C)`` then ``x * sigmoid(x)``, best of
``--repeats`` interleaved rounds after a warm-up (and the compile). Huge pages for large
tensors are on, as in the CLI. Prints the CPU flags and the fp32 conv peak, and the largest
difference of each form to eager.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch: the CLI's setting

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import conv_peaks, describe_cpu

GROUPS = 32


def forms(channels: int) -> dict[str, object]:
    import torch._inductor.config as inductor_config

    from restorekit.compiled import _aten_group_norm_op

    inductor_config.freezing = True  # as the face restorers compile
    weight, bias = torch.randn(channels), torch.randn(channels)
    op = _aten_group_norm_op()

    def eager(x: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(x, GROUPS, weight, bias, 1e-6)
        return y * torch.sigmoid(y)

    def opaque(x: torch.Tensor) -> torch.Tensor:
        y = op(x, GROUPS, weight, bias, 1e-6)
        return y * torch.sigmoid(y)

    return {
        "eager": eager,
        "inductor's GroupNorm (fused)": torch.compile(eager),
        "ATen's GroupNorm op + inductor's swish": torch.compile(opaque),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="64x512,128x256,256x128,512x64", help="CxS map shapes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_cpu())
    peaks = conv_peaks()
    print(f"conv peak (64->64 3x3 channels_last, {args.threads} threads): fp32 {peaks['fp32']:.0f} GFLOP/s")
    print("| maps | form | best ms | max difference to eager |")
    print("|---|---|---|---|")
    for shape in args.shapes.split(","):
        channels, side = (int(v) for v in shape.lower().split("x"))
        x = (torch.randn(4, channels, side, side) * 3 + 1).contiguous(memory_format=torch.channels_last)
        candidates = forms(channels)
        best = dict.fromkeys(candidates, float("inf"))
        with torch.no_grad():
            want = candidates["eager"](x)
            diffs = {name: float((run(x) - want).abs().max()) for name, run in candidates.items()}
            for _ in range(args.repeats):
                for name, run in candidates.items():
                    started = time.perf_counter()
                    run(x)
                    best[name] = min(best[name], time.perf_counter() - started)
        for name in candidates:
            print(f"| {channels} x {side}² | {name} | {best[name] * 1000:.1f} | {diffs[name]:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
