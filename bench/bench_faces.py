"""Benchmark: face restoration, RestoreKit vs the official GFPGANer loop, on the CPU.

Both sides use the same random-init GFPGANv1Clean weights (the official constructor's
initialisation, seeded: identical FLOPs to the real GFPGANv1.4) and, end to end, the same
random ParseNet weights. In one process, interleaved, so that the shared machine's load
hits both alike:

- **restore stage**: 4 aligned 512x512 faces.
  - official: ``GFPGANer.enhance(face, has_aligned=True)`` per face: one face per forward,
    float32, NCHW, random noise (GFPGAN's default).
  - ours: ``FaceRestorer`` with the engine's precision (bf16 + channels_last here), batched,
    modulation on the activations, stored noise.
- **end to end**: a 1024x1024 frame with 4 faces (four astronauts), injected landmarks (no
  detection on either side), output x2, resized background, ParseNet paste-back masks.
  - official: ``GFPGANer.enhance(frame)`` with facexlib's ``FaceRestoreHelper``
    (``get_face_landmarks_5`` replaced by the injected landmarks);
  - ours: ``FacePipeline.run(frame, detections=..., outscale=2)``.

GFPGANer and FaceRestoreHelper are built without their downloading constructors
(tests/face_reference.py): their networks are given to them.

- **detection** per 512x512 frame (the astronaut): MediaPipe BlazeFace (short and full
  range) + Face Mesh on every face, against RetinaFace-ResNet50 (random weights: same
  FLOPs) through facexlib's own ``detect_faces`` (the official path) and through our
  ``FaceDetector``. BlazeFace/Face Mesh weights come from the installed mediapipe wheel
  (or the registry). ``--detection-only`` runs just this part.

``--arch restoreformer`` or ``--arch codeformer`` runs the restore stage and end to end with
that restorer instead (same random-weight scheme; the official side is gfpgan's own
``RestoreFormer`` in ``GFPGANer``, and for CodeFormer, which has no installable reference,
spandrel's module in the same ``GFPGANer`` loop, as ComfyUI's face-restore packs run it).

The run starts with the CPU model, flags and the machine's own conv peak
(``bench/machine.py``); the restore stage's efficiency is its convolution FLOPs (counted with
``torch.utils.flop_counter`` on our restorer, the same network on both sides) / wall time /
the peak of each side's precision.

    PYTHONPATH=$PWD python bench/bench_faces.py [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from restorekit.architectures import build_module  # noqa: E402
from restorekit.faces import FaceDetection, FaceOptions, FacePipeline, FaceRestorer  # noqa: E402
from restorekit.faces.align import alignment_matrix, crop_face  # noqa: E402

from face_reference import apply_basicsr_shim, gfpganer  # noqa: E402
from faces_common import astronaut_landmarks, random_network_state  # noqa: E402

FACES = 4


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover
        return "?"


def frame_with_four_faces() -> tuple[np.ndarray, list[torch.Tensor]]:
    """1024x1024 RGB uint8: the astronaut in each quadrant (the right ones mirrored)."""
    from skimage import data

    astronaut = data.astronaut()
    mirrored = astronaut[:, ::-1]
    top = np.concatenate([astronaut, mirrored], axis=1)
    frame = np.ascontiguousarray(np.concatenate([top, top], axis=0))
    base = astronaut_landmarks()
    flipped = base.clone()
    flipped[:, 0] = 511 - flipped[:, 0]
    flipped = flipped[[1, 0, 2, 4, 3]]
    landmarks = []
    for dy in (0, 512):
        landmarks.append(base + torch.tensor([0.0, dy], dtype=torch.float64))
        landmarks.append(flipped + torch.tensor([512.0, dy], dtype=torch.float64))
    return frame, landmarks


ARCHITECTURES = {"gfpgan": "GFPGANv1Clean", "restoreformer": "RestoreFormer", "codeformer": "CodeFormer"}
"""``--arch`` choices: the face restorer both sides run (random weights from its own
constructor, seeded; the official side is ``tests/face_reference.reference_network``)."""


def descriptor_from(state: dict[str, torch.Tensor]):
    import spandrel

    from restorekit.faces.restore import install_extra_arches

    install_extra_arches()  # CodeFormer's architecture (spandrel_extra_arches)
    return spandrel.ModelLoader().load_from_state_dict(state).eval()


def timed(function) -> tuple[float, object]:
    """Wall time of ``function()`` and its value; the process CPU time goes to CPU_TIMES."""
    start, cpu = time.perf_counter(), time.process_time()
    value = function()
    CPU_TIMES.append(time.process_time() - cpu)
    return time.perf_counter() - start, value


CPU_TIMES: list[float] = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds of each measurement (the minimum is kept)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--batch", type=int, default=4, help="our faces per forward pass")
    parser.add_argument(
        "--arch", choices=sorted(ARCHITECTURES), default="gfpgan",
        help="the face restorer (official side: gfpgan's own GFPGANv1Clean / RestoreFormer; CodeFormer, which has no "
        "installable reference, is spandrel's module in the same GFPGANer loop)",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="also time our restorer compiled (compile on: inductor, freezing) in the restore stage, after its compile",
    )
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--detection-only", action="store_true", help="only the detection benchmark")
    parser.add_argument("--skip-detection", action="store_true")
    parser.add_argument("--detection-frames", type=int, default=20, help="timed frames per detector and round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    apply_basicsr_shim()
    from machine import conv_peaks, describe_cpu

    print(describe_cpu())
    peaks = conv_peaks(repeats=40)  # once, for the restore stage and the detectors
    print(f"conv peak (64->64 3x3 channels_last, {args.threads} threads): fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s")
    if args.detection_only:
        summary = {"detection": detection_benchmark(args, peaks)}
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return 0

    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, load {load_average()}")
    architecture = ARCHITECTURES[args.arch]
    gfpgan_state = random_network_state(architecture, {}, seed=0)
    parse_params = {"in_size": 512, "out_size": 512, "parsing_ch": 19}
    parser_net = build_module("ParseNet", parse_params)
    parser_net.load_state_dict(random_network_state("ParseNet", parse_params, seed=1))
    parser_net.eval()
    descriptor = descriptor_from(gfpgan_state)

    frame, landmarks = frame_with_four_faces()
    frame_t = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    crops = torch.cat([crop_face(frame_t, alignment_matrix(lm)) for lm in landmarks])
    crops_bgr = [(c.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8).copy() for c in crops]

    official = gfpganer(gfpgan_state, upscale=2, parser=parser_net, architecture=architecture)
    ours = FaceRestorer(descriptor, batch_size=args.batch, compile="off")  # eager; --compile adds the compiled one
    print(f"{architecture}; ours: {ours.plan.describe()}, batch {ours.batch_size}; official: float32 NCHW, one face per forward")

    def official_restore() -> None:
        for face in crops_bgr:
            official.enhance(face, has_aligned=True, paste_back=False)

    def ours_restore() -> torch.Tensor:
        return ours(crops)

    # warm-up: one face each (first-call allocations, oneDNN kernels, our prepared copy)
    official.enhance(crops_bgr[0], has_aligned=True, paste_back=False)
    restore_flops = conv_flops(lambda: ours(crops[:1])) * FACES

    results: dict[str, list[float]] = {"restore_official": [], "restore_ours": [], "e2e_official": [], "e2e_ours": []}
    compiled_restorer = None
    if args.compile:
        compiled_restorer = FaceRestorer(descriptor, batch_size=args.batch, compile="on")
        compile_seconds, compiled_out = timed(lambda: compiled_restorer(crops))
        difference = float((compiled_out - ours(crops)).abs().max())
        print(f"  compiled ours: first call (compile) {compile_seconds:.1f} s, max difference to eager {difference:.2e}")
        results["restore_compiled"] = []
    cpu: dict[str, list[float]] = {key: [] for key in results}
    for _ in range(args.repeats):
        results["restore_official"].append(timed(official_restore)[0])
        cpu["restore_official"].append(CPU_TIMES[-1])
        results["restore_ours"].append(timed(ours_restore)[0])
        cpu["restore_ours"].append(CPU_TIMES[-1])
        line = (
            f"  restore: official {results['restore_official'][-1]:.1f} s ({cpu['restore_official'][-1]:.1f} CPU-s), "
            f"ours {results['restore_ours'][-1]:.1f} s ({cpu['restore_ours'][-1]:.1f} CPU-s)"
        )
        if compiled_restorer is not None:
            results["restore_compiled"].append(timed(lambda: compiled_restorer(crops))[0])
            cpu["restore_compiled"].append(CPU_TIMES[-1])
            line += f", ours compiled {results['restore_compiled'][-1]:.1f} s ({cpu['restore_compiled'][-1]:.1f} CPU-s)"
        print(f"{line}  [load {load_average()}]")

    if not args.skip_e2e:
        helper = official.face_helper
        frame_bgr = np.ascontiguousarray(frame[:, :, ::-1])

        def inject(*_args: object, **_kwargs: object) -> int:
            helper.all_landmarks_5 = [lm.numpy().copy() for lm in landmarks]
            helper.det_faces = [np.zeros(5) for _ in landmarks]
            return len(landmarks)

        helper.get_face_landmarks_5 = inject
        pipeline = FacePipeline(ours, options=FaceOptions(), parser=parser_net)
        detections = [[FaceDetection.from_landmarks(lm) for lm in landmarks]]
        pipeline.run(frame_t[:, :, :256, :256], detections=[[]])  # loads the parser copy
        for _ in range(args.repeats):
            elapsed, (_, _, official_out) = timed(lambda: official.enhance(frame_bgr, paste_back=True))
            results["e2e_official"].append(elapsed)
            cpu["e2e_official"].append(CPU_TIMES[-1])
            elapsed, result = timed(lambda: pipeline.run(frame_t, detections=detections, outscale=2))
            results["e2e_ours"].append(elapsed)
            cpu["e2e_ours"].append(CPU_TIMES[-1])
            assert official_out.shape == (2048, 2048, 3) and result.image.shape == (1, 3, 2048, 2048)
            print(
                f"  end to end: official {results['e2e_official'][-1]:.1f} s ({cpu['e2e_official'][-1]:.1f} CPU-s), "
                f"ours {results['e2e_ours'][-1]:.1f} s ({cpu['e2e_ours'][-1]:.1f} CPU-s)  [load {load_average()}]"
            )

    print()
    summary: dict[str, object] = {
        "architecture": architecture, "threads": args.threads, "faces": FACES, "plan": ours.plan.describe(), "batch": ours.batch_size,
    }
    for stage in ("restore", "e2e"):
        if not results[f"{stage}_ours"]:
            continue
        theirs, mine = min(results[f"{stage}_official"]), min(results[f"{stage}_ours"])
        theirs_cpu, mine_cpu = min(cpu[f"{stage}_official"]), min(cpu[f"{stage}_ours"])
        label = "restore stage (4 aligned faces)" if stage == "restore" else "end to end (1024^2 frame, 4 faces, x2, ParseNet)"
        print(f"{label}, best of {args.repeats}:")
        print(f"  official GFPGANer: {theirs:7.2f} s  {FACES / theirs:6.3f} faces/s  ({theirs_cpu:.1f} CPU-s)")
        print(f"  RestoreKit:        {mine:7.2f} s  {FACES / mine:6.3f} faces/s  ({mine_cpu:.1f} CPU-s)")
        print(f"  speed-up:          {theirs / mine:7.2f}x wall, {theirs_cpu / mine_cpu:.2f}x CPU time")
        efficiency: dict[str, float] = {}
        if stage == "restore":  # the restorer's convs over the peak of each side's precision
            ours_precision = "bf16" if ours.plan.dtype in (torch.bfloat16, torch.float16) else "fp32"
            efficiency = {
                "official": restore_flops / theirs / 1e9 / peaks["fp32"],
                "ours": restore_flops / mine / 1e9 / peaks[ours_precision],
            }
            print(
                f"  efficiency:        {restore_flops / 1e9:.1f} GFLOP of convs; official {efficiency['official']:.0%} "
                f"of the fp32 peak, ours {efficiency['ours']:.0%} of the {ours_precision} peak"
            )
            if results.get("restore_compiled"):
                best = min(results["restore_compiled"])
                efficiency["ours_compiled"] = restore_flops / best / 1e9 / peaks[ours_precision]
                print(
                    f"  ours compiled:     {best:7.2f} s  {theirs / best:.2f}x the official, {mine / best:.2f}x our eager, "
                    f"{efficiency['ours_compiled']:.0%} of the {ours_precision} peak"
                )
        summary[stage] = {
            "official_s": theirs,
            "ours_s": mine,
            "official_fps": FACES / theirs,
            "ours_fps": FACES / mine,
            "speedup": theirs / mine,
            "official_cpu_s": theirs_cpu,
            "ours_cpu_s": mine_cpu,
            "speedup_cpu": theirs_cpu / mine_cpu,
            "rounds_wall_s": {
                "official": results[f"{stage}_official"], "ours": results[f"{stage}_ours"],
                **({"ours_compiled": results["restore_compiled"]} if stage == "restore" and results.get("restore_compiled") else {}),
            },
            "efficiency": efficiency,
        }
    summary["conv_peak_gflops"] = peaks
    summary["restore_gflop"] = restore_flops / 1e9
    if not args.skip_detection:
        summary["detection"] = detection_benchmark(args, peaks)
    summary["load_average_end"] = load_average()
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- detection


def cpu_flags() -> str:
    """The vector extensions that matter for convolutions, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # pragma: no cover - not Linux
        return platform.processor() or platform.machine()
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(flag for flag in wanted if flag in flags) or "none of avx2/avx512/amx"


def _mediapipe_networks() -> dict[str, torch.nn.Module]:
    """GraphNets of BlazeFace short/full and Face Mesh: from the installed mediapipe wheel,
    else from the registry (downloaded once)."""
    import importlib.util

    from restorekit.faces.graphnet import GraphNet
    from restorekit.models import load_aux_network
    from restorekit.registry.tflite import tflite_to_state_dict

    members = {
        "blazeface_short_range": "modules/face_detection/face_detection_short_range.tflite",
        "blazeface_full_range": "modules/face_detection/face_detection_full_range_sparse.tflite",
        "face_mesh": "modules/face_landmark/face_landmark.tflite",
    }
    spec = importlib.util.find_spec("mediapipe")
    root = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    networks = {}
    for name, member in members.items():
        path = root / member if root else None
        if path is not None and path.is_file():
            networks[name] = GraphNet.from_state_dict(tflite_to_state_dict(path.read_bytes(), path.name))
        else:
            networks[name] = load_aux_network(name)
    return networks


def conv_flops(function) -> float:
    """Convolution FLOPs (2 x multiply-adds) that ``function()`` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return float(sum(v for k, v in counter.get_flop_counts().get("Global", {}).items() if "convolution" in str(k)))


def detection_benchmark(args: argparse.Namespace, peaks: dict[str, float]) -> dict[str, object]:
    """Seconds per 512x512 frame (the astronaut, one face) of each detector, best round;
    the detectors run interleaved, frame by frame, so load swings hit them alike. ``peaks``:
    the machine's conv peak (GFLOP/s by precision) for each detector's share of it.

    RetinaFace's random weights get their face logits lowered so that, like a trained
    detector on this frame, it hands (next to) no boxes to NMS: the time is the network's."""
    from skimage import data

    from restorekit.device import plan_execution
    from restorekit.faces import FaceDetector
    from restorekit.faces.detect import DetectionSettings
    from restorekit.faces.mediapipe import MediaPipeFaceDetector

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255.0
    image_bgr = np.ascontiguousarray((image[0].permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8))
    retina = build_module("RetinaFace", {"network_name": "resnet50"})
    retina.load_state_dict(random_network_state("RetinaFace", {"network_name": "resnet50"}, seed=2))
    with torch.no_grad():  # random weights call hundreds of boxes faces; a real detector finds one
        for head in retina.ClassHead:
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.copy_(torch.tensor([10.0, -10.0]).repeat(head.conv1x1.out_channels // 2))
    retina.eval()
    networks = _mediapipe_networks()
    auto = plan_execution("auto", "auto")
    fp32 = plan_execution("cpu", "fp32")
    settings = DetectionSettings(confidence=0.5)
    def official() -> list:
        with torch.no_grad():  # as FaceRestoreHelper.get_face_landmarks_5 calls it
            return retina.detect_faces(image_bgr, 0.97)

    detectors: dict[str, object] = {
        "RetinaFace-R50, facexlib detect_faces (official, fp32)": official,
        f"RetinaFace-R50, RestoreKit ({auto.describe()})": FaceDetector(retina, auto),
        "BlazeFace short + Face Mesh, fp32": MediaPipeFaceDetector(networks["blazeface_short_range"], networks["face_mesh"], "short", fp32, settings),
        "BlazeFace full + Face Mesh, fp32": MediaPipeFaceDetector(networks["blazeface_full_range"], networks["face_mesh"], "full", fp32, settings),
        "BlazeFace short alone, fp32": MediaPipeFaceDetector(networks["blazeface_short_range"], None, "short", fp32, settings),
    }
    calls = {label: (d if not isinstance(d, (FaceDetector, MediaPipeFaceDetector)) else (lambda d=d: d(image))) for label, d in detectors.items()}
    faces = {label: len(call()) for label, call in calls.items()}  # warm-up
    flops = {label: conv_flops(call) for label, call in calls.items()}
    times: dict[str, list[float]] = {label: [] for label in calls}
    with torch.inference_mode():
        for _ in range(args.repeats):
            rounds = {label: 0.0 for label in calls}
            for _ in range(args.detection_frames):
                for label, call in calls.items():
                    start = time.perf_counter()
                    call()
                    rounds[label] += time.perf_counter() - start
            for label in calls:
                times[label].append(rounds[label] / args.detection_frames)
            print(f"  detection round done  [load {load_average()}]")
    reference = min(times[next(iter(calls))])
    print(f"\ndetection per 512x512 frame (astronaut, 1 face), best of {args.repeats} x {args.detection_frames} frames:")
    result: dict[str, object] = {"cpu_flags": cpu_flags(), "conv_peak_gflops": peaks, "frames": args.detection_frames}
    for label in calls:
        best = min(times[label])
        peak = peaks["bf16"] if "bf16" in label else peaks["fp32"]
        share = flops[label] / best / 1e9 / peak
        print(
            f"  {label:58s} {best * 1000:8.1f} ms  {1 / best:7.1f} frames/s  {reference / best:6.1f}x official  "
            f"{flops[label] / 1e9:6.2f} GFLOP  {share * 100:5.1f}% of peak  ({faces[label]} face)"
        )
        result[label] = {"ms": best * 1000, "fps": 1 / best, "speedup_vs_official": reference / best, "gflop": flops[label] / 1e9, "share_of_peak": share, "faces": faces[label]}
    return result


if __name__ == "__main__":
    sys.exit(main())
