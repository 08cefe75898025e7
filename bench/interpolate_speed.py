"""Speed of network interpolation on RealESRGAN_x4plus (16.7M parameters), against the
official ``RealESRGANer.dni`` in the same run.

The second parent is the real x4plus weights plus small noise (a stand-in for RealESRNet,
which is not in ../shared). Both are written as safetensors (ours) and as the official
``{'params': ...}`` .pth files (the reference reads those with torch.load).

    PYTHONPATH=$PWD python bench/interpolate_speed.py [--repeat 5] [--json OUT.json]

Prints the best and median wall time of each step over ``--repeat`` runs and the ratios.
Timings on a shared host drift; compare the ratios, which are taken in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from machine import conv_peaks, describe_cpu, describe_peaks  # noqa: E402

import reference_shim  # noqa: E402,F401  (basicsr needs it before import)


def timed(function: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None) -> dict[str, float]:
    """Best and median wall time, and the CPU time of the best run (all threads together).

    On a busy shared host the wall time includes waiting for a core; the CPU time does not,
    so with ``--threads 1`` it is close to what the step takes on an idle core.
    """
    runs = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    best = min(runs)
    return {"best": best[0], "median": statistics.median(w for w, _ in runs), "cpu": min(c for _, c in runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("RESTOREKIT_SHARED", ROOT.parent / "shared")) / "weights")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe_cpu())
    print(describe_peaks(conv_peaks(), "at start"), flush=True)
    source = args.weights / "RealESRGAN_x4plus.safetensors"
    if not source.is_file():
        print(f"{source} not found; pass --weights DIR with RealESRGAN_x4plus.safetensors", file=sys.stderr)
        return 2

    from realesrgan.utils import RealESRGANer

    from restorekit import interpolate as interp
    from restorekit.registry.convert import load_safetensors_file

    with tempfile.TemporaryDirectory(prefix="rk-interp-bench-") as folder:
        return run(Path(folder), source, args, RealESRGANer, interp, load_safetensors_file)


def run(work: Path, source: Path, args: argparse.Namespace, RealESRGANer: Any, interp: Any, load_safetensors_file: Any) -> int:  # noqa: N803
    os.environ.setdefault("RESTOREKIT_HOME", str(work / "home"))
    a = load_safetensors_file(source)
    generator = torch.Generator().manual_seed(0)
    b = {k: v + 0.05 * v.std() * torch.randn(v.shape, generator=generator) for k, v in a.items()}
    path_a, path_b = work / "x4plus_a.safetensors", work / "x4plus_b.safetensors"
    save_file(a, str(path_a))
    save_file(b, str(path_b))
    torch.save({"params": a}, work / "a.pth")
    torch.save({"params": b}, work / "b.pth")
    params = sum(t.numel() for t in a.values())

    results: dict[str, dict[str, float]] = {}
    # The reference: torch.load of both checkpoints, then w0 * a + w1 * b per tensor.
    results["official dni (load .pth + blend)"] = timed(
        lambda: RealESRGANer.dni(None, work / "a.pth", work / "b.pth", [0.3, 0.7]), args.repeat
    )
    results["official formula only (in memory)"] = timed(
        lambda: {k: 0.3 * a[k] + 0.7 * b[k] for k in a}, args.repeat
    )
    results["blend_state_dicts only (in memory)"] = timed(
        lambda: interp.blend_state_dicts([a, b], [0.3, 0.7], check=False), args.repeat
    )
    results["interpolate cold, no check (load, blend, descriptor)"] = timed(
        lambda: interp.interpolate([path_a, path_b], alpha=0.3, check=False), args.repeat, setup=interp.clear_cache
    )
    results["interpolate cold, with check"] = timed(
        lambda: interp.interpolate([path_a, path_b], alpha=0.3, check=True), args.repeat, setup=interp.clear_cache
    )
    alphas = iter(0.01 * i for i in range(1, 10_000))
    interp.interpolate([path_a, path_b], alpha=0.5, check=True)  # parents loaded and probed
    results["interpolate new alpha (slider step), with check"] = timed(
        lambda: interp.interpolate([path_a, path_b], alpha=next(alphas), check=True), args.repeat
    )
    results["interpolate new alpha (slider step), no check"] = timed(
        lambda: interp.interpolate([path_a, path_b], alpha=next(alphas), check=False), args.repeat
    )
    interp.interpolate([path_a, path_b], alpha=0.25, check=True)
    results["interpolate cache hit"] = timed(lambda: interp.interpolate([path_a, path_b], alpha=0.25, check=True), args.repeat)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"RealESRGAN_x4plus, {params / 1e6:.1f}M parameters; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {load:.1f}")
    reference = results["official dni (load .pth + blend)"]["best"]
    formula = results["official formula only (in memory)"]["best"]
    print(f"{'step':56} {'best s':>8} {'median s':>9} {'cpu s':>7}")
    for name, numbers in results.items():
        print(f"{name:56} {numbers['best']:8.3f} {numbers['median']:9.3f} {numbers['cpu']:7.3f}")
    print(f"blend arithmetic: ours / official formula = {results['blend_state_dicts only (in memory)']['best'] / formula:.2f}")
    print(f"cold interpolate (no check) / official dni = {results['interpolate cold, no check (load, blend, descriptor)']['best'] / reference:.2f}"
          " (ours also builds the runnable model; the official dni only returns weights)")
    print(describe_peaks(conv_peaks(), "at end"), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"parameters": params, "load_average": load, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
