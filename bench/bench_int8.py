"""int8 against bf16 and fp32, interleaved in one process (less exposed to load swings on a
shared host than one subprocess per config), with the int8 quality gate of each model.

Each round runs every precision once on the same window (the network only, through
:class:`restorekit.upscale.network.NetworkRunner`); reported are the best wall time, the
median process CPU time and the ratios against bf16, and the model's efficiency against the
measured bf16 conv peak. The int8 network is measured even where the gate refuses the model
(marked "not offered"). The first run per model calibrates int8 (cached in the model home).

    python bench/bench_int8.py --models x4plus,animevideov3 --size 96 --rounds 3
    python bench/bench_int8.py --models x4plus --size 192 --engines onednn,x86,fbgemm

``--engines`` runs int8 once per quantized engine (each packs its own weights) instead of
the one :func:`restorekit.upscale.int8.preferred_engines` picks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_upscale import (  # noqa: E402
    DEFAULT_WEIGHTS,
    MODELS,
    int8_conv_peaks,
    load_descriptor,
    make_input,
    model_flops,
)
from machine import conv_peaks, describe_cpu  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="x4plus,animevideov3")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--engines", default="", help="comma-separated quantized engines to compare (default: the preferred one)")
    args = parser.parse_args()
    import numpy as np
    import torch

    from restorekit.device import plan_execution
    from restorekit.upscale import int8 as int8_module
    from restorekit.upscale.network import NetworkRunner

    torch.set_num_threads(args.threads)
    print(describe_cpu())
    peaks = conv_peaks()
    print(f"conv peak (64->64 3x3 channels_last): fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s; int8: "
          + ", ".join(f"{k} {v:.0f} GOP/s" for k, v in int8_conv_peaks().items()))  # fmt: skip
    image = torch.from_numpy(make_input(args.size).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    for model in args.models.split(","):
        descriptor = load_descriptor(args.weights, model)
        plan = plan_execution("cpu", "int8", allow_int8=True)
        gate, _ = int8_module.gate_for(descriptor.model, plan, enforce=False)
        runners = {
            "fp32": NetworkRunner(descriptor, plan_execution("cpu", "fp32")),
            "bf16": NetworkRunner(descriptor, plan_execution("cpu", "bf16")),
        }
        preferred = int8_module.preferred_engines
        for engine in args.engines.split(",") if args.engines else [""]:
            if engine:
                int8_module.preferred_engines = lambda engine=engine: (engine,)
                int8_module._built.clear()  # pack the weights for this engine
            runners[f"int8-{engine}" if engine else "int8"] = NetworkRunner(descriptor, plan, int8_gate=False)
        int8_module.preferred_engines = preferred
        names = list(runners)
        for runner in runners.values():
            runner(image[:, :, :32, :32])  # warm-up
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                start, start_cpu = time.perf_counter(), time.process_time()
                runners[name](image)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        flops = model_flops(descriptor, args.size, args.size)
        offered = "offered" if gate.passed else "NOT offered"
        print(f"\n{MODELS[model][0]} {args.size}², {args.rounds} interleaved rounds; int8 gate: {offered} ({gate.describe()})")
        print("| precision | best wall (s) | median CPU (s) | vs bf16 (wall) | vs bf16 (CPU) | efficiency vs bf16 peak |")
        print("|---|---|---|---|---|---|")
        for name in names:
            best, median = min(wall[name]), statistics.median(cpu[name])
            efficiency = flops / best / (peaks["bf16"] * 1e9)
            print(f"| {name} | {best:.2f} | {median:.2f} | {min(wall['bf16']) / best:.2f}x | "
                  f"{statistics.median(cpu['bf16']) / median:.2f}x | {100 * efficiency:.0f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
