"""The machine a benchmark ran on: CPU model and flags, and its own measured conv peak.

Machines differ between runs of this project (AMD Zen 5 with AVX512-BF16, Intel Xeon with
AMX), and the dev hosts are shared, so every benchmark prints these and states model speed
as a share of the peak measured in the same run:

    efficiency = model FLOPs / wall time / conv peak of the same precision

The peak is one 64->64 3x3 convolution, channels_last, 256x256 (the shape of most of the
work in Real-ESRGAN's networks), best of many repeats. :func:`conv_peak` is meant to be
called at the start and at the end of a run; the larger value is the peak (a busy host only
ever makes it look smaller).
"""

from __future__ import annotations

import math
import platform
import time

INTERESTING_FLAGS = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8", "avx_vnni",
)  # fmt: skip


def cpu_description() -> dict[str, object]:
    """CPU model name, logical CPU count and the SIMD/matrix flags that matter for convs."""
    model, flags, count = platform.processor() or platform.machine(), set(), 0
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                    count += 1
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cpus": count, "flags": [f for f in INTERESTING_FLAGS if f in flags]}


def describe_cpu() -> str:
    """One line: model, logical CPUs, flags."""
    cpu = cpu_description()
    return f"CPU: {cpu['model']} ({cpu['cpus']} logical CPUs); flags: {' '.join(cpu['flags']) or '-'}"


def conv_peak(dtype_name: str, repeats: int = 12, size: int = 256) -> float:
    """GFLOP/s of one 64->64 3x3 conv, channels_last, ``size``², best of ``repeats``."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last).eval()
    x = torch.randn(1, 64, size, size).to(dtype=dtype, memory_format=torch.channels_last)
    best = math.inf
    with torch.no_grad():
        for _ in range(3):
            conv(x)
        for _ in range(repeats):
            start = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - start)
    return 2 * 64 * 64 * 9 * size * size / best / 1e9


def conv_peaks(repeats: int = 12) -> dict[str, float]:
    """Measured conv peak in GFLOP/s for fp32 and bf16."""
    return {name: conv_peak(name, repeats) for name in ("fp32", "bf16")}


def describe_peaks(peaks: dict[str, float], when: str = "") -> str:
    """One line: the measured conv peaks, e.g. ``conv peak at start (64->64 3x3
    channels_last, 2 threads): fp32 152 GFLOP/s, bf16 15 GFLOP/s``."""
    import torch

    label = f" {when}" if when else ""
    values = ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in peaks.items())
    return f"conv peak{label} (64->64 3x3 channels_last, {torch.get_num_threads()} threads): {values}"


def best_peaks(*measured: dict[str, float]) -> dict[str, float]:
    """The larger of each precision's peaks measured at the start and end of a run (a busy
    host only ever makes the peak look smaller)."""
    return {name: max(peaks[name] for peaks in measured) for name in measured[0]}
