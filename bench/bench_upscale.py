"""Upscale benchmark: RestoreKit against the reference implementations, in one run.

Configurations (same weights, same input, each measured in its own subprocess so that peak
RSS is honest):

- ``official``: Real-ESRGAN's ``RealESRGANer`` with its defaults (fp32, tile=0, pre_pad=10),
  through ``enhance()`` on a BGR uint8 image, as its inference script does;
- ``comfy``: ComfyUI core's ``ImageUpscaleWithModel`` pattern, re-implemented here: a spandrel
  descriptor in fp32, the IMAGE tensor (B, H, W, C) moved to (B, C, H, W) with ``movedim``
  and run through ``comfy.utils.tiled_scale``'s algorithm (512 px tiles, 32 px overlap,
  feathered masks, a weight canvas);
- ``ours-fp32`` / ``ours-bf16``: :class:`restorekit.upscale.Upscaler` with ``tile='auto'``,
  run the way the CLI runs it (same process memory settings), eager (``compile='off'``);
- ``ours-fp32-compiled`` / ``ours-bf16-compiled``: the same with ``compile='on'``
  (:mod:`restorekit.compiled`): the image is run twice, as a video's frames or a batch's
  images would be; the first call's extra time over the second is reported as the compile
  time (cold: an empty compile cache in a fresh model home made for the run; warm: a second
  worker on the same home), the second call is the steady-state time used for the ratios.

Reported per model and size: wall time of the upscale call, speed ratio against
``official``, PSNR and max difference (8-bit levels) against the official fp32 output, peak
RSS of the process, and efficiency = model FLOPs on the input image / wall time / the conv
peak measured here (a 64->64 3x3 conv, channels_last, in fp32 and bf16).

    python bench/bench_upscale.py                  # full run: 128, 512, 1024 px
    python bench/bench_upscale.py --quick          # 128 px only, x4plus and animevideov3
    python bench/bench_upscale.py --sizes 256 --models x4plus --configs official,ours-bf16

Absolute times drift between sessions on shared hosts; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # reference_shim (test/bench only)
sys.path.insert(0, str(REPO / "bench"))

from machine import best_peaks, conv_peaks, cpu_description, describe_cpu, describe_peaks  # noqa: E402

MODELS = {
    "x4plus": ("RealESRGAN_x4plus", {"num_block": 23}),
    "animevideov3": ("realesr-animevideov3", {"num_conv": 16}),
}
CONFIGS = ("official", "comfy", "ours-fp32", "ours-bf16")
EXTRA_CONFIGS = (
    "ours-fp32-exact", "ours-fp32-eager", "ours-bf16-eager", "ours-fp32-compiled", "ours-bf16-compiled",
    "ours-bf16-compiled-warm", "ours-int8",
)  # fmt: skip
"""``ours-fp32-exact``: RestoreKit's runner with the reference's own layout (pre-pad bottom/right
only, whole image): the same computation as ``official``, to compare numerics (needs as
much memory as the reference, so it is opt-in). ``ours-*-eager``: RestoreKit with its fused
execution forms off (spandrel's module as it is), to measure what the fused RRDB gains.
``ours-*-compiled``: compiled execution (see above); ``-warm`` runs after ``ours-bf16-compiled``
on the same compile cache.
``ours-int8``: RestoreKit's int8 network (:mod:`restorekit.upscale.int8`); a model that fails
the int8 quality gate is still measured, and reported as "not offered" with its gate numbers
(calibration and gate are cached in the model home, as for the CLI: the first run per model
calibrates). Its efficiency is stated against the bf16 conv peak: what it has to beat."""
BORDER = 64
"""The reference pre-pads only bottom/right, so its top/left border shows the network's zero
padding, which RestoreKit's mirrored pre-pad on all sides avoids; differences are also
reported away from that border (this many input pixels)."""
DEFAULT_WEIGHTS = Path(os.environ.get("RESTOREKIT_SHARED", REPO.parent / "shared")) / "weights"


# --------------------------------------------------------------------------- inputs and models


def make_input(size: int) -> np.ndarray:
    """A real photo (skimage astronaut) at size x size, RGB uint8."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    return np.asarray(photo.resize((size, size), Image.LANCZOS if size < 512 else Image.BICUBIC))


def load_descriptor(weights: Path, model: str) -> Any:
    import spandrel
    from safetensors.torch import load_file

    name = MODELS[model][0]
    return spandrel.ModelLoader().load_from_state_dict(load_file(str(weights / f"{name}.safetensors"))).eval()


def reference_network(weights: Path, model: str) -> Any:
    from safetensors.torch import load_file

    from reference_shim import import_reference

    name = MODELS[model][0]
    if model == "x4plus":
        arch = import_reference("basicsr.archs.rrdbnet_arch")
        net = arch.RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
    else:
        arch = import_reference("realesrgan.archs.srvgg_arch")
        net = arch.SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu")
    net.load_state_dict(load_file(str(weights / f"{name}.safetensors")), strict=True)
    return net.eval()


def model_flops(descriptor: Any, height: int, width: int) -> float:
    """Multiply-adds x 2 of every convolution for one (height, width) input image."""
    import torch

    total = 0

    def hook(module: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (module.in_channels // module.groups) * k * 2

    probe = 32
    handles = [m.register_forward_hook(hook) for m in descriptor.model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            descriptor.model(torch.zeros(1, 3, probe, probe))
    finally:
        for h in handles:
            h.remove()
    return total * (height * width) / (probe * probe)


# --------------------------------------------------------------------------- the configurations


def timed(function: Any) -> tuple[Any, float, float]:
    """``function()``'s result, wall seconds and CPU seconds (all threads of this process)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = function()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result, wall, cpu


def timed_calls(function: Any, calls: int) -> tuple[Any, float, float, float]:
    """``function()`` run ``calls`` times in this process: the last result, the fastest call's
    wall and CPU seconds, and the first call's wall seconds (with ``calls`` 1, all one call).

    The first call of a shape also takes in the process's fresh memory. With the CLI's huge
    pages, on the Firecracker VM of the AVX2 dev machine, that cost 0.5-0.7 s of x4plus's
    3.5-4 s at 128² and 0-5 s of animevideov3's 2-2.4 s at 512², varying from run to run
    (``bench/RESULTS_upscale.md``)."""
    timings: list[tuple[float, float]] = []
    for _ in range(max(1, calls)):
        result, wall, cpu = timed(function)
        timings.append((wall, cpu))
    wall, cpu = min(timings)
    return result, wall, cpu, timings[0][0]


def run_official(weights: Path, model: str, image: np.ndarray, calls: int = 1) -> tuple[np.ndarray, float, float, float]:
    from reference_shim import official_upsampler

    upsampler = official_upsampler(reference_network(weights, model), 4)  # tile=0, pre_pad=10
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        upsampler.enhance(bgr[:32, :32])  # warm-up (oneDNN primitives)
        _, seconds, cpu, first = timed_calls(lambda: upsampler.enhance(bgr, outscale=4), calls)
    # enhance() clamps its float output in place before rounding to 8 bits: read it back
    out = upsampler.output[0].float().numpy().transpose(1, 2, 0)
    return out, seconds, cpu, first


def comfy_tiled_scale(samples: Any, function: Any, tile: int, overlap: int, scale: int) -> Any:
    """ComfyUI's ``comfy.utils.tiled_scale`` algorithm (2-D case), re-implemented."""
    import itertools

    import torch

    batch, _, height, width = samples.shape
    output = torch.empty((batch, 3, round(height * scale), round(width * scale)))
    for b in range(batch):
        s = samples[b : b + 1]
        if height <= tile and width <= tile:
            output[b : b + 1] = function(s).to("cpu")
            continue
        out = torch.zeros((1, 3, round(height * scale), round(width * scale)))
        out_div = torch.zeros_like(out)
        positions = [
            range(0, dim - overlap, tile - overlap) if dim > tile else [0] for dim in (height, width)
        ]
        for y, x in itertools.product(*positions):
            ys, xs = max(0, min(height - overlap, y)), max(0, min(width - overlap, x))
            hh, ww = min(tile, height - ys), min(tile, width - xs)
            ps = function(s[:, :, ys : ys + hh, xs : xs + ww]).to("cpu")
            mask = torch.ones_like(ps)
            feather = round(overlap * scale)
            for d in (2, 3):
                if feather >= mask.shape[d]:
                    continue
                for t in range(feather):
                    a = (t + 1) / feather
                    mask.narrow(d, t, 1).mul_(a)
                    mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(a)
            oy, ox = round(ys * scale), round(xs * scale)
            out[:, :, oy : oy + ps.shape[2], ox : ox + ps.shape[3]] += ps * mask
            out_div[:, :, oy : oy + ps.shape[2], ox : ox + ps.shape[3]] += mask
        output[b : b + 1] = out / out_div
    return output


def run_comfy(weights: Path, model: str, image: np.ndarray, calls: int = 1) -> tuple[np.ndarray, float, float, float]:
    import torch

    descriptor = load_descriptor(weights, model)
    pixels = torch.from_numpy(image.astype(np.float32) / 255.0)[None]  # ComfyUI IMAGE: B,H,W,C

    def upscale(image_bhwc: Any) -> Any:
        in_img = image_bhwc.movedim(-1, -3)
        with torch.inference_mode():
            s = comfy_tiled_scale(in_img, lambda a: descriptor(a), 512, 32, descriptor.scale)
        return torch.clamp(s.movedim(-3, -1), min=0, max=1.0)

    upscale(pixels[:, :32, :32])  # warm-up
    out, seconds, cpu, first = timed_calls(lambda: upscale(pixels), calls)
    return out[0].numpy(), seconds, cpu, first


def run_ours(
    weights: Path,
    model: str,
    image: np.ndarray,
    precision: str,
    exact: bool = False,
    fused: bool = True,
    compiled: bool = False,
    calls: int = 1,
) -> tuple[np.ndarray, float, float, dict]:
    import torch

    from restorekit.device import plan_execution
    from restorekit.upscale import Upscaler
    from restorekit.upscale.network import NetworkRunner

    settings: dict[str, Any] = {"layout": "official", "tile": 0} if exact else {"tile": "auto"}
    if precision == "int8":
        return run_ours_int8(weights, model, image, settings, calls)
    upscaler = Upscaler(load_descriptor(weights, model), precision=precision, compile="on" if compiled else "off", **settings)
    if not fused:
        plan = plan_execution(upscaler.plan.device, precision, fused=False)
        upscaler.runner = NetworkRunner(upscaler.descriptor, plan)
    pixels = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    info: dict[str, Any] = {}
    if compiled:  # the first call of the image's window shape compiles it (or loads it from the cache)
        from restorekit.compiled import compile_counters

        before = compile_counters()
        _, first, _ = timed(lambda: upscaler.upscale(pixels))
        after = compile_counters()
        info["first_call_seconds"] = first
        info["cache"] = "warm" if after["cache_hits"] > before["cache_hits"] and after["cache_misses"] == before["cache_misses"] else "cold"
        # steady state, interleaved with the same job eager in this process (a shared host drifts)
        eager = Upscaler(upscaler.descriptor, precision=precision, compile="off", **settings)
        eager.upscale(pixels[:, :, :32, :32])
        rounds = [(timed(lambda: eager.upscale(pixels))[1:], timed(lambda: upscaler.upscale(pixels))[1:]) for _ in range(3)]
        (info["eager_seconds"], info["eager_cpu_seconds"]) = min(r[0] for r in rounds)
        info["compiled_vs_eager"] = info["eager_seconds"] / min(r[1][0] for r in rounds)
        info["compiled_vs_eager_cpu"] = info["eager_cpu_seconds"] / min(r[1][1] for r in rounds)
    else:
        upscaler.upscale(pixels[:, :, :32, :32])  # warm-up
    # window costs are measured once per machine (seconds, cached in the model home): a user's
    # later runs do not pay them, so they are measured and reported apart
    _, info["window_costs_seconds"], _ = timed(lambda: upscaler.window_for(*pixels.shape[-2:]))
    if compiled:  # already warm: the steady state
        result, seconds, cpu = timed(lambda: upscaler.upscale(pixels))
        info["compile_seconds"] = info["first_call_seconds"] - seconds
    else:
        result, seconds, cpu, info["first_call_seconds"] = timed_calls(lambda: upscaler.upscale(pixels), calls)
    info.update(tile=list(result.tile), precision=result.precision, fused=upscaler.runner.fused)
    return result.pixels[0].permute(1, 2, 0).numpy(), seconds, cpu, info


def run_ours_int8(
    weights: Path, model: str, image: np.ndarray, settings: dict[str, Any], calls: int = 1
) -> tuple[np.ndarray, float, float, dict]:
    """``ours-int8``: the int8 runner, measured also where the gate refuses the model."""
    import torch

    from restorekit.device import plan_execution
    from restorekit.upscale import Upscaler
    from restorekit.upscale import int8 as int8_module
    from restorekit.upscale.network import NetworkRunner

    descriptor = load_descriptor(weights, model)
    plan = plan_execution("cpu", "int8", allow_int8=True)
    started = time.perf_counter()
    gate, _ = int8_module.gate_for(descriptor.model, plan, enforce=False)
    setup = time.perf_counter() - started
    upscaler = Upscaler(descriptor, precision="fp32", **settings)
    upscaler.plan, upscaler.runner = plan, NetworkRunner(descriptor, plan, int8_gate=False)
    pixels = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    upscaler.upscale(pixels[:, :, :32, :32])  # warm-up
    result, seconds, cpu, first = timed_calls(lambda: upscaler.upscale(pixels), calls)
    info = {
        "first_call_seconds": first,
        "tile": list(result.tile), "precision": "int8", "fused": False,
        "int8_gate": f"{'offered' if gate.passed else 'NOT offered'}: {gate.describe()}",
        "int8_setup_seconds": round(setup, 1),
    }  # fmt: skip
    return result.pixels[0].permute(1, 2, 0).numpy(), seconds, cpu, info


def worker(args: argparse.Namespace) -> None:
    if args.config.startswith("ours"):  # as the CLI does, before torch is imported
        from restorekit.cli.common import tune_process_memory

        tune_process_memory()
    import torch

    torch.set_num_threads(args.threads)
    image = np.load(args.input)
    info: dict[str, Any] = {}
    before = resource.getrusage(resource.RUSAGE_SELF)
    if args.config == "official":
        out, seconds, cpu, info["first_call_seconds"] = run_official(args.weights, args.model, image, args.calls)
    elif args.config == "comfy":
        out, seconds, cpu, info["first_call_seconds"] = run_comfy(args.weights, args.model, image, args.calls)
    else:
        out, seconds, cpu, info = run_ours(
            args.weights,
            args.model,
            image,
            args.config.split("-")[1],
            exact=args.config.endswith("exact"),
            fused=not args.config.endswith("eager"),
            compiled="compiled" in args.config,
            calls=args.calls,
        )
    after = resource.getrusage(resource.RUSAGE_SELF)
    np.save(args.output, out.astype(np.float32))
    info.update(
        seconds=seconds,
        cpu_seconds=cpu,
        minor_faults=after.ru_minflt - before.ru_minflt,
        peak_rss_mb=after.ru_maxrss / 1024,
    )
    print(json.dumps(info))


def int8_conv_peaks(repeats: int = 12, size: int = 256) -> dict[str, float]:
    """GOP/s of one quantized 64->64 3x3 conv (uint8 activations, per-channel int8 weights,
    channels_last, ``size``²) per quantized engine: the int8 counterpart of the conv peak."""
    import torch
    from torch.ao.nn.quantized import Conv2d as QuantizedConv2d

    float_conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    weight = float_conv.weight.detach()
    scales = weight.abs().amax(dim=(1, 2, 3)) / 127
    x = torch.rand(1, 64, size, size).contiguous(memory_format=torch.channels_last)
    peaks: dict[str, float] = {}
    previous = torch.backends.quantized.engine
    for engine in ("fbgemm", "onednn"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        torch.backends.quantized.engine = engine
        conv = QuantizedConv2d(64, 64, 3, padding=1)
        conv.set_weight_bias(torch.quantize_per_channel(weight, scales, torch.zeros(64, dtype=torch.long), 0, torch.qint8), float_conv.bias.detach())
        conv.scale, conv.zero_point = 0.05, 0
        qx = torch.quantize_per_tensor(x, 1 / 255, 0, torch.quint8)
        best = math.inf
        for index in range(3 + repeats):
            start = time.perf_counter()
            conv(qx)
            if index >= 3:
                best = min(best, time.perf_counter() - start)
        peaks[engine] = 2 * 64 * 64 * 9 * size * size / best / 1e9
    torch.backends.quantized.engine = previous
    return peaks


# --------------------------------------------------------------------------- the driver


def measure(config: str, model: str, size: int, image_path: Path, out_path: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--worker", config, "--model-name", model, "--input", str(image_path),
        "--output", str(out_path), "--weights", str(args.weights), "--threads", str(args.threads),
        "--calls", str(args.calls),
    ]  # fmt: skip
    env = dict(os.environ)
    if "compiled" in config:  # compile caches in a model home of this run: cold, then warm
        env["RESTOREKIT_HOME"] = str(image_path.parent / "home")
        env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"{config} {model} {size}: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def compare(out: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """PSNR (dB), max difference in 8-bit levels, and that max away from the top/left border."""
    diff = out.astype(np.float64) - reference.astype(np.float64)
    mse = float(np.mean(diff**2))
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    inner = diff[BORDER * 4 :, BORDER * 4 :]
    return psnr, float(np.abs(diff).max() * 255), float(np.abs(inner).max() * 255) if inner.size else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,512,1024", help="comma-separated square input sizes")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {list(MODELS)}")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {list(CONFIGS + EXTRA_CONFIGS)}")
    parser.add_argument("--quick", action="store_true", help="128 px only")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--calls", type=int, default=1,
        help="run each config's job this many times in its process and report the fastest call, the "
        "steady state of a batch or a video (default 1: the first call, as a one-image CLI run; the "
        "compiled configs always report their steady state)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-name", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.config, args.model = args.worker, args.model_name
        worker(args)
        return
    if not args.weights.is_dir():
        sys.exit(f"weights folder {args.weights} not found (set RESTOREKIT_SHARED or --weights)")
    sizes = [128] if args.quick else [int(s) for s in args.sizes.split(",")]
    models = args.models.split(",")
    configs = args.configs.split(",")
    import torch

    torch.set_num_threads(args.threads)
    print(describe_cpu())
    peaks = conv_peaks()
    print(describe_peaks(peaks, "at start"))
    if "ours-int8" in configs:
        int8_peaks = int8_conv_peaks()
        print("int8 conv peak at start: " + ", ".join(f"{name} {value:.0f} GOP/s" for name, value in int8_peaks.items()))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for model in models:
            descriptor = load_descriptor(args.weights, model)
            for size in sizes:
                image_path = tmp / f"in{size}.npy"
                np.save(image_path, make_input(size))
                flops = model_flops(descriptor, size, size)
                outputs: dict[str, Path] = {}
                results: dict[str, dict] = {}
                for config in configs:
                    outputs[config] = tmp / f"{model}-{size}-{config}.npy"
                    results[config] = measure(config, model, size, image_path, outputs[config], args)
                    r = results[config]
                    compile_note = (
                        f", compile {r['compile_seconds']:.1f} s ({r['cache']} cache), {r['compiled_vs_eager']:.2f}x eager "
                        f"({r['compiled_vs_eager_cpu']:.2f}x in CPU time) in the same process"
                        if "compile_seconds" in r else ""
                    )
                    first_note = f", first call {r['first_call_seconds']:.2f} s" if args.calls > 1 and "compile_seconds" not in r else ""
                    print(
                        f"  {model} {size} {config}: {r['seconds']:.2f} s wall, {r['cpu_seconds']:.2f} s CPU{first_note}{compile_note}",
                        flush=True,
                    )
                    if "int8_gate" in r:
                        print(f"  {model} int8 gate: {r['int8_gate']} (setup {r['int8_setup_seconds']} s)", flush=True)
                reference = np.load(outputs["official"]) if "official" in outputs else None
                base = results.get("official", {}).get("seconds")
                for config in configs:
                    r = results[config]
                    row = {"model": model, "size": size, "config": config, **r}
                    row["speedup"] = base / r["seconds"] if base else None
                    cpu_base = results.get("official", {}).get("cpu_seconds")
                    row["cpu_speedup"] = cpu_base / r["cpu_seconds"] if cpu_base else None
                    row["gflops"] = flops / 1e9
                    if reference is not None:
                        row["psnr_db"], row["max_diff_levels"], row["max_diff_inner_levels"] = compare(
                            np.load(outputs[config]), reference
                        )
                    rows.append(row)
                for path in outputs.values():
                    path.unlink(missing_ok=True)
    at_end = conv_peaks()
    print(describe_peaks(at_end, "at end"))
    if "ours-int8" in configs:
        print("int8 conv peak at end: " + ", ".join(f"{name} {value:.0f} GOP/s" for name, value in int8_conv_peaks().items()))
    peaks = best_peaks(peaks, at_end)
    for row in rows:
        precision = "bf16" if "bf16" in row["config"] or "int8" in row["config"] else "fp32"
        row["efficiency"] = row["gflops"] * 1e9 / row["seconds"] / (peaks[precision] * 1e9)
    print_table(rows, peaks, args.threads, args.calls)
    if args.json:
        payload = {"cpu": cpu_description(), "conv_peak_gflops": peaks, "threads": args.threads, "calls": args.calls, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2))


def print_table(rows: list[dict], peaks: dict[str, float], threads: int, calls: int = 1) -> None:
    print()
    print(
        "| model | size | config | seconds | vs official | vs official (CPU time) | PSNR vs official | max diff (levels) "
        f"| max diff >{BORDER}px from top/left | peak RSS | efficiency | largest tile | compile (first call - steady) "
        "| compiled vs eager, same process (wall / CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        cpu_speed = f"{r['cpu_speedup']:.2f}x" if r.get("cpu_speedup") else "-"
        psnr = r.get("psnr_db")
        psnr_text = "-" if psnr is None else ("exact" if psnr == math.inf else f"{psnr:.1f} dB")
        diff = "-" if r.get("max_diff_levels") is None else f"{r['max_diff_levels']:.2f}"
        inner = r.get("max_diff_inner_levels")
        inner_text = "-" if inner is None or math.isnan(inner) else f"{inner:.2f}"
        tile = "x".join(str(t) for t in r["tile"]) if r.get("tile") else "-"
        compile_text = f"{r['compile_seconds']:.1f} s ({r['cache']})" if "compile_seconds" in r else "-"
        versus = f"{r['compiled_vs_eager']:.2f}x / {r['compiled_vs_eager_cpu']:.2f}x" if "compiled_vs_eager" in r else "-"
        print(
            f"| {r['model']} | {r['size']}² | {r['config']} | {r['seconds']:.2f} | {speed} | {cpu_speed} | {psnr_text} | {diff} "
            f"| {inner_text} | {r['peak_rss_mb']:.0f} MB | {100 * r['efficiency']:.0f}% | {tile} | {compile_text} | {versus} |"
        )
    print(
        f"\n{describe_cpu()}\nconv peak (best of start and end of the run): fp32 {peaks['fp32']:.0f}, "
        f"bf16 {peaks['bf16']:.0f} GFLOP/s ({threads} threads); "
        "efficiency = model FLOPs on the input image / wall time / the peak of the config's precision; "
        + (f"seconds: the fastest of {calls} calls in one process" if calls > 1 else "seconds: the first call (compiled: the steady state)")
    )


if __name__ == "__main__":
    main()
