"""Frames per second of video restoration on 256x256 frames: RestoreKit's video pipeline
against the official ``inference_realesrgan_video.py`` approach, same CPU, same weights, one run.

- **ours**: :func:`restorekit.video.process_video` with :func:`make_frame_processor`
  (``precision=auto`` = bf16 channels_last here, frames in batches, decoding and encoding in
  their own threads overlapping the model).
- **official**: what the official script does per frame: ``RealESRGANer.enhance`` in fp32, one
  frame at a time, ``outscale`` by cv2 Lanczos, with decoding and encoding done synchronously
  in between (PyAV here; the script pipes raw frames through ffmpeg processes, which this
  machine does not have). ``official compute`` is the same loop's ``enhance`` time alone: an
  upper bound for the official approach even if its I/O cost nothing.

Both encode libx264 CRF 23 yuv420p (the script's settings) and copy the AAC audio.

``--faces`` adds face restoration, as the official script's ``--face_enhance`` does:

- ours: the same :class:`~restorekit.restore.Restorer` the ``restorekit video --face-restore``
  command builds (GFPGANv1.4 + ParseNet paste-back masks, faces batched, bf16 channels_last),
  with the upscale model as the background;
- official: ``GFPGANer(upscale=scale, bg_upsampler=RealESRGANer(...)).enhance(frame,
  paste_back=True)`` per frame, one face at a time, fp32.

No real GFPGAN/ParseNet weights can be downloaded here, so both sides use the same seeded
random weights with the official architectures (speed does not depend on the values), and
both are given the same face landmarks per frame (computed from the clip's known pan and
zoom of the astronaut photo's hand-placed landmarks) instead of running a random-weight
detector: detection is left out on both sides.

``--track K`` (with ``--faces``) measures what video restoration with face tracks costs
against the official per-frame pipeline *with its detector*: ours runs the real torch
BlazeFace full range + Face Mesh (from the mediapipe wheel's model files) every K frames,
the mesh alone in between, One Euro smoothing, then the same restoration; the official side
additionally runs facexlib's RetinaFace-ResNet50 (random weights; speed does not depend on
them) on every frame, as ``GFPGANer.enhance`` does, and keeps the scripted landmarks.

Usage::

    python bench/bench_video.py [--frames 48] [--scales 2 4] [--batch 4] [--weights DIR] [--faces] [--track K]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the reference shim and face test helpers (bench/test only)

from restorekit.video import VideoOptions, make_frame_processor, process_video  # noqa: E402

MODEL = "realesr-animevideov3"
SIZE = 256
FPS = 25
CRF = 23


def frame_window(index: int) -> tuple[int, int, int]:
    """(top, left, side) of the astronaut photo shown in frame ``index`` (pan and zoom)."""
    return 20 + index % 15, 110 + index % 25, 300 - index % 40


def frame_landmarks(index: int) -> np.ndarray:
    """(5, 2) landmarks of the astronaut's face in frame ``index``."""
    from faces_common import astronaut_landmarks

    top, left, side = frame_window(index)
    return (astronaut_landmarks().numpy() - np.array([left, top])) * (SIZE / side)


def make_input(path: Path, frames: int) -> Path:
    """A 256x256 talking-head-like clip: skimage's astronaut (a face) slowly panning and
    zooming, with a sine-wave AAC track."""
    import av
    import cv2
    from skimage import data

    photo = data.astronaut()
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "16"}
        audio = container.add_stream("aac", rate=48000, layout="mono")
        for index in range(frames):
            top, left, crop = frame_window(index)
            frame = cv2.resize(photo[top : top + crop, left : left + crop], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = index
            container.mux(video.encode(video_frame))
        container.mux(video.encode(None))
        samples = round(frames / FPS * 48000)
        for start in range(0, samples, 1024):
            count = min(1024, samples - start)
            wave = 0.2 * np.sin(2 * np.pi * 220 * np.arange(start, start + count) / 48000)
            audio_frame = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None], format="fltp", layout="mono")
            audio_frame.sample_rate, audio_frame.pts = 48000, start
            container.mux(audio.encode(audio_frame))
        container.mux(audio.encode(None))
    return path


class ScriptedDetector:
    """Stands in for the face detector: frame ``n``'s landmarks, frames taken in order."""

    def __init__(self) -> None:
        self.index = 0

    def __call__(self, image: torch.Tensor, *, settings: Any = None) -> list[Any]:
        from restorekit.faces import FaceDetection

        face = FaceDetection.from_landmarks(frame_landmarks(self.index))
        self.index += 1
        return [face]


def mediapipe_detector() -> Any:
    """The torch BlazeFace full range + Face Mesh on the mediapipe wheel's model files."""
    import importlib.util

    from restorekit.device import plan_execution
    from restorekit.faces.graphnet import GraphNet
    from restorekit.faces.mediapipe import MediaPipeFaceDetector
    from restorekit.registry.tflite import tflite_to_state_dict

    members = {
        "full": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "mesh": "mediapipe/modules/face_landmark/face_landmark.tflite",
    }
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--track needs the mediapipe 0.10.14 wheel's model files (make setup installs it)")
    root = Path(next(iter(spec.submodule_search_locations))).parent

    def net(kind: str) -> Any:
        return GraphNet.from_state_dict(tflite_to_state_dict((root / members[kind]).read_bytes(), members[kind]))

    return MediaPipeFaceDetector(net("full"), net("mesh"), "full", plan_execution("auto", "auto"))


def ours_processor(weights: Path, scale: float, faces: bool, track: int = 0, parser: str | None = None) -> Any:
    from restorekit.faces import FaceOptions
    from restorekit.faces.tracking import TrackingSettings
    from restorekit.restore import RestoreSettings

    options = FaceOptions(confidence=0.5, min_eye_distance=0.0) if track else FaceOptions()
    if parser:
        options = FaceOptions(**{**options.__dict__, "parser": parser})
    settings = RestoreSettings(
        model=str(weights), outscale=scale, precision="auto", face_model="GFPGANv1.4" if faces else None,
        face_options=options if (track or parser) else None,
        face_tracking=TrackingSettings(detect_every=track, fps=FPS) if track else None,
    )  # fmt: skip
    processor = make_frame_processor(settings=settings)
    if faces:
        # bench only: the same landmarks as official, or the real BlazeFace + Face Mesh
        processor.restorer.faces._detector = mediapipe_detector() if track else ScriptedDetector()
    return processor


def run_ours(
    source: Path, output: Path, weights: Path, scale: float, batch: int, faces: bool, track: int = 0, parser: str | None = None
) -> dict[str, float]:
    processor = ours_processor(weights, scale, faces, track, parser)
    processor(torch.rand(1, 3, SIZE, SIZE))  # warm-up: one-off weight conversion
    if faces and not track:
        processor.restorer.faces._detector.index = 0
    began = time.perf_counter()
    result = process_video(source, output, processor, VideoOptions(batch_size=batch, crf=CRF, overwrite=True))
    seconds = time.perf_counter() - began
    return {"frames": result.frames, "seconds": seconds, "fps": result.frames / seconds}


def official_upsampler(weights: Path, workdir: Path) -> Any:
    """RealESRGANer as the official script builds it for realesr-animevideov3, in fp32."""
    import torchvision.transforms.functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms.functional)
    from realesrgan import RealESRGANer
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact
    from safetensors.torch import load_file

    pth = workdir / f"{MODEL}.pth"
    if not pth.exists():
        torch.save({"params": load_file(str(weights))}, pth)
    model = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu")
    return RealESRGANer(scale=4, model_path=str(pth), model=model, tile=0, pre_pad=0, half=False, device=torch.device("cpu"))


def official_face_enhancer(upsampler: Any, scale: float, detect: bool = False) -> Any:
    """GFPGANer as the official script builds it with ``--face_enhance`` (GFPGANv1.4,
    ParseNet, the RealESRGANer as background upsampler), with the seeded random weights and
    the scripted landmarks of :func:`frame_landmarks`."""
    from restorekit.architectures import build_module

    from face_reference import gfpganer
    from faces_common import random_network_state

    parse_params = {"in_size": 512, "out_size": 512, "parsing_ch": 19}
    parser = build_module("ParseNet", parse_params)
    parser.load_state_dict(random_network_state("ParseNet", parse_params, seed=1))
    enhancer = gfpganer(random_network_state("GFPGANv1Clean", {}, seed=0), scale, parser=parser.eval(), bg_upsampler=upsampler)
    helper = enhancer.face_helper
    counter = {"index": 0}

    detector = None
    if detect:
        from restorekit.architectures import build_module

        detector = build_module("RetinaFace", {"network_name": "resnet50"})
        detector.load_state_dict(random_network_state("RetinaFace", {"network_name": "resnet50"}, seed=2))
        detector.eval()

    def scripted_landmarks(*_args: object, **_kwargs: object) -> int:
        if detector is not None:  # what get_face_landmarks_5 runs first: RetinaFace on the frame
            with torch.no_grad():
                detector.detect_faces(helper.input_img, 0.97)
        helper.all_landmarks_5 = [frame_landmarks(counter["index"])]
        helper.det_faces = [np.zeros(5)]
        counter["index"] += 1
        return 1

    helper.get_face_landmarks_5 = scripted_landmarks
    enhancer.frame_counter = counter
    return enhancer


def official_frame(upsampler: Any, bgr: np.ndarray, scale: float, enhancer: Any = None) -> np.ndarray:
    if enhancer is not None:  # --face_enhance: GFPGANer upscales the background itself
        return enhancer.enhance(bgr, has_aligned=False, only_center_face=False, paste_back=True)[2]
    output, _ = upsampler.enhance(bgr, outscale=scale)
    return output


def run_official(source: Path, output: Path, upsampler: Any, scale: float, faces: bool, detect: bool = False) -> dict[str, float]:
    """One frame at a time: decode, enhance (fp32), encode, all on one thread."""
    import av

    enhancer = official_face_enhancer(upsampler, scale, detect) if faces else None
    official_frame(upsampler, np.zeros((SIZE, SIZE, 3), np.uint8), scale, enhancer)  # warm-up
    if enhancer is not None:
        enhancer.frame_counter["index"] = 0
    compute = 0.0
    frames = 0
    began = time.perf_counter()
    with av.open(str(source)) as src, av.open(str(output), "w") as dst:
        in_video, in_audio = src.streams.video[0], src.streams.audio[0]
        out_video = dst.add_stream("libx264", rate=Fraction(FPS))
        out_video.width = out_video.height = round(SIZE * scale)
        out_video.pix_fmt = "yuv420p"
        out_video.options = {"crf": str(CRF)}
        out_audio = dst.add_stream_from_template(in_audio)
        for frame in src.decode(in_video):
            bgr = frame.to_ndarray(format="bgr24")
            start = time.perf_counter()
            restored = official_frame(upsampler, bgr, scale, enhancer)
            compute += time.perf_counter() - start
            encoded = av.VideoFrame.from_ndarray(restored, format="bgr24")
            encoded.pts = frames
            dst.mux(out_video.encode(encoded))
            frames += 1
        dst.mux(out_video.encode(None))
        with av.open(str(source)) as audio_src:
            for packet in audio_src.demux(audio_src.streams.audio[0]):
                if packet.dts is not None:
                    packet.stream = out_audio
                    dst.mux(packet)
    seconds = time.perf_counter() - began
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds, "compute_fps": frames / compute}


def install_random_face_models(home: Path) -> None:
    """Seeded random GFPGANv1.4 and ParseNet weights under their registry names in a
    temporary model home (no real weights can be downloaded here)."""
    import os

    os.environ["RESTOREKIT_HOME"] = str(home)
    from restorekit.registry.home import configure_home

    from faces_common import install_models

    configure_home(home)
    install_models(home, home / "generated", ["GFPGANv1.4", "parsing_parsenet", "detection_Resnet50_Final"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--scales", type=float, nargs="+", default=[2.0, 4.0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "weights")
    parser.add_argument("--faces", action="store_true", help="add face restoration (GFPGANv1.4) on both sides")
    parser.add_argument("--track", type=int, default=0, metavar="K", help="with --faces: ours tracks faces (real BlazeFace + Face Mesh every K frames), official detects with RetinaFace-ResNet50 on every frame")
    parser.add_argument(
        "--parsers", nargs="+", default=[None], metavar="NAME",
        help="with --faces: ours once per paste-back mask (e.g. parsing_parsenet face_oval; default: the registry's "
        "default parser, ParseNet, as official); official always uses ParseNet",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    weights = args.weights / f"{MODEL}.safetensors"
    if not weights.is_file():
        print(f"{weights} not found: pass --weights DIR holding {MODEL}.safetensors", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    import os

    from machine import conv_peaks, describe_cpu

    peaks = conv_peaks()
    print(describe_cpu())
    print(f"conv peak (64->64 3x3, channels_last): fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s; load {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.faces:
            install_random_face_models(work / "home")
        source = make_input(work / "input.mp4", args.frames)
        upsampler = official_upsampler(weights, work)
        for scale in args.scales:
            mask_rows = []
            for number, mask in enumerate(args.parsers if args.faces else [None]):
                ours = run_ours(source, work / f"ours-x{scale:g}.mp4", weights, scale, args.batch, args.faces, args.track, mask)
                if number == 0:  # official once, between ours' first and later runs
                    official = run_official(source, work / f"official-x{scale:g}.mp4", upsampler, scale, args.faces, bool(args.track))
                mask_rows.append((mask, ours))
            for mask, ours in mask_rows:
                rows.append({"scale": scale, "parser": mask or "default", "ours": ours, "official": official})
    stage = " + GFPGANv1.4 (one face a frame)" if args.faces else ""
    if args.faces and args.track:
        stage += f"; ours: tracks, BlazeFace + Face Mesh every {args.track} frames; official: RetinaFace-ResNet50 every frame"
    print(f"\n{args.frames} frames of {SIZE}x{SIZE}, {MODEL}{stage}, torch threads {torch.get_num_threads()}, "
          f"libx264 CRF {CRF}, batch {args.batch}")
    print("| output | ours' mask | ours fps | official fps (end to end) | official fps (compute only) | ours / official | ours / official compute |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ours, official = row["ours"], row["official"]
        size = round(SIZE * row["scale"])
        print(
            f"| x{row['scale']:g} ({size}x{size}) | {row['parser'] if args.faces else '-'} | {ours['fps']:.2f} | {official['fps']:.2f} | "
            f"{official['compute_fps']:.2f} | {ours['fps'] / official['fps']:.2f}x | "
            f"{ours['fps'] / official['compute_fps']:.2f}x |"
        )
    import os

    print(f"load average at the end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
