"""Benchmark: training speed against basicsr, and what short CPU trainings achieve.

Three parts, all in one process, on the CPU:

``speed``     one Real-ESRGAN stage-2 optimisation step (RRDBNet x4plus, batch 4, gt 128,
              U-Net D with SN, L1 + perceptual (VGG19 conv1_2..conv5_4) + GAN), ours
              (``Trainer.optimize``: channels_last, fp32 and ``auto`` = bf16 autocast where
              the CPU has native bf16) against basicsr's ``RealESRGANModel.optimize_parameters``
              (official fp32 path), alternating, same init, same LR/GT batch (the degradation
              is not part of the step). VGG weights are random (ImageNet ones are not
              reachable offline); that changes no timing.
``finetune``  fine-tune realesr-animevideov3 (from ../shared/weights) on scikit-image photos
              with L1 against the unsharpened GT (PSNR-oriented; the held-out target is not
              sharpened either), and report PSNR-Y (crop border 4) on held-out photos
              degraded with fixed seeds (``light`` degradation), before and after.
``scratch``   a small SRVGGNetCompact trained from scratch in bicubic mode (x4) against
              bicubic interpolation on held-out photos.

Both quality runs use ``ema_decay=0.99``: the official 0.999 averages over ~1000 iterations,
longer than these CPU runs, and the exported (and validated) weights are the EMA ones.

The host is shared (2 cores, other jobs running): compare the ratios taken in one run, not
the absolute times; the load average is printed with each part. The speed part also reports
process CPU time per step, which (with ``--threads 1``) stays meaningful under heavy load.

    PYTHONPATH=$PWD python bench/bench_train.py [--parts speed finetune scratch] [--steps 4]
        [--finetune-iterations 300] [--scratch-iterations 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from machine import conv_peaks, cpu_description, describe_cpu, describe_peaks  # noqa: E402

from restorekit.train import Trainer, get_preset  # noqa: E402

TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel", "moon", "page")
HELD_OUT = ("chelsea", "camera", "coins")


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def write_photos(folder: Path, names: tuple[str, ...], max_side: int = 512) -> Path:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        if max(image.size) > max_side:
            ratio = max_side / max(image.size)
            image = image.resize((round(image.width * ratio), round(image.height * ratio)), Image.LANCZOS)
        image.save(folder / f"{name}.png")
    return folder


def random_vgg() -> tuple[torch.nn.Sequential, dict[str, torch.Tensor]]:
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    return features, {f"features.{k}": v.clone() for k, v in features.state_dict().items()}


# --------------------------------------------------------------------------- speed


def part_speed(args: argparse.Namespace, work: Path) -> dict:
    from test_train_loop import _basicsr_model

    from reference_shim import import_reference

    features, vgg = random_vgg()
    vgg_arch = import_reference("basicsr.archs.vgg_arch")
    vgg_arch.VGG_PRETRAIN_PATH = str(work / "absent.pth")
    vgg_arch.vgg.vgg19 = lambda **_: SimpleNamespace(features=features)
    losses_ref = import_reference("basicsr.losses.basic_loss")
    gan_ref = import_reference("basicsr.losses.gan_loss")
    photos = write_photos(work / "speed", ("astronaut", "coffee"), 256)
    base = ["pretrained=", "batch_size=4", "gt_size=128", "degrade_size=160", "queue_size=0", "device=cpu", "val_every=0", "save_every=0"]
    trainers = {p: Trainer(get_preset("realesrgan-x4plus", [*base, f"precision={p}"]), photos, work / f"run-{p}", vgg_weights=vgg) for p in ("fp32", "auto")}
    trainers["auto"].net_g.load_state_dict(trainers["fp32"].net_g.state_dict())
    config = trainers["fp32"].config
    net_g = import_reference("basicsr.archs.rrdbnet_arch").RRDBNet(3, 3, scale=4, num_feat=64, num_block=23, num_grow_ch=32)
    net_g.load_state_dict(trainers["fp32"].net_g.state_dict())
    net_d = import_reference("basicsr.archs.discriminator_arch").UNetDiscriminatorSN(3, num_feat=64, skip_connection=True)
    net_d.load_state_dict(trainers["fp32"].net_d.state_dict())
    losses = {
        "pix": losses_ref.L1Loss(loss_weight=1.0),
        "percep": losses_ref.PerceptualLoss(dict(config.perceptual_layers), vgg_type="vgg19", perceptual_weight=1.0, style_weight=0, criterion="l1"),
        "gan": gan_ref.GANLoss("vanilla", loss_weight=0.1),
    }
    reference = _basicsr_model("realesrgan", net_g, net_d, config, losses)
    usm = import_reference("basicsr.utils").USMSharp()
    batch = trainers["fp32"].maker.make(range(4))
    targets = trainers["fp32"]._targets(batch)

    def official() -> None:
        reference.lq, reference.gt, reference.gt_usm = batch.lq.clone(), batch.gt.clone(), usm(batch.gt.clone())
        reference.optimize_parameters(1)

    runs = {
        "basicsr RealESRGANModel (fp32)": official,
        "ours fp32 (channels_last)": lambda: trainers["fp32"].optimize(batch.lq, targets, 1),
        f"ours auto ({trainers['auto'].precision.name} autocast, channels_last)": lambda: trainers["auto"].optimize(batch.lq, targets, 1),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up (oneDNN primitives)
        run()
    for _ in range(args.steps):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    reference_name = next(iter(runs))

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    ref, ref_cpu = median(times[reference_name]), median(cpu[reference_name])
    rows = []
    for name in runs:
        wall, used = median(times[name]), median(cpu[name])
        rows.append({"run": name, "seconds_per_it": wall, "cpu_seconds_per_it": used, "it_per_s": 1 / wall, "speedup": ref / wall, "speedup_cpu": ref_cpu / used})
        print(f"  {name}: {wall:.2f} s/it wall ({1 / wall:.3f} it/s, x{ref / wall:.2f}), {used:.2f} CPU-s/it (x{ref_cpu / used:.2f}) vs basicsr")
    return {"rows": rows, "steps": args.steps, "load": load()}


# --------------------------------------------------------------------------- quality


def held_out_psnr(trainer: Trainer) -> float:
    result = trainer.validate()
    assert result is not None
    return result.psnr


def part_finetune(args: argparse.Namespace, work: Path) -> dict:
    weights = Path(os.environ.get("RESTOREKIT_SHARED", ROOT.parent / "shared")) / "weights" / "realesr-animevideov3.safetensors"
    if not weights.is_file():
        print(f"  skipped: {weights} is absent")
        return {"skipped": str(weights)}
    train = write_photos(work / "ft-train", TRAIN_PHOTOS)
    val = write_photos(work / "ft-val", HELD_OUT)
    sets = [
        f"pretrained={weights}", "num_conv=16", "discriminator=none", "perceptual_weight=0", "gan_weight=0",
        "degradation=light", "gt_size=128", "degrade_size=160", "batch_size=4", "queue_size=0", "lr_g=2e-4", "ema_decay=0.99", "l1_gt_usm=false",
        f"iterations={args.finetune_iterations}", f"val_every={args.finetune_iterations}", "val_crop=256",
        "save_every=0", "log_every=50", "device=cpu", "precision=auto", "name=animevideov3-photos",
    ]  # fmt: skip
    trainer = Trainer(get_preset("compact-x4", sets), train, work / "ft-run", val_data=val)
    before = held_out_psnr(trainer)
    start = time.perf_counter()
    result = trainer.run()
    seconds = time.perf_counter() - start
    after = result.last_validation.psnr if result.last_validation else float("nan")
    print(f"  held-out PSNR-Y: {before:.2f} -> {after:.2f} dB ({after - before:+.2f} dB) after {result.iterations} iterations, {seconds:.0f} s")
    return {"before": before, "after": after, "gain": after - before, "iterations": result.iterations, "seconds": seconds, "load": load(),
            "per_image": result.last_validation.per_image if result.last_validation else {}}  # fmt: skip


def part_scratch(args: argparse.Namespace, work: Path) -> dict:
    from restorekit.train.metrics import psnr_y
    from restorekit.upscale.resize import resize

    train = write_photos(work / "sc-train", TRAIN_PHOTOS)
    val = write_photos(work / "sc-val", HELD_OUT)
    sets = [
        "pretrained=", "num_feat=32", "num_conv=8", "mode=bicubic", "discriminator=none", "perceptual_weight=0",
        "gan_weight=0", "l1_gt_usm=false", "percep_gt_usm=false", "gt_size=96", "batch_size=8", "queue_size=0",
        "use_rot=true", "lr_g=1e-3", "ema_decay=0.99", f"milestones={args.scratch_iterations}",
        f"iterations={args.scratch_iterations}", f"val_every={args.scratch_iterations}", "val_crop=256",
        "save_every=0", "log_every=100", "device=cpu", "precision=auto", "name=compact-bicubic",
    ]  # fmt: skip
    trainer = Trainer(get_preset("compact-x4", sets), train, work / "sc-run", val_data=val)
    bicubic = []
    for image in trainer.validation:
        up = resize(image.lq, tuple(image.gt.shape[-2:]), method="bicubic")
        bicubic.append(float(psnr_y(up, image.gt, 4).mean()))
    baseline = sum(bicubic) / len(bicubic)
    start = time.perf_counter()
    result = trainer.run()
    seconds = time.perf_counter() - start
    after = result.last_validation.psnr if result.last_validation else float("nan")
    print(f"  held-out PSNR-Y: bicubic {baseline:.2f}, compact {after:.2f} dB ({after - baseline:+.2f} dB), {result.iterations} iterations, {seconds:.0f} s")
    return {"bicubic": baseline, "network": after, "gain": after - baseline, "iterations": result.iterations, "seconds": seconds, "load": load()}


PARTS = {"speed": part_speed, "finetune": part_finetune, "scratch": part_scratch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--steps", type=int, default=4, help="timed steps per implementation (speed)")
    parser.add_argument("--finetune-iterations", type=int, default=300)
    parser.add_argument("--scratch-iterations", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peaks = conv_peaks()
    print(f"{describe_cpu()}; {args.threads} threads; load {load()}")
    print(describe_peaks(peaks))
    results: dict = {"cpu": cpu_description(), "threads": args.threads, "conv_peak_gflops": peaks}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for name in args.parts:
            print(f"{name}: (load {load()})")
            results[name] = PARTS[name](args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
